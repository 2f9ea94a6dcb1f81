"""Clustering: k-means on intensity or colour (SciPy's; scikit-image has none) and SLIC
superpixels (scikit-image's) that each take the majority of their pixels' Otsu levels."""

from __future__ import annotations

import numpy as np
from scipy.cluster.vq import kmeans2, vq
from skimage.segmentation import slic

from seglab.classical import register
from seglab.classical.base import (Inputs, Segmenter, band_thresholds, choice, integer, number,
                                  scale)


@register
class KMeans(Segmenter):
    """k-means (Lloyd's algorithm, k-means++ start) on the pixels' intensity or colour inside the
    ROI; clusters are ordered by their mean intensity. Use it for colour images whose classes
    differ in hue rather than brightness (stains, natural scenes), and with fitting, which
    chooses the cluster -> class map. Centres come from a seeded sample of pixels, so a large
    image costs little more than the sample."""

    name = "kmeans"
    params = {
        "clusters": integer(2, "number of clusters", low=2),
        "features": choice("colour", "colour: every channel (scaled each to [0, 1]); "
                           "intensity: the `channel` intensity only", ("colour", "intensity")),
        "sample": integer(50_000, "pixels drawn to find the centres", low=100),
        "seed": integer(0, "random seed of the sample and the start", low=0),
    }
    grid = {"clusters": [2, 3, 4]}

    @property
    def n_levels(self) -> int:
        return self.values["clusters"]

    def _features(self, x: Inputs) -> np.ndarray:
        """(pixels inside the ROI, features) float32."""
        if self.values["features"] == "intensity" or x.image.shape[0] == 1:
            return x.values[:, None]
        inside = x.image[:, x.roi] if x.roi is not None else x.image.reshape(len(x.image), -1)
        return np.stack([scale(channel, channel) for channel in inside], axis=1)

    def partition(self, x: Inputs) -> np.ndarray:
        features = self._features(x)
        rng = np.random.default_rng(self.values["seed"])
        sample = features[rng.choice(len(features), min(len(features), self.values["sample"]),
                                     replace=False)]
        centres, _ = kmeans2(sample.astype(np.float64), self.n_levels, minit="++",
                             seed=self.values["seed"], missing="warn")
        assigned, _ = vq(features.astype(np.float64), centres, check_finite=False)
        sums = np.bincount(assigned, weights=x.values, minlength=self.n_levels)
        counts = np.bincount(assigned, minlength=self.n_levels)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)  # empty ones last
        rank = np.argsort(np.argsort(means, kind="stable"))
        levels = np.zeros(x.intensity.shape, dtype=np.uint8)
        if x.roi is None:
            levels.ravel()[:] = rank[assigned]
        else:
            levels[x.roi] = rank[assigned]
        return levels


@register
class Slic(Segmenter):
    """SLIC superpixels (Achanta et al. 2012) on the intensity, each taking the majority vote of
    its pixels' Otsu (multi-Otsu) levels. Use it for blob-like objects with noisy or textured
    insides, where the vote smooths pixel noise while the superpixels follow the edges; not for
    structures thinner than a superpixel (vessels, membranes)."""

    name = "slic"
    params = {
        "segment_size": integer(100, "pixels (voxels) per superpixel", low=4),
        "compactness": number(0.3, "weight of space against intensity (in [0, 1] units): "
                              "higher gives rounder superpixels", 1e-4, 100.0),
        "levels": integer(2, "intensity bands voted on", low=2),
        "iterations": integer(5, "k-means iterations of SLIC (10 in the paper; 5 is near "
                              "converged at half the time)", low=1),
    }
    grid = {"compactness": [0.1, 0.3, 1.0]}
    fit_cases = 2

    @property
    def n_levels(self) -> int:
        return self.values["levels"]

    def partition(self, x: Inputs) -> np.ndarray:
        # No `mask=`: skimage's masked SLIC takes minutes on a 1-megapixel image; the filled image
        # is flat outside the ROI instead, and only the pixels inside it vote.
        pixel = np.digitize(x.intensity, band_thresholds(x.values, self.n_levels))
        segments = slic(x.filled, n_segments=max(1, x.values.size // self.values["segment_size"]),
                        compactness=self.values["compactness"],
                        max_num_iter=self.values["iterations"], channel_axis=None, start_label=0)
        weights = None if x.roi is None else x.roi.ravel()
        votes = np.bincount(segments.ravel() * self.n_levels + pixel.ravel(), weights,
                            minlength=(segments.max() + 1) * self.n_levels)
        winner = votes.reshape(-1, self.n_levels).argmax(axis=1).astype(np.uint8)
        return winner[segments]
