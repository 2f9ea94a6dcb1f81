"""Dice + cross-entropy, the nnU-Net default, with ignored pixels left out of both terms.

Written here because MONAI's DiceCELoss cannot leave an ignore label (CamVid's void) out of the
Dice term. Computed in fp32 whatever the autocast precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seglab.data.layouts import IGNORE_INDEX
from seglab.errors import SeglabError


class DiceCELoss(torch.nn.Module):
    """Soft Dice over the batch (foreground classes) plus cross-entropy."""

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, smooth: float = 1e-5):
        super().__init__()
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        valid = labels != IGNORE_INDEX
        target = torch.where(valid, labels, torch.zeros_like(labels))
        ce = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
        probs = torch.softmax(logits, dim=1) * valid.unsqueeze(1)
        one_hot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).float() * valid.unsqueeze(1)
        dims = (0,) + tuple(range(2, logits.dim()))
        intersection = (probs * one_hot).sum(dims)
        denominator = probs.sum(dims) + one_hot.sum(dims)
        dice = (2 * intersection + self.smooth) / (denominator + self.smooth)
        return self.ce_weight * ce + self.dice_weight * (1 - dice[1:].mean())


class DeepSupervisionLoss(torch.nn.Module):
    """nnU-Net's deep supervision: the loss of each decoder head (the model stacks them along
    dim 1, each at full resolution), weighted 1, 1/2, 1/4, ... and normalised to sum to 1."""

    def __init__(self, loss: torch.nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not is_deeply_supervised(logits, labels):
            return self.loss(logits, labels)
        weights = [0.5**head for head in range(logits.shape[1])]
        total = sum(w * self.loss(logits[:, head], labels) for head, w in enumerate(weights))
        return total / sum(weights)


def is_deeply_supervised(logits: torch.Tensor, labels: torch.Tensor) -> bool:
    return logits.dim() == labels.dim() + 2


def main_output(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The full-resolution head's logits, whether or not the model is deeply supervised."""
    return logits[:, 0] if is_deeply_supervised(logits, labels) else logits


def create_loss(spec: dict) -> torch.nn.Module:
    if spec["name"] != "dice_ce":
        raise SeglabError(f"plan: loss {spec['name']!r} is not known (known: dice_ce)")
    return DeepSupervisionLoss(DiceCELoss(spec.get("dice_weight", 1.0), spec.get("ce_weight", 1.0)))
