"""Per-pixel uncertainty from class probabilities.

- Predictive entropy, H(p) = -sum_k p_k log p_k, divided by log K so that it runs from 0 (one
  class certain) to 1 (every class equally likely): what the averaged prediction leaves open.
- Mutual information between the prediction and the model, where there are several predictions
  (mirrored passes, the folds of a cross-validated run): H(mean p) - mean H(p), the part of the
  entropy that comes from the predictions disagreeing (Houlsby et al., "Bayesian Active Learning
  for Classification and Preference Learning", 2011; Gal, "Uncertainty in Deep Learning", 2016).
  It is accumulated pass by pass (`Passes`), so no pass is kept.

Written here rather than taken from a library: two lines of NumPy each, on arrays seglab already
holds; MONAI's and torchmetrics' versions want all passes stacked at once.
"""

from __future__ import annotations

import numpy as np

_FLOOR = 1e-12  # p log p -> 0 as p -> 0


def entropy(probs: np.ndarray) -> np.ndarray:
    """Normalised predictive entropy (*spatial) of class probabilities (K, *spatial), 0..1."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[0] < 2:
        return np.zeros(probs.shape[1:], np.float32)
    value = -(probs * np.log(np.clip(probs, _FLOOR, 1.0))).sum(axis=0) / np.log(probs.shape[0])
    return np.clip(value, 0.0, 1.0).astype(np.float32)


class Passes:
    """Running sums over the predictions of one image: their mean probabilities, and the mean of
    their entropies for the mutual information."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.entropies: np.ndarray | None = None
        self.count = 0

    def add(self, probs: np.ndarray) -> None:
        probs = np.asarray(probs, dtype=np.float64)
        own = entropy(probs).astype(np.float64)
        self.total = probs if self.total is None else self.total + probs
        self.entropies = own if self.entropies is None else self.entropies + own
        self.count += 1

    def mean(self) -> np.ndarray:
        return (self.total / self.count).astype(np.float32)

    def maps(self) -> dict[str, np.ndarray]:
        """{"entropy"} and, from two predictions on, {"mutual_information"} (clipped at 0)."""
        total_entropy = entropy(self.mean())
        maps = {"entropy": total_entropy}
        if self.count > 1:
            disagreement = total_entropy - self.entropies / self.count
            maps["mutual_information"] = np.clip(disagreement, 0.0, 1.0).astype(np.float32)
        return maps
