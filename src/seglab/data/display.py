"""An image as people look at it: the one place that scales intensities for a picture."""

from __future__ import annotations

import numpy as np


def display_rgb(image: np.ndarray, rgb: bool | None = None) -> np.ndarray:
    """Channel 0 (or the three channels of an RGB image) of a (C, *spatial) image scaled by its
    1st-99th percentiles to 0..1, as RGB (*spatial, 3). `rgb` defaults to "three channels"."""
    rgb = image.shape[0] == 3 if rgb is None else rgb
    shown = np.moveaxis(image, 0, -1) if rgb else image[0][..., None]
    low, high = np.nanpercentile(shown, [1, 99])
    scaled = np.clip((shown - low) / max(high - low, 1e-8), 0, 1)
    return np.broadcast_to(scaled, (*scaled.shape[:-1], 3)) if scaled.shape[-1] == 1 else scaled
