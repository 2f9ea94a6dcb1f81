"""2D encoder-decoder models of segmentation_models_pytorch (smp) on any timm encoder.

`encoder` is a timm model name, given to smp as "tu-<name>"; `encoder_weights` is None, "imagenet"
or a local weights file (see `pretrained`). The input needs to be a multiple of the encoder's
output stride (32, or 8/16 for the dilated DeepLab and the truncated PSPNet encoders).
"""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path

import segmentation_models_pytorch as smp
from torch import nn

from seglab.errors import SeglabError
from seglab.models import register
from seglab.models.pretrained import timm_weights

UNET = ('Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation", '
        "MICCAI 2015, with a timm encoder")
UNETPLUSPLUS = ('Zhou et al., "UNet++: A Nested U-Net Architecture for Medical Image '
                'Segmentation", DLMIA (MICCAI workshop) 2018')
FPN = ('Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017; semantic head of '
       'Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019')
PSPNET = 'Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017'
DEEPLABV3 = ('Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", '
             "arXiv:1706.05587, 2017")
DEEPLABV3PLUS = ('Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic '
                 'Image Segmentation", ECCV 2018')
DILATED = "an encoder that supports dilated convolutions (timm's output_stride)"

# name: (smp class, paper, what the architecture needs of its encoder)
ARCHITECTURES: dict[str, tuple[type[nn.Module], str, str]] = {
    "encoder_unet": (smp.Unet, UNET, "a 5-stage encoder"),
    "unetplusplus": (smp.UnetPlusPlus, UNETPLUSPLUS, "a 5-stage encoder"),
    "fpn": (smp.FPN, FPN, "a 5-stage encoder"),
    "pspnet": (smp.PSPNet, PSPNET, "a 3-stage encoder"),
    "deeplabv3": (smp.DeepLabV3, DEEPLABV3, DILATED),
    "deeplabv3plus": (smp.DeepLabV3Plus, DEEPLABV3PLUS, DILATED),
}


def encoder_defaults(dims: int, topology: dict) -> dict:
    return {"encoder": "resnet34", "encoder_weights": None}


def build_smp(name: str, dims: int, in_channels: int, classes: int, encoder: str = "resnet34",
              encoder_weights: str | Path | None = None) -> nn.Module:
    architecture, _, needs = ARCHITECTURES[name]
    timm_options = timm_weights(name, encoder, encoder_weights)
    pretrained = timm_options.pop("pretrained", False)
    try:
        with warnings.catch_warnings():  # smp's notes on deprecated arguments are not the user's
            warnings.simplefilter("ignore")
            net = architecture(encoder_name=f"tu-{encoder}", encoder_weights=pretrained or None,
                               in_channels=in_channels, classes=classes, **timm_options)
    except (AssertionError, TypeError, ValueError, RuntimeError, KeyError) as error:
        detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise SeglabError(f"model {name!r} cannot use encoder {encoder!r}: it needs {needs} "
                          f"(smp/timm refused with {detail})")
    net.size_multiple = net.encoder.output_stride
    return net


for _name, (_, _paper, _) in ARCHITECTURES.items():
    register(_name, dims=(2,), paper=_paper, defaults=encoder_defaults)(partial(build_smp, _name))
