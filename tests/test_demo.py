"""The demo data: the instance demo's COCO folder holds the same objects and classes as the
semantic demo drawn from the same seed, and `demo --task instance` runs end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seglab import api
from seglab.data.demo import generate_demo_dataset, generate_instance_demo_dataset
from seglab.data.io import read_label
from seglab.data.layouts import find_dataset
from seglab.data.loading import load_case
from tests.test_train import TINY_2D


def test_the_instance_demo_has_the_semantic_demos_objects_as_a_coco_folder(tmp_path: Path) -> None:
    semantic = generate_demo_dataset(tmp_path / "semantic", n_images=8, size=64, seed=3)
    instance = find_dataset(generate_instance_demo_dataset(tmp_path / "coco", n_images=8, size=64,
                                                           seed=3))
    assert (instance.layout, instance.task) == ("COCO", "instance")
    assert instance.classes == ["background", "cell", "crystal"]
    assert sorted(instance.split["test"]) == ["demo_003", "demo_007"]
    for ref in instance.cases:
        case = load_case(instance, ref)
        label = read_label(semantic / "labels" / f"{ref.case_id}.png")
        assert np.array_equal(case.label, label)
        assert case.instances.count >= len(np.unique(label)) - 1 >= 1


def test_demo_task_instance_trains_and_scores_objects(tmp_path: Path) -> None:
    run, summary = api.demo(tmp_path, progress=False, task="instance",
                            overrides={**TINY_2D, "time_budget_minutes": None})
    assert run.plan().task == "instance"
    objects = summary["objects"]
    assert objects["n_ref"] > 0 and "pooled_class_accuracy" in objects
