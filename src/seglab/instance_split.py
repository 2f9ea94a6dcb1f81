"""Objects from a semantic network's probabilities: seeded watershed, as the 2018 Data Science
Bowl's leading entries split touching nuclei.

The network is trained on the object classes plus a "boundary" class, the rim of every object,
and by default one more, the pixels where objects touch (`Instances.with_boundaries`). Its
interior probability (the object classes without the rim and contacts) stays low between
touching objects, so:
  1. the object mask is where the background probability is below 1 - `mask_threshold`;
  2. the seeds are the connected regions where the interior probability exceeds
     `seed_threshold` (those under `min_seed` pixels dropped);
  3. a watershed of the negated interior probability from the seeds, inside the mask, gives each
     object its pixels; each object takes the object class with the most probability over them.
The two thresholds are chosen on the validation cases by the mean DSB score (`choose`), every
trial recorded, as `seglab.postprocess` chooses its steps; so is Mask R-CNN's detection score
threshold (`choose_score_threshold`), the other instance method's one free choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from seglab.data.instances import Instances, renumbered
from seglab.metrics.instances import dsb_score, iou_matrix
from seglab.models.mask_rcnn import objects_from_detections

# On DSB2018 the best validation scores sat at the corner (0.9, 0.6) of a grid that stopped
# there; with 0.95 and 0.7 the validation surface peaks inside it (BENCHMARKS.md).
SEED_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
MASK_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
DEFAULTS = {"seed_threshold": 0.7, "mask_threshold": 0.5, "min_seed": 4}


def split_objects(probs: np.ndarray, boundary_class: int, seed_threshold: float,
                  mask_threshold: float, min_seed: int = 4) -> Instances:
    """Objects (2D or 3D) from class probabilities (K, *spatial) whose class `boundary_class`
    is the object rim (and any after it, the contacts) and 1..boundary_class-1 the object
    classes."""
    objects = probs[1:boundary_class]
    interior = objects.sum(axis=0)
    mask = probs[0] < 1 - mask_threshold
    structure = ndimage.generate_binary_structure(interior.ndim, 1)
    seeds, count = ndimage.label((interior > seed_threshold) & mask, structure=structure)
    if count:
        sizes = np.bincount(seeds.ravel())
        seeds[sizes[seeds] < min_seed] = 0
    ids = watershed(-interior, seeds, mask=mask)  # mask regions without a seed stay 0
    return _classified(ids.astype(np.int64), objects)


def _classified(ids: np.ndarray, objects: np.ndarray) -> Instances:
    """Each object's class: the object class with the largest summed probability over it; its
    score: that class's mean probability over it."""
    object_ids = [int(v) for v in np.unique(ids) if v != 0]
    if not object_ids:
        return Instances(ids.astype(np.int32), {}, scores={})
    sums = np.stack([ndimage.sum(p, ids, object_ids) for p in objects], axis=1)
    sizes = ndimage.sum(np.ones_like(ids), ids, object_ids)
    return renumbered(ids, {k: int(np.argmax(row)) + 1 for k, row in zip(object_ids, sums)},
                      scores={k: float(row.max() / size)
                              for k, row, size in zip(object_ids, sums, sizes)})


def choose(probabilities: Sequence[np.ndarray], references: Sequence[Instances],
           boundary_class: int, min_seed: int = DEFAULTS["min_seed"]) -> dict[str, Any]:
    """The seed and mask thresholds with the best mean DSB score over the validation cases,
    with every trial's score."""
    trials = []
    for seed, mask in product(SEED_THRESHOLDS, MASK_THRESHOLDS):
        scores = [dsb_score(iou_matrix(split_objects(p, boundary_class, seed, mask,
                                                     min_seed).ids, ref.ids, ref.ignore))
                  for p, ref in zip(probabilities, references)]
        trials.append({"seed_threshold": seed, "mask_threshold": mask,
                       "validation_dsb_score": float(np.mean(scores)) if scores else 0.0})
    best = max(trials, key=lambda t: t["validation_dsb_score"]) if probabilities else {
        **DEFAULTS, "validation_dsb_score": None}
    return {"seed_threshold": best["seed_threshold"], "mask_threshold": best["mask_threshold"],
            "min_seed": min_seed, "validation_dsb_score": best["validation_dsb_score"],
            "tried": trials}


SCORE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def choose_score_threshold(outputs: Sequence[dict], references: Sequence[Instances],
                           mask_threshold: float) -> dict[str, Any]:
    """Mask R-CNN's detection score threshold with the best mean DSB score over the validation
    cases (`outputs`: its detections per case), with every trial's score."""
    trials = []
    for threshold in SCORE_THRESHOLDS:
        scores = [dsb_score(iou_matrix(objects_from_detections(found, threshold,
                                                               mask_threshold).ids,
                                       ref.ids, ref.ignore))
                  for found, ref in zip(outputs, references)]
        trials.append({"score_threshold": threshold,
                       "validation_dsb_score": float(np.mean(scores)) if scores else 0.0})
    best = max(trials, key=lambda t: t["validation_dsb_score"]) if outputs else {
        "score_threshold": 0.5, "validation_dsb_score": None}
    return {**best, "mask_threshold": mask_threshold, "tried": trials}
