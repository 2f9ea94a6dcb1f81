"""Fitting a classical method on a few labelled images: the level -> class map (which settles the
polarity), the channel and the method's small `grid`, chosen by the mean foreground Dice.

Only the levels depend on the parameters; every map is scored from the levels x classes pixel
counts of each image, so trying all maps costs almost nothing."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from seglab.case import Case
from seglab.classical.base import Segmenter, order_mapping, remembering_responses
from seglab.data.layouts import IGNORE_INDEX
from seglab.errors import SeglabError
from seglab.metrics import dice_from_counts

MAX_MAPS = 4096  # beyond this many level -> class maps, only the two intensity orders are tried


@dataclass(frozen=True)
class Fitted:
    segmenter: Segmenter
    dice: float  # mean foreground Dice on the fitting images
    cases: int


def spread(items: list, count: int) -> list:
    """At most `count` items, evenly spaced through the list."""
    if len(items) <= count:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]


def confusion(levels: np.ndarray, case: Case, n_levels: int, classes: int) -> np.ndarray:
    """(n_levels, classes) pixel counts inside the ROI, where the label is scored."""
    valid = case.label != IGNORE_INDEX
    if case.roi is not None:
        valid &= case.roi
    pairs = levels[valid].astype(np.int64) * classes + case.label[valid]
    return np.bincount(pairs, minlength=n_levels * classes).reshape(n_levels, classes)


def candidate_maps(segmenter: Segmenter, classes: int) -> np.ndarray:
    """(maps, n_levels) level -> class maps worth scoring; never one class for every level, a
    constant mask (which can out-score a poor split: all-vessel has a Dice of 0.17 on CHASE_DB1)."""
    if segmenter.values["mapping"] is not None or segmenter.fixed_mapping is not None:
        return np.array([segmenter.values["mapping"] or segmenter.fixed_mapping])
    n = segmenter.n_levels
    if classes**n <= MAX_MAPS:
        return np.array([m for m in itertools.product(range(classes), repeat=n)
                         if len(set(m)) > 1])
    return np.array([order_mapping(n, classes, polarity) for polarity in ("bright", "dark")])


def map_scores(maps: np.ndarray, confusions: list[np.ndarray], classes: int) -> np.ndarray:
    """The mean over images of the mean foreground Dice of each map (an empty class predicted
    empty counts 1)."""
    onehot = np.eye(classes)[maps]  # (maps, levels, classes)
    scores = np.zeros(len(maps))
    for counts in confusions:
        predicted = np.einsum("mlk,l->mk", onehot, counts.sum(axis=1))
        hits = np.einsum("mlk,lk->mk", onehot, counts)
        scores += dice_from_counts(hits, predicted, counts.sum(axis=0))[:, 1:].mean(axis=1)
    return scores / len(confusions)


def _grid(segmenter: Segmenter, channels: int) -> list[dict]:
    grid = {k: v for k, v in segmenter.grid.items() if k not in segmenter.given}
    if channels > 1 and "channel" not in segmenter.given:
        grid["channel"] = ["auto", *range(channels)]
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def fit_method(segmenter: Segmenter, cases: list[Case], classes: int,
               max_cases: int = 5) -> Fitted:
    """The segmenter with its unset grid parameters, channel and map chosen by Dice on up to
    `max_cases` labelled `cases` (evenly spread; fewer for the slow methods); the parameters the
    user gave stay."""
    given, name = segmenter.given, segmenter.name
    if given.get("classes", classes) != classes:
        raise SeglabError(f"{name}: classes={given['classes']}, but the dataset has {classes}")
    chosen = spread([case for case in cases if case.label is not None],
                    min(max_cases, segmenter.fit_cases or max_cases))
    if not chosen:
        raise SeglabError(f"{name}: no labelled training cases to fit on")
    with remembering_responses():
        dice, combo, mapping = _best(segmenter, chosen, classes)
    params = {**given, **combo, "classes": classes, "mapping": mapping}
    for polarity in ("bright", "dark"):
        if mapping == order_mapping(len(mapping), classes, polarity):
            params["polarity"] = polarity
    return Fitted(type(segmenter)(**params), dice, len(chosen))


def _best(segmenter: Segmenter, chosen: list[Case], classes: int
          ) -> tuple[float, dict, list[int]]:
    """The best (Dice, grid values, level -> class map) over the grid and the maps."""
    given = segmenter.given
    best: tuple[float, dict, list[int]] | None = None
    for combo in _grid(segmenter, chosen[0].channels):
        candidate = type(segmenter)(**{**given, **combo, "classes": classes})
        n = candidate.n_levels
        confusions = [confusion(candidate.levels(c.image, c.roi), c, n, classes) for c in chosen]
        maps = candidate_maps(candidate, classes)
        scores = map_scores(maps, confusions, classes)
        top = int(np.argmax(scores))
        if best is None or scores[top] > best[0]:
            best = (float(scores[top]), combo, [int(v) for v in maps[top]])
    return best
