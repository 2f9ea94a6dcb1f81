"""Turning a case into the network's input space as the plan says (normalise, resample), and back."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from seglab.case import Case
from seglab.plan import Plan
from seglab.plan_instances import contact_class


@dataclass
class Prepared:
    """A case in the network's space: normalised image, label and ROI at the target spacing.
    For a Mask R-CNN plan the label holds object ids (int32, 0 where none) and `objects` maps
    each id to its class."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    roi: np.ndarray | None
    original_shape: tuple[int, ...]
    objects: dict[int, int] | None = None


def normalize(image: np.ndarray, plan: Plan, roi: np.ndarray | None = None) -> np.ndarray:
    """CT: clip to the dataset's foreground percentiles, then z-score with the dataset's statistics.
    Otherwise: z-score each channel of each image by its own statistics (inside the ROI)."""
    return NormalizedView(image, plan, roi)[(slice(None),) * image.ndim]


class NormalizedView:
    """A (C, *spatial) image that `normalize`s each window as it is cut: inference on an image at
    its own grid never holds a normalised float copy of the whole image. The statistics are
    taken once, slab by slab."""

    def __init__(self, image: np.ndarray, plan: Plan, roi: np.ndarray | None = None):
        self.image, self.shape = image, image.shape
        if plan.normalization["scheme"] == "ct":
            self.affines = [(tuple(stats["clip"]), stats["mean"], stats["std"])
                            for stats in plan.normalization["channels"]]
        else:
            inside = roi if roi is not None and roi.any() else None
            self.affines = [(None, *_mean_and_std(channel, inside)) for channel in image]

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        part = self.image[index].astype(np.float32, copy=False)  # integers as read_image's floats
        out = np.empty(part.shape, dtype=np.float32)
        for c, (clip, mean, std) in enumerate(self.affines[index[0]]):
            values = part[c] if clip is None else np.clip(part[c], *clip)
            out[c] = (values - mean) / std
        return out


_SLAB = 1 << 20  # values per slab of the statistics


def _mean_and_std(channel: np.ndarray, inside: np.ndarray | None) -> tuple[float, float]:
    """The channel's mean and standard deviation (inside the mask, where given; at least 1e-8),
    in two passes over slabs of the first axis (float64 sums, no whole-image temporaries)."""
    step = max(1, _SLAB // max(1, channel[0].size))
    slabs = [(channel[i:i + step], None if inside is None else inside[i:i + step])
             for i in range(0, channel.shape[0], step)]

    def values(slab, mask):
        return (slab if mask is None else slab[mask]).astype(np.float64)

    count = sum(slab.size if mask is None else int(mask.sum()) for slab, mask in slabs)
    mean = sum(values(slab, mask).sum() for slab, mask in slabs) / count
    square = sum(((values(slab, mask) - mean) ** 2).sum() for slab, mask in slabs) / count
    return float(mean), max(float(np.sqrt(square)), 1e-8)


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


def network_image(case: Case, plan: Plan) -> np.ndarray | NormalizedView:
    """The case's image as the network sees it (`prepare_case`'s image): normalised window by
    window where it is already at the plan's spacing, else normalised and resampled whole."""
    view = NormalizedView(case.image, plan, case.roi)
    shape = target_shape(case.shape, case.spacing, plan)
    if tuple(shape) == tuple(case.shape):
        return view
    return resize(view[(slice(None),) * case.image.ndim], shape, "linear")


def prepare_case(case: Case, plan: Plan) -> Prepared:
    """Normalises the image and brings image, label and ROI to the plan's target spacing. An
    instance plan's label is the class map with each object's rim as the rim class, or for Mask
    R-CNN the object ids (crowds and other ignored regions left out)."""
    image = normalize(case.image, plan, case.roi)
    shape = target_shape(case.shape, case.spacing, plan)
    image = resize(image, shape, "linear")
    label = roi = objects = None
    if case.label is not None:
        target, kind = case.label, np.uint8
        if plan.task == "instance" and case.instances is not None:
            if plan.instances["method"] == "mask_rcnn":
                target, kind, objects = case.instances.ids, np.int32, dict(case.instances.classes)
            else:
                target = case.instances.with_boundaries(
                    plan.instances["rim_class"], plan.instances.get("contact_width", 1),
                    contact_class(plan.instances))
        label = resize(target[None], shape, "nearest")[0].astype(kind)
    if case.roi is not None:
        roi = resize(case.roi[None].astype(np.float32), shape, "nearest")[0] > 0.5
    return Prepared(case.case_id, image, label, roi, case.shape, objects)


# The plan fields that decide what `prepare_case` produces; a cache made under other values is
# another cache.
_PREPROCESSING_FIELDS = ("dims", "in_channels", "classes", "label_values", "ignore_label",
                         "roi_rule", "normalization", "target_spacing", "task", "instances")


class PreparedCache:
    """Prepared cases kept on disk once per plan, as uncompressed .npy files read back by memory
    mapping: a second epoch, a resumed run or another DataLoader worker reads pages on demand
    instead of decoding and resampling every case again, and several processes share one copy
    in the page cache. Each case is written to a temporary folder and renamed into place, so a
    kill never leaves a half-written case behind."""

    def __init__(self, folder: Path, plan: Plan):
        settings = {name: getattr(plan, name) for name in _PREPROCESSING_FIELDS}
        key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        self.folder = Path(folder) / key

    def get(self, case_id: str, prepare: Callable[[], Prepared]) -> Prepared:
        """The cached case, or `prepare()` written to the cache first."""
        path = self.folder / _file_name(case_id)
        if not (path / "meta.json").is_file():
            self._write(path, prepare())
        meta = json.loads((path / "meta.json").read_text())
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="c") if name in meta["arrays"]
                  else None for name in ("image", "label", "roi")}
        objects = meta.get("objects")
        return Prepared(meta["case_id"], arrays["image"], arrays["label"], arrays["roi"],
                        tuple(meta["original_shape"]),
                        {int(k): v for k, v in objects.items()} if objects is not None else None)

    def _write(self, path: Path, case: Prepared) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.folder))
        try:
            arrays = {"image": case.image, "label": case.label, "roi": case.roi}
            for name, array in arrays.items():
                if array is not None:
                    np.save(staging / f"{name}.npy", np.ascontiguousarray(array))
            meta = {"case_id": case.case_id, "original_shape": list(case.original_shape),
                    "arrays": [name for name, array in arrays.items() if array is not None],
                    "objects": case.objects}
            (staging / "meta.json").write_text(json.dumps(meta))
            os.rename(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if not (path / "meta.json").is_file():  # else another process finished it first
                raise


def _file_name(case_id: str) -> str:
    """A file-system-safe, collision-free folder name for a case id."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", case_id)[:80]
    return f"{readable}-{hashlib.sha1(case_id.encode()).hexdigest()[:8]}"
