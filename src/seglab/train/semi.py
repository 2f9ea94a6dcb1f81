"""Learning from images without masks: the mean teacher (Tarvainen & Valpola, NeurIPS 2017), as
semi-supervised medical segmentation uses it (Perone & Cohen-Adad 2018; Yu et al., MICCAI 2019).

The teacher is the exponential moving average of the student's weights. Each step, a batch of
patches cut from the unlabelled images goes through both, each with its own Gaussian noise, and
the mean squared difference of their class probabilities, weighted by `weight` x a sigmoid
ramp-up (exp(-5 (1 - t)²) over the first `rampup_fraction` of training), joins the supervised
loss; the teacher gets no gradient and follows the student after each optimiser step. Validation
and best.pt use the teacher, whose averaged weights predict better than the student's.

Written here rather than taken from a library: MONAI and smp have no semi-supervised trainer,
and the method is these forty lines.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F

from seglab.train.loss import main_output


class MeanTeacher:
    """The teacher of `student` and the consistency term between them (plan.semi_supervised)."""

    def __init__(self, student: torch.nn.Module, settings: dict[str, Any]):
        self.settings = settings
        self.teacher = copy.deepcopy(student).eval()
        # A compiled student's forward is an attribute closing over the student itself
        # (`device.compile_with_fallback`); the copy would call it. The teacher runs eagerly.
        self.teacher.__dict__.pop("forward", None)
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.updates = 0

    def weight(self, fraction: float) -> float:
        """The consistency weight at `fraction` (0..1) of training: ramped up, then constant."""
        ramp = self.settings["rampup_fraction"]
        t = min(1.0, fraction / ramp) if ramp > 0 else 1.0
        return self.settings["weight"] * math.exp(-5.0 * (1.0 - t) ** 2)

    def consistency(self, student: torch.nn.Module, images: torch.Tensor,
                    fraction: float) -> torch.Tensor:
        """weight(fraction) x the mean squared difference of the student's and the teacher's
        class probabilities on `images` (unlabelled patches), each under its own noise."""
        sigma, spatial = self.settings["noise"], images[:, 0]  # spatial: what a label's shape is
        with torch.no_grad():
            target = torch.softmax(main_output(self.teacher(
                images + sigma * torch.randn_like(images)), spatial).float(), dim=1)
        predicted = torch.softmax(main_output(student(
            images + sigma * torch.randn_like(images)), spatial).float(), dim=1)
        return self.weight(fraction) * F.mse_loss(predicted, target)

    @torch.no_grad()
    def update(self, student: torch.nn.Module) -> None:
        """teacher <- a teacher + (1 - a) student, a = min(1 - 1 / (updates + 1), ema_decay): the
        early teacher follows the student closely (Tarvainen & Valpola's warm-up of the decay);
        buffers (normalisation statistics) are copied."""
        self.updates += 1
        decay = min(1.0 - 1.0 / (self.updates + 1), self.settings["ema_decay"])
        for mine, theirs in zip(self.teacher.parameters(), student.parameters()):
            mine.mul_(decay).add_(theirs.detach(), alpha=1.0 - decay)
        for mine, theirs in zip(self.teacher.buffers(), student.buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.updates = state["updates"]
