"""How an instance plan finds its objects: the method, chosen from the objects themselves.

- `rim_watershed` (`seglab.instance_split`): the semantic network learns each object's class and,
  as one more class, its rim; seeded watershed splits its output into objects. The approach of
  the DSB2018 leaders for crowded small objects (nuclei, cells), in 2D and 3D; it needs no box
  to fit around an object, so it does not care how many touch.
- `mask_rcnn` (`seglab.models.mask_rcnn`): boxes proposed and classified, then a mask per box.
  For photographs, whose objects are few, large, of many sizes and overlap; 2D only.

The dataset's fingerprint counts the objects per image and measures their diameters; crowded or
small objects, and volumes, go to the watershed, the rest to Mask R-CNN. `instances.method`
overrides the choice.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seglab.data.inspect import Fingerprint

METHODS = {"rim_watershed": (2, 3), "mask_rcnn": (2,)}  # each method's dims
CROWDED = 20  # median objects per image from which boxes crowd each other (DSB2018: ~25)
SMALL_DIAMETER = 16.0  # median object diameter (pixels) under which a stride-4 pyramid blurs them
MAX_DETECTOR_PATCH = 512  # training crops: a CPU step on 512² takes about a second
DETECTOR_BATCH = 2
# The rim watershed's rim, in pixels deep where two objects touch (1 elsewhere): the gap between
# touching objects that the network learns to draw is twice this.
CONTACT_WIDTH = 1
# Whether the pixels where objects touch are a class of their own (CONTACT_CLASS, after the rim,
# with its own Dice term: the DSB2018 leaders' third output) rather than part of the rim. Off:
# on DSB2018 in 30 CPU minutes it scored 0.512 against the rim alone's 0.510 (the seams' Dice
# stayed at 0.28; BENCHMARKS.md).
CONTACT = False
RIM_CLASS = "object_rim"  # the class a rim-watershed plan adds: each object's outer pixels
CONTACT_CLASS = "object_contact"  # and with `contact`, where two objects touch
DETECTOR_OPTIMIZER = {"name": "adamw", "lr": 2e-4, "weight_decay": 1e-4, "momentum": 0.9,
                      "nesterov": False, "schedule": "poly", "warmup_fraction": 0.05,
                      "grad_clip": 10.0}


def named_in(overrides: dict[str, Any], section: str, key: str = "name") -> Any:
    """What an override names for `section.key`, set alone or inside `section` as a whole."""
    whole = overrides.get(section)
    return overrides.get(f"{section}.{key}") or (
        whole.get(key) if isinstance(whole, dict) else None)


def instance_method(fp: Fingerprint, overrides: dict[str, Any]) -> tuple[str, str]:
    """The method and why."""
    named = named_in(overrides, "instances", "method")
    if named:
        return named, "named by the user"
    model = named_in(overrides, "model")
    if model:  # a network the user named decides: its objects come from its own output
        return ("mask_rcnn", "the model named by the user") if model == "mask_rcnn" else (
            "rim_watershed", f"the model named by the user ({model}) labels pixels: its rim "
                             "class and seeded watershed give the objects")
    crowd = fp.objects["per_case"]["median"]
    diameter = fp.objects.get("diameter", {}).get("median", 0.0)
    if fp.dims == 3:
        return "rim_watershed", "volumes: Mask R-CNN here is 2D; the rim watershed is 2D and 3D"
    if crowd >= CROWDED or diameter < SMALL_DIAMETER:
        return "rim_watershed", (
            f"crowded or small objects (median {crowd:g} per image, {diameter:.1f} px across): "
            "a rim class and seeded watershed, as the DSB2018 leaders split nuclei")
    return "mask_rcnn", (f"few, large objects (median {crowd:g} per image, {diameter:.1f} px "
                         "across): Mask R-CNN on an ImageNet-pretrained EfficientNet-Lite0")


def instances_section(method: str, n_classes: int) -> dict[str, Any]:
    if method == "mask_rcnn":
        return {"method": method, "score_threshold": 0.5, "mask_threshold": 0.5}
    return {"method": method, "rim_class": n_classes, "contact_width": CONTACT_WIDTH,
            "contact": CONTACT}


def added_classes(instances: dict[str, Any] | None) -> list[str]:
    """The classes an instance plan's network learns beyond the dataset's."""
    if not instances or instances["method"] != "rim_watershed":
        return []
    return [RIM_CLASS] + ([CONTACT_CLASS] if instances.get("contact") else [])


def contact_class(instances: dict[str, Any]) -> int | None:
    """The contact class's index, after the rim's, or None where contacts are rim."""
    return instances["rim_class"] + 1 if instances.get("contact") else None


def detector_model(fp: Fingerprint) -> dict[str, Any]:
    """Mask R-CNN's plan options: one anchor size per pyramid level, spread geometrically over the
    objects' diameters (10th to 90th percentile, widened to at least a factor 16), and room for
    twice the most crowded training image's objects."""
    diameter = fp.objects.get("diameter") or {"p10": 32.0, "p90": 512.0}
    low = max(8.0, diameter["p10"])
    high = max(1.5 * diameter["p90"], 16 * low)
    anchors = [int(round(s)) for s in np.geomspace(low, high, 5)]
    return {"name": "mask_rcnn", "encoder": "tf_efficientnet_lite0", "encoder_weights": "imagenet",
            "anchor_sizes": anchors, "fpn_width": 128,
            "detections": int(max(100, 2 * fp.objects["per_case"]["max"]))}


def detector_patch(median_shape: np.ndarray) -> list[int]:
    """Training crops of the median image, at most MAX_DETECTOR_PATCH, in multiples of 32."""
    return [int(max(64, min(MAX_DETECTOR_PATCH, round(s / 32) * 32))) for s in median_shape]
