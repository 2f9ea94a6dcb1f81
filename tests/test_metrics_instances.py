"""Object-level scores on hand-built instance masks whose matchings are known, and the IoU matrix
against a plain loop over objects."""

from __future__ import annotations

import numpy as np
import pytest

from seglab.metrics.instances import (Objects, average_precision, dsb_score, instance_scores,
                                      iou_matrix, object_scores, panoptic_quality)


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


def test_class_accuracy_counts_the_matches_that_have_the_references_class() -> None:
    ref, pred = _blank(), _blank()
    ref[0:5, 0:5], ref[10:15, 10:15], ref[0:3, 15:18] = 1, 2, 3
    pred[0:5, 0:5], pred[10:15, 10:15] = 4, 5  # both found, the second with the wrong class
    scores = instance_scores(pred, ref, None, {4: 1, 5: 1}, {1: 1, 2: 2, 3: 1})
    assert (scores["tp"], scores["same_class"], scores["class_accuracy"]) == (2, 1, 0.5)
    assert np.isnan(instance_scores(_blank(), ref, None, {}, {1: 1, 2: 2, 3: 1})[
        "class_accuracy"])


def test_matching_below_an_iou_of_one_half_is_refused() -> None:
    with pytest.raises(ValueError, match="assignment"):
        object_scores(np.array([[0.4]]), threshold=0.3)


def _random_objects(rng: np.random.Generator, n: int, shape=(24, 32), classes=(1, 2, 3),
                    scored: bool = False) -> Objects:
    masks = np.zeros((n, *shape), bool)
    for k in range(n):
        top, left = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        masks[k, top:top + rng.integers(3, 12), left:left + rng.integers(3, 14)] = True
    return Objects(masks, rng.choice(classes, n),
                   np.round(rng.random(n), 2) if scored else None,  # ties on purpose
                   None if scored else rng.random(n) < 0.1)


def _pycocotools_ap(predictions, references) -> dict:
    """The same objects through pycocotools' COCOeval (segm)."""
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(mask):
        encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": encoded["size"], "counts": encoded["counts"].decode()}

    images, annotations, results = [], [], []
    for image_id, (pred, ref) in enumerate(zip(predictions, references), 1):
        h, w = ref.masks.shape[1:]
        images.append({"id": image_id, "height": int(h), "width": int(w)})
        for mask, c, crowd in zip(ref.masks, ref.classes, ref.crowd):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(c), "segmentation": rle(mask),
                                "area": float(mask.sum()), "iscrowd": int(crowd),
                                "bbox": [0, 0, 1, 1]})
        for mask, c, score in zip(pred.masks, pred.classes, pred.scores):
            results.append({"image_id": image_id, "category_id": int(c),
                             "segmentation": rle(mask), "score": float(score)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": c} for c in (1, 2, 3)]}
    gt.createIndex()
    evaluation = COCOeval(gt, gt.loadRes(results), "segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    precision = evaluation.eval["precision"][:, :, :, 0, 2]  # all areas, 100 detections
    per_class = {}
    for k, c in enumerate(evaluation.params.catIds):
        valid = precision[:, :, k][precision[:, :, k] > -1]
        if valid.size:
            per_class[c] = float(valid.mean())
    return {"ap": evaluation.stats[0], "ap50": evaluation.stats[1], "ap75": evaluation.stats[2],
            "per_class": per_class}


def test_mask_ap_agrees_with_pycocotools_on_random_overlapping_objects_with_crowds() -> None:
    rng = np.random.default_rng(1)
    for trial in range(4):
        references = [_random_objects(rng, rng.integers(0, 8)) for _ in range(6)]
        predictions = []
        for ref in references:  # jittered copies of the references, some dropped, plus noise
            keep = rng.random(len(ref.classes)) < 0.8
            shifted = np.roll(ref.masks[keep], rng.integers(-2, 3), axis=2)
            noise = _random_objects(rng, rng.integers(0, 5), scored=True)
            predictions.append(Objects(
                np.concatenate([shifted, noise.masks]),
                np.concatenate([ref.classes[keep], noise.classes]),
                np.concatenate([np.round(rng.random(keep.sum()), 2), noise.scores])))
        ours, theirs = average_precision(predictions, references), _pycocotools_ap(
            predictions, references)
        for name in ("ap", "ap50", "ap75"):
            assert ours[name] == pytest.approx(theirs[name], abs=1e-6), (trial, name)
        assert ours["per_class"] == pytest.approx(theirs["per_class"], abs=1e-6)


def test_mask_ap_is_one_for_perfect_predictions_and_scores_3d_objects() -> None:
    masks = np.zeros((2, 4, 6, 6), bool)
    masks[0, :2, :3, :3], masks[1, 2:, 3:, 3:] = True, True
    references = [Objects(masks, np.array([1, 2]), crowd=np.zeros(2, bool))]
    perfect = [Objects(masks, np.array([1, 2]), np.array([0.9, 0.8]))]
    assert average_precision(perfect, references)["ap"] == pytest.approx(1.0)
    swapped = [Objects(masks, np.array([2, 1]), np.array([0.9, 0.8]))]
    assert average_precision(swapped, references)["ap"] == 0.0


def test_ap_reads_an_empty_crowd_list_of_an_image_without_objects() -> None:
    """`np.array([])` is float: an image with no reference objects must not break the crowd mask."""
    empty = Objects(np.zeros((0, 4, 4), bool), np.zeros(0, int), crowd=np.array([]))
    found = Objects(np.ones((1, 4, 4), bool), np.array([1]), np.array([0.9]))
    no_crowd = Objects(np.zeros((0, 4, 4), bool), np.zeros(0, int))
    hit = Objects(np.ones((1, 4, 4), bool), np.array([1]), np.array([0.5]))
    one = Objects(np.ones((1, 4, 4), bool), np.array([1]))
    read = average_precision([found, hit], [empty, one])
    assert read == average_precision([found, hit], [no_crowd, one]) and 0 < read["ap"] < 1
