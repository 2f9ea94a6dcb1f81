"""Adversarial training: the discriminator, its losses, and a GAN run that checkpoints and resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seglab import api
from seglab.data.layouts import IGNORE_INDEX
from seglab.run import load_checkpoint
from seglab.train.adversarial import Adversary, Discriminator
from tests.test_train import TINY_2D

SETTINGS = {"weight": 0.1, "lr": 1e-3, "width": 8}


@pytest.mark.parametrize("dims,shape", [(2, (32, 48)), (3, (16, 16, 8))])
def test_discriminator_scores_image_mask_pairs_patchwise(dims, shape) -> None:
    critic = Discriminator(list(shape), in_channels=1 + 3, width=4)
    score = critic(torch.zeros(2, 1, *shape), torch.zeros(2, 3, *shape))
    assert score.shape[:2] == (2, 1) and score.dim() == 2 + dims


def test_discriminator_learns_to_tell_reference_masks_from_blurry_predictions() -> None:
    torch.manual_seed(0)
    adversary = Adversary([32, 32], 1, 2, SETTINGS, torch.device("cpu"))
    images = torch.randn(4, 1, 32, 32)
    labels = (torch.rand(4, 32, 32) > 0.5).long()
    logits = torch.zeros(4, 2, 32, 32)  # a maximally unsure prediction
    losses = [adversary.discriminator_step(images, logits, labels) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    real = adversary.discriminator(images, adversary._reference_masks(labels, 2)).mean()
    fake = adversary.discriminator(images, adversary._predicted_masks(logits, labels)).mean()
    assert real > fake


def test_segmenter_loss_reaches_the_segmenter_but_not_the_discriminator() -> None:
    adversary = Adversary([32, 32], 1, 2, SETTINGS, torch.device("cpu"))
    logits = torch.zeros(2, 2, 32, 32, requires_grad=True)
    loss = adversary.segmenter_loss(torch.randn(2, 1, 32, 32), logits,
                                    torch.zeros(2, 32, 32, dtype=torch.long))
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in adversary.discriminator.parameters())


def test_ignored_pixels_are_blank_in_both_reference_and_predicted_masks() -> None:
    labels = torch.tensor([[[0, 1, IGNORE_INDEX]]])
    reference = Adversary._reference_masks(labels, 2)
    predicted = Adversary._predicted_masks(torch.randn(1, 2, 1, 3), labels)
    assert reference[0, :, 0, 2].sum() == 0 and predicted[0, :, 0, 2].sum() == 0
    assert reference[0, :, 0, 1].tolist() == [0, 1]


def test_gan_training_checkpoints_the_discriminator_and_resumes_from_it(
        png_dataset: Path, tmp_path: Path) -> None:
    settings = {**TINY_2D, "adversarial.weight": 0.1, "adversarial.width": 4}
    run = api.train(png_dataset, tmp_path / "run", settings, progress=False, evaluate=False)
    saved = load_checkpoint(run.path / "checkpoints" / "last.pt")
    assert "adversary" in saved and saved["adversary"]["optimizer"]["state"]
    api.train(None, run.path, {"epochs": 3}, resume=True, progress=False, evaluate=False)
    resumed = load_checkpoint(run.path / "checkpoints" / "last.pt")
    assert resumed["progress"]["epoch"] == 3 and resumed["progress"]["step"] == 9
    first = next(iter(saved["adversary"]["model"]))
    assert not torch.equal(saved["adversary"]["model"][first], resumed["adversary"]["model"][first])
    written = api.predict(run.path, [png_dataset / "images"], tmp_path / "pred")
    assert len(written) == 12
