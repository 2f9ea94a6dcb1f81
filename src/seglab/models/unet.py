"""U-Net for 2D and 3D, configured from the plan (widths, kernels and strides per stage).

Built on MONAI's DynUNet, the nnU-Net-style U-Net: per-stage kernel sizes and strides let the
plan pool anisotropic volumes only along their fine axes.
"""

from __future__ import annotations

from monai.networks.nets import DynUNet
from torch import nn

from seglab.models import register
from seglab.models.anysize import stride_product

PAPER = ('Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation", '
         "MICCAI 2015; nnU-Net topology (Isensee et al., Nature Methods 2021)")


def unet_defaults(dims: int, topology: dict) -> dict:
    return {"widths": topology["widths"], "kernels": topology["kernels"],
            "strides": topology["strides"], "norm": "instance", "deep_supervision": False}


@register("unet", dims=(2, 3), paper=PAPER, defaults=unet_defaults)
def build_unet(dims: int, in_channels: int, classes: int, widths: list[int] | None = None,
               kernels: list | None = None, strides: list | None = None,
               norm: str = "instance", deep_supervision: bool = False) -> nn.Module:
    """`strides` lists the downsampling of each stage after the first (len = stages - 1)."""
    strides = strides if strides is not None else [[2] * dims] * 4
    kernels = kernels if kernels is not None else [[3] * dims] * (len(strides) + 1)
    widths = widths if widths is not None else [min(32 * 2**k, 320) for k in range(len(kernels))]
    norm_name = ("instance", {"affine": True}) if norm == "instance" else norm
    net = DynUNet(
        spatial_dims=dims,
        in_channels=in_channels,
        out_channels=classes,
        kernel_size=kernels,
        strides=[[1] * dims, *strides],
        upsample_kernel_size=strides,
        filters=widths,
        norm_name=norm_name,
        act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision=deep_supervision,
        deep_supr_num=max(1, min(2, len(strides) - 1)),
    )
    net.size_multiple = stride_product(strides, dims)
    net.encoder_parts = [net.input_block, *net.downsamples, net.bottleneck]
    return net
