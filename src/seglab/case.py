"""The shared notion of one image (or volume) with its optional label: a `Case`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Case:
    """One image or volume, channels first, with its geometry and optional label.

    image:   float32 array (C, *spatial); spatial is (H, W) for 2D images as read from the file,
             or the volume's own array order for 3D (nibabel's (X, Y, Z) for NIfTI).
    spacing: physical size of one pixel/voxel along each spatial axis of `image` (mm, or the
             unit the file declares); 1.0 when the file has none.
    label:   integer array with the spatial shape, class indices after any label mapping, or None.
    roi:     boolean array with the spatial shape: where the image is valid (a fundus field of
             view, a brain mask); metrics and sampling are restricted to it. None means everywhere.
    meta:    what is needed to write a prediction back in the input's own format and geometry
             (path, format, affine, header, mode, ...).
    instances: for an instance dataset, its objects (`seglab.data.instances.Instances`), of
             which `label` is the class map.
    """

    case_id: str
    image: np.ndarray
    spacing: tuple[float, ...]
    label: np.ndarray | None = None
    roi: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    instances: Any = None

    @property
    def dims(self) -> int:
        return self.image.ndim - 1

    @property
    def channels(self) -> int:
        return self.image.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])
