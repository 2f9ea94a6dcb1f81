"""A dataset's fingerprint turned into a plain JSON plan that training and inference read.

The rules follow nnU-Net's planner in spirit (Isensee et al., Nature Methods 2021): the target
spacing is the median spacing; the patch covers the median image (in target spacing) as far as the
memory budget allows; each axis is pooled while its feature map stays >= 4 and its spacing is not
much coarser than the finest axis; widths double per stage up to a cap. Unlike nnU-Net, the plan
also fixes the training budget (epochs, iterations, optional minutes), and every field can be
overridden (`--set model.base_width=16`, or a JSON file of overrides).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seglab.data.inspect import Fingerprint
from seglab.data.io import write_text_atomic
from seglab.errors import SeglabError
from seglab.plan_check import LOSS_DEFAULTS, check_plan
from seglab.plan_inference import inference_section, quarter_turns_fit
from seglab.plan_instances import (DETECTOR_BATCH, DETECTOR_OPTIMIZER, added_classes,
                                   detector_model, detector_patch, instance_method,
                                   instances_section, named_in)
from seglab.plan_model import model_family
from seglab.plan_temporal import TEMPORAL_DEFAULTS, stack_frames, temporal_section

MIN_FEATURE_SIZE = 4
ENCODER_STRIDE = 32  # the output stride of the encoder models' timm backbones
MAX_POOLINGS = 6
ANISOTROPY_RATIO = 2.0
COLOUR_PROBABILITY = 0.3  # of each colour-microscopy augmentation: channel shuffle, grey, inversion

# Fine-tuning: `init_from` is a run folder or a checkpoint whose matching weights start training;
# the encoder (where the model has one) stays frozen for the first `freeze_encoder_epochs`.
TRANSFER_DEFAULTS = {"init_from": None, "freeze_encoder_epochs": 0}
# Adversarial training (Luc et al. 2016): weight 0 turns it off.
ADVERSARIAL_DEFAULTS = {"weight": 0.0, "lr": 2e-4, "width": 32}
# Learning from images without masks (`seglab.train.semi`): "mean_teacher" (Tarvainen & Valpola
# 2017) adds `weight` x the consistency between the student and its exponential moving average
# (decay `ema_decay`, each under Gaussian `noise`), ramped up over the first `rampup_fraction`
# of training; "cross_pseudo_supervision" (Chen et al. 2021) trains a second network beside the
# first, each learning the other's hard labels on the unlabelled images (`weight`, the same
# ramp-up); "pseudo_labels" teaches the student the mean teacher's labels where the teacher's
# probability reaches `confidence`, on strongly perturbed copies; "none" ignores the unlabelled
# images.
SEMI_SUPERVISED_DEFAULTS = {"method": "none", "weight": 1.0, "rampup_fraction": 0.25,
                            "ema_decay": 0.99, "noise": 0.1, "confidence": 0.95}
# AdamW under the poly schedule with nnU-Net's gradient clipping; `momentum` and `nesterov` are
# read when `name` is sgd (nnU-Net's 0.99, Nesterov). See `seglab.train.optim`.
OPTIMIZER_DEFAULTS = {"name": "adamw", "lr": 3e-3, "weight_decay": 1e-4, "momentum": 0.99,
                      "nesterov": True, "schedule": "poly", "warmup_fraction": 0.0,
                      "grad_clip": 12.0}
# Fine-tuning a pretrained encoder: a lower peak rate and a short warm-up, so that the first
# steps of a random decoder do not wreck the ImageNet features.
PRETRAINED_OPTIMIZER = {"lr": 1e-3, "warmup_fraction": 0.02}


@dataclass
class Plan:
    """Everything training and inference need; `to_dict`/`from_dict` round-trip through JSON."""

    dims: int
    in_channels: int
    classes: list[str]
    label_values: dict[int, int] | None
    ignore_label: int | None
    roi_rule: str | None
    normalization: dict[str, Any]
    target_spacing: list[float] | None
    patch_size: list[int]
    batch_size: int
    model: dict[str, Any]
    loss: dict[str, Any]
    optimizer: dict[str, Any]
    epochs: int
    iterations_per_epoch: int
    time_budget_minutes: float | None
    foreground_oversampling: float
    augmentation: dict[str, Any]
    inference: dict[str, Any]
    split: dict[str, Any]
    transfer: dict[str, Any] = field(default_factory=lambda: dict(TRANSFER_DEFAULTS))
    # How the plan was made: the model family's reason, and with a time budget the candidate
    # configurations timed on this machine and why one was chosen (`seglab.plan_budget`).
    planning: dict[str, Any] = field(default_factory=dict)
    adversarial: dict[str, Any] = field(default_factory=lambda: dict(ADVERSARIAL_DEFAULTS))
    semi_supervised: dict[str, Any] = field(
        default_factory=lambda: dict(SEMI_SUPERVISED_DEFAULTS))
    seed: int = 0
    notes: list[str] = field(default_factory=list)
    # "instance": objects found by `instances.method` (`seglab.plan_instances`): the network
    # learns the object classes and, as its last classes, each object's rim and where objects
    # touch, split into objects by seeded watershed (`seglab.instance_split`); or Mask R-CNN
    # (`seglab.models.mask_rcnn`).
    task: str = "semantic"
    instances: dict[str, Any] | None = None
    # Frames of a sequence seen with `context` neighbours on each side, stacked as channels
    # (`seglab.plan_temporal`); `pattern` finds each case's sequence and frame.
    temporal: dict[str, Any] = field(default_factory=lambda: dict(TEMPORAL_DEFAULTS))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        data = copy.deepcopy(data)
        check_plan(data)
        if data.get("label_values"):
            data["label_values"] = {int(k): int(v) for k, v in data["label_values"].items()}
        return cls(**data)

    def save(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Plan":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as error:
            raise SeglabError(f"{path}: not a readable plan ({error})")

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def data_classes(self) -> list[str]:
        """The dataset's classes: those of the network less the rim (and contact) class that a
        rim-watershed instance plan adds."""
        if self.instances and self.instances["method"] == "rim_watershed":
            return self.classes[:self.instances["rim_class"]]
        return list(self.classes)


def make_plan(fp: Fingerprint, overrides: dict[str, Any] | None = None,
              memory_budget_voxels: int = 2**19, device: str = "cpu") -> Plan:
    """Derives the plan from a fingerprint; `memory_budget_voxels` bounds batch x patch voxels;
    `device` ("cpu", "cuda", "mps") decides test-time mirroring. A time budget's own choices of
    patch, batch and network are made afterwards, by timing (`seglab.plan_budget`)."""
    overrides = overrides or {}
    spacings = np.array(fp.spacings, dtype=float)
    shapes = np.array(fp.shapes, dtype=float)
    target_spacing = np.median(spacings, axis=0) if fp.dims == 3 else None
    if target_spacing is not None:
        median_shape = np.median(shapes * spacings / target_spacing, axis=0)
        spacing_for_pooling = target_spacing
    else:
        median_shape = np.median(shapes, axis=0)
        spacing_for_pooling = np.ones(fp.dims)
    patch, strides, kernels = _patch_and_topology(median_shape, spacing_for_pooling,
                                                  memory_budget_voxels)
    batch_size = int(np.clip(memory_budget_voxels // int(np.prod(patch)), 2, 64))
    widths = [min(16 * 2**stage, 320 if fp.dims == 3 else 512) for stage in range(len(kernels))]
    topology = {"widths": widths, "kernels": kernels, "strides": strides}
    model, family_reason = model_family(fp, overrides, topology)
    loss, loss_reason = _loss(overrides)
    task = overrides.get("task", fp.task)
    if task == "instance" and fp.task != "instance":
        raise SeglabError("task=instance: the dataset's labels give no objects (one mask file "
                          "per object, COCO or YOLO-seg)")
    method, method_reason = instance_method(fp, overrides) if task == "instance" else (None, "")
    optimizer = {**OPTIMIZER_DEFAULTS, **(PRETRAINED_OPTIMIZER if model.get("encoder_weights")
                                          else {})}
    inference = inference_section(fp.dims, device)
    temporal, temporal_reason = temporal_section(fp)
    if method == "mask_rcnn":  # its losses are its own (proposals, boxes, classes, masks)
        model, family_reason = detector_model(fp), (
            "the instance method's own: Mask R-CNN on an ImageNet-pretrained EfficientNet-Lite0 "
            "with a feature pyramid, anchors sized from the objects' diameters")
        patch, batch_size, optimizer = detector_patch(median_shape), DETECTOR_BATCH, dict(
            DETECTOR_OPTIMIZER)
        inference.update(mirror_axes=[], tta_reason="Mask R-CNN sees each whole image once")
    elif "encoder" in model:  # timm encoders need multiples of their output stride
        patch = [int(max(ENCODER_STRIDE, round(p / ENCODER_STRIDE) * ENCODER_STRIDE))
                 for p in patch]
    plan = Plan(
        dims=fp.dims,
        in_channels=fp.channels,
        classes=list(fp.classes),
        label_values=fp.label_values,
        ignore_label=fp.ignore_label,
        roi_rule=fp.roi_rule,
        normalization=_normalization(fp),
        target_spacing=[float(s) for s in target_spacing] if target_spacing is not None else None,
        patch_size=patch,
        batch_size=batch_size,
        model=model,
        loss=loss,
        optimizer=optimizer,
        epochs=50,
        iterations_per_epoch=50,
        time_budget_minutes=None,
        foreground_oversampling=0.33,
        augmentation=_augmentation(fp, spacing_for_pooling),
        inference=inference,
        split={"val_fraction": 0.15, "test_fraction": 0.2, "fixed": None, "folds": None},
        planning={"model": family_reason, "loss": loss_reason,
                  **({"instances": method_reason} if method else {}),
                  **({"semi_supervised": f"{fp.n_unlabeled} unlabelled images are not trained "
                                         "on; semi_supervised.method=mean_teacher learns from "
                                         "them too"} if fp.n_unlabeled else {}),
                  **({"temporal": temporal_reason} if temporal_reason else {})},
        task=task,
        instances=instances_section(method, len(fp.classes)) if method else None,
        temporal=temporal,
    )
    plan = apply_overrides(plan, overrides)
    if not {"inference", "inference.quarter_turns"} & set(overrides):
        plan.inference["quarter_turns"] = bool(plan.inference["mirror_axes"]) and (
            quarter_turns_fit(fp, plan.patch_size, plan.augmentation))
    if plan.instances:  # the classes the network adds follow the overridden instance section
        plan.classes = list(fp.classes) + added_classes(plan.instances)
    stack_frames(plan)
    if plan.model["name"] == "mask_rcnn" and plan.split.get("folds"):
        raise SeglabError("split.folds: a Mask R-CNN run is not cross-validated (its folds' "
                          "detections do not average into one ensemble); train it without "
                          "--folds, or set instances.method=rim_watershed")
    if plan.model["name"] == "mask_rcnn" and plan.semi_supervised["method"] != "none":
        raise SeglabError("semi_supervised.method: semi-supervised training is for networks "
                          "that label pixels, not Mask R-CNN; set instances.method=rim_watershed")
    return plan


def _loss(overrides: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The loss the user named, with its own default parameters (not another loss's), else
    Dice + cross-entropy, nnU-Net's. Soft clDice for thin structures is not a default: with 30
    minutes on a CPU it moved the test score by -0.002 on ISBI 2012's membranes and -0.002 on
    CHASE_DB1's vessels (BENCHMARKS.md: "Soft clDice as the default for thin structures")."""
    name = named_in(overrides, "loss")
    if name:
        return {"name": name, **LOSS_DEFAULTS.get(name, {})}, "named by the user"
    return {"name": "dice_ce", **LOSS_DEFAULTS["dice_ce"]}, "Dice + cross-entropy (nnU-Net's)"


def _patch_and_topology(median_shape: np.ndarray, spacing: np.ndarray, budget: int):
    """Patch size, per-stage strides and kernels, shrinking the patch until one sample fits
    a quarter of the budget (so that a batch of at least 2-4 fits)."""
    patch = np.maximum(median_shape, 8).astype(float)
    while np.prod(patch) > budget / 4:
        axis = int(np.argmax(patch / np.maximum(spacing / spacing.min(), 1)))
        patch[axis] *= 0.9
    return pooling_topology(patch, spacing)


def pooling_topology(patch: np.ndarray, spacing: np.ndarray
                     ) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """nnU-Net's topology for a patch: each axis pooled while its feature map stays >=
    MIN_FEATURE_SIZE and its spacing is not much coarser than the finest axis; 3x3 kernels where
    the spacing is fine, 1 along coarse axes. Returns the patch rounded up to a multiple of the
    strides' product, the strides of each stage after the first, and every stage's kernels."""
    poolings = [_poolings(size) for size in patch]
    strides, kernels = [], [[3 if s <= ANISOTROPY_RATIO * spacing.min() else 1 for s in spacing]]
    current_spacing = spacing.astype(float).copy()
    remaining = list(poolings)
    while any(remaining) and len(strides) < MAX_POOLINGS:
        finest = current_spacing.min()
        stride = [2 if remaining[a] and current_spacing[a] <= ANISOTROPY_RATIO * finest else 1
                  for a in range(len(patch))]
        if not any(stride):
            stride = [2 if remaining[a] else 1 for a in range(len(patch))]
        for axis, s in enumerate(stride):
            if s == 2:
                remaining[axis] -= 1
                current_spacing[axis] *= 2
        strides.append(stride)
        kernels.append([3 if current_spacing[a] <= ANISOTROPY_RATIO * current_spacing.min() else 1
                        for a in range(len(patch))])
    divisor = np.prod(np.array(strides), axis=0) if strides else np.ones(len(patch))
    patch = [int(max(d, math.ceil(p / d) * d)) for p, d in zip(patch, divisor)]
    return patch, strides, kernels


def _poolings(size: float) -> int:
    return max(0, min(MAX_POOLINGS, int(math.floor(math.log2(size / MIN_FEATURE_SIZE)))))


def _normalization(fp: Fingerprint) -> dict[str, Any]:
    if fp.modality.upper() == "CT":
        return {"scheme": "ct", "channels": [
            {"clip": [s["p00_5"], s["p99_5"]], "mean": s["mean"], "std": max(s["std"], 1e-6)}
            for s in fp.intensity]}
    return {"scheme": "zscore"}


def _augmentation(fp: Fingerprint, spacing: np.ndarray) -> dict[str, Any]:
    dims = fp.dims
    anisotropic = dims == 3 and spacing.max() > 3 * spacing.min()
    # Colour microscopy: stains differ between labs and bright-field images mix with fluorescence
    # ones (DSB2018: 10% of the training images are H&E-stained tissue, 29% of the test images).
    # Measured on DSB2018 in 30 minutes: DSB score 0.517 against 0.510 without (within noise).
    stains = fp.modality.lower() == "microscopy" and fp.channels > 1
    return {
        "flip_axes": list(range(dims)),
        "rotate_degrees": 180.0 if dims == 2 else 30.0,
        "rotate_in_plane_only": bool(anisotropic),
        "rotate_probability": 0.2,
        "scale_range": [0.7, 1.4],
        "scale_probability": 0.2,
        "noise_probability": 0.1,
        "brightness_probability": 0.15,
        "contrast_probability": 0.15,
        "gamma_probability": 0.3,
        # Elastic deformation (the U-Net paper's): off unless the data asks for it.
        "elastic_probability": 0.0,
        "elastic_spacing": 32,
        "elastic_magnitude": 3.0,
        "channel_shuffle_probability": COLOUR_PROBABILITY if stains else 0.0,
        "grayscale_probability": COLOUR_PROBABILITY if stains else 0.0,
        "invert_probability": COLOUR_PROBABILITY if stains else 0.0,
    }


def apply_overrides(plan: Plan, overrides: dict[str, Any]) -> Plan:
    """Applies {"a.b": value} overrides (dotted keys reach into nested fields)."""
    data = plan.to_dict()
    for key, value in overrides.items():
        target = data
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(target.get(part), dict):
                raise SeglabError(f"plan override {key!r}: {part!r} is not a section of the plan")
            target = target[part]
        if leaf not in target:
            raise SeglabError(f"plan override {key!r}: no such field (fields: {sorted(target)})")
        target[leaf] = value
    result = Plan.from_dict(data)
    if overrides:
        result.notes.append(f"overridden by the user: {sorted(overrides)}")
    return result


def overridden_fields(overrides: dict[str, Any]) -> set[str]:
    """The dotted names that `overrides` sets: {"model": {"widths": ..}} sets model and
    model.widths."""
    names: set[str] = set()
    for key, value in overrides.items():
        names.add(key)
        if isinstance(value, dict):
            names |= {f"{key}.{inner}" for inner in overridden_fields(value)}
    return names


def parse_overrides(pairs: list[str], files: list[Path] | None = None) -> dict[str, Any]:
    """`key=value` strings (value parsed as JSON when it can be) and JSON files -> overrides."""
    overrides: dict[str, Any] = {}
    for path in files or []:
        try:
            overrides.update(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise SeglabError(f"{path}: cannot read plan overrides ({error})")
    for pair in pairs:
        if "=" not in pair:
            raise SeglabError(f"--set {pair!r}: expected key=value, e.g. epochs=20")
        key, text = pair.split("=", 1)
        try:
            overrides[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key.strip()] = text
    return overrides
