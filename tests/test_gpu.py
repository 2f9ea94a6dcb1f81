"""The CUDA path: the default policy (bf16 or fp16 autocast, TF32, torch.compile) trains, resumes,
predicts and exports on a GPU. Skipped where there is none; run on the GPU machines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from seglab import api
from seglab.data.io import read_label
from seglab.device import Precision
from seglab.run import load_checkpoint
from tests.conftest import needs_gpu

TINY = {"epochs": 2, "iterations_per_epoch": 4, "batch_size": 4, "model.widths": [8, 16, 32],
        "model.strides": [[2, 2], [2, 2]], "model.kernels": [[3, 3]] * 3, "patch_size": [32, 32]}


@needs_gpu
def test_cuda_default_policy_is_mixed_precision_compiled_with_tf32() -> None:
    policy = Precision.choose()
    assert policy.device.type == "cuda" and policy.compile
    assert policy.name == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.benchmark


@needs_gpu
def test_training_on_the_gpu_resumes_and_predicts_what_the_cpu_reads(png_dataset: Path,
                                                                     tmp_path: Path) -> None:
    run = api.train(png_dataset, tmp_path / "run", {**TINY, "epochs": 1}, progress=False,
                    evaluate=False)
    api.train(None, run.path, {"epochs": 2}, resume=True, progress=False, evaluate=False)
    assert [r["epoch"] for r in run.log()] == [1, 2]
    info = run.read_json("run.json")
    assert info["device"] == "cuda" and info["compile"] is True
    state = load_checkpoint(run.checkpoints / "last.pt")
    assert all(t.device.type == "cpu" for t in state["model"].values())
    source = sorted((png_dataset / "images").iterdir())[0]
    gpu = api.predict(run.path, [source], tmp_path / "gpu")
    cpu = api.predict(run.path, [source], tmp_path / "cpu", device="cpu", precision="fp32")
    gpu_mask, cpu_mask = read_label(gpu[0]), read_label(cpu[0])
    assert gpu_mask.shape == cpu_mask.shape and np.mean(gpu_mask == cpu_mask) > 0.98
