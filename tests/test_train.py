"""Training end to end on tiny data: run folder, checkpoints, resume after kill -9, predictions in
the input's format and geometry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from seglab import api
from seglab.data.io import read_label
from seglab.errors import SeglabError
from seglab.run import Run, load_checkpoint
from tests.conftest import nifti_affine

TINY_2D = {"epochs": 2, "iterations_per_epoch": 3, "batch_size": 2,
           "model.widths": [4, 8, 16], "model.strides": [[2, 2], [2, 2]],
           "model.kernels": [[3, 3]] * 3, "patch_size": [32, 32]}
TINY_3D = {"epochs": 2, "iterations_per_epoch": 2, "batch_size": 2,
           "model.widths": [4, 8, 16], "model.strides": [[2, 2, 1], [2, 2, 2]],
           "model.kernels": [[3, 3, 3]] * 3, "patch_size": [16, 16, 8]}


def test_training_writes_a_complete_run_whose_checkpoints_load_without_unpickling(
        png_dataset: Path, tmp_path: Path) -> None:
    run = api.train(png_dataset, tmp_path / "run", TINY_2D, progress=False)
    for name in ("plan.json", "fingerprint.json", "split.json", "run.json", "log.jsonl",
                 "checkpoints/last.pt", "checkpoints/best.pt", "evaluation/metrics.json",
                 "evaluation/metrics_per_case.csv", "postprocessing.json"):
        assert (run.path / name).is_file(), name
    choice = run.read_json("postprocessing.json")
    assert choice["validation_dice_with"] >= choice["validation_dice_without"]
    assert len(choice["tried"]) == 4
    assert [t["op"] for t in choice["tried"] if t["kept"]] == [s["op"] for s in choice["steps"]]
    assert [r["epoch"] for r in run.log()] == [1, 2]
    state = torch.load(run.path / "checkpoints" / "last.pt", weights_only=True)
    assert state["progress"]["finished"] and state["progress"]["step"] == 6
    split = json.loads((run.path / "split.json").read_text())
    assert len(split["test"]) == len(os.listdir(run.path / "predictions" / "test"))
    assert not set(split["train"]) & set(split["test"])


def test_2d_prediction_has_the_input_size_and_the_datasets_values(
        png_dataset: Path, tmp_path: Path) -> None:
    run = api.train(png_dataset, tmp_path / "run", TINY_2D, progress=False, evaluate=False)
    odd = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53), dtype=np.uint8)).save(odd)
    written = api.predict(run.path, [odd, png_dataset / "images"], tmp_path / "pred",
                          probabilities=True, measure=True)
    mask = read_label(tmp_path / "pred" / "odd.png")
    assert mask.shape == (37, 53)
    assert set(np.unique(mask)) <= {0, 255}
    assert (tmp_path / "pred" / "odd_probs.npz").is_file()
    assert len(written) == 2 * 13 + 2  # and the two measurement tables
    measured = json.loads((tmp_path / "pred" / "measurements.json").read_text())["odd.png"]
    foreground = run.plan().classes[1]
    assert measured["classes"][foreground]["area_mm2"] == (mask == 255).sum()
    api.predict(run.path, [odd], tmp_path / "unsure", tta="on", uncertainty=True)
    with np.load(tmp_path / "unsure" / "odd_maps.npz") as maps:  # 3 passes: mutual information
        assert set(maps.files) == {"entropy", "mutual_information"}
        assert maps["entropy"].shape == (37, 53) and 0 <= maps["entropy"].min()
        assert maps["mutual_information"].max() <= maps["entropy"].max() <= 1


def test_prediction_applies_the_post_processing_chosen_for_the_run(
        png_dataset: Path, tmp_path: Path) -> None:
    run = api.train(png_dataset, tmp_path / "run", TINY_2D, progress=False, evaluate=False)
    noisy = tmp_path / "noisy.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48), dtype=np.uint8)).save(noisy)
    run.write_json("postprocessing.json", {"steps": []})
    raw = read_label(api.predict(run.path, [noisy], tmp_path / "raw")[0]) == 255
    run.write_json("postprocessing.json", {"steps": [{"op": "largest_component", "class": 1}]})
    kept = read_label(api.predict(run.path, [noisy], tmp_path / "kept")[0]) == 255
    assert ndimage.label(kept, np.ones((3, 3)))[1] == min(1, ndimage.label(raw)[1])
    assert not (kept & ~raw).any()


def test_3d_prediction_as_nifti_has_the_input_shape_and_affine(
        nifti_dataset: Path, tmp_path: Path) -> None:
    run = api.train(nifti_dataset, tmp_path / "run", TINY_3D, progress=False, evaluate=False)
    source = nifti_dataset / "imagesTs" / "sph_100_0000.nii.gz"
    api.predict(run.path, [source], tmp_path / "pred")
    written = nib.load(tmp_path / "pred" / "sph_100_0000.nii.gz")
    assert written.shape == (20, 18, 9)
    assert np.allclose(written.affine, nifti_affine())
    assert np.issubdtype(written.get_data_dtype(), np.integer)


def kill_after_first_checkpoint(process: subprocess.Popen, last: Path) -> None:
    """Waits for the run's first last.pt, lets training go on into a later epoch, then kills
    the process with SIGKILL (what an out-of-memory kill or a pulled plug does)."""
    deadline = time.monotonic() + 240
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert last.exists(), process.stderr.read().decode()
    time.sleep(0.3)  # into a later epoch
    process.send_signal(signal.SIGKILL)
    process.wait()


def _start_training(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    settings = ["--set", "epochs=4", "--set", "iterations_per_epoch=6", "--set", "batch_size=2",
                "--set", "model.widths=[4,8,16]", "--set", "model.strides=[[2,2],[2,2]]",
                "--set", "model.kernels=[[3,3],[3,3],[3,3]]", "--set", "patch_size=[32,32]"]
    args = [sys.executable, "-m", "seglab", "train", *([str(data)] if data else []),
            "--out", str(out), "--no-evaluate"]
    return subprocess.Popen(args + ([] if "--resume" in extra else settings) + list(extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("kind", ["tensorboard", "mlflow"])
def test_log_writes_every_epoch_and_an_overlay_to_local_files(
        png_dataset: Path, tmp_path: Path, kind: str) -> None:
    run = api.train(png_dataset, tmp_path / "run", TINY_2D, progress=False, evaluate=False,
                    log=kind)
    if kind == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run.path / "tensorboard")).Reload()
        assert [e.step for e in events.Scalars("mean_dice")] == [r["step"] for r in run.log()]
        assert len(events.Images("validation/overlay_0")) == len(run.log())
    else:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient

        client = MlflowClient((run.path / "mlruns").resolve().as_uri())
        found = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
        history = client.get_metric_history(found[0].info.run_id, "loss")
        assert [m.step for m in history] == [r["step"] for r in run.log()]
    with pytest.raises(SeglabError, match="--log wandb: expected one of tensorboard, mlflow"):
        api.train(png_dataset, tmp_path / "other", TINY_2D, log="wandb")
    assert not (tmp_path / "other").exists()


def test_training_killed_mid_epoch_resumes_and_finishes(png_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = _start_training(png_dataset, out, "--set", "epochs=1000")  # killed long before
    last = out / "checkpoints" / "last.pt"
    kill_after_first_checkpoint(process, last)
    killed_at = load_checkpoint(last)["progress"]
    assert not killed_at["finished"]
    end = killed_at["epoch"] + 2

    resumed = _start_training(None, out, "--resume", "--set", f"epochs={end}")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    final = load_checkpoint(last)["progress"]
    assert final["finished"] and final["epoch"] == end and final["step"] == 6 * end
    assert [r["epoch"] for r in Run.open(out).log()] == list(range(1, end + 1))
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    load_checkpoint(out / "checkpoints" / "best.pt")


def test_resuming_a_finished_run_changes_nothing(png_dataset: Path, tmp_path: Path) -> None:
    run = api.train(png_dataset, tmp_path / "run", TINY_2D, progress=False, evaluate=False)
    before = (run.path / "checkpoints" / "last.pt").read_bytes()
    api.train(None, run.path, resume=True, progress=False, evaluate=False)
    assert (run.path / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_removes_the_temporary_file_of_a_checkpoint_write_cut_by_a_kill(
        png_dataset: Path, tmp_path: Path) -> None:
    run = api.train(png_dataset, tmp_path / "run", {**TINY_2D, "epochs": 1}, progress=False,
                    evaluate=False)
    cut_write = run.checkpoints / ".tmp-0123abcd-best.pt"
    cut_write.write_bytes(b"half a checkpoint")
    api.train(None, run.path, {"epochs": 2}, resume=True, progress=False, evaluate=False)
    assert not cut_write.exists()
    assert load_checkpoint(run.checkpoints / "last.pt")["progress"]["epoch"] == 2


@pytest.mark.parametrize("crash_in", ["log", "checkpoint"])
def test_a_crash_between_log_and_checkpoint_leaves_each_epoch_logged_once(
        png_dataset: Path, tmp_path: Path, monkeypatch, crash_in: str) -> None:
    from seglab.train import loop

    def crash_at_epoch_2(original):
        def wrapped(*args):
            if _epoch_of(args) == 2:
                raise RuntimeError("simulated crash")
            return original(*args)
        return wrapped

    def _epoch_of(args) -> int:
        if crash_in == "log":
            return args[1]["epoch"]
        path, state = args
        return state["progress"]["epoch"] if path.name == "last.pt" else 0

    if crash_in == "log":
        monkeypatch.setattr(Run, "append_log", crash_at_epoch_2(Run.append_log))
    else:
        monkeypatch.setattr(loop, "save_checkpoint", crash_at_epoch_2(loop.save_checkpoint))
    with pytest.raises(RuntimeError, match="simulated crash"):
        api.train(png_dataset, tmp_path / "run", TINY_2D, progress=False, evaluate=False)
    monkeypatch.undo()
    run = api.train(None, tmp_path / "run", resume=True, progress=False, evaluate=False)
    assert [r["epoch"] for r in run.log()] == [1, 2]
    assert load_checkpoint(run.path / "checkpoints" / "last.pt")["progress"]["step"] == 6


def test_deeply_supervised_unet_trains_and_predicts_one_full_resolution_mask(
        png_dataset: Path, tmp_path: Path) -> None:
    run = api.train(png_dataset, tmp_path / "run", {**TINY_2D, "model.deep_supervision": True},
                    progress=False)
    assert run.log()[-1]["step"] == 6
    assert len(list((run.path / "predictions" / "test").iterdir())) == len(
        run.read_json("split.json")["test"])
