"""Learning from images without masks, three ways (plan field `semi_supervised.method`).

The mean teacher (Tarvainen & Valpola, NeurIPS 2017), as semi-supervised medical segmentation
uses it (Perone & Cohen-Adad 2018; Yu et al., MICCAI 2019). The teacher is the exponential
moving average of the student's weights. Each step, a batch of patches cut from the unlabelled
images goes through both, each with its own Gaussian noise, and the mean squared difference of
their class probabilities, weighted by `weight` x a sigmoid ramp-up (exp(-5 (1 - t)²) over the
first `rampup_fraction` of training), joins the supervised loss; the teacher gets no gradient
and follows the student after each optimiser step. Validation and best.pt use the teacher, whose
averaged weights predict better than the student's.

Pseudo-labels (`pseudo_labels`): the weak-to-strong consistency of FixMatch (Sohn et al., NeurIPS
2020) as semi-supervised segmentation uses it (UniMatch, Yang et al., CVPR 2023), with the mean
teacher as the labeller. The teacher labels each unlabelled patch (argmax of its probabilities);
the student learns those labels by cross-entropy on a more strongly perturbed copy (its own
contrast, brightness and noise per patch), only where the teacher's probability reaches
`confidence` (BENCHMARKS.md: on CHASE_DB1 in 8 CPU minutes it scored below the labelled images
alone, having taken 804 steps to their 1820).

Cross pseudo supervision (Chen et al., CVPR 2021): a partner network of the same architecture,
initialised apart, learns beside the first from the same labelled batches; on the unlabelled
patches each also learns, by cross-entropy, the other's hard labels (argmax, no gradient through
them), weighted by the same ramp-up. One optimiser trains both; validation, best.pt and
prediction use the first. (The paper also crosses the labelled batches; here the supervised loss
alone teaches those.)

All three have one interface for the training loop: `term` (the loss added to the supervised
one, and the part of it logged as the consistency), `update` after each optimiser step, the
parameters the optimiser trains beside the model's, the network that validates, and a
checkpoint entry under `KEY`. Written here rather than taken from a library: MONAI and smp have no
semi-supervised trainer, and each method is a few dozen lines.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from seglab.train.loss import main_output


def rampup_weight(settings: dict[str, Any], fraction: float) -> float:
    """`weight` at `fraction` (0..1) of training: ramped up over `rampup_fraction`, then
    constant."""
    ramp = settings["rampup_fraction"]
    t = min(1.0, fraction / ramp) if ramp > 0 else 1.0
    return settings["weight"] * math.exp(-5.0 * (1.0 - t) ** 2)


def semi_supervision(settings: dict[str, Any], student: torch.nn.Module,
                     build_partner: Callable[[], torch.nn.Module],
                     loss_fn: torch.nn.Module) -> Semi:
    """The plan's method for `student` (`build_partner` makes cross pseudo supervision's second
    network, `loss_fn` its supervised loss)."""
    if settings["method"] == "mean_teacher":
        return MeanTeacher(student, settings)
    if settings["method"] == "pseudo_labels":
        return PseudoLabels(student, settings)
    return CrossPseudoSupervision(build_partner(), settings, loss_fn)


class MeanTeacher:
    """The teacher of `student` and the consistency term between them (plan.semi_supervised)."""

    KEY = "teacher"

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
        return rampup_weight(self.settings, fraction)

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        return []  # the teacher follows the student; no gradient reaches it

    def validated(self, student: torch.nn.Module) -> torch.nn.Module:
        return self.teacher

    def follow_initialisation(self, student: torch.nn.Module) -> None:
        """A fine-tuned student's teacher starts from the same weights."""
        self.teacher.load_state_dict(student.state_dict())

    def term(self, student: torch.nn.Module, unlabeled: torch.Tensor, fraction: float,
             images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(added loss, logged consistency): the weighted consistency, both."""
        consistency = self.consistency(student, unlabeled, fraction)
        return consistency, consistency

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


class PseudoLabels(MeanTeacher):
    """The mean teacher's confident hard labels taught to the student on strongly perturbed
    patches (plan.semi_supervised: `confidence`, `noise`, `weight`, `ema_decay`)."""

    def consistency(self, student: torch.nn.Module, images: torch.Tensor,
                    fraction: float) -> torch.Tensor:
        """weight(fraction) x the student's cross-entropy against the teacher's labels, over the
        pixels where the teacher is confident (the others count as zero, as FixMatch counts
        them)."""
        spatial = images[:, 0]
        with torch.no_grad():
            probabilities = torch.softmax(main_output(self.teacher(images), spatial).float(),
                                          dim=1)
            confidence, labels = probabilities.max(dim=1)
            kept = (confidence >= self.settings["confidence"]).float()
        logits = main_output(student(strongly_perturbed(images, self.settings["noise"])),
                             spatial).float()
        loss = F.cross_entropy(logits, labels, reduction="none")
        return self.weight(fraction) * (loss * kept).mean()


def strongly_perturbed(images: torch.Tensor, noise: float) -> torch.Tensor:
    """Each patch with its own contrast (x 0.7..1.3), brightness (+-0.3) and Gaussian noise (3 x
    `noise` standard deviations), on the z-scored intensities. Not the sampler's
    `augment_intensity`: that draws on the CPU, each change with the plan's probability, before
    the batch reaches the device; this perturbs every patch, on the device, inside the loss."""
    shape = (images.shape[0],) + (1,) * (images.dim() - 1)
    contrast = torch.empty(shape, device=images.device).uniform_(0.7, 1.3)
    brightness = torch.empty(shape, device=images.device).uniform_(-0.3, 0.3)
    return images * contrast + brightness + 3 * noise * torch.randn_like(images)


class CrossPseudoSupervision:
    """The partner network and the cross pseudo-label term (plan.semi_supervised: `weight`,
    `rampup_fraction`)."""

    KEY = "partner"

    def __init__(self, partner: torch.nn.Module, settings: dict[str, Any],
                 loss_fn: torch.nn.Module):
        self.partner, self.settings, self.loss_fn = partner, settings, loss_fn

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.partner.parameters())

    def validated(self, student: torch.nn.Module) -> torch.nn.Module:
        return student

    def follow_initialisation(self, student: torch.nn.Module) -> None:
        """The partner keeps its own initialisation: two networks started alike would teach each
        other nothing."""

    def term(self, student: torch.nn.Module, unlabeled: torch.Tensor, fraction: float,
             images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(added loss, logged consistency): the partner's supervised loss on the labelled batch
        plus the weighted cross pseudo-label term; the latter."""
        self.partner.train(student.training)
        supervised = self.loss_fn(self.partner(images), labels)
        spatial = unlabeled[:, 0]
        mine = main_output(student(unlabeled), spatial).float()
        theirs = main_output(self.partner(unlabeled), spatial).float()
        cross = (F.cross_entropy(mine, theirs.argmax(dim=1).detach())
                 + F.cross_entropy(theirs, mine.argmax(dim=1).detach()))
        weighted = rampup_weight(self.settings, fraction) * cross
        return supervised + weighted, weighted

    def update(self, student: torch.nn.Module) -> None:
        """Nothing: the optimiser that steps the model steps the partner too."""

    def state_dict(self) -> dict[str, Any]:
        return {"partner": self.partner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.partner.load_state_dict(state["partner"])


Semi = MeanTeacher | PseudoLabels | CrossPseudoSupervision
