"""Cross-validation: disjoint folds that cover the training cases and never touch the test split,
each fold a resumable run, and the folds' ensemble as the run's model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seglab import api
from seglab.data.inspect import inspect_dataset
from seglab.data.layouts import find_dataset
from seglab.plan import make_plan
from seglab.run import Run, load_checkpoint
from seglab.run_setup import fold_split, planned_split
from tests.test_train import TINY_2D, _start_training, kill_after_first_checkpoint


def test_fold_validation_parts_are_disjoint_cover_the_training_cases_and_keep_the_test_split(
) -> None:
    split = {"train": [f"c{i:02d}" for i in range(23)], "val": [], "test": ["t1", "t2"]}
    folds = [fold_split(split, 5, k, seed=3) for k in range(5)]
    held_out = [set(fold["val"]) for fold in folds]
    assert sorted(len(part) for part in held_out) == [4, 4, 5, 5, 5]
    assert set().union(*held_out) == set(split["train"])
    assert sum(len(part) for part in held_out) == len(split["train"])  # disjoint
    for fold, part in zip(folds, held_out):
        assert set(fold["train"]) == set(split["train"]) - part
        assert fold["test"] == ["t1", "t2"]


def test_a_cross_validated_plan_keeps_every_non_test_case_for_training(png_dataset: Path) -> None:
    dataset = find_dataset(png_dataset)
    plan = make_plan(inspect_dataset(dataset), {"split.folds": 3, "split.test_fraction": 0.25})
    split = planned_split(dataset, plan)
    assert split["val"] == [] and len(split["test"]) == 3 and len(split["train"]) == 9


@pytest.mark.slow
def test_folds_train_in_their_own_folders_and_predict_as_the_mean_of_their_probabilities(
        png_dataset: Path, tmp_path: Path) -> None:
    run = api.train(png_dataset, tmp_path / "run", {**TINY_2D, "epochs": 1}, folds=3,
                    progress=False)
    vals = [set(run.fold(k).read_json("split.json")["val"]) for k in range(3)]
    assert set().union(*vals) == set(run.read_json("split.json")["train"])
    for k in range(3):
        assert (run.fold(k).checkpoints / "last.pt").is_file()
        assert (run.fold(k).path / "evaluation" / "metrics.json").is_file()
    assert not (run.checkpoints).exists()  # the run's model is the ensemble
    assert (run.path / "evaluation" / "metrics.json").is_file()
    tried = json.loads((run.path / "postprocessing.json").read_text())["tried"]
    assert tried  # chosen on the out-of-fold predictions

    image = png_dataset / "images" / f"{run.read_json('split.json')['test'][0]}.png"
    api.predict(run.path, [image], tmp_path / "ensemble", probabilities=True)
    members = []
    for k in range(3):
        api.predict(run.fold(k).path, [image], tmp_path / f"fold{k}", probabilities=True)
        members.append(np.load(tmp_path / f"fold{k}" / f"{image.stem}_probs.npz")["probabilities"])
    ensemble = np.load(tmp_path / "ensemble" / f"{image.stem}_probs.npz")["probabilities"]
    np.testing.assert_allclose(ensemble, np.mean(members, axis=0), atol=1e-5)


@pytest.mark.slow
def test_a_fold_killed_mid_epoch_resumes_and_finishes(png_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = _start_training(png_dataset, out, "--folds", "2", "--fold", "0",
                              "--set", "epochs=1000")  # killed long before
    last = out / "fold_0" / "checkpoints" / "last.pt"
    kill_after_first_checkpoint(process, last)
    killed_at = load_checkpoint(last)["progress"]
    assert not killed_at["finished"]
    end = killed_at["epoch"] + 2

    resumed = _start_training(None, out, "--resume", "--fold", "0", "--set", f"epochs={end}")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    assert [r["epoch"] for r in Run.open(out / "fold_0").log()] == list(range(1, end + 1))
    assert not (out / "fold_1").exists()  # only the fold asked for
