"""Classical methods where the models go: `seglab predict --method` (masks written by the same
writer as a model's) and a `seglab compare` row (fitted on the run's training cases, scored on its
test split with the same metrics)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from seglab import postprocess
from seglab.case import Case
from seglab.classical import create
from seglab.classical.base import Segmenter, remembering_responses
from seglab.classical.fit import Fitted, fit_method, spread
from seglab.data.inspect import inspect_dataset
from seglab.data.io import output_folder, read_image, write_text_atomic
from seglab.data.write import write_mask
from seglab.data.layouts import Dataset, find_dataset
from seglab.data.loading import load_case
from seglab.errors import SeglabError
from seglab.evaluate import EVALUATION, Outputs, Steps, score_variants
from seglab.infer import choose_postprocessing_for, output_value_map
from seglab.infer_inputs import attach_rois, expand_inputs, read_inputs
from seglab.plan import make_plan
from seglab.run import Run
from seglab.run_setup import open_dataset, planned_split

FIT_CASES = 5  # labelled training images a method is fitted on, at most
RECORD = "method.json"  # written beside the masks of `seglab predict --method`
TIMING_SECONDS, TIMING_PASSES = 5.0, 5


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`--set name=value` pairs; a value is read as JSON when it parses (31, 0.02, [[4, 5]]),
    else kept as text (dark)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise SeglabError(f"--set {pair!r}: expected a method parameter as name=value, "
                              "e.g. --set channel=1")
        try:
            params[name.strip()] = json.loads(text)
        except json.JSONDecodeError:
            params[name.strip()] = text
    return params


def _load(dataset: Dataset, ids: list[str]) -> list[Case]:
    refs = {ref.case_id: ref for ref in dataset.cases}
    return [load_case(dataset, refs[case_id]) for case_id in ids]


def fit_on_split(segmenter: Segmenter, dataset: Dataset, split: dict[str, list[str]],
                 classes: int) -> tuple[Fitted, float]:
    """The method fitted on a few of the split's training (and validation) cases, and the
    seconds the fitting took (reading the images excluded)."""
    count = min(FIT_CASES, segmenter.fit_cases or FIT_CASES)
    cases = _load(dataset, spread(split["train"] + split["val"], count))
    started = time.perf_counter()
    fitted = fit_method(segmenter, cases, classes, count)
    return fitted, time.perf_counter() - started


def predict_with_method(method: str, params: dict[str, Any] | None, inputs: list[str | Path],
                        out: Path, data: str | Path | None = None) -> list[Path]:
    """Masks of `inputs` by a classical method, in the inputs' own format, into `out`, plus
    OUT/method.json with the parameters used. With `data`, the method is first fitted on the
    training cases of that dataset's planned split, and the dataset's classes, stored label values
    and field-of-view rule apply to the masks."""
    segmenter, plan, record = create(method, **(params or {})), None, {"method": method}
    dataset = None
    if data is not None:
        dataset = find_dataset(data)
        plan = make_plan(inspect_dataset(dataset))
        fitted, _ = fit_on_split(segmenter, dataset, planned_split(dataset, plan), plan.n_classes)
        segmenter = fitted.segmenter
        record.update(fitted_on=str(Path(data).resolve()), fit_cases=fitted.cases,
                      fit_dice=round(fitted.dice, 4))
    cases = read_inputs(inputs, plan) if plan else [read_image(p) for p in expand_inputs(inputs)]
    value_map = output_value_map(plan) if plan else None
    output_folder(out)
    written = []
    if plan is not None:
        attach_rois(cases, plan, dataset=dataset)
    for case in cases:
        written.append(write_mask(_segment(segmenter, case), case, out, value_map))
    record["params"] = segmenter.values | {"mapping": segmenter.mapping()}
    write_text_atomic(out / RECORD, json.dumps(record, indent=2) + "\n")
    return written


def _segment(segmenter: Segmenter, case: Case) -> np.ndarray:
    try:
        return segmenter.segment(case.image, case.roi)
    except SeglabError as error:
        raise SeglabError(f"{case.meta.get('path', case.case_id)}: {error}")


def evaluate_cases(segmenter: Segmenter, cases: list[Case], run: Run,
                   variants: dict[str, Steps]) -> dict[str, dict[str, Any]]:
    """As `seglab.evaluate.evaluate_run` does for a model: each case segmented once and scored
    for each variant ({folder under RUN: post-processing steps}), with the ROC AUC of the
    method's score where it has one (`Segmenter.score`, which reuses the work of `segment`)."""
    def outputs() -> Iterator[Outputs]:
        for case in cases:
            mask = _segment(segmenter, case)
            score = segmenter.score(case.image, case.roi)
            yield case, mask, None if score is None else {1: score}, None

    with remembering_responses():
        return score_variants(run, outputs(), variants)


def fit_and_measure(run: Run, postprocessed: str | None = None) -> dict[str, Any]:
    """A classical method's `seglab compare` row: fitted on the run's training cases (the fitting
    time stands for the training time), evaluated on its test split, and timed over the test
    images in memory (after the evaluation, which served as the warm-up).

    With `postprocessed` (a folder name), also the hybrid: post-processing chosen on the
    validation cases, the test split scored with it into RUN/<postprocessed>, and timed; its
    measurements are the result's "postprocessed" entry."""
    plan = run.plan()
    split = run.read_json("split.json")
    dataset = open_dataset(run)
    segmenter = create(plan.model["name"], **plan.model["classical"])
    fitted, fit_s = fit_on_split(segmenter, dataset, split, plan.n_classes)
    segmenter = fitted.segmenter
    variants: dict[str, Steps] = {EVALUATION: []}
    if postprocessed:
        started = time.perf_counter()
        choice = choose_postprocessing_for(run, lambda case: _segment(segmenter, case))
        choose_s = time.perf_counter() - started
        variants[postprocessed] = choice["steps"]
    tests = _load(dataset, split["test"])
    evaluate_cases(segmenter, tests, run, variants)
    result = {"train_s": round(fit_s, 3), "fit_cases": fitted.cases,
              "fit_dice": round(fitted.dice, 4), "params_m": None, "peak_gpu_mb": None,
              "images_per_s": _images_per_s(segmenter, tests, []),
              "params": segmenter.describe()}
    run.write_json("run.json", {**run.read_json("run.json"), "device": "cpu"})
    if postprocessed:
        result["postprocessed"] = {
            "status": "ok", "train_s": round(fit_s + choose_s, 3), "choice": choice,
            "images_per_s": _images_per_s(segmenter, tests, choice["steps"])}
    return result


def _images_per_s(segmenter: Segmenter, cases: list[Case], steps: list[dict[str, Any]]) -> float:
    """Test images per second, the median of passes over `cases` repeated until TIMING_SECONDS
    have passed (at most TIMING_PASSES): the fast methods take a fraction of a second per pass,
    which other processes on the machine can double."""
    passes: list[float] = []
    while len(passes) < TIMING_PASSES and sum(passes) < TIMING_SECONDS:
        started = time.perf_counter()
        for case in cases:
            postprocess.apply(segmenter.segment(case.image, case.roi), steps)
        passes.append(time.perf_counter() - started)
    return round(len(cases) / float(np.median(passes)), 3)
