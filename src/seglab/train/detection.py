"""Mask R-CNN's part of `seglab train`: the batches, the step and the validation that the loop
(`seglab.train.loop`) runs for a plan whose `instances.method` is mask_rcnn, in place of patches,
the segmentation loss and sliding-window Dice. Everything else (schedule, budget, checkpoints,
resuming, the log) is the loop's own.

A batch is `batch_size` crops of the plan's patch size from prepared cases (object ids and their
classes, `seglab.preprocess`), centred on an object with the plan's `foreground_oversampling`,
mirrored along the plan's `flip_axes`, with the plan's intensity augmentation; each crop's
objects become torchvision's targets (boxes, labels, masks).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from seglab.data.instances import Instances
from seglab.data.layouts import IGNORE_INDEX
from seglab.device import Precision
from seglab.infer_objects import detections
from seglab.models.mask_rcnn import objects_from_detections
from seglab.metrics import foreground_dice
from seglab.plan import Plan
from seglab.preprocess import Prepared
from seglab.train.sampling import augment_intensity


class DetectionSampler:
    """Draws (images (B, C, *patch), targets) batches for Mask R-CNN from prepared cases."""

    def __init__(self, cases: list[Prepared], plan: Plan, rng: np.random.Generator,
                 batch_size: int | None = None):
        self.cases, self.plan, self.rng = cases, plan, rng
        self.batch_size = batch_size or plan.batch_size

    def batch(self) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        images, targets = [], []
        for _ in range(self.batch_size):
            case = self.cases[int(self.rng.integers(len(self.cases)))]
            image, ids = self._crop(case)
            for axis in self.plan.augmentation["flip_axes"]:
                if self.rng.random() < 0.5:
                    image, ids = np.flip(image, axis + 1), np.flip(ids, axis)
            images.append(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)))
            targets.append(object_targets(np.ascontiguousarray(ids), case.objects or {}))
        return augment_intensity(torch.stack(images), self.plan.augmentation, self.rng), targets

    def _crop(self, case: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """A patch-sized crop (zero-padded where the case is smaller)."""
        shape, patch = np.array(case.label.shape), np.array(self.plan.patch_size)
        if case.objects and self.rng.random() < self.plan.foreground_oversampling:
            points = np.argwhere(case.label > 0)
            centre = points[int(self.rng.integers(len(points)))]
            start = np.clip(centre - patch // 2, 0, np.maximum(shape - patch, 0))
        else:
            start = np.array([self.rng.integers(0, max(s - p, 0) + 1) for s, p in
                              zip(shape, patch)])
        window = tuple(slice(int(a), int(a + p)) for a, p in zip(start, patch))
        image = np.zeros((case.image.shape[0], *patch), np.float32)
        ids = np.zeros(tuple(patch), np.int32)
        inside = tuple(slice(0, s.stop - s.start) for s in
                       (slice(w.start, min(w.stop, n)) for w, n in zip(window, shape)))
        image[(slice(None), *inside)] = case.image[(slice(None), *window)]
        ids[inside] = case.label[window]
        return image, ids


def object_targets(ids: np.ndarray, classes: dict[int, int]) -> dict[str, torch.Tensor]:
    """torchvision's target for an object-id image: boxes (x0, y0, x1, y1, in pixels, the far
    edge exclusive), class labels and one binary mask per object present."""
    present = [k for k in np.unique(ids) if k > 0 and k in classes]
    extents = ndimage.find_objects(ids)
    boxes = [[extents[k - 1][1].start, extents[k - 1][0].start, extents[k - 1][1].stop,
              extents[k - 1][0].stop] for k in present]
    masks = np.stack([ids == k for k in present]) if present else np.zeros((0, *ids.shape), bool)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([classes[k] for k in present], dtype=torch.int64),
            "masks": torch.from_numpy(masks.astype(np.uint8))}


class DetectionStep:
    """One optimisation step of Mask R-CNN: the sum of its losses (proposals, boxes, classes,
    masks), backward with the plan's gradient clipping."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 precision: Precision, grad_clip: float | None):
        self.model, self.optimizer = model, optimizer
        self.precision, self.grad_clip = precision, grad_clip

    def __call__(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> float:
        images = self.precision.to_device(images)
        targets = [{k: v.to(self.precision.device) for k, v in t.items()} for t in targets]
        with self.precision.autocast():
            losses = self.model(list(images), targets)
        loss = sum(v.float() for v in losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        return float(loss.detach())


def detection_scores(model: torch.nn.Module, cases: list[Prepared], plan: Plan,
                     precision: Precision) -> list[list[float]]:
    """Dice per foreground class of the found objects' classes on each validation case; NaN for
    a class neither found nor there (with many classes, such as COCO's 80, the ones absent from
    a case would otherwise make every model score alike)."""
    scores = []
    for case in cases:
        found = objects_from_detections(detections(model, case.image, precision),
                                        plan.instances["score_threshold"],
                                        plan.instances["mask_threshold"]).semantic()
        reference = Instances(case.label, case.objects or {}).semantic()
        dice = foreground_dice(found, reference, plan.n_classes, case.roi, IGNORE_INDEX)
        present = [np.any(found == k) or np.any(reference == k) for k in range(1, plan.n_classes)]
        scores.append(np.where(present, dice, np.nan).tolist())
    return scores
