"""Turning a case into the network's input space as the plan says (normalise, resample), and back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from seglab.case import Case
from seglab.plan import Plan


@dataclass
class Prepared:
    """A case in the network's space: normalised image, label and ROI at the target spacing."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    roi: np.ndarray | None
    original_shape: tuple[int, ...]


def normalize(image: np.ndarray, plan: Plan, roi: np.ndarray | None = None) -> np.ndarray:
    """CT: clip to the dataset's foreground percentiles, then z-score with the dataset's statistics.
    Otherwise: z-score each channel of each image by its own statistics (inside the ROI)."""
    out = np.empty(image.shape, dtype=np.float32)
    if plan.normalization["scheme"] == "ct":
        for c, stats in enumerate(plan.normalization["channels"]):
            low, high = stats["clip"]
            out[c] = (np.clip(image[c], low, high) - stats["mean"]) / stats["std"]
        return out
    for c in range(image.shape[0]):
        values = image[c][roi] if roi is not None and roi.any() else image[c]
        mean, std = float(values.mean()), float(values.std())
        out[c] = (image[c] - mean) / max(std, 1e-8)
    return out


def target_shape(shape: tuple[int, ...], spacing: tuple[float, ...], plan: Plan) -> tuple[int, ...]:
    if plan.target_spacing is None:
        return tuple(shape)
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, plan.target_spacing))


def resize(array: np.ndarray, shape: tuple[int, ...], mode: str) -> np.ndarray:
    """Resizes (C, *spatial) arrays: mode 'linear' for intensities/probabilities, 'nearest' for
    labels and masks."""
    if tuple(array.shape[1:]) == tuple(shape):
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    if mode == "linear":
        mode = "bilinear" if len(shape) == 2 else "trilinear"
        resized = F.interpolate(tensor, size=shape, mode=mode, align_corners=False)
    else:
        resized = F.interpolate(tensor, size=shape, mode="nearest-exact")
    return resized[0].numpy()


def prepare_case(case: Case, plan: Plan) -> Prepared:
    """Normalises the image and brings image, label and ROI to the plan's target spacing."""
    image = normalize(case.image, plan, case.roi)
    shape = target_shape(case.shape, case.spacing, plan)
    image = resize(image, shape, "linear")
    label = roi = None
    if case.label is not None:
        label = resize(case.label[None], shape, "nearest")[0].astype(np.uint8)
    if case.roi is not None:
        roi = resize(case.roi[None].astype(np.float32), shape, "nearest")[0] > 0.5
    return Prepared(case.case_id, image, label, roi, case.shape)
