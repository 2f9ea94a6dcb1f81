"""SegNet (Badrinarayanan, Kendall, Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", IEEE TPAMI 39(12), 2017), hand-written for 2D and 3D:
neither smp nor MONAI has it.

Each encoder stage is `convs` conv-BN-ReLU blocks and a max pooling that remembers where its
maxima were; the mirrored decoder stage unpools into exactly those positions (MaxUnpool) and
densifies with conv-BN-ReLU blocks, the last of which narrows to the next stage's width; a
convolution to the classes ends the first stage, as in the paper's Caffe model. The paper's
VGG16 layout is widths 64-128-256-512-512, convs 2-2-3-3-3 and 2x pooling; the plan takes the
widths, kernels and per-axis strides of its U-Net stages (anisotropic volumes pool their fine
axes only) and the paper's conv counts.
"""

from __future__ import annotations

import torch
from torch import nn

from seglab.errors import SeglabError
from seglab.models import register
from seglab.models.anysize import stride_product

PAPER = ('Badrinarayanan, Kendall, Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder '
         'Architecture for Image Segmentation", IEEE TPAMI 2017')


def _block(dims: int, channels: int, width: int, kernel: list[int]) -> nn.Sequential:
    conv = (nn.Conv2d, nn.Conv3d)[dims - 2]
    norm = (nn.BatchNorm2d, nn.BatchNorm3d)[dims - 2]
    return nn.Sequential(conv(channels, width, kernel, padding=[k // 2 for k in kernel],
                              bias=False), norm(width), nn.ReLU(inplace=True))


class SegNet(nn.Module):
    def __init__(self, dims: int, in_channels: int, classes: int, widths: list[int],
                 strides: list[list[int]], kernels: list[list[int]], convs: list[int]):
        super().__init__()
        conv = (nn.Conv2d, nn.Conv3d)[dims - 2]
        pool = (nn.MaxPool2d, nn.MaxPool3d)[dims - 2]
        unpool = (nn.MaxUnpool2d, nn.MaxUnpool3d)[dims - 2]
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        channels = in_channels
        for stage, (width, kernel, n) in enumerate(zip(widths, kernels, convs)):
            self.encoder.append(nn.Sequential(*(
                _block(dims, channels if i == 0 else width, width, kernel) for i in range(n))))
            last = (_block(dims, width, widths[stage - 1], kernel) if stage else
                    conv(width, classes, kernel, padding=[k // 2 for k in kernel]))
            self.decoder.append(nn.Sequential(
                *(_block(dims, width, width, kernel) for _ in range(n - 1)), last))
            channels = width
        self.pools = nn.ModuleList(pool(s, s, return_indices=True) for s in strides)
        self.unpools = nn.ModuleList(unpool(s, s) for s in strides)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):  # He et al. initialisation, as SegNet
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        self.size_multiple = stride_product(strides, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unpooling = []
        for encode, pool in zip(self.encoder, self.pools):
            x = encode(x)
            size = x.shape
            x, indices = pool(x)
            unpooling.append((indices, size))
        for decode, unpool, (indices, size) in zip(
                reversed(self.decoder), reversed(self.unpools), reversed(unpooling)):
            x = decode(unpool(x, indices, output_size=size))
        return x


def paper_convs(stages: int) -> list[int]:
    """Conv blocks per stage as in VGG16: 2, 2, 3, 3, 3 (and 3 for any further stage)."""
    return [2 if stage < 2 else 3 for stage in range(stages)]


def segnet_defaults(dims: int, topology: dict) -> dict:
    stages = len(topology["strides"])
    return {"widths": topology["widths"][:stages], "strides": topology["strides"],
            "kernels": topology["kernels"][:stages], "convs": paper_convs(stages)}


@register("segnet", dims=(2, 3), paper=PAPER, defaults=segnet_defaults)
def build_segnet(dims: int, in_channels: int, classes: int, widths: list[int] | None = None,
                 strides: list | None = None, kernels: list | None = None,
                 convs: list[int] | None = None) -> nn.Module:
    """One entry per stage in `widths`, `strides` (the pooling after it, per axis or an int),
    `kernels` and `convs`; without them, the paper's VGG16 layout."""
    widths = widths or [64, 128, 256, 512, 512]
    stages = len(widths)
    strides = [[s] * dims if isinstance(s, int) else s for s in (strides or [2] * stages)]
    kernels = [[k] * dims if isinstance(k, int) else k for k in (kernels or [3] * stages)]
    convs = convs or paper_convs(stages)
    if not len(strides) == len(kernels) == len(convs) == stages:
        raise SeglabError(f"model 'segnet': widths, strides, kernels and convs need one entry per "
                          f"stage; got {stages}, {len(strides)}, {len(kernels)} and {len(convs)}")
    return SegNet(dims, in_channels, classes, widths, strides, kernels, convs)
