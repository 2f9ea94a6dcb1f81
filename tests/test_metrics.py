"""seglab.metrics: hand-computed answers for every metric and rule (agreement with MONAI, medpy and
scikit-learn on random masks is in test_metrics_reference.py)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from monai.metrics.utils import get_mask_edges

from seglab.errors import SeglabError
from seglab.metrics import (
    METRICS,
    binary_metrics,
    confusion_matrix,
    evaluate_case,
    format_summary_table,
    add_roc_auc,
    roc_auc,
    roc_auc_cases,
    roc_auc_classes,
    summarize,
    write_tables,
)
from seglab.metrics.binary import _border

nan = float("nan")
# MONAI's own internal call to its get_mask_edges trips its deprecation of always_return_as_numpy
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")


def _mask(shape, *points):
    mask = np.zeros(shape, dtype=bool)
    for point in points:
        mask[point] = True
    return mask


# ---------------------------------------------------------------- overlap metrics


def test_overlap_metrics_match_hand_counted_tp_fp_fn_tn():
    ref = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    pred = np.array([[1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    # TP = 2 ((0,0), (0,1)), FP = 1 ((0,2)), FN = 2 ((1,0), (1,1)), TN = 16 - 5 = 11
    m = binary_metrics(pred, ref)
    assert m["dice"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))  # 4/7
    assert m["iou"] == pytest.approx(2 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["accuracy"] == pytest.approx((2 + 11) / 16)
    assert m["seg_accuracy"] == pytest.approx(1 - (1 + 2) / 4)  # misclassified FP + FN over |ref| = 4
    assert set(m) == set(METRICS)


def test_seg_accuracy_goes_below_zero_when_misclassified_pixels_outnumber_the_reference():
    ref = _mask((4, 4), (0, 0))
    pred = _mask((4, 4), (2, 0), (2, 1), (3, 0), (3, 1))  # FP 4, FN 1, |ref| 1
    assert binary_metrics(pred, ref)["seg_accuracy"] == pytest.approx(1 - 5 / 1)


# ---------------------------------------------------------------- empty-mask rules


def test_both_empty_gives_perfect_overlap_zero_distance_and_normal_accuracy():
    empty = np.zeros((4, 5), dtype=bool)
    m = binary_metrics(empty, empty)
    assert {k: m[k] for k in ("dice", "iou", "f1", "precision", "recall")} == dict.fromkeys(
        ("dice", "iou", "f1", "precision", "recall"), 1.0
    )
    assert m["accuracy"] == 1.0
    assert m["seg_accuracy"] == 1.0 and m["nsd"] == 1.0
    assert m["hd95"] == 0.0 and m["assd"] == 0.0


def test_empty_reference_gives_zero_overlap_nan_recall_and_nan_distances():
    pred = _mask((4, 5), (1, 1), (1, 2))
    m = binary_metrics(pred, np.zeros_like(pred))
    assert m["dice"] == m["iou"] == m["f1"] == m["precision"] == 0.0
    assert math.isnan(m["recall"])
    assert math.isnan(m["seg_accuracy"])  # misclassified pixels over an area of 0
    assert m["nsd"] == 0.0  # no prediction border lies near a reference border that does not exist
    assert math.isnan(m["hd95"]) and math.isnan(m["assd"])
    assert m["accuracy"] == pytest.approx(18 / 20)


def test_empty_prediction_gives_zero_overlap_nan_precision_and_nan_distances():
    ref = _mask((4, 5), (1, 1), (1, 2), (2, 2))
    m = binary_metrics(np.zeros_like(ref), ref)
    assert m["dice"] == m["iou"] == m["f1"] == m["recall"] == 0.0
    assert math.isnan(m["precision"])
    assert m["seg_accuracy"] == 0.0 and m["nsd"] == 0.0  # 1 - FN / |ref| = 1 - 3/3
    assert math.isnan(m["hd95"]) and math.isnan(m["assd"])
    assert m["accuracy"] == pytest.approx(17 / 20)


# ---------------------------------------------------------------- surface metrics


def test_single_voxels_hd95_and_assd_are_their_distance_scaled_by_spacing():
    pred, ref = _mask((10, 10), (2, 3)), _mask((10, 10), (5, 7))
    m = binary_metrics(pred, ref)
    assert m["hd95"] == pytest.approx(5.0) and m["assd"] == pytest.approx(5.0)  # 3-4-5 triangle
    m = binary_metrics(pred, ref, spacing=(2.0, 1.0))
    assert m["hd95"] == pytest.approx(math.sqrt(6**2 + 4**2))
    assert m["assd"] == pytest.approx(math.sqrt(52))


def test_line_against_voxel_uses_directed_linear_percentile_and_pooled_mean():
    ref = _mask((3, 7), (1, 0))
    pred = _mask((3, 7), *[(1, j) for j in range(5)])
    # pred->ref: 0,1,2,3,4 ; ref->pred: 0.  95th percentile of [0..4]: index 0.95*4 = 3.8
    m = binary_metrics(pred, ref)
    assert m["hd95"] == pytest.approx(3.8)
    assert m["assd"] == pytest.approx((0 + 1 + 2 + 3 + 4 + 0) / 6)
    m = binary_metrics(pred, ref, spacing=(5.0, 2.0))  # only axis 1 matters here
    assert m["hd95"] == pytest.approx(7.6)
    assert m["assd"] == pytest.approx(20 / 6)


def test_anisotropic_3d_distances_follow_the_spacing_of_each_axis():
    ref = _mask((3, 3, 4), (1, 1, 0))
    pred = _mask((3, 3, 4), *[(1, 1, k) for k in range(4)])
    # along axis 2 with spacing 3: pred->ref 0,3,6,9 ; ref->pred 0 ; 95th pct at index 2.85
    m = binary_metrics(pred, ref, spacing=(1.0, 1.0, 3.0))
    assert m["hd95"] == pytest.approx(3 * 2.85)
    assert m["assd"] == pytest.approx((0 + 3 + 6 + 9 + 0) / 5)
    iso = binary_metrics(pred, ref)
    assert iso["hd95"] == pytest.approx(2.85) and iso["assd"] == pytest.approx(6 / 5)
    assert binary_metrics(pred, ref, spacing=(7.0, 1.0, 3.0))["hd95"] == pytest.approx(8.55)
    # single voxels one step along axis 1 and two along axis 2
    a, b = _mask((4, 4, 5), (1, 1, 1)), _mask((4, 4, 5), (1, 2, 3))
    assert binary_metrics(a, b, spacing=(1.0, 1.0, 3.0))["hd95"] == pytest.approx(math.sqrt(1 + 36))
    assert binary_metrics(a, b)["hd95"] == pytest.approx(math.sqrt(5))


def test_nsd_counts_border_voxels_within_the_tolerance_on_both_sides():
    ref = _mask((3, 7), (1, 0))
    pred = _mask((3, 7), *[(1, j) for j in range(5)])
    # pred->ref: 0,1,2,3,4 ; ref->pred: 0 ; six border voxels in all
    assert binary_metrics(pred, ref, nsd_tolerance=2.0)["nsd"] == pytest.approx(4 / 6)
    assert binary_metrics(pred, ref, nsd_tolerance=1.99)["nsd"] == pytest.approx(3 / 6)  # d = 2 now out
    assert binary_metrics(pred, ref, nsd_tolerance=0.0)["nsd"] == pytest.approx(2 / 6)
    assert binary_metrics(pred, ref)["nsd"] == pytest.approx(3 / 6)  # default tolerance 1.0
    # spacing (5, 2): distances 0,2,4,6,8 and 0 in mm
    assert binary_metrics(pred, ref, spacing=(5.0, 2.0), nsd_tolerance=2.0)["nsd"] == pytest.approx(3 / 6)


def test_nsd_in_anisotropic_3d_measures_the_tolerance_in_mm():
    ref = _mask((3, 3, 4), (1, 1, 0))
    pred = _mask((3, 3, 4), *[(1, 1, k) for k in range(4)])
    # along axis 2 with spacing 3 mm: pred->ref 0,3,6,9 ; ref->pred 0
    spacing = (1.0, 1.0, 3.0)
    assert binary_metrics(pred, ref, spacing, nsd_tolerance=3.0)["nsd"] == pytest.approx(3 / 5)
    assert binary_metrics(pred, ref, spacing, nsd_tolerance=2.9)["nsd"] == pytest.approx(2 / 5)
    assert binary_metrics(pred, ref, nsd_tolerance=2.9)["nsd"] == pytest.approx(4 / 5)  # 1 mm voxels


def test_nsd_rejects_a_negative_tolerance():
    with pytest.raises(SeglabError, match="tolerance -1.0"):
        binary_metrics(np.ones((2, 2), bool), np.ones((2, 2), bool), nsd_tolerance=-1.0)


def test_surface_is_the_border_so_interior_voxels_do_not_count():
    ref = np.zeros((5, 5), dtype=bool)
    ref[1:4, 1:4] = True  # ring of 8 border voxels, centre (2,2) is interior
    pred = _mask((5, 5), (2, 2))
    # pred->ref: 1 ; ref->pred: four at 1, four corners at sqrt(2)
    m = binary_metrics(pred, ref)
    ref_to_pred = [1, 1, 1, 1] + [math.sqrt(2)] * 4
    assert m["hd95"] == pytest.approx(np.percentile(ref_to_pred, 95))  # index 6.65 -> sqrt(2)
    assert m["hd95"] == pytest.approx(math.sqrt(2))
    assert m["assd"] == pytest.approx((1 + 4 + 4 * math.sqrt(2)) / 9)


def test_voxel_with_only_a_diagonal_neighbour_outside_is_interior_as_in_monai():
    mask = np.zeros((6, 6), dtype=bool)
    mask[0:4, 0:4] = True
    mask[0, 0] = False  # (1,1) keeps all four face-neighbours; only its diagonal (0,0) is outside
    assert not _border(mask)[1, 1]
    assert np.array_equal(_border(mask), get_mask_edges(mask, mask, crop=False)[0])


def test_mask_filling_the_array_has_the_array_edge_as_surface():
    ref = np.ones((3, 3), dtype=bool)  # the same ring as above, but made by the array's edge
    pred = _mask((3, 3), (1, 1))
    m = binary_metrics(pred, ref)
    assert m["hd95"] == pytest.approx(math.sqrt(2))
    assert m["assd"] == pytest.approx((1 + 4 + 4 * math.sqrt(2)) / 9)


def test_binary_metrics_rejects_bad_shapes_and_spacing():
    with pytest.raises(SeglabError, match=r"\(3, 4\).*\(4, 3\)"):
        binary_metrics(np.zeros((3, 4), bool), np.zeros((4, 3), bool))
    with pytest.raises(SeglabError, match="spacing"):
        binary_metrics(np.zeros((3, 4), bool), np.zeros((3, 4), bool), spacing=(1.0, 1.0, 1.0))


# ---------------------------------------------------------------- evaluate_case

REF = np.array([[0, 1, 1, 2], [0, 1, 2, 2], [0, 0, 255, 2]])
PRED = np.array([[0, 1, 2, 2], [1, 1, 2, 2], [0, 0, 1, 0]])
ROI = np.array([[0, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]], dtype=bool)


def test_evaluate_case_excludes_roi_and_ignore_label_pixels_from_every_metric():
    result = evaluate_case(PRED, REF, ["bg", "a", "b"], roi=ROI, ignore_label=255)
    # counted: 12 - 2 (outside roi) - 1 (ref == 255) = 9 pixels; wrong: (0,2), (2,3)
    assert result["pixel_accuracy"] == pytest.approx(7 / 9)
    assert list(result["classes"]) == ["a", "b"]
    a = result["classes"]["a"]  # ref {(0,1),(0,2),(1,1)}, pred {(0,1),(1,1)}: TP 2 FP 0 FN 1 TN 6
    # the excluded (1,0) and (2,2) predicted as "a" would be false positives
    assert a["dice"] == pytest.approx(4 / 5) and a["iou"] == pytest.approx(2 / 3)
    assert a["precision"] == 1.0 and a["recall"] == pytest.approx(2 / 3)
    assert a["accuracy"] == pytest.approx(8 / 9)
    # pred->ref 0,0 ; ref->pred 0,1,0 -> 95th pct of [0,0,1] at index 1.9 = 0.9
    assert a["hd95"] == pytest.approx(0.9) and a["assd"] == pytest.approx(1 / 5)
    assert a["seg_accuracy"] == pytest.approx(1 - 1 / 3) and a["nsd"] == 1.0  # every distance <= 1
    b = result["classes"]["b"]  # ref {(0,3),(1,2),(1,3),(2,3)}, pred {(0,2),(0,3),(1,2),(1,3)}
    assert b["dice"] == pytest.approx(6 / 8) and b["iou"] == pytest.approx(3 / 5)
    assert b["precision"] == pytest.approx(3 / 4) and b["recall"] == pytest.approx(3 / 4)
    assert b["accuracy"] == pytest.approx(7 / 9)
    assert b["hd95"] == pytest.approx(0.85) and b["assd"] == pytest.approx(2 / 8)
    assert b["seg_accuracy"] == pytest.approx(1 - 2 / 4)
    # the confusion matrix, rows = reference (bg, a, b): counted (ref, pred) pairs by hand
    assert result["confusion"] == [[2, 0, 0], [0, 2, 1], [1, 0, 3]]
    assert result["class_names"] == ["bg", "a", "b"] and result["nsd_tolerance"] == 1.0


def test_evaluate_case_nsd_uses_the_given_tolerance():
    result = evaluate_case(PRED, REF, ["bg", "a", "b"], roi=ROI, ignore_label=255, nsd_tolerance=0.5)
    # a: distances 0,0 and 0,1,0 ; b: 0,0,0,1 both ways (see above)
    assert result["classes"]["a"]["nsd"] == pytest.approx(4 / 5)
    assert result["classes"]["b"]["nsd"] == pytest.approx(6 / 8)
    assert result["nsd_tolerance"] == 0.5


def test_evaluate_case_without_exclusions_counts_every_pixel():
    result = evaluate_case(PRED, np.where(REF == 255, 0, REF), ["bg", "a", "b"])
    assert result["pixel_accuracy"] == pytest.approx(8 / 12)  # wrong: (0,2), (1,0), (2,2), (2,3)
    a = result["classes"]["a"]  # pred "a" now also at (1,0) and (2,2): TP 2 FP 2 FN 1
    assert a["precision"] == pytest.approx(2 / 4) and a["dice"] == pytest.approx(4 / 7)


def test_evaluate_case_reports_background_only_when_asked():
    result = evaluate_case(PRED, REF, ["bg", "a", "b"], roi=ROI, ignore_label=255, include_background=True)
    assert list(result["classes"]) == ["bg", "a", "b"]
    bg = result["classes"]["bg"]  # ref {(2,0),(2,1)}, pred {(2,0),(2,1),(2,3)}: TP 2 FP 1 FN 0
    assert bg["dice"] == pytest.approx(4 / 5) and bg["precision"] == pytest.approx(2 / 3)
    assert result["background"] == "bg"


def test_evaluate_case_absent_class_follows_the_empty_rules():
    result = evaluate_case(PRED, REF, ["bg", "a", "b", "c"], ignore_label=255)
    c = result["classes"]["c"]
    assert c["dice"] == c["nsd"] == c["seg_accuracy"] == 1.0 and c["hd95"] == 0.0


def test_evaluate_case_shape_mismatch_raises_naming_both_shapes():
    with pytest.raises(SeglabError, match=r"\(3, 4\).*\(2, 4\)"):
        evaluate_case(PRED, REF[:2], ["bg", "a"])
    with pytest.raises(SeglabError, match=r"roi shape \(2, 4\)"):
        evaluate_case(PRED, REF, ["bg", "a"], roi=ROI[:2])


def test_evaluate_case_names_a_reference_label_that_is_neither_a_class_nor_ignored():
    with pytest.raises(SeglabError, match="reference label 255 is outside the 3 classes"):
        evaluate_case(PRED, REF, ["bg", "a", "b"])


# ---------------------------------------------------------------- summarize


def _case(case_id, class_values, pixel_accuracy=0.5):
    """A per-case dict whose every metric of class `name` equals `class_values[name]`."""
    return {
        "case": case_id,
        "pixel_accuracy": pixel_accuracy,
        "classes": {name: dict.fromkeys(METRICS, v) for name, v in class_values.items()},
        "background": "bg",
    }


def test_summarize_excludes_nan_counts_it_undefined_and_uses_population_std():
    per_case = [_case("c1", {"a": 0.8, "b": 0.6}, 0.9), _case("c2", {"a": 0.4, "b": nan}, 0.7)]
    s = summarize(per_case)
    assert s["n_cases"] == 2
    assert s["pixel_accuracy"] == pytest.approx({"mean": 0.8, "std": 0.1, "n": 2, "undefined": 0})
    assert s["classes"]["a"]["dice"] == pytest.approx({"mean": 0.6, "std": 0.2, "n": 2, "undefined": 0})
    assert s["classes"]["b"]["hd95"] == pytest.approx({"mean": 0.6, "std": 0.0, "n": 1, "undefined": 1})
    # macro per case: c1 (0.8+0.6)/2 = 0.7, c2 0.4 (b undefined, skipped) -> mean 0.55, std 0.15
    assert s["mean"]["recall"] == pytest.approx({"mean": 0.55, "std": 0.15, "n": 2, "undefined": 0})


def test_summarize_all_undefined_gives_nan_mean_and_counts():
    s = summarize([_case("c1", {"a": nan}), _case("c2", {"a": nan})])
    stats = s["classes"]["a"]["precision"]
    assert math.isnan(stats["mean"]) and math.isnan(stats["std"])
    assert (stats["n"], stats["undefined"]) == (0, 2)
    assert math.isnan(s["mean"]["precision"]["mean"]) and s["mean"]["precision"]["undefined"] == 2


def test_summarize_macro_mean_leaves_out_the_background_class():
    s = summarize([_case("c1", {"bg": 1.0, "a": 0.5, "b": 0.3})])
    assert s["mean"]["dice"]["mean"] == pytest.approx(0.4)
    assert s["classes"]["bg"]["dice"]["mean"] == 1.0


# ---------------------------------------------------------------- tables


def test_write_tables_writes_parseable_csv_and_json_with_null_and_no_temp_files(tmp_path):
    per_case = [_case("c1", {"a": 0.8, "b": 0.6}), _case("c2", {"a": 0.4, "b": nan})]
    out_dir = tmp_path / "new" / "eval"
    paths = write_tables(per_case, summarize(per_case), out_dir)
    names = ["metrics_per_case.csv", "metrics_summary.csv", "metrics.json"]
    assert paths == [out_dir / n for n in names]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(names)

    with open(out_dir / "metrics_per_case.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["class"]) for r in rows] == [("c1", "a"), ("c1", "b"), ("c2", "a"), ("c2", "b")]
    assert list(rows[0]) == ["case", "class", *METRICS, "pixel_accuracy"]
    assert float(rows[0]["dice"]) == 0.8 and math.isnan(float(rows[3]["hd95"]))

    with open(out_dir / "metrics_summary.csv", newline="") as f:
        rows = {r["class"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["a", "b", "mean"]
    assert float(rows["a"]["dice_mean"]) == pytest.approx(0.6) and float(rows["a"]["dice_std"]) == pytest.approx(0.2)
    assert (rows["b"]["dice_n"], rows["b"]["dice_undefined"]) == ("1", "1")

    data = json.loads((out_dir / "metrics.json").read_text())
    assert data["per_case"][1]["classes"]["b"]["hd95"] is None
    assert data["summary"]["classes"]["b"]["dice"]["undefined"] == 1
    assert "NaN" not in (out_dir / "metrics.json").read_text()


def test_write_tables_replaces_existing_files(tmp_path):
    per_case = [_case("c1", {"a": 0.8})]
    (tmp_path / "metrics.json").write_text("old")
    write_tables(per_case, summarize(per_case), tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["per_case"][0]["case"] == "c1"
    assert len(list(tmp_path.iterdir())) == 3


def test_format_summary_table_shows_mean_std_and_undefined_counts():
    per_case = [_case("c1", {"a": 0.8, "b": 0.6}), _case("c2", {"a": 0.4, "b": nan})]
    text = format_summary_table(summarize(per_case), metrics=("dice", "hd95"))
    lines = text.splitlines()
    assert lines[0].split() == ["class", "dice", "hd95"]
    assert "0.600 ± 0.200" in lines[2] and lines[2].startswith("a")
    assert "(1 undef.)" in lines[3]
    assert lines[4].startswith("mean") and "0.550 ± 0.150" in lines[4]
    assert "2 cases" in lines[-1]


# ---------------------------------------------------------------- confusion matrix and aggregates


def test_confusion_matrix_counts_reference_rows_and_prediction_columns_inside_the_roi():
    matrix = confusion_matrix(PRED, REF, 3, roi=ROI, ignore_label=255)
    assert matrix.tolist() == [[2, 0, 0], [0, 2, 1], [1, 0, 3]]  # 9 counted pixels, see above
    everything = confusion_matrix(PRED, np.where(REF == 255, 0, REF), 3)
    # adds (0,0) bg->bg, (1,0) bg->a, (2,2) bg->a (the former ignore pixel, now bg)
    assert everything.tolist() == [[3, 2, 0], [0, 2, 1], [1, 0, 3]]


def test_confusion_matrix_names_a_label_outside_the_classes():
    with pytest.raises(SeglabError, match="reference label 255 is outside the 3 classes"):
        confusion_matrix(PRED, REF, 3)
    with pytest.raises(SeglabError, match="prediction label 2 is outside the 2 classes"):
        confusion_matrix(PRED, np.zeros_like(REF), 2)


M1 = [[2, 0, 0], [0, 2, 1], [1, 0, 3]]  # the ROI case above
M2 = [[3, 1, 0], [0, 0, 0], [0, 1, 1]]  # class "a" absent from the reference, predicted twice


def _confusion_case(case_id, matrix):
    case = _case(case_id, {"a": 0.5, "b": 0.5})
    return {**case, "class_names": ["bg", "a", "b"], "confusion": matrix}


def test_summarize_macro_means_the_classes_case_means_with_and_without_background():
    agg = summarize([_confusion_case("c1", M1), _confusion_case("c2", M2)])["aggregates"]
    # dice per case: c1 bg 4/5, a 4/5, b 6/8 ; c2 bg 6/7, a 0 (FP 2 only), b 2/3
    a, b, bg = (4 / 5 + 0) / 2, (6 / 8 + 2 / 3) / 2, (4 / 5 + 6 / 7) / 2
    assert agg["macro_fg"]["dice"] == pytest.approx({"value": (a + b) / 2, "n_classes": 2, "undefined_classes": 0})
    assert agg["macro_all"]["dice"]["value"] == pytest.approx((bg + a + b) / 3)
    # recall of "a" in c2 is undefined (empty reference): a's mean is c1's 2/3 alone
    assert agg["macro_fg"]["recall"]["value"] == pytest.approx((2 / 3 + (3 / 4 + 1 / 2) / 2) / 2)
    # seg_accuracy: a c1 1 - 1/3, c2 NaN ; b c1 1 - 2/4, c2 1 - 1/2
    assert agg["macro_fg"]["seg_accuracy"]["value"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_summarize_macro_counts_a_class_undefined_in_every_case():
    agg = summarize([_confusion_case("c2", M2)])["aggregates"]
    assert agg["macro_fg"]["recall"] == pytest.approx({"value": 1 / 2, "n_classes": 1, "undefined_classes": 1})


def test_summarize_micro_pools_counts_over_cases_and_classes():
    s = summarize([_confusion_case("c1", M1), _confusion_case("c2", M2)])
    assert s["confusion"] == {"classes": ["bg", "a", "b"], "matrix": [[5, 1, 0], [0, 2, 1], [1, 1, 4]]}
    micro_fg, micro_all = s["aggregates"]["micro_fg"], s["aggregates"]["micro_all"]
    # foreground pooled: a TP 2 FP 2 FN 1, b TP 4 FP 1 FN 2 -> TP 6 FP 3 FN 3
    assert micro_fg["dice"] == pytest.approx(12 / 18) and micro_fg["iou"] == pytest.approx(6 / 12)
    assert micro_fg["precision"] == pytest.approx(6 / 9) and micro_fg["seg_accuracy"] == pytest.approx(1 - 6 / 9)
    # all classes: + bg TP 5 FP 1 FN 1 ; single-label micro precision = recall = pixel accuracy 11/15
    assert micro_all["precision"] == micro_all["recall"] == micro_all["dice"] == pytest.approx(11 / 15)
    assert s["pooled_classes"]["a"]["dice"] == pytest.approx(4 / 7)  # a pooled: TP 2 FP 2 FN 1


def test_write_tables_writes_the_confusion_matrix_and_the_named_aggregates(tmp_path):
    per_case = [_confusion_case("c1", M1), _confusion_case("c2", M2)]
    paths = write_tables(per_case, summarize(per_case), tmp_path)
    assert {p.name for p in paths} == {"metrics_per_case.csv", "metrics_summary.csv", "metrics.json",
                                       "confusion.csv", "metrics_aggregates.csv"}
    rows = list(csv.reader((tmp_path / "confusion.csv").open()))
    assert rows == [["reference \\ prediction", "bg", "a", "b"], ["bg", "5", "1", "0"],
                    ["a", "0", "2", "1"], ["b", "1", "1", "4"]]
    aggregates = {(r["aggregate"], r["metric"]): r for r in csv.DictReader((tmp_path / "metrics_aggregates.csv").open())}
    assert float(aggregates["micro_fg", "dice"]["value"]) == pytest.approx(2 / 3)
    assert aggregates["macro_fg", "recall"]["n_classes"] == "2"
    assert float(aggregates["pooled:a", "dice"]["value"]) == pytest.approx(4 / 7)
    text = format_summary_table(summarize(per_case), metrics=("dice", "hd95"))
    assert [line.split()[:2] for line in text.splitlines()[-3:-1]] == [["macro_fg", "0.554"], ["micro_fg", "0.667"]]


def test_format_summary_table_reads_nulls_back_from_metrics_json(tmp_path):
    per_case = [_case("c1", {"a": nan})]
    write_tables(per_case, summarize(per_case), tmp_path)
    summary = json.loads((tmp_path / "metrics.json").read_text())["summary"]
    assert "n/a (1 undef.)" in format_summary_table(summary)


# ---------------------------------------------------------------- ROC AUC


def test_roc_auc_is_the_fraction_of_positive_negative_pairs_ranked_right():
    # scikit-learn's documented example: 3 of the 4 pairs ordered correctly
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)


def test_roc_auc_counts_a_tied_pair_as_one_half():
    # positives 0.5, 0.9 ; negatives 0.5, 0.2 : pairs 1/2 + 1 + 1 + 1
    assert roc_auc(np.array([[0.5, 0.5], [0.2, 0.9]]), np.array([[1, 0], [0, 1]])) == pytest.approx(3.5 / 4)


def test_roc_auc_scores_only_inside_the_roi():
    prob, ref = np.array([0.9, 0.1, 0.8, 0.3]), np.array([0, 1, 1, 0])
    assert roc_auc(prob, ref) == pytest.approx(1 / 4)  # positive 0.8 beats 0.3 only ; 0.1 beats none
    assert roc_auc(prob, ref, roi=np.array([0, 1, 1, 1])) == pytest.approx(1 / 2)
    assert roc_auc(prob, ref, roi=np.array([0, 0, 1, 1])) == 1.0  # the 0.9 negative is outside


def test_roc_auc_is_undefined_when_the_counted_reference_has_one_class():
    assert math.isnan(roc_auc([0.2, 0.7], [0, 0]))
    assert math.isnan(roc_auc([0.2, 0.7, 0.4], [1, 1, 0], roi=[1, 1, 0]))


def test_roc_auc_rejects_mismatched_shapes_and_nan_probabilities():
    with pytest.raises(SeglabError, match=r"probability map shape \(3,\)"):
        roc_auc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(SeglabError, match="NaN"):
        roc_auc([0.1, nan], [0, 1])


def test_roc_auc_cases_reports_each_case_their_mean_and_the_pooled_auc():
    result = roc_auc_cases([([0.2, 0.8], [0, 1], None), ([0.9, 0.1], [0, 1], None), ([0.3, 0.6], [0, 0], None)])
    assert result["per_case"][:2] == [1.0, 0.0] and math.isnan(result["per_case"][2])
    assert (result["mean"], result["n"], result["undefined"]) == (0.5, 2, 1)
    # pooled positives 0.8, 0.1 ; negatives 0.2, 0.9, 0.3, 0.6 : 0.8 beats 3, 0.1 beats none
    assert result["pooled"] == pytest.approx(3 / 8)


def test_roc_auc_classes_scores_each_class_against_the_rest_without_ignored_pixels():
    ref = np.array([0, 1, 2, 255])
    scores = {1: np.array([0.1, 0.9, 0.2, 0.0]), 2: np.array([0.3, 0.2, 0.1, 0.9])}
    result = roc_auc_classes([(scores, ref, None)], ["bg", "a", "b"], ignore_label=255)
    assert list(result) == ["a", "b"]
    assert result["a"]["pooled"] == 1.0  # 0.9 above 0.1 and 0.2
    # b's positive (0.1) is below both counted negatives; the ignored 0.9 is not one of them
    assert result["b"]["pooled"] == 0.0


def test_roc_auc_classes_scores_only_the_classes_every_case_has_a_map_for():
    ref = np.array([[0, 1], [1, 0]])
    cases = [({1: np.array([[0.1, 0.8], [0.7, 0.2]]), 2: np.zeros((2, 2))}, ref, None),
             ({1: np.array([[0.1, 0.8], [0.9, 0.2]])}, ref, np.array([[1, 1], [0, 1]]))]
    result = roc_auc_classes(cases, ["bg", "a", "b"])
    assert list(result) == ["a"] and result["a"]["per_case"] == [1.0, 1.0]


def test_add_roc_auc_puts_each_cases_auc_beside_its_class_metrics_and_keeps_the_totals():
    ref = np.array([0, 1, 1, 0])
    per_case = [{"case": name, "classes": {"bg": {}, "a": {"dice": 1.0}}} for name in "xy"]
    cases = [({1: np.array([0.1, 0.9, 0.8, 0.2])}, ref, None),
             ({1: np.array([0.9, 0.1, 0.8, 0.2])}, ref, None)]
    summary = add_roc_auc(per_case, roc_auc_classes(cases, ["bg", "a"]))
    # y: of its 4 positive/negative pairs only 0.8 > 0.2 is ranked right
    assert [case["classes"]["a"]["roc_auc"] for case in per_case] == [1.0, 0.25]
    # pooled, positives 0.9 0.8 0.1 0.8 over negatives 0.1 0.2 0.9 0.2: 3.5 + 3 + 0.5 + 3 of 16
    assert summary == {"a": {"mean": 0.625, "n": 2, "undefined": 0, "pooled": 10 / 16}}
    assert "roc_auc" not in per_case[0]["classes"]["bg"]


def test_format_summary_table_ends_with_each_classes_roc_auc_when_the_summary_has_it():
    case = evaluate_case(np.array([0, 1]), np.array([0, 1]), ["bg", "a"])
    summary = summarize([{"case": "c", **case}])
    summary["roc_auc"] = {"a": {"pooled": 0.97524, "mean": 0.975, "n": 8, "undefined": 1}}
    last = format_summary_table(summary).splitlines()[-1]
    assert last == ("ROC AUC a: 0.9752 pooled over the cases' pixels, 0.9750 mean over 8 cases "
                    "(1 undef.)")
