"""Dice + cross-entropy with an ignore label."""

from __future__ import annotations

import torch

from seglab.data.layouts import IGNORE_INDEX
from seglab.train.loss import DiceCELoss, create_loss


def test_confident_correct_logits_give_a_loss_near_zero_and_wrong_ones_a_large_loss() -> None:
    labels = torch.randint(0, 3, (2, 8, 8))
    logits = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float() * 50
    assert DiceCELoss()(logits, labels) < 1e-3
    assert DiceCELoss()(-logits, labels) > 1.0


def test_ignored_pixels_do_not_change_the_loss() -> None:
    labels = torch.randint(0, 2, (1, 6, 6))
    logits = torch.randn(1, 2, 6, 6)
    ignored = labels.clone()
    ignored[0, 0, :] = IGNORE_INDEX
    changed = logits.clone()
    changed[0, :, 0, :] = torch.randn(2, 6) * 10
    assert torch.isclose(DiceCELoss()(logits, ignored), DiceCELoss()(changed, ignored))


def test_deep_supervision_weighs_the_heads_one_half_one_quarter_normalised() -> None:
    plain = DiceCELoss()
    loss = create_loss({"name": "dice_ce"})
    labels = torch.randint(0, 3, (2, 8, 8))
    heads = torch.randn(2, 3, 3, 8, 8)
    expected = sum(w * plain(heads[:, k], labels) for k, w in enumerate([1, 0.5, 0.25])) / 1.75
    assert torch.allclose(loss(heads, labels), expected)
    assert torch.allclose(loss(heads[:, 0], labels), plain(heads[:, 0], labels))
