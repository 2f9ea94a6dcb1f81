"""Adversarial training (Luc, Couprie, Chintala, Verbeek, "Semantic Segmentation using Adversarial
Networks", NIPS Workshop 2016): a discriminator learns to tell (image, reference mask) pairs from
(image, predicted mask) pairs, and the segmenter is additionally trained to fool it, which
penalises predictions whose shape is implausible as a whole rather than pixel by pixel.

Written here because no maintained library ships it as a training option for arbitrary models.
The discriminator is a small fully convolutional "patch" critic (2D or 3D), so it judges every
region of the patch; ignored pixels are zeroed in both kinds of mask so they give nothing away.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seglab.data.layouts import IGNORE_INDEX


class Discriminator(nn.Module):
    """Four conv blocks (width, 2x, 4x, 8x) and a 1-channel real/fake score map; each block halves
    the axes of the patch that are still at least 8 long (so thin or small patches work)."""

    def __init__(self, patch_size: list[int], in_channels: int, width: int = 32):
        super().__init__()
        dims = len(patch_size)
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        norm = nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d
        layers: list[nn.Module] = []
        channels, size = in_channels, list(patch_size)
        for stage in range(4):
            out = width * 2**stage
            stride = [2 if n >= 8 else 1 for n in size]
            size = [(n + 1) // 2 if s == 2 else n for n, s in zip(size, stride)]
            layers += [conv(channels, out, 3, stride=stride, padding=1)]
            layers += [norm(out, affine=True)] if stage else []
            layers += [nn.LeakyReLU(0.2, inplace=True)]
            channels = out
        layers.append(conv(channels, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([images, masks], dim=1))


class Adversary:
    """The discriminator, its optimiser, and the two losses of one training step."""

    def __init__(self, patch_size: list[int], in_channels: int, classes: int,
                 settings: dict[str, Any], device: torch.device):
        self.weight = float(settings["weight"])
        self.discriminator = Discriminator(patch_size, in_channels + classes,
                                           settings["width"]).to(device)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=settings["lr"],
                                          betas=(0.5, 0.999))

    def segmenter_loss(self, images: torch.Tensor, logits: torch.Tensor,
                       labels: torch.Tensor) -> torch.Tensor:
        """Weighted loss for the segmenter: its predictions should be scored as real."""
        fake = self._predicted_masks(logits, labels)
        for parameter in self.discriminator.parameters():
            parameter.requires_grad_(False)
        score = self.discriminator(images.float(), fake)
        for parameter in self.discriminator.parameters():
            parameter.requires_grad_(True)
        return self.weight * F.binary_cross_entropy_with_logits(score, torch.ones_like(score))

    def discriminator_step(self, images: torch.Tensor, logits: torch.Tensor,
                           labels: torch.Tensor) -> float:
        """One optimiser step of the discriminator on real and (detached) predicted masks."""
        images = images.float()
        real = self.discriminator(images, self._reference_masks(labels, logits.shape[1]))
        fake = self.discriminator(images, self._predicted_masks(logits.detach(), labels))
        loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))) / 2
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    @staticmethod
    def _reference_masks(labels: torch.Tensor, classes: int) -> torch.Tensor:
        valid = (labels != IGNORE_INDEX).unsqueeze(1)
        one_hot = F.one_hot(torch.where(valid[:, 0], labels, 0), classes).movedim(-1, 1)
        return one_hot.float() * valid

    @staticmethod
    def _predicted_masks(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1) * (labels != IGNORE_INDEX).unsqueeze(1)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.discriminator.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
