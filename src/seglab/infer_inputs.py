"""What goes into `seglab predict`: the inputs found, read (with their neighbouring frames),
checked against the run's plan and given their regions of interest, and streamed to the network
by a reading thread."""

from __future__ import annotations

import dataclasses
import glob
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from seglab.case import Case
from seglab.data.io import IMAGE_SUFFIXES, read_label, suffix_of
from seglab.data.layouts import Dataset
from seglab.data.loading import field_of_view
from seglab.data.sequences import input_frames, read_frames
from seglab.errors import SeglabError
from seglab.plan import Plan
from seglab.run import Run
from seglab.run_setup import open_dataset

T = TypeVar("T")
Item = TypeVar("Item")


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given; folders expanded to their image files (a DICOM folder is one case)."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise SeglabError(f"{item}: no such file or folder")
        if item.is_dir() and not any(p.suffix.lower() == ".dcm" for p in item.iterdir()):
            found = sorted(p for p in item.iterdir()
                           if p.is_file() and suffix_of(p) in IMAGE_SUFFIXES)
            if not found:
                raise SeglabError(f"{item}: no image files in this folder")
            paths.extend(found)
        else:
            paths.append(item)
    return paths


def with_tta(plan: Plan, tta: str) -> Plan:
    """The plan's test-time augmentation ("plan": as planned, and as validation and evaluation
    scored it), or the user's deviation from it: "on" averages the windows mirrored along each
    spatial axis (1 + dims forward passes: 3x the inference time in 2D, 4x in 3D; or the
    square's 8 symmetries where the plan turns them), "off" neither."""
    if tta not in ("plan", "on", "off"):
        raise SeglabError(f"--tta {tta}: expected plan, on or off")
    if tta == "plan":
        return plan
    axes = list(range(plan.dims)) if tta == "on" else []
    turns = tta == "on" and plan.inference.get("quarter_turns", False)
    return dataclasses.replace(plan, inference={**plan.inference, "mirror_axes": axes,
                                                "quarter_turns": turns})


def run_inputs(run: Run, inputs: list[str | Path], tta: str = "plan",
               roi: str | Path | None = None) -> tuple[Plan, list[Case]]:
    """The run's plan (with `tta`) and every input read, checked and given its ROI."""
    plan = with_tta(run.plan(), tta)
    cases = read_inputs(inputs, plan)
    attach_rois(cases, plan, Path(roi) if roi else None, roi_dataset(run, plan, roi))
    return plan, cases


def roi_dataset(run: Run, plan: Plan, roi: str | Path | None) -> Dataset | None:
    """The run's dataset where `attach_rois` needs it: a run trained inside ROI files, predicted
    without a --roi folder, finds its own cases' ROI files there."""
    return open_dataset(run) if plan.roi_rule == "file" and not roi else None


def read_inputs(inputs: list[str | Path], plan: Plan) -> list[Case]:
    """Every input read (with its neighbouring frames, for temporal context) and checked against
    the plan's dims and channels, before any model loads."""
    read: dict[Path, Case] = {}
    cases = [read_frames(files, read) for files in input_frames(
        expand_inputs(inputs), plan.temporal["context"], plan.temporal["pattern"])]
    check_inputs(cases, plan)
    return cases


def check_inputs(cases: list[Case], plan: Plan) -> None:
    """One clear error for the first input whose dims or channels the run was not trained on."""
    for case in cases:
        if case.channels != plan.in_channels or case.dims != plan.dims:
            raise SeglabError(f"{case.meta['path']}: {case.dims}D with {case.channels} channel(s), "
                              f"but the run was trained on {plan.dims}D with {plan.in_channels}")


def attach_rois(cases: list[Case], plan: Plan, roi_folder: Path | None = None,
                dataset: Dataset | None = None) -> None:
    """Sets each case's region of interest as training had it, before normalisation (which is
    taken inside it): a mask of the same name in `roi_folder` when given; else for a run trained
    with ROI files, the dataset's own file when the input is one of its cases; else for
    `roi: auto`, the field of view derived from the image. None when the plan has no ROI."""
    own = {ref.images[0].resolve(): ref.roi for ref in dataset.cases if ref.roi} if dataset else {}
    for case in cases:
        path = Path(case.meta["path"])
        if roi_folder is not None:
            case.roi = _roi_from_folder(roi_folder, path, case.shape)
        elif plan.roi_rule == "file":
            if (roi := own.get(path.resolve())) is None:
                raise SeglabError(f"{path}: the run was trained inside ROI masks read from files; "
                                  "give --roi DIR with a mask of the same name for each input")
            case.roi = _read_roi(roi, case.shape)
        elif plan.roi_rule == "auto":
            case.roi = field_of_view(case.image)


def _roi_from_folder(folder: Path, image: Path, shape: tuple[int, ...]) -> np.ndarray:
    stem = image.name[: -len(suffix_of(image))]
    found = sorted(p for p in folder.glob(f"{glob.escape(stem)}.*")
                   if suffix_of(p) in IMAGE_SUFFIXES and p.name[: -len(suffix_of(p))] == stem)
    if not found:
        raise SeglabError(f"{image}: no ROI mask named {stem}.* in {folder}")
    return _read_roi(found[0], shape)


def _read_roi(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    roi = read_label(path)
    if roi.shape != tuple(shape):
        raise SeglabError(f"{path}: ROI size {roi.shape} does not match its image {tuple(shape)}")
    return roi > 0




def stream_inputs(inputs: list[str | Path], plan: Plan, roi_folder: Path | None = None,
                  dataset: Dataset | None = None, ahead: int = 2) -> Iterator[Case]:
    """`read_inputs` one case at a time, in order, read by a background thread that keeps up to
    `ahead` cases ready: reading overlaps the network, and memory holds a few cases rather than
    the folder. Missing inputs fail here, at once; a bad input stops the stream at its place with
    its one clear line (the outputs of the inputs before it are whole files)."""
    groups = input_frames(expand_inputs(inputs), plan.temporal["context"],
                          plan.temporal["pattern"])
    recent = _RecentFiles(2 * plan.temporal["context"] + 1)

    def read(files: list[Path]) -> Case:
        case = read_frames(files, recent, keep_integers=True)
        check_inputs([case], plan)
        attach_rois([case], plan, roi_folder, dataset)
        return case

    return read_ahead(groups, read, ahead)


def read_ahead(items: Iterable[Item], read: Callable[[Item], T], ahead: int = 2) -> Iterator[T]:
    """`read(item)` for each item in order, computed by one background thread up to `ahead`
    items before the consumer asks; an exception raised there is raised here, in its place."""
    with ThreadPoolExecutor(1, thread_name_prefix="seglab-reader") as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(read, item))
                if len(pending) > ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


class _RecentFiles(dict):
    """The files read most recently (a sequence's neighbouring frames, shared between the cases
    that stack them), forgetting the oldest beyond `size`."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def __setitem__(self, key: Path, value: Case) -> None:
        super().__setitem__(key, value)
        while len(self) > self.size:
            del self[next(iter(self))]
