"""How `benchmarks/speed.py` times a step and runs a peer: the repeats and their spread
(`Bench`), a table row (`Row`), seglab's training and inference steps, and each peer's own loop
in its plain and fastest modes (`peer_modes`), compiled where that is faster."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from seglab.data.inspect import Fingerprint
from seglab.device import Precision
from seglab.train.loop import TrainStep
from seglab.train.loss import create_loss

LOSS = {"name": "dice_ce", "dice_weight": 1.0, "ce_weight": 1.0}

Step = Callable[[], Any]
Stat = tuple[float, float, float]  # images per second over the repeats: min, median, max
Timing = tuple[Stat, float | None]  # and peak CUDA MB


@dataclass
class Bench:
    policy: Precision
    repeats: int
    warmup: int
    sizes: dict

    def measure(self, fn: Step, batch: int) -> Timing:
        """Images per second (min, median, max over the repeats, after warm-up), peak CUDA MB."""
        cuda = self.policy.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
        rates = sorted(batch / t for t in times)
        return (rates[0], statistics.median(rates), rates[-1]), peak


@dataclass
class Row:
    case: str
    peer: str
    peer_ips: Stat | None
    seglab_ips: Stat | None
    gflops: float  # per image: one forward, or x3 for a training step
    peer_mb: float | None = None
    seglab_mb: float | None = None
    seglab_label: str = "seglab"


def timed_row(case: str, peer: str, gflops: float, a: Timing, b: Timing) -> Row:
    """The row of the peer's timing `a` against seglab's `b`, printed as it is measured."""
    print(f"  {case}: {peer} {a[0][1]:.3g} img/s, seglab {b[0][1]:.3g} img/s", flush=True)
    return Row(case, peer, a[0], b[0], gflops, a[1], b[1])


def peer_modes(b: Bench) -> dict[str, Precision | None]:
    """The peer's plain loop (None) and its fastest mode: seglab's policy's layout and autocast
    (bf16 exactly where the device has bf16 units), without seglab's compile choice."""
    policy = b.policy
    fastest = Precision.choose(policy.device.type, "auto", "off")
    return {"plain fp32": None, f"fastest: {_mode_name(fastest)}": fastest}


def _mode_name(policy: Precision) -> str:
    parts = ["channels_last"] if policy.channels_last else []
    return " + ".join(parts + [f"{policy.name} autocast" if policy.name != "fp32" else "fp32"])


def forward_gflops(model: nn.Module, shape: torch.Size) -> float:
    """GFLOPs of one forward of one input (batch 1) of `shape`, counted on the eager model."""
    x = torch.zeros(1, *shape[1:], device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 1e9


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, policy: Precision) -> Step:
    """seglab's training step: `TrainStep` (the policy's layout and autocast, seglab's loss) on a
    model that `policy.prepare_model` prepared."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    seglab_step = TrainStep(model, optimizer, create_loss(LOSS), policy, adversary=None)
    return lambda: seglab_step(x, y)


def peer_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               mode: Precision | None) -> Step:
    """The peer's own training loop (AdamW, cross-entropy): plain (fp32, the input as given), or
    in `mode`'s memory layout and autocast."""
    model = (mode.prepare_model(model) if mode else model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    autocast = mode.autocast if mode else contextlib.nullcontext
    x = mode.memory_format(x, model) if mode else x

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def peer_infer(b: Bench, model: nn.Module, x: torch.Tensor, mode: Precision | None,
               batch: int) -> tuple[Timing, str]:
    """The peer's inference in `mode`; in its fastest mode also compiled, the faster kept."""
    if mode is None:
        return b.measure(infer(model, x), batch), ""
    model = mode.prepare_model(model)
    eager = b.measure(infer(model, x, mode), batch)
    try:
        step = infer(torch.compile(model), x, mode)
        started = time.perf_counter()
        step()  # compiles: what a user pays once per input shape, before the first output
        seconds = time.perf_counter() - started
        compiled = b.measure(step, batch)
    except Exception as error:  # noqa: BLE001 - the row says compile failed, eager stands
        return eager, f" (compile failed: {type(error).__name__})"
    if compiled[0][1] > eager[0][1]:
        return compiled, f" + torch.compile (first call {seconds:.0f} s)"
    return eager, f" (torch.compile slower: {compiled[0][1]:.3g} img/s)"


def infer(model: nn.Module, x: torch.Tensor, policy: Precision | None = None) -> Step:
    """Inference in `inference_mode`: plain (fp32, as given), or in the policy's autocast and
    memory layout."""
    model.eval()
    autocast = policy.autocast if policy else contextlib.nullcontext
    def layout(tensor: torch.Tensor) -> torch.Tensor:
        return policy.memory_format(tensor, model) if policy else tensor

    def run() -> torch.Tensor:
        with torch.inference_mode(), autocast():
            return model(layout(x))

    return run


def fingerprint(dims: int, channels: int, classes: list[str],
                shape: tuple[int, ...]) -> Fingerprint:
    """A one-case dataset of `shape` at unit spacing: what the planner needs to plan for it."""
    return Fingerprint(name="speed", layout="synthetic", source="benchmarks/speed.py", dims=dims,
                       channels=channels, n_cases=1, n_unlabeled=0, classes=classes,
                       label_values=None, ignore_label=None, roi_rule=None, modality="MR",
                       class_voxels=[1] * len(classes), shapes=[list(shape)],
                       spacings=[[1.0] * dims], intensity=[{} for _ in range(channels)])
