"""Fitting a plan to a time budget by timing candidate configurations on this machine.

nnU-Net sizes its network for a GPU and trains 250,000 steps (1000 epochs of 250). On a CPU
budget of minutes that plan takes a few thousand steps and stops far from convergence, while a
smaller network that takes ten times the steps converges (a 4-level U-Net on 16 patches of 128²
took 10,090 steps in 30 minutes where nnU-Net's 7-stage one took 2,200, and matched or beat it).
So with `time_budget_minutes` the planner times, for a few seconds each, candidate patches
(nnU-Net's and smaller ones) and network widths on the machine itself, in the run's own
precision and memory layout, and keeps the one with the most context and capacity that still
takes `TARGET_STEPS` steps of a sensible batch within the budget; the batch then grows with
whatever time is left. Every candidate's measured step time, and why the choice fell where it
did, is written into the plan (`planning.budget`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from seglab import models
from seglab.data.inspect import Fingerprint
from seglab.device import Precision
from seglab.models.mask_rcnn import build_mask_rcnn
from seglab.plan import ENCODER_STRIDE, Plan, pooling_topology
from seglab.plan_inference import quarter_turns_fit, tta_transforms

TARGET_STEPS = 5000  # steps a budgeted run should take: enough for a U-Net to converge
MIN_BATCH = {2: 8, 3: 2}  # fewest patches per step (nnU-Net's smallest 3D batch is 2)
MAX_BATCH = {2: 32, 3: 16}
PATCH_SCALES = (1.0, 0.67, 0.5, 0.33)
MIN_PATCH_SIDE = {2: 64, 3: 16}
WIDTHS = {"narrow": (16, 256), "wide": (32, 320)}  # first stage, cap (nnU-Net: 32, 320 or 512)
TIMED_SECONDS = 2.0  # per candidate, after one warm-up step
TRAINING_SHARE = 0.95  # of the budget: the rest goes to epochs' ends and checkpoints
# Test-time mirroring costs 1 + dims forward passes (the square's 8 symmetries, 8); where they
# take no longer than this for the median case on this machine, it is planned on (nnU-Net always
# mirrors; on CPUs a large volume would take minutes). CHASE_DB1's 999x960 images take 6 s
# mirrored here, and gain 0.002 F1.
MIRROR_SECONDS = 30.0
# Validating whole cases after every epoch is time the budget does not count: the epochs are
# sized so that all validations together take about this share of the budget (at most
# MAX_VALIDATIONS of them; a 5-minute fold validated 22 times spent 12 minutes validating).
VALIDATION_SHARE = 0.1
MAX_VALIDATIONS = 25
# A semi-supervised step against a supervised one. Mean teacher: the student's forward and
# backward on twice the patches, and the teacher's forward (a third of a training step) on half
# of them; measured on ISBI 2012 in 8 minutes: 1499 mean-teacher steps against 3455 supervised
# ones (2.3x); pseudo-labels cost the same. Cross pseudo supervision: two networks' forward and
# backward on twice the patches.
SEMI_SUPERVISED_COST = {"none": 1.0, "mean_teacher": 7 / 3, "pseudo_labels": 7 / 3,
                        "cross_pseudo_supervision": 4.0}


def fit_to_budget(plan: Plan, fp: Fingerprint, overridden: set[str],
                  precision: Precision) -> Plan:
    """The plan with patch, batch, network widths and depth, epochs and iterations chosen for
    `plan.time_budget_minutes` on this machine; the fields in `overridden` (dotted names the
    user set) stay as they are. A plan without a budget is returned unchanged."""
    if not plan.time_budget_minutes:
        return plan
    plan = copy.deepcopy(plan)
    seconds = plan.time_budget_minutes * 60 * TRAINING_SHARE
    if plan.model["name"] == "mask_rcnn":
        candidates = [_timed_detector(plan, fp, precision)]
        steps = int(seconds / candidates[0]["seconds_per_step"])
        validation_seconds = _validation_cases(plan, fp) * candidates[0]["seconds_per_image"]
        reason = ("Mask R-CNN keeps its planned crops and batch; the budget sets its steps "
                  f"({candidates[0]['seconds_per_step']} s each here)")
    else:
        candidates, steps, validation_seconds, reason = _fit_network(plan, fp, overridden,
                                                                     precision, seconds)
    validations = int(np.clip(VALIDATION_SHARE * seconds / max(validation_seconds, 1e-9), 1,
                              MAX_VALIDATIONS))
    if "iterations_per_epoch" not in overridden:
        plan.iterations_per_epoch = max(25, round(steps / validations))
    if "epochs" not in overridden:  # the budget, not the epochs, ends training
        plan.epochs = max(1, math.ceil(2 * steps / plan.iterations_per_epoch))
    plan.planning["budget"] = {
        "minutes": plan.time_budget_minutes, "device": str(precision.device),
        "precision": precision.name, "target_steps": TARGET_STEPS,
        "expected_steps": steps, "reason": reason,
        "validation_seconds": round(validation_seconds, 2), "validations": validations,
        "candidates": candidates}
    return plan


def _fit_network(plan: Plan, fp: Fingerprint, overridden: set[str], precision: Precision,
                 seconds: float) -> tuple[list[dict[str, Any]], int, float, str]:
    """Chooses patch, network, batch and mirroring for a segmentation network (in `plan`);
    returns the timed candidates, the expected steps, the seconds of one validation and why."""
    free_patch = "patch_size" not in overridden
    free_network = plan.model["name"] == "unet" and not any(
        key == "model" or (key.startswith("model.") and key != "model.name")
        for key in overridden)
    candidates = [_timed(c, plan, precision) for c in _candidates(plan, fp, free_patch,
                                                                   free_network)]
    # The seconds that supervised steps of the timed kind fill: a semi-supervised step also
    # trains on as many unlabelled patches (and runs its teacher or partner).
    seconds = seconds / SEMI_SUPERVISED_COST[plan.semi_supervised["method"]]
    chosen, reason = _choose(candidates, plan.dims, seconds)
    if free_patch:
        plan.patch_size = chosen["patch_size"]
    if free_network:
        plan.model.update(chosen["topology"])
    if "batch_size" not in overridden:
        plan.batch_size = _batch(chosen, plan.dims, seconds)
    steps = int(seconds / (chosen["seconds_per_sample"] * plan.batch_size))
    case_seconds = _median_case_windows(plan, fp) * chosen["seconds_per_window"]
    if not {"inference", "inference.mirror_axes", "inference.quarter_turns"} & overridden:
        _plan_mirroring(plan, fp, case_seconds)
    validation_seconds = (_validation_cases(plan, fp) * case_seconds
                          * len(tta_transforms(plan.dims, plan.inference["mirror_axes"],
                                               plan.inference.get("quarter_turns", False))))
    records = [{k: v for k, v in c.items() if k != "topology"} | {
        "widths": c["topology"].get("widths")} for c in candidates]
    return records, steps, validation_seconds, reason


def _timed_detector(plan: Plan, fp: Fingerprint, precision: Precision) -> dict[str, Any]:
    """Mask R-CNN's measured seconds per training step (the plan's batch of crops, each with a
    few objects) and per inference on the median image, in the run's precision."""
    options = {k: v for k, v in plan.model.items() if k not in ("name", "encoder_weights")}
    torch.manual_seed(0)
    model = build_mask_rcnn(plan.in_channels, plan.n_classes, encoder_weights=None,
                            **options).to(precision.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = [precision.to_device(torch.randn(plan.in_channels, *plan.patch_size))
              for _ in range(plan.batch_size)]
    side = min(plan.patch_size) // 4
    mask = torch.zeros(4, *plan.patch_size, dtype=torch.uint8, device=precision.device)
    boxes = []
    for k in range(4):
        x, y = k * side // 2, k * side // 3
        mask[k, y:y + side, x:x + side] = 1
        boxes.append([x, y, x + side, y + side])
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32, device=precision.device),
              "labels": torch.ones(4, dtype=torch.int64, device=precision.device), "masks": mask}

    def train_step() -> None:
        with precision.autocast():
            losses = model(images, [target] * len(images))
        optimizer.zero_grad(set_to_none=True)
        sum(v.float() for v in losses.values()).backward()
        optimizer.step()

    step = _median_seconds(train_step, precision)
    model.eval()
    median = [int(s) for s in np.median(np.array(fp.shapes, float), axis=0)]
    image = [precision.to_device(torch.randn(plan.in_channels, *median))]

    @torch.no_grad()
    def forward() -> None:
        with precision.autocast():
            model(image)

    return {"patch_size": list(plan.patch_size), "network": "mask_rcnn",
            "seconds_per_step": round(step, 4),
            "seconds_per_image": round(_median_seconds(forward, precision), 4),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3)}


def _median_case_windows(plan: Plan, fp: Fingerprint) -> int:
    """The sliding windows that cover the median case (in the plan's spacing)."""
    shapes = np.array(fp.shapes, float)
    if plan.target_spacing is not None:
        shapes = shapes * np.array(fp.spacings) / np.array(plan.target_spacing)
    shape, patch = np.median(shapes, axis=0), np.array(plan.patch_size, float)
    step = np.maximum(patch * (1 - plan.inference["overlap"]), 1)
    return int(np.prod(np.ceil(np.maximum(shape - patch, 0) / step) + 1))


def _validation_cases(plan: Plan, fp: Fingerprint) -> int:
    """About how many cases validate: a fold's share under cross-validation, else the split's."""
    share = 1 / plan.split["folds"] if plan.split.get("folds") else plan.split["val_fraction"]
    return max(1, round(share * fp.n_cases))


def _plan_mirroring(plan: Plan, fp: Fingerprint, case_seconds: float) -> None:
    """The square's 8 symmetries where the chosen window allows them
    (`seglab.plan_inference.quarter_turns_fit`), else mirroring on every axis, where their
    forward passes over the median case take at most MIRROR_SECONDS (`case_seconds`: one plain
    pass, its windows at the timed seconds per window); a plan mirrored already (on a GPU) turns
    where it may."""
    fits = quarter_turns_fit(fp, plan.patch_size, plan.augmentation)
    if plan.inference["mirror_axes"]:
        plan.inference = {**plan.inference, "quarter_turns": fits}
        return
    for turns in dict.fromkeys([fits, False]):
        passes = len(tta_transforms(plan.dims, range(plan.dims), turns))
        seconds = passes * case_seconds
        if seconds <= MIRROR_SECONDS:
            what = "the square's 8 symmetries" if turns else "mirroring along every axis"
            plan.inference = {**plan.inference, "mirror_axes": list(range(plan.dims)),
                              "quarter_turns": turns,
                              "tta_reason": f"{what}: {passes} passes over the median case take "
                                            f"about {seconds:.2f} s here"}
            return


def _candidates(plan: Plan, fp: Fingerprint, free_patch: bool,
                free_network: bool) -> list[dict[str, Any]]:
    """Patches from nnU-Net's (scaled down per axis, never below MIN_PATCH_SIDE nor above the
    planned one) crossed with narrow and wide networks fitted to each patch."""
    spacing = np.array(plan.target_spacing or [1.0] * plan.dims)
    patches = []
    for scale in PATCH_SCALES if free_patch else (1.0,):
        patch = [int(max(min(p, MIN_PATCH_SIDE[plan.dims]), p * scale)) for p in plan.patch_size]
        if patch not in patches:
            patches.append(patch)
    candidates = []
    for patch in patches:
        if not free_network:
            candidates.append({"patch_size": _multiple(patch, plan.model) if free_patch else patch,
                               "network": "plan", "topology": {}})
            continue
        rounded, strides, kernels = pooling_topology(np.array(patch, float), spacing)
        for width_name, (first, cap) in WIDTHS.items():
            candidates.append({
                "patch_size": rounded if free_patch else patch,  # the user's: AnySize pads it
                "network": width_name,
                "topology": {"widths": [min(first * 2**k, cap) for k in range(len(kernels))],
                             "kernels": kernels, "strides": strides}})
    return candidates


def _multiple(patch: list[int], model: dict) -> list[int]:
    """The patch rounded to what the network divides without padding: the product of the U-Net's
    strides, or the encoder models' output stride; other models' (AnySize pads) as it is."""
    if model["name"] == "unet" and model.get("strides"):
        divisor = np.prod(np.array(model["strides"]), axis=0)
    else:
        divisor = np.full(len(patch), ENCODER_STRIDE if "encoder" in model else 1)
    return [int(max(d, round(p / d) * d)) for p, d in zip(patch, divisor)]


def _timed(candidate: dict[str, Any], plan: Plan, precision: Precision) -> dict[str, Any]:
    """The candidate with its measured seconds per training sample (steps of a batch of 2 random
    patches: forward, cross-entropy, backward, AdamW; the median after a warm-up step) and per
    inference window (forwards of the plan's inference batch in eval mode without gradients,
    which cost far less than a third of a training step: no backward, no optimiser, a larger
    batch)."""
    options = {k: v for k, v in {**plan.model, **candidate["topology"]}.items() if k != "name"}
    if options.get("encoder_weights"):
        options["encoder_weights"] = None  # timing needs no pretrained weights
    torch.manual_seed(0)
    model = precision.prepare_model(models.create(plan.model["name"], plan.dims, plan.in_channels,
                                                  plan.n_classes, **options)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = _random_patches(2, plan, candidate, precision, model)
    labels = torch.randint(0, plan.n_classes, (2, *candidate["patch_size"]),
                           device=precision.device)

    def train_step() -> None:
        with precision.autocast():
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step = _median_seconds(train_step, precision)
    model.eval()
    windows = _random_patches(plan.inference["batch_size"], plan, candidate, precision, model)

    @torch.no_grad()
    def forward() -> None:
        with precision.autocast():
            model(windows)

    window = _median_seconds(forward, precision) / plan.inference["batch_size"]
    params = sum(p.numel() for p in model.parameters())
    return {**candidate, "seconds_per_sample": round(step / 2, 5),
            "seconds_per_window": round(window, 6), "params_m": round(params / 1e6, 3)}


def _random_patches(count: int, plan: Plan, candidate: dict[str, Any], precision: Precision,
                    model: torch.nn.Module) -> torch.Tensor:
    images = precision.to_device(torch.randn(count, plan.in_channels, *candidate["patch_size"]))
    return precision.memory_format(images, model)


def _median_seconds(work: Callable[[], None], precision: Precision) -> float:
    """Median seconds of `work` after a warm-up call, over up to 5 more calls while all of them
    together take under TIMED_SECONDS."""
    times: list[float] = []
    while len(times) < 2 or (sum(times) < TIMED_SECONDS and len(times) < 6):
        started = time.perf_counter()
        work()
        if precision.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return float(np.median(times[1:]))


def _batch(candidate: dict[str, Any], dims: int, seconds: float) -> int:
    """The batch that takes TARGET_STEPS steps in the budget, within [MIN_BATCH, MAX_BATCH]."""
    fits = int(seconds / (TARGET_STEPS * candidate["seconds_per_sample"]))
    return int(np.clip(fits, MIN_BATCH[dims], MAX_BATCH[dims]))


def _choose(candidates: list[dict[str, Any]], dims: int, seconds: float
            ) -> tuple[dict[str, Any], str]:
    """The largest patch, then the wider network, among the candidates that take TARGET_STEPS
    steps of at least MIN_BATCH patches in the budget; if none does, the fastest."""
    feasible = [c for c in candidates
                if seconds / (c["seconds_per_sample"] * MIN_BATCH[dims]) >= TARGET_STEPS]
    if not feasible:
        fastest = min(candidates, key=lambda c: c["seconds_per_sample"])
        return fastest, (f"no candidate takes {TARGET_STEPS} steps of {MIN_BATCH[dims]} patches "
                         f"in {seconds / 60:.1f} training minutes on this machine: the fastest "
                         f"({fastest['seconds_per_sample']} s per patch) is taken")
    best = max(feasible, key=lambda c: (int(np.prod(c["patch_size"])), c["network"] == "wide"))
    return best, (f"{len(feasible)} of {len(candidates)} candidates take {TARGET_STEPS} steps of "
                  f"{MIN_BATCH[dims]} patches in {seconds / 60:.1f} training minutes; the one with "
                  "the largest patch (context), then the wider network, is taken")
