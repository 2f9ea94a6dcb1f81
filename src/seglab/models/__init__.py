"""The models registry: `create(name, dims, in_channels, classes, **options)`.

Every model maps a (B, in_channels, *spatial) tensor of any spatial size to (B, classes, *spatial)
logits. `encoder=` names any timm model (resnet18/34/50, vgg16_bn, efficientnet_b0,
tf_efficientnet_lite0, ...); `encoder_weights=` is None, "imagenet" or a local weights file.

| name | dims | paper | built on |
|---|---|---|---|
| unet | 2, 3 | Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015; nnU-Net topology (Isensee et al., Nature Methods 2021) | MONAI DynUNet |
| basic_unet | 2, 3 | Ronneberger et al., MICCAI 2015 (2D); Çiçek et al., "3D U-Net: Learning Dense Volumetric Segmentation from Sparse Annotation", MICCAI 2016 (3D) | MONAI BasicUNet |
| attention_unet | 2, 3 | Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018 | MONAI AttentionUnet |
| segresnet | 2, 3 | Myronenko, "3D MRI Brain Tumor Segmentation Using Autoencoder Regularization", BrainLes (MICCAI) 2018 | MONAI SegResNet |
| encoder_unet | 2 | Ronneberger et al., MICCAI 2015, with a timm encoder | smp Unet |
| unetplusplus | 2 | Zhou et al., "UNet++: A Nested U-Net Architecture for Medical Image Segmentation", DLMIA 2018 | smp UnetPlusPlus |
| fpn | 2 | Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017; semantic head of Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019 | smp FPN |
| pspnet | 2 | Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017 | smp PSPNet |
| deeplabv3 | 2 | Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", arXiv:1706.05587, 2017 | smp DeepLabV3 |
| deeplabv3plus | 2 | Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation", ECCV 2018 | smp DeepLabV3Plus |
| fcn | 2 | Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015 (FCN-8s) | hand-written, timm encoder |
| segnet | 2, 3 | Badrinarayanan, Kendall, Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image Segmentation", TPAMI 2017 | hand-written |
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from torch import nn

from seglab.errors import SeglabError
from seglab.models.anysize import AnySize, size_multiple


@dataclass(frozen=True)
class ModelEntry:
    """`defaults(dims, topology)` gives the model's plan options; `topology` is the planner's
    {"widths", "kernels", "strides"} for the dataset (per-stage, anisotropy-aware)."""

    name: str
    dims: tuple[int, ...]
    build: Callable[..., nn.Module]
    paper: str
    defaults: Callable[[int, dict], dict] | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, dims: tuple[int, ...], paper: str,
             defaults: Callable[[int, dict], dict] | None = None):
    """Decorator that adds a model builder to the registry. A builder that needs input sizes of
    some multiple sets `size_multiple` (an int, or one per axis) on the module it returns; one
    whose encoder is not a single `.encoder` module lists its parts in `encoder_parts`."""

    def wrap(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelEntry(name, dims, build, paper, defaults)
        return build

    return wrap


def available() -> list[ModelEntry]:
    return sorted(_REGISTRY.values(), key=lambda entry: entry.name)


def entry(name: str) -> ModelEntry:
    found = _REGISTRY.get(name)
    if found is None:
        raise SeglabError(f"model {name!r} is not registered (available: {sorted(_REGISTRY)})")
    return found


def default_options(name: str, dims: int, topology: dict) -> dict:
    """The plan's `model` section for `name`: its name and its options for this dataset."""
    found = entry(name)
    return {"name": name, **(found.defaults(dims, topology) if found.defaults else {})}


def create(name: str, dims: int, in_channels: int, classes: int, **options) -> nn.Module:
    """Builds a registered model that takes any input size (see `AnySize`); unknown names,
    unsupported dims and options the model does not have are clear errors."""
    found = entry(name)
    if dims not in found.dims:
        supported = " and ".join(f"{d}D" for d in found.dims)
        raise SeglabError(f"model {name!r} exists in {supported} only, not {dims}D")
    arguments = dict(dims=dims, in_channels=in_channels, classes=classes, **options)
    signature = inspect.signature(found.build)
    try:
        signature.bind(**arguments)
    except TypeError as error:
        known = [p for p in signature.parameters if p not in ("dims", "in_channels", "classes")]
        raise SeglabError(f"model {name!r}: {error} (its options: {', '.join(known) or 'none'})")
    net = found.build(**arguments)
    return AnySize(net, size_multiple(net, dims))


def encoder_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the model's encoder (its downsampling path), e.g. to freeze it for the
    first epochs of fine-tuning. Takes the module that `create()` returns (or the bare network)."""
    net = model.net if isinstance(model, AnySize) else model
    parts = getattr(net, "encoder_parts", None)
    if parts is None and isinstance(getattr(net, "encoder", None), nn.Module):
        parts = [net.encoder]  # smp models, fcn, segnet
    if not parts:
        raise SeglabError(f"model {type(net).__name__} has no separable encoder to freeze")
    return [p for part in parts for p in part.parameters()]


# The builders register themselves on import.
from seglab.models import fcn, monai_nets, segnet, smp_nets, unet  # noqa: E402,F401
