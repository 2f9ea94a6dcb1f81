"""seglab.metrics against independent implementations on 100 random 2D and 100 random anisotropic
3D cases each: MONAI (overlap, HD95, ASSD, surface Dice, confusion counts), medpy (overlap, ASSD,
and its different HD95), scikit-learn (ROC AUC, confusion matrix, per-class and micro scores)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy
from monai.metrics import (
    compute_average_surface_distance,
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    compute_surface_dice,
    get_confusion_matrix,
)
from monai.metrics.utils import get_mask_edges
from scipy import ndimage
from sklearn import metrics as skm

from seglab.metrics import binary_metrics, confusion_matrix, evaluate_case, roc_auc, roc_auc_cases, summarize
from seglab.metrics.binary import _border, _surface_distances

# MONAI's own internal call to its get_mask_edges trips its deprecation of always_return_as_numpy
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
SHAPES = (((32, 32), (0.7, 1.3)), ((12, 12, 8), (1.0, 0.8, 3.0)))  # (shape, spacing in mm)
N_CASES = 100  # per shape
# No distance sqrt(sum((k_i * spacing_i)^2)) of either grid equals these, so float32 (MONAI) and
# float64 (seglab) cannot fall on different sides of a tolerance.
TOLERANCES = (1.5, 2.5)


def _blob(rng, shape, sigma, keep):
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise > np.quantile(noise, 1 - keep)


def _random_pairs():
    """Seeded (pred, ref, spacing) blob pairs, N_CASES per shape; many touch the array border."""
    rng = np.random.default_rng(1234)
    pairs = []
    for shape, spacing in SHAPES:
        for i in range(N_CASES):
            ref = np.ones(shape, bool) if i == 0 else _blob(rng, shape, 1.5, rng.uniform(0.1, 0.6))
            pred = ref ^ _blob(rng, shape, 1.0, 0.1) if i % 3 else _blob(rng, shape, 1.5, 0.3)
            pairs.append((pred, ref, spacing))
    return pairs


PAIRS = _random_pairs()


def _onehot(mask):
    return torch.as_tensor(mask[None, None], dtype=torch.float32)


def _touches_border(mask):
    return any(np.take(mask, idx, axis=ax).any() for ax in range(mask.ndim) for idx in (0, -1))


def test_random_pairs_are_non_empty_and_mostly_touch_the_array_border():
    assert len(PAIRS) == 2 * N_CASES
    assert all(pred.any() and ref.any() for pred, ref, _ in PAIRS)
    assert sum(_touches_border(pred) or _touches_border(ref) for pred, ref, _ in PAIRS) >= 150


def test_surface_is_the_same_border_as_monai_get_mask_edges():
    for pred, ref, _ in PAIRS:
        edges_pred, edges_ref = get_mask_edges(pred, ref, crop=False)
        assert np.array_equal(_border(pred), edges_pred) and np.array_equal(_border(ref), edges_ref)


def test_overlap_metrics_agree_with_monai_confusion_metrics_to_1e6():
    for i, (pred, ref, spacing) in enumerate(PAIRS):
        ours = binary_metrics(pred, ref, spacing)
        p, r = _onehot(pred), _onehot(ref)
        cm = get_confusion_matrix(p, r, include_background=True)
        tp, fp, tn, fn = (cm[0, 0, k].item() for k in range(4))
        theirs = {
            "dice": compute_dice(p, r, include_background=True).item(),
            "iou": compute_iou(p, r, include_background=True).item(),
            "precision": compute_confusion_matrix_metric("precision", cm).item(),
            "recall": compute_confusion_matrix_metric("sensitivity", cm).item(),
            "f1": compute_confusion_matrix_metric("f1 score", cm).item(),
            "accuracy": compute_confusion_matrix_metric("accuracy", cm).item(),
            "seg_accuracy": 1 - (fp + fn) / (tp + fn),  # the definition, from MONAI's own counts
        }
        for metric, value in theirs.items():
            assert ours[metric] == pytest.approx(value, abs=1e-6), (i, metric)


def test_overlap_metrics_agree_with_scikit_learn_and_medpy_to_1e6():
    for i, (pred, ref, spacing) in enumerate(PAIRS):
        ours = binary_metrics(pred, ref, spacing)
        y_true, y_pred = ref.ravel(), pred.ravel()
        theirs = {
            "dice": medpy.dc(pred, ref),
            "iou": skm.jaccard_score(y_true, y_pred),
            "precision": skm.precision_score(y_true, y_pred),
            "recall": skm.recall_score(y_true, y_pred),
            "f1": skm.f1_score(y_true, y_pred),
            "accuracy": skm.accuracy_score(y_true, y_pred),
        }
        assert medpy.jc(pred, ref) == pytest.approx(theirs["iou"], abs=1e-12)
        for metric, value in theirs.items():
            assert ours[metric] == pytest.approx(value, abs=1e-6), (i, metric)


def test_hd95_and_assd_agree_with_monai_to_float32_precision():
    """rtol 1e-5 because MONAI returns float32 distances; redone in float32 ours agree to 1e-6."""
    for i, (pred, ref, spacing) in enumerate(PAIRS):
        ours = binary_metrics(pred, ref, spacing)
        p, r, sp = _onehot(pred), _onehot(ref), list(spacing)
        hd95 = compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=sp).item()
        assd = compute_average_surface_distance(p, r, include_background=True, symmetric=True, spacing=sp).item()
        assert ours["hd95"] == pytest.approx(hd95, rel=1e-5, abs=1e-6), i
        assert ours["assd"] == pytest.approx(assd, rel=1e-5, abs=1e-6), i
        to_ref, to_pred = (torch.as_tensor(d, dtype=torch.float32) for d in _surface_distances(pred, ref, spacing))
        assert torch.max(torch.quantile(to_ref, 0.95), torch.quantile(to_pred, 0.95)).item() == pytest.approx(
            hd95, abs=1e-6
        )
        assert torch.cat([to_ref, to_pred]).mean().item() == pytest.approx(assd, abs=1e-6)


def test_assd_agrees_with_medpy_whose_hd95_is_the_percentile_of_the_pooled_distances():
    """medpy's hd95 pools both directions before the percentile; seglab (as MONAI) takes the larger
    of the two directed percentiles. The test pins both definitions and that they really differ."""
    differ = 0
    for i, (pred, ref, spacing) in enumerate(PAIRS):
        ours = binary_metrics(pred, ref, spacing)
        assert ours["assd"] == pytest.approx(medpy.assd(pred, ref, voxelspacing=spacing), abs=1e-9), i
        to_ref, to_pred = _surface_distances(pred, ref, spacing)
        pooled = np.percentile(np.concatenate([to_ref, to_pred]), 95)
        assert medpy.hd95(pred, ref, voxelspacing=spacing) == pytest.approx(pooled, abs=1e-9), i
        assert ours["hd95"] == pytest.approx(max(np.percentile(to_ref, 95), np.percentile(to_pred, 95)), abs=1e-12)
        assert pooled <= ours["hd95"] + 1e-9, i
        differ += not math.isclose(ours["hd95"], pooled, abs_tol=1e-6)
    assert differ >= 20


@pytest.mark.parametrize("tolerance", TOLERANCES)
def test_nsd_agrees_with_monai_compute_surface_dice(tolerance):
    for i, (pred, ref, spacing) in enumerate(PAIRS):
        ours = binary_metrics(pred, ref, spacing, nsd_tolerance=tolerance)["nsd"]
        theirs = compute_surface_dice(
            _onehot(pred), _onehot(ref), [tolerance], include_background=True, spacing=list(spacing)
        ).item()
        assert ours == pytest.approx(theirs, abs=1e-6), (i, tolerance)


@pytest.mark.filterwarnings("ignore:the (ground truth|prediction) of class 0 is all 0:UserWarning")
def test_nsd_both_empty_is_one_where_monai_returns_nan():
    empty = np.zeros((6, 6), bool)
    assert binary_metrics(empty, empty)["nsd"] == 1.0
    assert math.isnan(compute_surface_dice(_onehot(empty), _onehot(empty), [1.0], include_background=True).item())


# ---------------------------------------------------------------- multi-class label maps

K, IGNORE = 4, 255


def _random_label_maps():
    """Seeded (pred, ref, roi, spacing) label maps with K classes, an ignore label and an ROI."""
    rng = np.random.default_rng(99)
    cases = []
    for shape, spacing in SHAPES:
        for _ in range(N_CASES):
            ref = np.digitize(ndimage.gaussian_filter(rng.standard_normal(shape), 1.5), [-0.15, 0.0, 0.15])
            pred = np.where(rng.random(shape) < 0.15, rng.integers(0, K, shape), ref)
            ref[rng.random(shape) < 0.03] = IGNORE
            cases.append((pred, ref, _blob(rng, shape, 2.0, 0.8), spacing))
    return cases


LABEL_MAPS = _random_label_maps()


def _counted(pred, ref, roi):
    keep = roi & (ref != IGNORE)
    return pred[keep], ref[keep]


def test_confusion_matrix_agrees_with_scikit_learn_and_monai_counts():
    for i, (pred, ref, roi, _) in enumerate(LABEL_MAPS):
        ours = confusion_matrix(pred, ref, K, roi=roi, ignore_label=IGNORE)
        y_pred, y_true = _counted(pred, ref, roi)
        assert np.array_equal(ours, skm.confusion_matrix(y_true, y_pred, labels=range(K))), i
        keep = torch.as_tensor(roi & (ref != IGNORE))
        onehot = [torch.stack([torch.as_tensor(m == c) & keep for c in range(K)])[None].float() for m in (pred, ref)]
        monai_cm = get_confusion_matrix(*onehot, include_background=True)[0]  # per class: tp, fp, tn, fn
        for c in range(K):
            tp, fp, fn = ours[c, c], ours[:, c].sum() - ours[c, c], ours[c].sum() - ours[c, c]
            assert monai_cm[c, [0, 1, 3]].tolist() == [tp, fp, fn], (i, c)


def test_per_class_metrics_of_label_maps_agree_with_scikit_learn():
    for i, (pred, ref, roi, spacing) in enumerate(LABEL_MAPS):
        result = evaluate_case(pred, ref, ["bg", "a", "b", "c"], spacing, roi, IGNORE, include_background=True)
        y_pred, y_true = _counted(pred, ref, roi)
        assert result["pixel_accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-12)
        sk = {
            "precision": skm.precision_score(y_true, y_pred, labels=range(K), average=None, zero_division=np.nan),
            "recall": skm.recall_score(y_true, y_pred, labels=range(K), average=None, zero_division=np.nan),
            # zero_division=1: a class absent from both maps scores 1, seglab's both-empty rule
            "dice": skm.f1_score(y_true, y_pred, labels=range(K), average=None, zero_division=1),
            "iou": skm.jaccard_score(y_true, y_pred, labels=range(K), average=None, zero_division=1),
        }
        for c, metrics in enumerate(result["classes"].values()):
            for metric, values in sk.items():
                assert metrics[metric] == pytest.approx(values[c], abs=1e-6, nan_ok=True), (i, c, metric)


def test_micro_and_macro_aggregates_agree_with_scikit_learn_on_pooled_pixels():
    for shape_index in range(len(SHAPES)):
        maps = LABEL_MAPS[shape_index * N_CASES : (shape_index + 1) * N_CASES]
        per_case = [evaluate_case(p, r, ["bg", "a", "b", "c"], s, roi, IGNORE) for p, r, roi, s in maps]
        agg = summarize(per_case)["aggregates"]
        y_pred, y_true = (np.concatenate(a) for a in zip(*(_counted(p, r, roi) for p, r, roi, _ in maps)))
        for name, labels in (("micro_fg", [1, 2, 3]), ("micro_all", [0, 1, 2, 3])):
            kw = dict(labels=labels, average="micro")
            assert agg[name]["precision"] == pytest.approx(skm.precision_score(y_true, y_pred, **kw), abs=1e-6)
            assert agg[name]["recall"] == pytest.approx(skm.recall_score(y_true, y_pred, **kw), abs=1e-6)
            assert agg[name]["dice"] == pytest.approx(skm.f1_score(y_true, y_pred, **kw), abs=1e-6)
            assert agg[name]["iou"] == pytest.approx(skm.jaccard_score(y_true, y_pred, **kw), abs=1e-6)
        per_class = np.array([
            skm.f1_score(*_counted(p, r, roi)[::-1], labels=[1, 2, 3], average=None, zero_division=np.nan)
            for p, r, roi, _ in maps
        ])
        assert agg["macro_fg"]["dice"]["value"] == pytest.approx(np.nanmean(np.nanmean(per_class, axis=0)), abs=1e-6)


def _random_probability_maps():
    """Seeded (prob, ref, roi) with probabilities rounded to 1/20 so that many scores tie."""
    rng = np.random.default_rng(7)
    cases = []
    for shape, _ in SHAPES:
        for _ in range(N_CASES):
            ref = _blob(rng, shape, 1.5, rng.uniform(0.05, 0.4))
            prob = np.round(np.clip(0.35 * ref + 0.65 * rng.random(shape), 0, 1) * 20) / 20
            cases.append((prob, ref, _blob(rng, shape, 2.0, 0.85)))
    return cases


PROBABILITY_MAPS = _random_probability_maps()


def test_roc_auc_agrees_with_scikit_learn_inside_the_roi_ties_included():
    for i, (prob, ref, roi) in enumerate(PROBABILITY_MAPS):
        assert len(np.unique(prob[roi])) < prob[roi].size  # ties are present
        expected = skm.roc_auc_score(ref[roi], prob[roi])
        assert roc_auc(prob, ref, roi) == pytest.approx(expected, abs=1e-6), i


def test_pooled_roc_auc_agrees_with_scikit_learn_on_all_cases_pixels():
    result = roc_auc_cases(PROBABILITY_MAPS)
    y_true = np.concatenate([ref[roi] for _, ref, roi in PROBABILITY_MAPS])
    y_score = np.concatenate([prob[roi] for prob, _, roi in PROBABILITY_MAPS])
    assert result["pooled"] == pytest.approx(skm.roc_auc_score(y_true, y_score), abs=1e-6)
    assert result["mean"] == pytest.approx(np.mean(result["per_case"]), abs=1e-12) and result["undefined"] == 0
