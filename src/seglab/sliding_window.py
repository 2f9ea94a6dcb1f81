"""Sliding-window inference over images and volumes of any size, handed on strip by strip.

The windows are MONAI's grid (`dense_patch_slices` at the plan's overlap, the last window flush
with the far edge, images smaller than a window padded with zeros around their centre) and their
softmax outputs are blended with MONAI's Gaussian importance map, so the result is the one
`monai.inferers.sliding_window_inference` gives. What differs is memory: MONAI allocates the
whole output and its count map before the first window (an 8000 x 8000 image with 2 classes:
768 MB of float32, before any copy), even in its buffered mode. Here the windows are visited in
order along the first spatial axis and summed into an accumulator one window deep along it; the
rows that no later window reaches are divided by their weights and handed on at once. Memory
grows with the window and the image's other axes, not with its length, and the caller can turn
each strip into mask rows before the next is computed. No library offers that, hence this
module.

Test-time augmentation is applied per window, as nnU-Net does: each batch of windows also goes
through the network flipped along each mirror axis, and the flipped outputs are flipped back.
With `quarter_turns` (square windows of images whose orientation means nothing: microscopy, EM),
the passes are instead the 8 symmetries of the square, the windows turned by 0, 90, 180 and 270
degrees in the plane of their last two axes, each also mirrored
(`seglab.plan_inference.tta_transforms`). Blending is linear, so the mean of the passes blended
is the blend of the passes' mean; the passes are kept apart only where a caller asks for them
(the uncertainty maps).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices

from seglab.plan_inference import tta_transforms

# MONAI's default width of the Gaussian, as a fraction of the window
SIGMA_SCALE = 0.125


class WindowSource(Protocol):
    """What windows are cut from: a (C, *spatial) float32 array, or anything of that shape that
    hands out float32 windows by slicing (`seglab.preprocess.NormalizedView`)."""

    shape: tuple[int, ...]

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray: ...


def scan_interval(size: Sequence[int], patch: Sequence[int], overlap: float) -> list[int]:
    """MONAI's step between windows: the window less the overlap (at least 1), or the whole
    window where the image is exactly one window long."""
    return [p if n == p else max(1, int(p * (1 - overlap))) for n, p in zip(size, patch)]


@torch.no_grad()
def blended_strips(source: WindowSource, patch: Sequence[int],
                   predict: Callable[[torch.Tensor], torch.Tensor], *, overlap: float,
                   blend: str = "gaussian", batch_size: int = 4, mirror_axes: Sequence[int] = (),
                   quarter_turns: bool = False, separate_passes: bool = False,
                   device: torch.device | str = "cpu") -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, probabilities) along the first spatial axis, in order and covering the image once:
    probabilities (P, K, len(rows), *other spatial) float32 on the CPU, where P is 1 (the mean of
    the passes) or, with `separate_passes`, one per pass of `tta_transforms`, the plain one
    first.

    `predict` maps a batch of windows (B, C, *patch) on `device` to class probabilities
    (B, K, *patch)."""
    spatial = tuple(source.shape[1:])
    padded = tuple(max(n, p) for n, p in zip(spatial, patch))
    low = tuple((p - n) // 2 for n, p in zip(spatial, padded))
    windows = dense_patch_slices(padded, patch, scan_interval(padded, patch, overlap))
    transforms = tta_transforms(len(patch), mirror_axes, quarter_turns)
    weight = compute_importance_map(tuple(patch), mode=blend, sigma_scale=SIGMA_SCALE,
                                    device=device, dtype=torch.float32)
    sums = weights = None
    first_row = 0  # the padded row that sums[:, :, 0] and weights[0] stand for
    for start, group in itertools.groupby(windows, key=lambda window: int(window[0].start)):
        if sums is not None and start > first_row:
            yield _finished(sums, weights, first_row, start, low, spatial)
            done = start - first_row
            sums, weights, first_row = _shifted(sums, done, 2), _shifted(weights, done, 0), start
        group = list(group)
        for batch in (group[i:i + batch_size] for i in range(0, len(group), batch_size)):
            inputs = torch.from_numpy(np.stack([_window(source, w, low) for w in batch]))
            passes = _passes(predict, inputs.to(device), transforms)
            if not separate_passes:
                passes = passes.mean(dim=0, keepdim=True)
            if sums is None:
                sums = passes.new_zeros((passes.shape[0], passes.shape[2], patch[0], *padded[1:]))
                weights = passes.new_zeros((patch[0], *padded[1:]))
            for k, window in enumerate(batch):
                inside = (slice(window[0].start - first_row, window[0].stop - first_row),
                          *window[1:])
                sums[(slice(None), slice(None), *inside)] += passes[:, k] * weight
                weights[inside] += weight
    yield _finished(sums, weights, first_row, first_row + patch[0], low, spatial)


def _window(source: WindowSource, window: tuple[slice, ...], low: Sequence[int]) -> np.ndarray:
    """The window of the zero-padded image: the part inside the image read from the source."""
    inside = tuple(slice(max(w.start - lo, 0), min(w.stop - lo, n))
                   for w, lo, n in zip(window, low, source.shape[1:]))
    part = np.asarray(source[(slice(None), *inside)], dtype=np.float32)
    if part.shape[1:] == tuple(w.stop - w.start for w in window):
        return part
    out = np.zeros((source.shape[0], *(w.stop - w.start for w in window)), np.float32)
    out[(slice(None), *(slice(i.start - (w.start - lo), i.stop - (w.start - lo))
                        for i, w, lo in zip(inside, window, low)))] = part
    return out


def _passes(predict: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
            transforms: Sequence[tuple[int, tuple[int, ...]]]) -> torch.Tensor:
    """(P, B, K, *patch): the batch's probabilities under each transform, turned and flipped
    back."""
    outputs = []
    for turns, flip in transforms:
        dims = [axis + 2 for axis in flip]
        seen = _turned(inputs.flip(dims) if dims else inputs, turns)
        back = _turned(predict(seen).float(), -turns)
        outputs.append(back.flip(dims) if dims else back)
    return torch.stack(outputs)


def _turned(tensor: torch.Tensor, turns: int) -> torch.Tensor:
    """`tensor` turned by `turns` quarter turns in the plane of its last two axes."""
    return torch.rot90(tensor, turns, (-2, -1)) if turns % 4 else tensor


def _shifted(tensor: torch.Tensor, rows: int, axis: int) -> torch.Tensor:
    """The accumulator moved on by `rows` along its row axis, zeros coming in at the end."""
    kept = tensor.narrow(axis, rows, tensor.shape[axis] - rows)
    shape = list(tensor.shape)
    shape[axis] = rows
    return torch.cat([kept, tensor.new_zeros(shape)], dim=axis)


def _finished(sums: torch.Tensor, weights: torch.Tensor, first_row: int, end_row: int,
              low: Sequence[int], spatial: Sequence[int]) -> tuple[slice, torch.Tensor]:
    """The padded rows [first_row, end_row) blended, cropped to the image."""
    rows = slice(max(first_row, low[0]) - first_row, min(end_row, low[0] + spatial[0]) - first_row)
    others = tuple(slice(lo, lo + n) for lo, n in zip(low[1:], spatial[1:]))
    blended = sums[(slice(None), slice(None), rows, *others)] / weights[(rows, *others)]
    image_rows = slice(int(rows.start + first_row - low[0]), int(rows.stop + first_row - low[0]))
    return image_rows, blended.cpu()
