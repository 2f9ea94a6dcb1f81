"""Training on two processes with torchrun (gloo on the CPU): gradients are averaged so that the
ranks hold the same weights after a step, and a torchrun run is written once and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from seglab.run import Run, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "iterations_per_epoch=3", "--set", "batch_size=4",
        "--set", "model.widths=[4,8,16]", "--set", "model.strides=[[2,2],[2,2]]",
        "--set", "model.kernels=[[3,3],[3,3],[3,3]]", "--set", "patch_size=[32,32]"]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", *args]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, encoding="utf-8", timeout=600, cwd=ROOT,
                            env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_both_ranks_hold_the_same_weights_after_a_step_on_different_data(tmp_path: Path) -> None:
    out = tmp_path / "weights.json"
    _torchrun(str(ROOT / "tests" / "ddp_one_step.py"), str(out))
    ranks = json.loads(out.read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["moved"] > 1e-4 for r in ranks)  # the step did change the weights
    assert ranks[0]["weights"] == ranks[1]["weights"]


def test_torchrun_training_is_written_by_rank_0_and_resumes(png_dataset: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "run"
    _torchrun("-m", "seglab", "train", str(png_dataset), "--out", str(out), "--no-evaluate",
              "--set", "epochs=1", *TINY)
    run = Run.open(out)
    assert run.read_json("run.json")["processes"] == 2
    assert [r["epoch"] for r in run.log()] == [1]
    assert not list(out.parent.glob(".run-*"))  # one run folder, no rank's leftovers

    _torchrun("-m", "seglab", "train", "--out", str(out), "--resume", "--no-evaluate",
              "--set", "epochs=2")
    assert [r["epoch"] for r in run.log()] == [1, 2]
    progress = load_checkpoint(run.checkpoints / "last.pt")["progress"]
    assert progress["finished"] and progress["epoch"] == 2 and progress["step"] == 6
