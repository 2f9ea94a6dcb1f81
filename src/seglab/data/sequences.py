"""Frames of a sequence (a video, or serial sections): which cases neighbour which, and the
cases that stack their neighbours as further channels, for models with temporal context.

A case id (or an input file's name without its suffix) names its sequence and frame through a
pattern with the named groups `sequence` and `frame` (digits): the dataset's `sequence:` regex
in seglab.yaml, else FRAME_PATTERN, which reads a frame number at the end of the name after a
non-digit ("0001TP_006690" is frame 6690 of "0001TP_"; "17" alone names no sequence). Names
that share a sequence are ordered by frame number; a sequence has at least two frames.

With `context` K, a frame is read as its own channels, then those of the K frames before it
(nearest first), then those of the K frames after it; past either end of its sequence the end
frame stands in, and a case outside any sequence stands in for its own neighbours. Stacking
rather than a recurrent (ConvGRU) bottleneck: every registered model takes it unchanged, and it
costs only the first convolution's input channels (a recurrent bottleneck is not built, so not
measured against it).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seglab.case import Case
from seglab.data.io import read_image, suffix_of
from seglab.errors import SeglabError

if TYPE_CHECKING:
    from seglab.data.layouts import CaseRef, Dataset

FRAME_PATTERN = r"^(?P<sequence>.*\D)(?P<frame>\d+)$"


def frame_of(name: str, pattern: str = FRAME_PATTERN) -> tuple[str, int] | None:
    """(sequence, frame number) of a case id or file stem, or None where the pattern does not
    match it."""
    found = compiled(pattern).search(name)
    if not found or not found["frame"].isdigit():
        return None
    return found["sequence"], int(found["frame"])


@functools.lru_cache(maxsize=16)
def compiled(pattern: str) -> re.Pattern:
    """The pattern compiled; a clear error where it is not a regex with both named groups."""
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise SeglabError(f"sequence pattern {pattern!r} is not a valid regular expression "
                          f"({error})") from None
    if not {"sequence", "frame"} <= set(regex.groupindex):
        raise SeglabError(f"sequence pattern {pattern!r} needs the named groups "
                          "(?P<sequence>...) and (?P<frame>...)")
    return regex


def sequences(names: Iterable[str], pattern: str = FRAME_PATTERN) -> dict[str, list[str]]:
    """The sequences of at least two frames among `names`, each in frame order."""
    found: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        key = frame_of(name, pattern)
        if key is not None:
            found.setdefault(key[0], []).append((key[1], name))
    return {sequence: [name for _, name in sorted(frames)]
            for sequence, frames in found.items() if len(frames) > 1}


def neighbours(names: Iterable[str], context: int,
               pattern: str = FRAME_PATTERN) -> dict[str, list[str]]:
    """For each name, the names whose channels it stacks, in order: itself, the `context`
    frames before it (nearest first), then the `context` frames after it."""
    names = list(names)
    stacks = {name: [name] * (1 + 2 * context) for name in names}
    for frames in sequences(names, pattern).values():
        last = len(frames) - 1
        for t, name in enumerate(frames):
            before = [frames[max(t - k, 0)] for k in range(1, context + 1)]
            after = [frames[min(t + k, last)] for k in range(1, context + 1)]
            stacks[name] = [name, *before, *after]
    return stacks


def sequence_summary(names: Iterable[str], declared: str | None = None) -> dict[str, Any] | None:
    """How many sequences the names form (by the `declared` pattern, else FRAME_PATTERN), their
    median length and median frame step (the fingerprint's `sequences`), or None where they
    form none."""
    pattern = declared or FRAME_PATTERN
    found = sequences(names, pattern)
    if not found:
        return None
    steps = [step for frames in found.values()
             for step in np.diff([frame_of(n, pattern)[1] for n in frames])]
    return {"count": len(found), "frames": float(np.median([len(f) for f in found.values()])),
            "step": float(np.median(steps)) if steps else 1.0, "pattern": pattern,
            "declared": declared is not None}


def with_temporal_context(dataset: Dataset, context: int, pattern: str) -> Dataset:
    """The dataset with each case's images followed by its neighbours' (labelled and unlabelled
    frames alike): what a model with temporal context reads."""
    if context == 0:
        return dataset
    refs = {ref.case_id: ref for ref in [*dataset.cases, *dataset.unlabeled]}
    stacks = neighbours(refs, context, pattern)

    def stacked(ref: CaseRef) -> CaseRef:
        return replace(ref, images=[path for name in stacks[ref.case_id]
                                    for path in refs[name].images])

    return replace(dataset, cases=[stacked(r) for r in dataset.cases],
                   unlabeled=[stacked(r) for r in dataset.unlabeled])


def input_frames(paths: list[Path], context: int, pattern: str) -> list[list[Path]]:
    """For each input file, the files it stacks: itself, then its neighbours. The frames of a
    sequence are the files of one folder whose names (without their endings) the pattern reads
    as one sequence."""
    if context == 0:
        return [[path] for path in paths]
    folders: dict[Path, dict[str, Path]] = {}
    for path in paths:
        folders.setdefault(path.parent, {})[_stem(path)] = path
    stacks = {folder: neighbours(files, context, pattern) for folder, files in folders.items()}
    return [[folders[p.parent][name] for name in stacks[p.parent][_stem(p)]] for p in paths]


def read_frames(files: list[Path], read: dict[Path, Case] | None = None,
                keep_integers: bool = False) -> Case:
    """The first file read as a case, with the other files' channels stacked after its own
    (`read`: files already read, shared between calls; `keep_integers`: see `read_image`)."""
    read = {} if read is None else read
    for path in files:
        if path not in read:
            read[path] = read_image(path, keep_integers=keep_integers)
    case = read[files[0]]
    if len(files) == 1:
        return case
    for path in files[1:]:
        if read[path].shape != case.shape:
            raise SeglabError(f"{path}: size {read[path].shape} differs from the frame "
                              f"{files[0]} {case.shape} of its sequence")
    return replace(case, image=np.concatenate([read[p].image for p in files], axis=0),
                   meta={**case.meta, "frames": [str(p) for p in files]})


def _stem(path: Path) -> str:
    return path.name[:len(path.name) - len(suffix_of(path))]


def own_frame(ref: CaseRef, frames: int) -> CaseRef:
    """A stacked case (`with_temporal_context`, `frames` = 1 + 2 x context) as its own frame's
    files alone: what a page shows."""
    return replace(ref, images=ref.images[:len(ref.images) // frames])
