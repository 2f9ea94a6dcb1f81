"""The plan's `optimizer` section turned into a PyTorch optimiser and a learning-rate schedule.

    name          adamw | adam | sgd (SGD with `momentum`, Nesterov when `nesterov`: nnU-Net's
                  choice, 0.99 and lr 1e-2)
    lr            the peak learning rate
    weight_decay  decoupled for adamw, L2 for adam and sgd (PyTorch's semantics)
    schedule      poly: lr (1 - t)^0.9 (nnU-Net); cosine: lr (1 + cos(pi t)) / 2; constant
    warmup_fraction  the first part of training ramps linearly from 0 to lr
    grad_clip     gradient-norm clipping (nnU-Net: 12), or null for none (`TrainStep` applies it)

t is the fraction of training done: of the plan's steps, or of its time budget, whichever is
further along, so that a budgeted run anneals on time as its steps cannot tell when it ends.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from seglab.errors import SeglabError


def create_optimizer(parameters: Iterable[torch.nn.Parameter], spec: dict) -> torch.optim.Optimizer:
    """The optimiser the plan names, at its peak learning rate."""
    name, lr, decay = spec["name"], spec["lr"], spec["weight_decay"]
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, weight_decay=decay, momentum=spec["momentum"],
                               nesterov=spec["nesterov"] and spec["momentum"] > 0)
    raise SeglabError(f"plan: optimizer {name!r} is not known (known: adamw, adam, sgd)")


def learning_rate(spec: dict, fraction: float) -> float:
    """The learning rate after `fraction` (0..1) of training."""
    fraction = min(max(fraction, 0.0), 0.999)
    warmup = spec["warmup_fraction"]
    if fraction < warmup:
        return spec["lr"] * (fraction + 1e-3) / warmup
    t = (fraction - warmup) / (1 - warmup)
    schedule = spec["schedule"]
    if schedule == "poly":
        return spec["lr"] * (1 - t) ** 0.9
    if schedule == "cosine":
        return spec["lr"] * 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "constant":
        return spec["lr"]
    raise SeglabError(f"plan: schedule {schedule!r} is not known (known: poly, cosine, constant)")


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
