"""Object-level scores on hand-built instance masks whose matchings are known, and the IoU matrix
against a plain loop over objects."""

from __future__ import annotations

import numpy as np
import pytest

from seglab.metrics.instances import (dsb_score, instance_scores, iou_matrix, object_scores,
                                      panoptic_quality)


def _blank() -> np.ndarray:
    return np.zeros((20, 20), np.int32)


def test_no_objects_on_either_side_scores_one_and_on_one_side_zero() -> None:
    empty = instance_scores(_blank(), _blank())
    assert empty["dsb_score"] == empty["f1"] == empty["pq"] == 1.0
    ref = _blank()
    ref[2:6, 2:6], ref[10:14, 10:14] = 1, 2
    missed = instance_scores(_blank(), ref)
    assert (missed["dsb_score"], missed["f1"], missed["recall"], missed["fn"]) == (0, 0, 0, 2)
    invented = instance_scores(ref, _blank())
    assert (invented["dsb_score"], invented["precision"], invented["fp"]) == (0, 0, 2)


def test_one_object_split_in_two_matches_nothing() -> None:
    ref, pred = _blank(), _blank()
    ref[0:10, 0:10] = 5
    pred[0:10, 0:5], pred[0:10, 5:10] = 1, 2  # each half has IoU exactly 0.5: not above it
    scores = instance_scores(pred, ref)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (0, 2, 1)
    assert scores["dsb_score"] == 0 and scores["pq"] == 0


def test_two_objects_merged_into_one_match_only_the_larger_and_only_up_to_its_iou() -> None:
    ref, pred = _blank(), _blank()
    ref[0:10, 0:4], ref[0:10, 4:10] = 1, 2  # IoU 0.4 and 0.6 with the merged object
    pred[0:10, 0:10] = 7
    scores = instance_scores(pred, ref)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (1, 0, 1)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["dsb_score"] == pytest.approx(np.mean([0.5, 0.5] + [0.0] * 8))


def test_dsb_score_counts_the_thresholds_an_iou_of_0_8_passes() -> None:
    ref, pred = _blank(), _blank()
    ref[0:10, 0:10] = 3
    pred[0:10, 0:8] = 9  # IoU 80 / 100: above 0.50 ... 0.75, not above 0.80 ... 0.95
    assert iou_matrix(pred, ref) == pytest.approx(np.array([[0.8]]))
    assert instance_scores(pred, ref)["dsb_score"] == pytest.approx(0.6)


def test_panoptic_quality_is_mean_matched_iou_times_recognition() -> None:
    iou = np.array([[0.8, 0.0], [0.0, 0.1]])  # one match, one false positive, one miss
    assert panoptic_quality(iou) == pytest.approx({"pq": 0.4, "sq": 0.8, "rq": 0.5})
    assert object_scores(iou) == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5,
                                                "tp": 1, "fp": 1, "fn": 1})
    assert dsb_score(np.zeros((0, 0))) == 1.0


def test_a_prediction_mostly_inside_a_crowd_region_is_dropped_not_counted() -> None:
    ref, pred = _blank(), _blank()
    ref[0:6, 0:6] = 1
    pred[0:6, 0:6] = 1
    pred[12:18, 12:18] = 2  # inside the crowd: neither a match nor a false positive
    pred[8:12, 0:4] = 3  # a quarter inside the crowd: a false positive
    crowd = _blank().astype(bool)
    crowd[10:20, 0:20] = True
    scores = instance_scores(pred, ref, ignore=crowd)
    assert (scores["tp"], scores["fp"], scores["fn"], scores["n_pred"]) == (1, 1, 0, 2)
    assert instance_scores(pred, ref)["fp"] == 2


def test_iou_matrix_agrees_with_a_loop_over_objects_on_random_instances() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        pred = rng.integers(0, 6, (12, 9, 7)) * 3  # ids 0, 3, 6, ... : not consecutive
        ref = rng.integers(0, 5, (12, 9, 7))
        expected = np.array([[np.sum((pred == p) & (ref == r)) / np.sum((pred == p) | (ref == r))
                              for r in np.unique(ref)[1:]] for p in np.unique(pred)[1:]])
        assert iou_matrix(pred, ref) == pytest.approx(expected)


def test_matching_below_an_iou_of_one_half_is_refused() -> None:
    with pytest.raises(ValueError, match="assignment"):
        object_scores(np.array([[0.4]]), threshold=0.3)
