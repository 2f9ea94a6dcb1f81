"""Evaluating a run: the test split's masks scored, and the ROC AUC of its probability maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from seglab import api, evaluate
from seglab.data.io import read_label
from seglab.evaluate import evaluate_run
from seglab.uncertainty import entropy
from tests.test_train import TINY_2D


def test_the_roc_auc_is_that_of_the_probability_maps_predict_writes(
        png_dataset: Path, tmp_path: Path) -> None:
    run = api.train(png_dataset, tmp_path / "run", TINY_2D, progress=False, evaluate=False)
    summary = evaluate_run(run)
    test = run.read_json("split.json")["test"]
    api.predict(run.path, [png_dataset / "images" / f"{case}.png" for case in test],
                tmp_path / "pred", probabilities=True)
    expected = []
    for case in test:
        foreground = np.load(tmp_path / "pred" / f"{case}_probs.npz")["probabilities"][1]
        truth = read_label(png_dataset / "labels" / f"{case}.png") > 0
        expected.append(roc_auc_score(truth.ravel(), foreground.ravel()))
    name = run.plan().classes[1]
    written = json.loads((run.path / "evaluation" / "metrics.json").read_text())
    per_case = [case["classes"][name]["roc_auc"] for case in written["per_case"]]
    np.testing.assert_allclose(per_case, expected, atol=1e-6)
    auc = written["summary"]["roc_auc"][name]
    assert auc["mean"] == pytest.approx(np.mean(expected)) and auc["n"] == len(test)
    assert auc == summary["roc_auc"][name]
    assert 0 <= auc["pooled"] <= 1
    # the entropy of the same probabilities, against the pixels the masks got wrong
    pooled_entropy, pooled_error = [], []
    for case, scored in zip(test, written["per_case"]):
        probs = np.load(tmp_path / "pred" / f"{case}_probs.npz")["probabilities"]
        truth = read_label(png_dataset / "labels" / f"{case}.png") > 0
        wrong = (read_label(run.path / "predictions" / "test" / f"{case}.png") > 0) != truth
        unsure = entropy(probs)
        assert scored["uncertainty"]["mean_entropy"] == pytest.approx(unsure.mean(), abs=1e-5)
        pooled_entropy.append(unsure.ravel())
        pooled_error.append(wrong.ravel())
    errors = np.concatenate(pooled_error)
    if 0 < errors.sum() < errors.size:
        assert summary["uncertainty"]["error_auc"]["pooled"] == pytest.approx(
            roc_auc_score(errors, np.concatenate(pooled_entropy)), abs=1e-6)


def test_another_folder_keeps_the_runs_own_evaluation_and_applies_the_steps_given(
        png_dataset: Path, tmp_path: Path) -> None:
    run = api.train(png_dataset, tmp_path / "run", TINY_2D, progress=False, evaluate=False)
    own = evaluate_run(run)
    report = (run.path / "report.html").stat().st_mtime_ns
    steps = [{"op": "fill_holes", "class": 1}, {"op": "largest_component", "class": 1}]
    other = evaluate_run(run, variants={"evaluation-filled": steps})
    assert (run.path / "report.html").stat().st_mtime_ns == report
    kept = json.loads((run.path / "evaluation" / "metrics.json").read_text())["summary"]
    assert kept["mean"]["dice"] == own["mean"]["dice"]
    masks = sorted((run.path / "predictions" / "test-evaluation-filled").iterdir())
    assert len(masks) == len(run.read_json("split.json")["test"])
    for path in masks:
        mask = read_label(path) > 0
        assert ndimage.label(mask, np.ones((3, 3)))[1] <= 1  # the largest component only
    assert other["n_cases"] == own["n_cases"]


def test_several_variants_are_scored_from_one_prediction_of_each_case(
        png_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    run = api.train(png_dataset, tmp_path / "run", TINY_2D, progress=False, evaluate=False)
    predicted = []
    original = evaluate.predict_case
    monkeypatch.setattr(evaluate, "predict_case",
                        lambda *a, **k: predicted.append(1) or original(*a, **k))
    steps = [{"op": "largest_component", "class": 1}]
    own = evaluate_run(run, variants={"evaluation": [], "evaluation-largest": steps})
    test = run.read_json("split.json")["test"]
    assert len(predicted) == len(test)
    largest = json.loads((run.path / "evaluation-largest" / "metrics.json").read_text())
    written = json.loads((run.path / "evaluation" / "metrics.json").read_text())
    assert written["summary"]["mean"]["dice"] == own["mean"]["dice"]
    assert largest["summary"]["roc_auc"] == written["summary"]["roc_auc"]
    assert (run.path / "report.html").is_file()
