"""MONAI's BasicUNet, Attention U-Net and SegResNet for 2D and 3D, as MONAI implements them."""

from __future__ import annotations

from monai.networks.nets import AttentionUnet, BasicUNet, SegResNet
from monai.networks.nets.attentionunet import ConvBlock
from torch import nn

from seglab.models import register
from seglab.models.anysize import stride_product

BASIC_UNET_PAPER = (
    'Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI '
    '2015 (2D); Çiçek et al., "3D U-Net: Learning Dense Volumetric Segmentation from Sparse '
    'Annotation", MICCAI 2016 (3D)')
ATTENTION_UNET_PAPER = ('Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas", '
                        "MIDL 2018")
SEGRESNET_PAPER = ('Myronenko, "3D MRI Brain Tumor Segmentation Using Autoencoder Regularization", '
                   "BrainLes workshop, MICCAI 2018")


def basic_unet_defaults(dims: int, topology: dict) -> dict:
    base = topology["widths"][0]
    return {"features": [base, base, 2 * base, 4 * base, 8 * base, base], "norm": "instance",
            "dropout": 0.0}


@register("basic_unet", dims=(2, 3), paper=BASIC_UNET_PAPER, defaults=basic_unet_defaults)
def build_basic_unet(dims: int, in_channels: int, classes: int,
                     features: list[int] | None = None, norm: str = "instance",
                     dropout: float = 0.0) -> nn.Module:
    """Four 2x max-poolings with two convolutions per level; `features` are the five encoder
    widths and the width of the last decoder level (MONAI's default: 32, 32, 64, 128, 256, 32)."""
    net = BasicUNet(spatial_dims=dims, in_channels=in_channels, out_channels=classes,
                    features=tuple(features or (32, 32, 64, 128, 256, 32)),
                    norm=("instance", {"affine": True}) if norm == "instance" else norm,
                    dropout=dropout)
    net.size_multiple = 16
    net.encoder_parts = [net.conv_0, net.down_1, net.down_2, net.down_3, net.down_4]
    return net


def attention_unet_defaults(dims: int, topology: dict) -> dict:
    return {"widths": topology["widths"], "strides": topology["strides"], "dropout": 0.0}


@register("attention_unet", dims=(2, 3), paper=ATTENTION_UNET_PAPER,
          defaults=attention_unet_defaults)
def build_attention_unet(dims: int, in_channels: int, classes: int,
                         widths: list[int] | None = None, strides: list | None = None,
                         dropout: float = 0.0) -> nn.Module:
    """Stage widths and the per-axis strides between stages (len = stages - 1), from the plan."""
    widths = widths or [16, 32, 64, 128, 256]
    strides = strides or [[2] * dims] * (len(widths) - 1)
    net = AttentionUnet(spatial_dims=dims, in_channels=in_channels, out_channels=classes,
                        channels=widths, strides=strides, dropout=dropout)
    net.size_multiple = stride_product(strides, dims)
    net.encoder_parts = [m for m in net.modules() if isinstance(m, ConvBlock)]  # the down path
    return net


def segresnet_defaults(dims: int, topology: dict) -> dict:
    return {"init_filters": topology["widths"][0], "blocks_down": [1, 2, 2, 4],
            "blocks_up": [1, 1, 1], "dropout": None}


@register("segresnet", dims=(2, 3), paper=SEGRESNET_PAPER, defaults=segresnet_defaults)
def build_segresnet(dims: int, in_channels: int, classes: int, init_filters: int = 32,
                    blocks_down: list[int] | None = None, blocks_up: list[int] | None = None,
                    dropout: float | None = None) -> nn.Module:
    """The paper's encoder-decoder (init_filters 32, blocks 1-2-2-4 down and 1-1-1 up), without
    its variational auto-encoder branch; the plan scales `init_filters` to its widths."""
    blocks_down = tuple(blocks_down or (1, 2, 2, 4))
    net = SegResNet(spatial_dims=dims, init_filters=init_filters, in_channels=in_channels,
                    out_channels=classes, dropout_prob=dropout, blocks_down=blocks_down,
                    blocks_up=tuple(blocks_up or (1, 1, 1)))
    net.size_multiple = 2 ** (len(blocks_down) - 1)
    net.encoder_parts = [net.convInit, net.down_layers]
    return net
