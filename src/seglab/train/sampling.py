"""Patch sampling with foreground over-sampling, and the augmentations applied to each batch.

Written here rather than taken from MONAI's per-sample transforms because one resampling does it
all: each patch is read out of its whole case through a single affine grid (`grid_sample`) that
already holds the flips, rotation and scaling, so spatial augmentation costs as much as a crop, the
same code serves 2D and 3D, and patches near borders or larger than the image are padded for free.
Intensity augmentations are vectorised over the batch (nnU-Net's defaults for probabilities).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, get_worker_info

from seglab.plan import Plan
from seglab.preprocess import Prepared

FOREGROUND_POINTS_PER_CLASS = 10_000


class PatchSampler:
    """Draws augmented (image, label) batches of the plan's patch size from prepared cases; with
    `labeled` False, (image, None) batches of uniformly placed patches whose labels, if the
    cases have any, are never read (the unlabelled images of semi-supervised training)."""

    def __init__(self, cases: list[Prepared], plan: Plan, rng: np.random.Generator,
                 batch_size: int | None = None, labeled: bool = True):
        self.plan = plan
        self.rng = rng
        self.batch_size = batch_size or plan.batch_size
        # Memory-mapped arrays stay mapped: grid_sample and indexing touch only the pages they read.
        self.images = [torch.from_numpy(c.image) for c in cases]
        self.labels = [torch.from_numpy(c.label) if labeled else None for c in cases]
        self.foreground = [self._foreground_points(c) if labeled else {} for c in cases]
        patch = plan.patch_size
        axes = [torch.arange(n, dtype=torch.float32) - n // 2 for n in patch]
        self.offsets = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(patch))

    def _foreground_points(self, case: Prepared) -> dict[int, np.ndarray]:
        points = {}
        for k in range(1, self.plan.n_classes):
            where = np.argwhere(case.label == k)
            if len(where) > FOREGROUND_POINTS_PER_CLASS:
                where = where[self.rng.choice(len(where), FOREGROUND_POINTS_PER_CLASS, replace=False)]
            if len(where):
                points[k] = where
        return points

    def batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        images, labels = [], []
        for _ in range(self.batch_size):
            index = int(self.rng.integers(len(self.images)))
            image, label = self._sample(index)
            images.append(image)
            labels.append(label)
        images = augment_intensity(torch.stack(images), self.plan.augmentation, self.rng)
        return images, torch.stack(labels).long() if labels[0] is not None else None

    def _centre(self, index: int) -> np.ndarray:
        shape = np.array(self.images[index].shape[1:])
        patch = np.array(self.plan.patch_size)
        points = self.foreground[index]
        if points and self.rng.random() < self.plan.foreground_oversampling:
            chosen = points[list(points)[int(self.rng.integers(len(points)))]]
            return chosen[int(self.rng.integers(len(chosen)))].astype(float)
        low = np.minimum(patch // 2, shape // 2)
        high = np.maximum(shape - (patch - patch // 2), shape // 2)
        return np.array([self.rng.integers(lo, hi + 1) for lo, hi in zip(low, high)], dtype=float)

    def _sample(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        image, label = self.images[index], self.labels[index]
        shape = torch.tensor(image.shape[1:], dtype=torch.float32)
        matrix = torch.from_numpy(spatial_matrix(self.plan.augmentation, len(shape), self.rng))
        coords = torch.from_numpy(self._centre(index)).float() + self.offsets @ matrix.T
        if self.rng.random() < self.plan.augmentation.get("elastic_probability", 0.0):
            coords = coords + elastic_displacement(self.plan.augmentation, self.plan.patch_size,
                                                   self.rng)
        normalised = 2 * coords / torch.clamp(shape - 1, min=1) - 1
        grid = normalised.flip(-1).reshape(1, *self.plan.patch_size, len(shape))
        patch = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros",
                              align_corners=True)[0]
        if label is None:
            return patch, None
        return patch, _nearest_labels(label, coords, self.plan.patch_size)


class WithUnlabeled:
    """Each batch of a labelled sampler with a batch of unlabelled patches beside it:
    (images, labels, unlabelled images)."""

    def __init__(self, labeled: PatchSampler, unlabeled: PatchSampler):
        self.labeled, self.unlabeled = labeled, unlabeled

    @property
    def rng(self) -> np.random.Generator:
        return self.labeled.rng

    @rng.setter
    def rng(self, rng: np.random.Generator) -> None:  # EpochBatches seeds both
        self.labeled.rng = self.unlabeled.rng = rng

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = self.labeled.batch()
        return images, labels, self.unlabeled.batch()[0]


class EpochBatches(IterableDataset):
    """The `count` batches of one epoch, for a DataLoader with any number of workers. Every worker
    (and every rank) draws from its own stream seeded by (seed, epoch, rank, worker), so a resumed
    epoch draws what the interrupted one did, and ranks draw different patches."""

    def __init__(self, sampler: PatchSampler, count: int, seed: int, epoch: int, rank: int):
        self.sampler, self.count, self.key = sampler, count, (seed, epoch, rank)

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        self.sampler.rng = np.random.default_rng([*self.key, worker])
        for _ in range(worker, self.count, workers):
            yield self.sampler.batch()


def _nearest_labels(label: torch.Tensor, coords: torch.Tensor, patch: list[int]) -> torch.Tensor:
    """The label at the voxel nearest each sampling point, 0 outside the case: what grid_sample's
    nearest mode gives, read by indexing so that labels need no float copy."""
    index = coords.round().long()
    size = torch.tensor(label.shape)
    inside = ((index >= 0) & (index < size)).all(dim=1)
    values = torch.zeros(len(index), dtype=label.dtype)
    values[inside] = label[tuple(index[inside].T)]
    return values.reshape(patch)


def spatial_matrix(aug: dict, dims: int, rng: np.random.Generator) -> np.ndarray:
    """Maps patch offsets to case offsets: mirroring, rotation and scaling, each drawn at random."""
    matrix = np.eye(dims)
    if rng.random() < aug["rotate_probability"]:
        limit = math.radians(aug["rotate_degrees"])
        if dims == 2:
            matrix = _rotation_2d(rng.uniform(-limit, limit))
        else:
            planes = [(1, 2)] if aug.get("rotate_in_plane_only") else [(0, 1), (0, 2), (1, 2)]
            for a, b in planes:
                rotation = np.eye(3)
                rotation[np.ix_([a, b], [a, b])] = _rotation_2d(rng.uniform(-limit, limit))
                matrix = rotation @ matrix
    if rng.random() < aug["scale_probability"]:
        matrix = matrix / rng.uniform(*aug["scale_range"])
    for axis in aug["flip_axes"]:
        if rng.random() < 0.5:
            matrix[:, axis] *= -1
    return matrix.astype(np.float32)


def elastic_displacement(aug: dict, patch: list[int], rng: np.random.Generator) -> torch.Tensor:
    """A smooth random displacement per patch point, (N, dims) in voxels: Gaussian vectors
    (`elastic_magnitude` voxels standard deviation) on a coarse grid of control points every
    `elastic_spacing` voxels, interpolated to every point (the U-Net paper's deformation)."""
    grid = [max(2, math.ceil(n / aug["elastic_spacing"]) + 1) for n in patch]
    control = rng.normal(0.0, aug["elastic_magnitude"], (1, len(patch), *grid)).astype(np.float32)
    mode = "bicubic" if len(patch) == 2 else "trilinear"
    field = F.interpolate(torch.from_numpy(control), size=list(patch), mode=mode, align_corners=True)
    return field[0].reshape(len(patch), -1).T


def _rotation_2d(angle: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[cos, -sin], [sin, cos]])


def augment_intensity(images: torch.Tensor, aug: dict, rng: np.random.Generator) -> torch.Tensor:
    """Gaussian noise, brightness, contrast and gamma, each per sample with its own probability."""
    batch = images.shape[0]
    view = (batch,) + (1,) * (images.dim() - 1)

    def chosen(probability: float) -> torch.Tensor:
        return torch.from_numpy(rng.random(batch) < probability).view(view)

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.from_numpy(rng.uniform(low, high, batch).astype(np.float32)).view(view)

    sigma = torch.sqrt(uniform(0.0, 0.1))
    noise = torch.from_numpy(rng.standard_normal(images.shape, dtype=np.float32))
    images = torch.where(chosen(aug["noise_probability"]), images + sigma * noise, images)
    images = torch.where(chosen(aug["brightness_probability"]), images * uniform(0.75, 1.25), images)
    dims = tuple(range(1, images.dim()))
    mean = images.mean(dim=dims, keepdim=True)
    images = torch.where(chosen(aug["contrast_probability"]),
                         (images - mean) * uniform(0.75, 1.25) + mean, images)
    low = images.amin(dim=dims, keepdim=True)
    span = images.amax(dim=dims, keepdim=True) - low + 1e-7
    gamma = ((images - low) / span) ** uniform(0.7, 1.5) * span + low
    images = torch.where(chosen(aug["gamma_probability"]), gamma, images)
    return augment_colour(images, aug, rng, chosen)


def augment_colour(images: torch.Tensor, aug: dict, rng: np.random.Generator,
                   chosen: Callable[[float], torch.Tensor]) -> torch.Tensor:
    """The stain and imaging changes of colour microscopy, each per sample with its own
    probability (0 where the plan has none): the channels shuffled, replaced by their mean (grey),
    and the (normalised) intensities negated, which turns bright-field images into dark-field
    ones and back, so that stains and imaging modes rare in the training images borrow from the
    common ones."""
    if images.shape[1] > 1 and aug.get("channel_shuffle_probability", 0.0):
        order = torch.from_numpy(np.argsort(rng.random(images.shape[:2]), axis=1))
        index = order.view(*order.shape, *(1,) * (images.dim() - 2)).expand_as(images)
        images = torch.where(chosen(aug["channel_shuffle_probability"]),
                             images.gather(1, index), images)
    if images.shape[1] > 1 and aug.get("grayscale_probability", 0.0):
        grey = images.mean(dim=1, keepdim=True).expand_as(images)
        images = torch.where(chosen(aug["grayscale_probability"]), grey, images)
    if aug.get("invert_probability", 0.0):
        images = torch.where(chosen(aug["invert_probability"]), -images, images)
    return images
