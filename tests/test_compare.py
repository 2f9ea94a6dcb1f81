"""`seglab compare`: every model on one split, each in its own process; a failing or killed model
gets its row with the reason while the others carry on; re-runs refused unless resumed."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
from torch import nn

from seglab import api, compare, models
from seglab.cli import main
from tests.conftest import write_disc_dataset

TINY = {"iterations_per_epoch": 2, "batch_size": 2, "model.widths": [4, 8, 16],
        "model.strides": [[2, 2], [2, 2]], "model.kernels": [[3, 3]] * 3, "patch_size": [32, 32]}
TINY_ARGS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def build_tiny(dims: int, in_channels: int, classes: int, **_) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, classes, 1))


def build_broken(**_) -> nn.Module:
    raise RuntimeError("boom")


def build_killed(**_) -> nn.Module:
    os.kill(os.getpid(), signal.SIGKILL)


def _test_entries() -> dict[str, models.ModelEntry]:
    """2D-only models that accept (and ignore) the U-Net's plan options, so TINY suits them all."""
    defaults = models.entry("unet").defaults
    return {name: models.ModelEntry(name, (2,), build, "test only", defaults)
            for name, build in (("tiny", build_tiny), ("broken", build_broken),
                                ("killed", build_killed))}


def worker_with_test_models(*args) -> None:
    """The compare worker, in a model's process that also knows the test-only models (the
    process does not see the parent's monkeypatching; it finds this function by name)."""
    models._REGISTRY.update(_test_entries())
    compare._worker(*args)


@pytest.fixture
def test_models(monkeypatch) -> None:
    for name, entry in _test_entries().items():
        monkeypatch.setitem(models._REGISTRY, name, entry)
    monkeypatch.setattr(compare, "_worker", worker_with_test_models)


def _read(out: Path) -> dict:
    return json.loads((out / "comparison.json").read_text())


def test_each_model_gets_a_row_with_real_numbers_or_the_reason_it_failed(
        png_dataset: Path, tmp_path: Path, test_models) -> None:
    out = api.compare(png_dataset, ["unet", "tiny", "broken", "killed"], tmp_path / "cmp",
                      epochs=2, overrides=TINY, progress=False)
    comparison = _read(out)
    rows = {row["model"]: row for row in comparison["rows"]}
    assert list(rows) == ["unet", "tiny", "broken", "killed"]
    for name in ("unet", "tiny"):
        row = rows[name]
        assert row["status"] == "ok" and row["reason"] is None, row
        for metric in ("dice", "iou", "pixel_accuracy", "precision", "recall", "f1"):
            assert 0 <= row[f"{metric}_mean"] <= 1 and row[f"{metric}_std"] >= 0, metric
        assert (row["epochs"], row["steps"]) == (2, 4)
        assert row["train_s"] > 0 and row["images_per_s"] > 0 and row["params_m"] > 0
        assert row["peak_ram_mb"] > 50  # the model's own process, torch loaded
        assert (row["peak_gpu_mb"] is None) == (row["device"] == "cpu")
        assert row["test_cases"] == len(comparison["split"]["test"]) > 0
    assert rows["unet"]["params_m"] > rows["tiny"]["params_m"]
    assert rows["broken"]["status"] == "failed" and rows["broken"]["reason"] == "RuntimeError: boom"
    assert "Traceback" in (out / "runs" / "broken" / "measurements.json").read_text()
    assert rows["killed"]["reason"] == "killed by signal 9 (out of memory?)"

    with open(out / "comparison.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["model"] for r in table] == list(rows)
    assert float(table[0]["dice_mean"]) == rows["unet"]["dice_mean"]
    markdown = (out / "comparison.md").read_text()
    assert "| unet | ok |" in markdown and "- broken: failed: RuntimeError: boom" in markdown
    page = (out / "comparison.html").read_text()
    assert page.count("data:image/png;base64,") == 1
    assert "<script" not in page and "http" not in page.replace("<!doctype html>", "")

    split = comparison["split"]
    cases = sorted(split["train"] + split["val"] + split["test"])
    assert cases == [f"case{i:02d}" for i in range(12)]
    for name in rows:
        run = out / "runs" / name
        assert json.loads((run / "split.json").read_text()) == split, name
        assert json.loads((run / "plan.json").read_text())["split"]["fixed"] == split, name


def test_a_rerun_is_refused_unless_resumed_and_resuming_keeps_finished_runs(
        png_dataset: Path, tmp_path: Path, capsys, test_models) -> None:
    out = tmp_path / "cmp"
    argv = ["compare", str(png_dataset), "--out", str(out), "--epochs", "1", *TINY_ARGS]
    assert main([*argv, "--models", "tiny"]) == 0
    printed = capsys.readouterr().out
    assert "Dice" in printed
    assert ["tiny", "ok"] in [line.split()[:2] for line in printed.splitlines()]
    measured = out / "runs" / "tiny" / "measurements.json"
    stamp = measured.stat().st_mtime_ns

    assert main([*argv, "--models", "tiny,broken"]) == 2
    assert "folder exists and is not empty (use --resume" in capsys.readouterr().err
    assert main([*argv[:-len(TINY_ARGS)], "--models", "tiny", "--resume"]) == 2
    assert "--resume needs the settings of the first run" in capsys.readouterr().err

    assert main([*argv, "--models", "tiny,broken", "--resume"]) == 0
    assert measured.stat().st_mtime_ns == stamp  # kept, not retrained
    assert [(r["model"], r["status"]) for r in _read(out)["rows"]] == [("tiny", "ok"),
                                                                      ("broken", "failed")]


def test_an_unknown_model_is_a_one_line_error_before_anything_is_written(
        png_dataset: Path, tmp_path: Path, capsys) -> None:
    argv = ["compare", str(png_dataset), "--models", "unet,nope", "--out", str(tmp_path / "cmp")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("seglab: error: --models: model 'nope' is not registered")
    assert err.count("\n") == 1
    assert not (tmp_path / "cmp").exists()


def test_a_model_that_cannot_take_the_data_or_the_overrides_gets_its_row(
        nifti_dataset: Path, png_dataset: Path, tmp_path: Path, monkeypatch, test_models) -> None:
    out = api.compare(nifti_dataset, ["tiny"], tmp_path / "3d", epochs=1, progress=False)
    assert _read(out)["rows"][0] == {"model": "tiny", "status": "skipped",
                                     "reason": "2D only; the data is 3D", "run": None}
    monkeypatch.setitem(models._REGISTRY, "plain",
                        models.ModelEntry("plain", (2,), build_tiny, "test only"))
    out = api.compare(png_dataset, ["plain"], tmp_path / "2d", epochs=1, progress=False,
                      overrides={"model.widths": [4, 8]})
    row = _read(out)["rows"][0]
    assert row["status"] == "failed" and "plan override 'model.widths'" in row["reason"]


def test_minutes_alone_let_the_clock_end_training() -> None:
    assert compare._budget(2, None, {}) == {"time_budget_minutes": 2.0,
                                            "epochs": compare.EPOCHS_UNDER_TIME_BUDGET}
    assert compare._budget(2, None, {"epochs": 5}) == {"time_budget_minutes": 2.0}
    assert compare._budget(None, 3, {}) == {"epochs": 3}


def test_classical_methods_get_rows_beside_the_models_fitted_on_the_same_split(
        png_dataset: Path, tmp_path: Path, test_models) -> None:
    out = api.compare(png_dataset, ["tiny", "otsu", "watershed"], tmp_path / "cmp", epochs=1,
                      overrides=TINY, progress=False)
    comparison = _read(out)
    split, rows = comparison["split"], {row["model"]: row for row in comparison["rows"]}
    assert [row["status"] for row in rows.values()] == ["ok", "ok", "ok"], rows
    for name in ("otsu", "watershed"):
        row = rows[name]
        assert row["dice_mean"] > 0.9 and row["test_cases"] == len(split["test"])
        assert row["train_s"] > 0 and row["images_per_s"] > 0 and row["peak_ram_mb"] > 0
        assert row["params_m"] is None and "epochs" not in row and row["device"] == "cpu"
        assert "polarity=bright" in row["params"] and "mapping=[0, 1]" in row["params"]
        assert row["fit_cases"] == 5 and row["fit_dice"] > 0.9
        run = out / "runs" / name
        assert json.loads((run / "split.json").read_text()) == split
        assert json.loads((run / "plan.json").read_text())["model"] == {"name": name,
                                                                        "classical": {}}
        written = sorted(p.name for p in (run / "predictions" / "test").iterdir())
        assert written == sorted(f"{case}.png" for case in split["test"])
    assert "| otsu | ok |" in (out / "comparison.md").read_text()
    csv_rows = {r["model"]: r for r in csv.DictReader(open(out / "comparison.csv"))}
    assert csv_rows["otsu"]["settings"] == rows["otsu"]["params"]
    assert not csv_rows["tiny"]["settings"]
    assert "polarity=bright" in (out / "comparison.html").read_text()


@pytest.fixture
def speckled_dataset(tmp_path: Path) -> Path:
    """Bright discs on a background sprinkled with bright single pixels, which a threshold keeps
    and removing small objects cleans up."""
    return write_disc_dataset(tmp_path / "speckled", seed=3, specks=0.03)


def test_post_processing_rows_score_the_steps_chosen_on_validation_beside_the_plain_rows(
        speckled_dataset: Path, tmp_path: Path, test_models) -> None:
    out = api.compare(speckled_dataset, ["tiny", "otsu"], tmp_path / "cmp", epochs=1,
                      overrides=TINY, progress=False, postprocessing=True)
    rows = {row["model"]: row for row in _read(out)["rows"]}
    assert list(rows) == ["tiny", "tiny + post-processing", "otsu", "otsu + post-processing"]
    assert all(row["status"] == "ok" for row in rows.values()), rows
    plain, hybrid = rows["otsu"], rows["otsu + post-processing"]
    run = out / "runs" / "otsu"
    choice = json.loads((run / "postprocessing.json").read_text())
    first = choice["steps"][0]["op"]  # one disc per image: both clean the specks away
    assert first in ("largest_component", "remove_small")
    assert f"post-processing: {first}(class 1" in hybrid["params"]
    assert hybrid["params"].startswith(plain["params"]) and hybrid["run"] == "runs/otsu"
    assert hybrid["dice_mean"] > plain["dice_mean"] + 0.05
    scored = json.loads((run / "evaluation-postprocessed" / "metrics.json").read_text())
    assert scored["summary"]["mean"]["dice"]["mean"] == hybrid["dice_mean"]
    assert len(list((run / "predictions" / "test-evaluation-postprocessed").iterdir())) == len(
        _read(out)["split"]["test"])
    assert hybrid["train_s"] >= plain["train_s"] and hybrid["images_per_s"] > 0
    assert 0.9 < plain["roc_auc"] <= 1 and "roc_auc" not in hybrid
    assert 0 <= rows["tiny"]["roc_auc"] <= 1
    assert (out / "runs" / "tiny" / "evaluation-postprocessed" / "metrics.json").is_file()
    assert "| otsu + post-processing | ok |" in (out / "comparison.md").read_text()


def test_classical_methods_take_3d_multi_class_data(nifti_dataset: Path, tmp_path: Path) -> None:
    out = api.compare(nifti_dataset, ["multiotsu"], tmp_path / "3d", progress=False)
    row = _read(out)["rows"][0]
    assert row["status"] == "ok" and row["dice_mean"] > 0.8, row
    assert "classes=3" in row["params"]


def test_an_unknown_name_lists_the_classical_methods_too(png_dataset: Path, tmp_path: Path,
                                                         capsys) -> None:
    argv = ["compare", str(png_dataset), "--models", "otsu,nope", "--out", str(tmp_path / "c")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "model 'nope' is not registered" in err and err.count("\n") == 1
    assert "; classical methods: adaptive, kmeans, li, multiotsu, otsu," in err
