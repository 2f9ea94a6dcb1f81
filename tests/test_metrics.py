"""seglab.metrics: hand-computed answers for every metric and rule, and agreement with MONAI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    get_confusion_matrix,
)
from monai.metrics.utils import get_mask_edges
from scipy import ndimage

from seglab.errors import SeglabError
from seglab.metrics import (
    METRICS,
    _border,
    _surface_distances,
    binary_metrics,
    evaluate_case,
    format_summary_table,
    summarize,
    write_tables,
)

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
    assert set(m) == set(METRICS)


# ---------------------------------------------------------------- empty-mask rules


def test_both_empty_gives_perfect_overlap_zero_distance_and_normal_accuracy():
    empty = np.zeros((4, 5), dtype=bool)
    m = binary_metrics(empty, empty)
    assert {k: m[k] for k in ("dice", "iou", "f1", "precision", "recall")} == dict.fromkeys(
        ("dice", "iou", "f1", "precision", "recall"), 1.0
    )
    assert m["accuracy"] == 1.0
    assert m["hd95"] == 0.0 and m["assd"] == 0.0


def test_empty_reference_gives_zero_overlap_nan_recall_and_nan_distances():
    pred = _mask((4, 5), (1, 1), (1, 2))
    m = binary_metrics(pred, np.zeros_like(pred))
    assert m["dice"] == m["iou"] == m["f1"] == m["precision"] == 0.0
    assert math.isnan(m["recall"])
    assert math.isnan(m["hd95"]) and math.isnan(m["assd"])
    assert m["accuracy"] == pytest.approx(18 / 20)


def test_empty_prediction_gives_zero_overlap_nan_precision_and_nan_distances():
    ref = _mask((4, 5), (1, 1), (1, 2), (2, 2))
    m = binary_metrics(np.zeros_like(ref), ref)
    assert m["dice"] == m["iou"] == m["f1"] == m["recall"] == 0.0
    assert math.isnan(m["precision"])
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
    b = result["classes"]["b"]  # ref {(0,3),(1,2),(1,3),(2,3)}, pred {(0,2),(0,3),(1,2),(1,3)}
    assert b["dice"] == pytest.approx(6 / 8) and b["iou"] == pytest.approx(3 / 5)
    assert b["precision"] == pytest.approx(3 / 4) and b["recall"] == pytest.approx(3 / 4)
    assert b["accuracy"] == pytest.approx(7 / 9)
    assert b["hd95"] == pytest.approx(0.85) and b["assd"] == pytest.approx(2 / 8)


def test_evaluate_case_without_exclusions_counts_every_pixel():
    result = evaluate_case(PRED, REF, ["bg", "a", "b"])
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
    result = evaluate_case(PRED, REF, ["bg", "a", "b", "c"])
    assert result["classes"]["c"]["dice"] == 1.0 and result["classes"]["c"]["hd95"] == 0.0


def test_evaluate_case_shape_mismatch_raises_naming_both_shapes():
    with pytest.raises(SeglabError, match=r"\(3, 4\).*\(2, 4\)"):
        evaluate_case(PRED, REF[:2], ["bg", "a"])
    with pytest.raises(SeglabError, match=r"roi shape \(2, 4\)"):
        evaluate_case(PRED, REF, ["bg", "a"], roi=ROI[:2])


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


# ---------------------------------------------------------------- agreement with MONAI


def _random_pairs():
    """Seeded (pred, ref, spacing) blob pairs: 30 in 2D, 15 anisotropic 3D; many touch the border."""
    rng = np.random.default_rng(1234)

    def blob(shape, sigma, keep):
        noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
        return noise > np.quantile(noise, 1 - keep)

    pairs = []
    for i in range(45):
        shape, spacing = ((32, 32), (0.7, 1.3)) if i < 30 else ((16, 20, 12), (1.0, 0.8, 3.0))
        ref = blob(shape, 2.0, rng.uniform(0.1, 0.6))
        pred = ref ^ blob(shape, 1.5, 0.1) if i % 3 else blob(shape, 2.0, 0.3)
        if i in (0, 30):
            ref = np.ones(shape, dtype=bool)  # the whole array: its surface is the array's edge
        pairs.append((pred, ref, spacing))
    return pairs


PAIRS = _random_pairs()


def _onehot(mask):
    return torch.as_tensor(mask[None, None], dtype=torch.float32)


def _touches_border(mask):
    return any(np.take(mask, idx, axis=ax).any() for ax in range(mask.ndim) for idx in (0, -1))


def test_random_pairs_include_masks_touching_the_array_border():
    assert sum(_touches_border(pred) or _touches_border(ref) for pred, ref, _ in PAIRS) >= 40
    assert all(pred.any() and ref.any() for pred, ref, _ in PAIRS)


@pytest.mark.parametrize("pred, ref, spacing", PAIRS)
def test_surface_is_the_same_border_as_monai_get_mask_edges(pred, ref, spacing):
    edges_pred, edges_ref = get_mask_edges(pred, ref, crop=False)  # crop=True: see the agreement test
    assert np.array_equal(_border(pred), edges_pred) and np.array_equal(_border(ref), edges_ref)


def test_metrics_agree_with_monai_on_random_2d_and_anisotropic_3d_masks():
    """Overlap to 1e-6; hd95/assd to rtol 1e-5 because MONAI returns float32 distances."""
    for i, (pred, ref, spacing) in enumerate(PAIRS):
        ours = binary_metrics(pred, ref, spacing)
        p, r = _onehot(pred), _onehot(ref)
        cm = get_confusion_matrix(p, r, include_background=True)
        theirs = {
            "dice": compute_dice(p, r, include_background=True).item(),
            "iou": compute_iou(p, r, include_background=True).item(),
            "precision": compute_confusion_matrix_metric("precision", cm).item(),
            "recall": compute_confusion_matrix_metric("sensitivity", cm).item(),
            "hd95": compute_hausdorff_distance(
                p, r, include_background=True, percentile=95, spacing=list(spacing)
            ).item(),
            "assd": compute_average_surface_distance(
                p, r, include_background=True, symmetric=True, spacing=list(spacing)
            ).item(),
        }
        for metric in ("dice", "iou", "precision", "recall"):
            assert ours[metric] == pytest.approx(theirs[metric], abs=1e-6), (i, metric)
        for metric in ("hd95", "assd"):
            assert ours[metric] == pytest.approx(theirs[metric], rel=1e-5, abs=1e-6), (i, metric)


def test_our_distances_rounded_to_float32_reproduce_monai_to_1e6():
    """The only difference from MONAI is its float32 arithmetic: redo ours in float32 and it vanishes."""
    for pred, ref, spacing in PAIRS:
        to_ref, to_pred = (torch.as_tensor(d, dtype=torch.float32) for d in _surface_distances(pred, ref, spacing))
        hd95 = torch.max(torch.quantile(to_ref, 0.95), torch.quantile(to_pred, 0.95)).item()
        assd = torch.cat([to_ref, to_pred]).mean().item()
        p, r = _onehot(pred), _onehot(ref)
        sp = list(spacing)
        monai_hd95 = compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=sp)
        monai_assd = compute_average_surface_distance(p, r, include_background=True, symmetric=True, spacing=sp)
        assert hd95 == pytest.approx(monai_hd95.item(), abs=1e-6)
        assert assd == pytest.approx(monai_assd.item(), abs=1e-6)
