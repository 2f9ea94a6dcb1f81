"""FCN-8s (Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015), hand-written: neither smp nor MONAI has it.

A timm encoder (`features_only`; VGG16-BN by default as in the paper, any timm CNN otherwise)
gives its stride-8, -16 and -32 features; a 1x1 score layer on each predicts the classes; the
stride-32 scores are upsampled 2x and added to the stride-16 ones, these 2x again and added to the
stride-8 ones, which are upsampled 8x to the input. As in the paper, the two 2x upsamplings are
learned transposed convolutions initialised to bilinear interpolation, the final 8x is fixed
bilinear interpolation, and the score layers start at zero. Unlike the paper, the score layer
reads the encoder's last features directly, without the convolutionalised fc6/fc7 classifier
(4096 channels, ~120M parameters in VGG16).
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import SeglabError
from seglab.models import register
from seglab.models.pretrained import timm_weights

PAPER = ('Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation", '
         "CVPR 2015 (FCN-8s)")


class FCN8s(nn.Module):
    def __init__(self, encoder: nn.Module, channels: list[int], classes: int):
        """`encoder` returns the stride-8, -16 and -32 features, of `channels` channels."""
        super().__init__()
        self.encoder = encoder
        self.score = nn.ModuleList(nn.Conv2d(c, classes, kernel_size=1) for c in channels)
        for layer in self.score:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.up = nn.ModuleList(_bilinear_upsampling(classes) for _ in range(2))
        self.size_multiple = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride8, stride16, stride32 = self.encoder(x)
        scores = self.up[0](self.score[2](stride32)) + self.score[1](stride16)
        scores = self.up[1](scores) + self.score[0](stride8)
        return F.interpolate(scores, size=x.shape[2:], mode="bilinear", align_corners=False)


def _bilinear_upsampling(channels: int) -> nn.ConvTranspose2d:
    """A 2x transposed convolution (kernel 4, per channel) initialised to bilinear upsampling."""
    layer = nn.ConvTranspose2d(channels, channels, kernel_size=4, stride=2, padding=1, bias=False)
    taps = 1 - (torch.arange(4) - 1.5).abs() / 2  # 0.25, 0.75, 0.75, 0.25
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[range(channels), range(channels)] = taps[:, None] * taps[None, :]
    return layer


def fcn_defaults(dims: int, topology: dict) -> dict:
    return {"encoder": "vgg16_bn", "encoder_weights": None}


@register("fcn", dims=(2,), paper=PAPER, defaults=fcn_defaults)
def build_fcn(dims: int, in_channels: int, classes: int, encoder: str = "vgg16_bn",
              encoder_weights: str | Path | None = None) -> nn.Module:
    options = timm_weights("fcn", encoder, encoder_weights)
    with torch.device("meta"):  # which feature levels are at strides 8, 16 and 32
        reductions = timm.create_model(encoder, features_only=True).feature_info.reduction()
    if not {8, 16, 32} <= set(reductions):
        raise SeglabError(f"model 'fcn' cannot use encoder {encoder!r}: it needs features at "
                          f"strides 8, 16 and 32, and {encoder} has {reductions}")
    indices = tuple(reductions.index(stride) for stride in (8, 16, 32))
    backbone = timm.create_model(encoder, features_only=True, out_indices=indices,
                                 in_chans=in_channels, **options)
    return FCN8s(backbone, backbone.feature_info.channels(), classes)
