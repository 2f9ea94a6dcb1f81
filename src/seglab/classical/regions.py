"""Region methods from seeds: seeded region growing, marker-based watershed and the random walker
(scikit-image's), the markers taken from the cores of the Otsu (multi-Otsu) intensity bands."""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.filters import sobel
from skimage.measure import label
from skimage.segmentation import random_walker, watershed

from seglab.classical import register
from seglab.classical.base import (Inputs, Param, Segmenter, band_thresholds, choice, integer,
                                   number)
from seglab.errors import SeglabError


def _is_points(value: Any) -> bool:
    return value is None or (isinstance(value, list) and bool(value) and all(
        isinstance(p, list) and p and all(isinstance(c, int) for c in p) for p in value))


def band_markers(x: Inputs, levels: int, margin: float) -> np.ndarray:
    """Markers 1..levels where a pixel lies deeper than `margin` inside its intensity band (Otsu
    or multi-Otsu thresholds of the ROI); 0 elsewhere, and outside the ROI."""
    edges = np.concatenate([[-np.inf], band_thresholds(x.values, levels), [np.inf]])
    markers = np.zeros(x.intensity.shape, dtype=np.int32)
    for level in range(levels):
        core = (x.intensity > edges[level] + margin) & (x.intensity < edges[level + 1] - margin)
        markers[core] = level + 1
    if x.roi is not None:
        markers[~x.roi] = 0
    return markers


LEVELS = integer(2, "intensity bands, one marker label each", low=2)
MARGIN = number(0.1, "how far (in [0, 1] intensity) inside its band a pixel must lie to be a "
                "marker; the rest is decided by the method", 0.0, 0.5)


@register
class RegionGrowing(Segmenter):
    """Seeded region growing: from the seeds, the connected pixels within `tolerance` of the
    seeds' median intensity. Seeds are the user's `points`, or the brightest (darkest)
    `seed_percentile` percent of the ROI. Use it for one connected object (or a few) of even
    intensity, such as an organ or a lesion that a click can mark; the grown region is the
    foreground."""

    name = "region_growing"
    params = {
        "points": Param(None, "seed points, one [row, column(, slice)] each, e.g. [[40, 52]]",
                        _is_points, "a list of coordinate lists such as [[10, 20]]"),
        "seeds": choice("auto", "without points: seed from the bright or dark end (auto: the "
                        "polarity's)", ("auto", "bright", "dark")),
        "seed_percentile": number(2.0, "without points: the share of ROI pixels seeded (%)",
                                  0.01, 50.0),
        "tolerance": number(0.3, "the largest intensity difference from the seeds' median (in "
                            "[0, 1] intensity)", 0.0, 1.0),
    }
    grid = {"seeds": ["bright", "dark"], "tolerance": [0.15, 0.3, 0.45]}

    def default_mapping(self) -> list[int]:
        return [0, self.values["classes"] - 1]  # level 1 (grown) is the foreground

    def _seeds(self, x: Inputs) -> np.ndarray:
        seeds = np.zeros(x.intensity.shape, dtype=bool)
        points = self.values["points"]
        if points is not None:
            for point in points:
                if len(point) != seeds.ndim or not all(0 <= c < s for c, s in
                                                       zip(point, seeds.shape)):
                    raise SeglabError(f"{self.name}: points: {point} is not inside the "
                                      f"{'x'.join(map(str, seeds.shape))} image")
                seeds[tuple(point)] = True
            return seeds
        side = self.values["seeds"] if self.values["seeds"] != "auto" else self.values["polarity"]
        share = self.values["seed_percentile"]
        if side == "bright":
            seeds = x.intensity >= np.percentile(x.values, 100 - share)
        else:
            seeds = x.intensity <= np.percentile(x.values, share)
        return seeds if x.roi is None else seeds & x.roi

    def partition(self, x: Inputs) -> np.ndarray:
        seeds = self._seeds(x)
        reference = np.median(x.intensity[seeds])
        candidate = np.abs(x.intensity - reference) <= self.values["tolerance"]
        if x.roi is not None:
            candidate &= x.roi
        regions = label(candidate, connectivity=1)
        grown = np.unique(regions[seeds & candidate])
        return np.isin(regions, grown[grown > 0]).astype(np.uint8)


@register
class Watershed(Segmenter):
    """Marker-based watershed (Beucher and Meyer 1993) on the Sobel gradient: markers from the
    cores of the intensity bands flood the rest, meeting on the strongest edges. Use it when
    objects have clear edges but overlapping intensities near them (touching cells, blurred
    boundaries); `compactness` > 0 gives more regular regions."""

    name = "watershed"
    params = {"levels": LEVELS, "margin": MARGIN,
              "compactness": number(0.0, "0: classic watershed; > 0: compact watershed", 0.0,
                                    1e6)}
    grid = {"margin": [0.05, 0.1, 0.2]}

    @property
    def n_levels(self) -> int:
        return self.values["levels"]

    def partition(self, x: Inputs) -> np.ndarray:
        markers = band_markers(x, self.n_levels, self.values["margin"])
        flooded = watershed(sobel(x.filled), markers, mask=x.roi,
                            compactness=self.values["compactness"])
        return np.clip(flooded - 1, 0, None).astype(np.uint8)


@register
class RandomWalker(Segmenter):
    """Random walker (Grady 2006): each unmarked pixel takes the marker label a random walk from
    it most probably reaches first, walks being discouraged across strong intensity changes
    (`beta`). Use it for noisy images with weak or broken edges, where the watershed leaks; it is
    the slowest method here (a sparse linear system over all the pixels)."""

    name = "random_walker"
    params = {"levels": LEVELS, "margin": MARGIN,
              "beta": number(130.0, "penalty on intensity differences (higher: edges stop the "
                             "walk more)", 1e-3, 1e6)}
    fit_cases = 2

    @property
    def n_levels(self) -> int:
        return self.values["levels"]

    def partition(self, x: Inputs) -> np.ndarray:
        markers = band_markers(x, self.n_levels, self.values["margin"])
        if len(np.unique(markers[markers > 0])) < 2:  # nothing to walk between: the bands
            return np.digitize(x.intensity, band_thresholds(x.values, self.n_levels))
        if x.roi is not None:
            markers[~x.roi] = -1  # inactive: removed from the graph
        walked = random_walker(x.filled, markers, beta=self.values["beta"], mode="cg_j")
        return np.clip(walked - 1, 0, None).astype(np.uint8)
