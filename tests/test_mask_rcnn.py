"""Mask R-CNN as an instance method: its targets and outputs on known arrays, the planner's
choice between it and the rim watershed, and a run end to end on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seglab import api
from seglab.data.inspect import Fingerprint
from seglab.data.io import read_label
from seglab.errors import SeglabError
from seglab.instance_split import choose_score_threshold
from seglab.data.instances import Instances
from seglab.models.mask_rcnn import build_mask_rcnn, objects_from_detections
from seglab.plan_instances import detector_model, instance_method
from seglab.train.detection import object_targets
from tests.test_instance_runs import _nuclei_dataset


def test_object_targets_box_each_object_with_its_class_and_mask() -> None:
    ids = np.zeros((20, 30), np.int32)
    ids[2:5, 3:9] = 1
    ids[10:20, 25:30] = 4
    target = object_targets(ids, {1: 2, 4: 1, 7: 1})  # id 7 is not in the crop
    assert target["boxes"].tolist() == [[3, 2, 9, 5], [25, 10, 30, 20]]
    assert target["labels"].tolist() == [2, 1]
    assert target["masks"].shape == (2, 20, 30) and target["masks"][1].sum() == 50
    empty = object_targets(np.zeros((8, 8), np.int32), {})
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 8, 8)


def _detections(scores: list[float], masks: list[np.ndarray], labels: list[int]) -> dict:
    return {"scores": torch.tensor(scores), "labels": torch.tensor(labels),
            "masks": torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)),
            "boxes": torch.zeros(len(scores), 4)}


def test_detections_below_the_score_or_mask_threshold_are_left_out() -> None:
    first, second = np.zeros((10, 10)), np.zeros((10, 10))
    first[1:4, 1:4] = 0.9
    first[4, 1:4] = 0.4  # under the mask threshold
    second[6:9, 6:9] = 0.8
    found = objects_from_detections(_detections([0.9, 0.3], [first, second], [2, 1]), 0.5, 0.5)
    assert found.count == 1 and found.classes == {1: 2}
    assert np.count_nonzero(found.ids) == 9
    both = objects_from_detections(_detections([0.9, 0.3], [first, second], [2, 1]), 0.2, 0.5)
    assert sorted(both.classes.values()) == [1, 2]


def test_the_score_threshold_is_chosen_by_the_validation_dsb_score() -> None:
    real, spurious = np.zeros((10, 10)), np.zeros((10, 10))
    real[1:5, 1:5], spurious[6:9, 6:9] = 1.0, 1.0
    reference = Instances((real > 0).astype(np.int32), {1: 1})
    report = choose_score_threshold([_detections([0.95, 0.45], [real, spurious], [1, 1])],
                                    [reference], 0.5)
    assert report["score_threshold"] == 0.5  # the lowest that drops the spurious object
    assert report["validation_dsb_score"] == pytest.approx(1.0)
    assert len(report["tried"]) == 7


def _fingerprint(per_case_median: float, diameter: float, dims: int = 2) -> Fingerprint:
    fp = Fingerprint.__new__(Fingerprint)
    fp.dims = dims
    fp.objects = {"total": 100, "per_class": [0, 100],
                  "per_case": {"min": 1, "median": per_case_median, "max": 60},
                  "diameter": {"p10": diameter / 3, "median": diameter, "p90": 3 * diameter}}
    return fp


def test_the_planner_boxes_few_large_objects_and_splits_crowded_small_ones() -> None:
    assert instance_method(_fingerprint(5, 80), {})[0] == "mask_rcnn"
    assert instance_method(_fingerprint(30, 80), {})[0] == "rim_watershed"  # crowded
    assert instance_method(_fingerprint(5, 10), {})[0] == "rim_watershed"  # small
    assert instance_method(_fingerprint(5, 80, dims=3), {})[0] == "rim_watershed"
    assert instance_method(_fingerprint(30, 10), {"instances.method": "mask_rcnn"}) == (
        "mask_rcnn", "named by the user")
    assert instance_method(_fingerprint(5, 80), {"model.name": "unet"})[0] == "rim_watershed"
    assert instance_method(_fingerprint(30, 10), {"model": {"name": "mask_rcnn"}})[0] == \
        "mask_rcnn"
    model = detector_model(_fingerprint(5, 60))
    anchors = model["anchor_sizes"]
    assert len(anchors) == 5 and anchors[0] == 20 and anchors[-1] >= 270
    assert model["detections"] == 120  # twice the most crowded image


def test_the_detector_trains_from_imagenet_weights_in_both_modes() -> None:
    torch.manual_seed(0)
    model = build_mask_rcnn(1, 2, anchor_sizes=[8, 16, 32, 64, 128], detections=20)
    ids = np.zeros((64, 64), np.int32)
    ids[10:30, 12:28] = 1
    target = object_targets(ids, {1: 1})
    losses = model.train()([torch.randn(1, 64, 64)], [target])
    assert set(losses) >= {"loss_classifier", "loss_mask", "loss_objectness"}
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        found = model.eval()([torch.randn(1, 48, 40)])[0]
    assert found["masks"].shape[1:] == (1, 48, 40)  # not resized: the input's own size


def test_a_mask_rcnn_run_trains_chooses_its_threshold_and_predicts_objects(
        tmp_path: Path) -> None:
    data = _nuclei_dataset(tmp_path / "data", cases=8)
    overrides = {"instances.method": "mask_rcnn", "epochs": 2, "iterations_per_epoch": 2,
                 "patch_size": [32, 32], "time_budget_minutes": 5.0}
    run = api.train(data, tmp_path / "run", overrides, progress=False)
    plan = run.plan()
    assert plan.classes == ["background", "nucleus"] and plan.model["name"] == "mask_rcnn"
    assert plan.instances["method"] == "mask_rcnn"
    timed = plan.planning["budget"]["candidates"][0]  # the budget timed the detector itself
    assert timed["network"] == "mask_rcnn" and timed["seconds_per_step"] > 0
    assert (plan.epochs, plan.iterations_per_epoch) == (2, 2)  # as the user set them
    assert len(run.log()) == 2 and "mean_dice" in run.log()[-1]
    assert "score_threshold" in run.read_json("instance_split.json")
    summary = json.loads((run.path / "evaluation" / "metrics.json").read_text())["summary"]
    assert summary["objects"]["n_ref"] > 0

    api.predict(run.path, [data / "cells" / "c00" / "images" / "c00.png"], tmp_path / "pred")
    ids = read_label(tmp_path / "pred" / "c00.png")
    assert ids.shape == (40, 40)
    rows = (tmp_path / "pred" / "objects.csv").read_text().splitlines()
    assert len(rows) - 1 == len(np.unique(ids)) - 1
    with pytest.raises(SeglabError, match="--probabilities: .* is an instance run"):
        api.predict(run.path, [data / "cells" / "c00" / "images" / "c00.png"], tmp_path / "p2",
                    probabilities=True)
    assert not (tmp_path / "p2").exists()
