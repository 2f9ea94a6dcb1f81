"""Thresholds: global ones from the histogram inside the ROI (Otsu, multi-Otsu, Li, triangle) and
the adaptive (local) one, each scikit-image's."""

from __future__ import annotations

from typing import Callable

import numpy as np
from skimage.filters import threshold_li, threshold_local, threshold_triangle

from seglab.classical import register
from seglab.classical.base import Inputs, Segmenter, band_thresholds, choice, integer, number


class _Global(Segmenter):
    """A single global threshold: pixels above it are level 1."""

    threshold: Callable[[np.ndarray], float]

    def partition(self, x: Inputs) -> np.ndarray:
        if x.values.min() == x.values.max():
            return np.zeros(x.intensity.shape, dtype=np.uint8)
        return (x.intensity > type(self).threshold(x.values)).astype(np.uint8)


@register
class Otsu(_Global):
    """Otsu (1979): the threshold that maximises the between-class variance of the histogram.
    Use it when the histogram is bimodal: foreground and background of distinct, even brightness
    (stained nuclei, a bright organ). It fails under uneven illumination and when the foreground
    is a few percent of the pixels (thin vessels)."""

    name = "otsu"

    @staticmethod
    def threshold(values: np.ndarray) -> float:
        return float(band_thresholds(values, 2)[0])


@register
class Li(_Global):
    """Li and Lee (1993) / Li and Tam (1998): the minimum cross-entropy threshold, found
    iteratively. Use it like Otsu when the classes differ much in size or spread; it usually
    places the threshold lower, nearer a dim background."""

    name = "li"
    threshold = staticmethod(threshold_li)


@register
class Triangle(_Global):
    """Zack et al. (1977): the triangle threshold, from the line between the histogram's peak and
    its far end. Use it when the foreground is a small, bright (or dark) tail beside one dominant
    background peak (sparse cells, spots)."""

    name = "triangle"

    @staticmethod
    def threshold(values: np.ndarray) -> float:
        # No more bins than distinct values: 8-bit intensities spread over 256 bins leave empty
        # bins beside the peak, which the triangle's farthest point then falls into.
        return float(threshold_triangle(values, nbins=min(256, len(np.unique(values)))))


@register
class MultiOtsu(Segmenter):
    """Multi-Otsu (Liao et al. 2001): `levels` intensity bands by maximising the between-class
    variance. Use it for several classes that differ in brightness (background, tissue, a bright
    lesion), or to let fitting pick which band is the foreground."""

    name = "multiotsu"
    params = {"levels": integer(3, "intensity bands (2-5)", low=2)}
    grid = {"levels": [3, 4]}

    @property
    def n_levels(self) -> int:
        return self.values["levels"]

    def partition(self, x: Inputs) -> np.ndarray:
        thresholds = band_thresholds(x.values, self.n_levels)
        return np.digitize(x.intensity, thresholds).astype(np.uint8)


@register
class Adaptive(Segmenter):
    """Adaptive (local) threshold: each pixel against the weighted mean of its neighbourhood
    (`block_size` wide) minus `offset`. Use it under uneven illumination or for thin structures
    that are darker or brighter than their surroundings (vessels, membranes, text), where one
    global threshold cannot fit the whole image. Offsets are in the [0, 1] intensity scale."""

    name = "adaptive"
    params = {
        "block_size": integer(31, "odd neighbourhood width in pixels, about twice the width of "
                              "the structures to find", low=3, odd=True),
        "offset": number(0.0, "subtracted from the local mean: > 0 makes bright objects stricter "
                         "to pass, < 0 dark ones", -1.0, 1.0),
        "method": choice("gaussian", "the local mean's weights", ("gaussian", "mean", "median")),
    }
    grid = {"block_size": [15, 31, 63], "offset": [-0.04, -0.02, 0.0, 0.02, 0.04]}

    def response(self, x: Inputs) -> np.ndarray:
        """How far each pixel stands above its threshold (the local mean minus the offset)."""
        local = threshold_local(x.filled, self.values["block_size"], self.values["method"],
                                self.values["offset"])
        return x.intensity - local

    def partition(self, x: Inputs) -> np.ndarray:
        return (self.response(x) > 0).astype(np.uint8)
