"""`seglab evaluate`: scoring predicted masks against references, for a folder pair or a run's test
split, with the metrics of `seglab.metrics` written as CSV and JSON."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from seglab import postprocess
from seglab.case import Case
from seglab.data.inspect import inspect_dataset
from seglab.data.io import IMAGE_SUFFIXES, read_label, read_label_with_spacing, suffix_of
from seglab.data.write import write_mask
from seglab.data.layouts import IGNORE_INDEX, Dataset, find_dataset
from seglab.data.loading import load_case, map_label_values
from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.infer import load_model, output_value_map, postprocessing_steps, predict_case
from seglab.infer_objects import instance_split_settings, predict_objects
from seglab.metrics import (add_roc_auc, evaluate_case, roc_auc_cases, roc_auc_classes,
                            summarize, write_tables)
from seglab.uncertainty import entropy
from seglab.measure import class_sizes
from seglab.metrics.instances import instance_scores
from seglab.run import Run
from seglab.run_setup import open_dataset

EVALUATION = "evaluation"  # RUN/evaluation: the run's own scores, which its report shows
Steps = list[dict[str, Any]]  # post-processing steps (`seglab.postprocess`)
# A test case, its mask before post-processing, and the score map of each foreground class
# (probabilities; None where the method gives none).
# A case, its mask, its score map per foreground class (or None), its uncertainty map (or None).
Outputs = tuple[Case, np.ndarray, dict[int, np.ndarray] | None, np.ndarray | None]


def evaluate_run(run: Run, precision: Precision | None = None,
                 variants: dict[str, Steps] | None = None) -> dict[str, Any]:
    """Predicts the run's test split once and scores it for each variant ({folder under RUN:
    post-processing steps}; by default the run's own evaluation with its chosen steps), as
    `score_variants` does. Returns the first variant's summary."""
    plan = run.plan()
    test_ids = run.read_json("split.json")["test"]
    if not test_ids:
        raise SeglabError(f"{run.path}: the run's split has no test cases to evaluate")
    precision = precision or Precision.choose()
    dataset = open_dataset(run)
    refs = {ref.case_id: ref for ref in dataset.cases}
    model = load_model(run, precision)
    if plan.task == "instance":
        return _evaluate_objects(run, model, (load_case(dataset, refs[i]) for i in test_ids),
                                 precision)

    def outputs() -> Iterator[Outputs]:
        for case_id in test_ids:
            case = load_case(dataset, refs[case_id])
            mask, probs = predict_case(model, case, plan, precision)
            yield case, mask, {k: probs[k] for k in range(1, plan.n_classes)}, entropy(probs)

    summaries = score_variants(run, outputs(), variants or {EVALUATION: postprocessing_steps(run)})
    return next(iter(summaries.values()))


def _evaluate_objects(run: Run, model, cases: Iterable[Case],
                      precision: Precision) -> dict[str, Any]:
    """An instance run's test cases: object-id masks into RUN/predictions/test; per case the class
    metrics of the objects' class map (the rim class is the network's, not the data's) and the
    object scores (`seglab.metrics.instances`), into RUN/evaluation."""
    plan = run.plan()
    split = instance_split_settings(run)
    classes = plan.data_classes
    per_case = []
    for case in cases:
        found = predict_objects(model, case, plan, precision, split)
        write_mask(found.ids, case, run.path / "predictions" / "test")
        per_case.append({"case": case.case_id, **evaluate_case(
            found.semantic(), case.label, classes, case.spacing, case.roi, IGNORE_INDEX),
            "objects": instance_scores(found.ids, case.instances.ids, case.instances.ignore,
                                       found.classes, case.instances.classes)})
    summary = summarize(per_case)
    write_tables(per_case, summary, run.path / EVALUATION)
    return summary


def score_variants(run: Run, outputs: Iterable[Outputs],
                   variants: dict[str, Steps]) -> dict[str, dict[str, Any]]:
    """Each case's mask with each variant's post-processing steps written into
    RUN/predictions/test (test-<folder> for a folder other than the run's own evaluation) and
    scored into RUN/<folder>; returns {folder: summary}.

    Besides the mask metrics, each summary holds the ROC AUC of every foreground class's score
    map (`roc_auc`: inside the ROI, per case and pooled over the cases; post-processing changes
    masks, not scores, so it is the same for every variant), and where the outputs carry an
    uncertainty map, how well it finds the variant's misclassified pixels (`uncertainty`, see
    `_uncertainty_summary`). The maps are kept until the end for it (4 bytes per voxel and
    foreground class, 5 for the uncertainty)."""
    plan = run.plan()
    value_map = output_value_map(plan)
    per_case: dict[str, list[dict[str, Any]]] = {folder: [] for folder in variants}
    scored = []
    uncertain: dict[str, list] = {folder: [] for folder in variants}
    foreground = {k: plan.classes[k] for k in range(1, plan.n_classes)}
    for case, mask, scores, uncertainty in outputs:
        counted = case.label != IGNORE_INDEX
        if case.roi is not None:
            counted &= case.roi
        for folder, steps in variants.items():
            final = postprocess.apply(mask, steps)
            masks = run.path / "predictions" / ("test" if folder == EVALUATION else
                                                f"test-{folder}")
            write_mask(final, case, masks, value_map)
            per_case[folder].append({"case": case.case_id, **evaluate_case(
                final, case.label, plan.classes, case.spacing, case.roi, IGNORE_INDEX),
                "sizes": class_sizes(final, case.label, foreground, case.spacing, counted)})
            if uncertainty is not None:
                uncertain[folder].append((uncertainty, final != case.label, counted))
        if scores is not None:
            scored.append((scores, case.label, case.roi))
    auc = roc_auc_classes(scored, plan.classes, IGNORE_INDEX) if scored else None
    summaries = {}
    for folder, cases in per_case.items():
        summaries[folder] = summarize(cases)
        if auc is not None:
            summaries[folder]["roc_auc"] = add_roc_auc(cases, auc)
        if uncertain[folder]:
            summaries[folder]["uncertainty"] = _uncertainty_summary(cases, uncertain[folder])
        write_tables(cases, summaries[folder], run.path / folder)
    return summaries


def _uncertainty_summary(cases: list[dict[str, Any]],
                         maps: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Per case (written into `cases`) and over the test set: the mean predictive entropy where
    the metrics count, and the ROC AUC of the entropy for telling the misclassified pixels from
    the right ones (per case, their mean, and all test pixels pooled); with the error rate in
    ten bins of entropy, for the report's plot."""
    auc = roc_auc_cases(maps)
    for case, (uncertainty, _, counted), value in zip(cases, maps, auc["per_case"]):
        case["uncertainty"] = {"mean_entropy": float(uncertainty[counted].mean()),
                               "error_auc": value}
    values = np.concatenate([u[c] for u, _, c in maps])
    errors = np.concatenate([e[c] for _, e, c in maps])
    bins = np.minimum((values * 10).astype(int), 9)
    rates = [float(errors[bins == b].mean()) if (bins == b).any() else None for b in range(10)]
    return {"mean_entropy": float(values.mean()),
            "error_auc": {k: v for k, v in auc.items() if k != "per_case"},
            "error_rate_by_entropy": rates,
            "pixels_by_entropy": [int((bins == b).sum()) for b in range(10)]}


def evaluate_folders(pred: Path, reference: Path, out: Path, classes: list[str] | None = None,
                     label_values: dict[int, int] | None = None,
                     allow_missing: bool = False) -> dict[str, Any]:
    """Scores prediction files against a reference: a dataset (seglab.yaml, nnU-Net/MSD layout,
    images/+labels/ folders; its label mapping and ROI apply; the cases predicted are scored) or
    a folder of label files paired by file name, each of which needs its prediction unless
    `allow_missing` (then a warning names them and the predictions there are get scored)."""
    predictions = _label_files(pred)
    try:
        dataset = find_dataset(reference)
    except SeglabError:
        dataset = None
    if dataset is not None:
        per_case, names = _against_dataset(predictions, dataset)
    else:
        references = _label_files(reference)
        _check_missing(predictions, references, allow_missing)
        per_case, names = _against_folder(predictions, references, classes, label_values)
    summary = summarize(per_case)
    summary["classes_evaluated"] = names
    write_tables(per_case, summary, out)
    return summary


def _check_missing(predictions: dict[str, Path], references: dict[str, Path],
                   allow_missing: bool) -> None:
    missing = sorted(set(references) - set(predictions))
    if not missing:
        return
    what = (f"{len(missing)} of {len(references)} reference files have no prediction of the "
            f"same name (first: {references[missing[0]]})")
    if not allow_missing:
        raise SeglabError(f"{what}; predict them, or pass --allow-missing to score the "
                          "predictions there are")
    print(f"warning: {what}; scoring the {len(references) - len(missing)} that have one",
          file=sys.stderr)


def _label_files(path: Path) -> dict[str, Path]:
    if not path.exists():
        raise SeglabError(f"{path}: no such file or folder")
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and suffix_of(p) in IMAGE_SUFFIXES)
    if not files:
        raise SeglabError(f"{path}: no mask files found")
    return {p.name[: -len(suffix_of(p))]: p for p in files}


def _against_dataset(predictions: dict[str, Path], dataset: Dataset):
    if dataset.classes is None:
        inspect_dataset(dataset)  # settles the undeclared classes and label mapping
    by_stem = {}
    for ref in dataset.cases:
        stem = ref.images[0].name[: -len(suffix_of(ref.images[0]))]
        by_stem[ref.case_id] = by_stem[stem] = ref
    per_case = []
    for stem, path in predictions.items():
        ref = by_stem.get(stem) or by_stem.get(stem.removesuffix("_0000"))
        if ref is None:
            raise SeglabError(f"{path}: no reference case named {stem!r} in {dataset.source}")
        case = load_case(dataset, ref)
        raw = read_label(path)
        if raw.shape != case.shape:
            raise SeglabError(f"{path}: size {raw.shape} does not match the reference {case.shape}")
        mask = map_label_values(raw, dataset, path)
        scores = evaluate_case(mask, case.label, dataset.classes, case.spacing, case.roi,
                               IGNORE_INDEX)
        per_case.append({"case": ref.case_id, **scores})
    return per_case, dataset.classes


def _against_folder(predictions: dict[str, Path], references: dict[str, Path],
                    classes: list[str] | None, label_values: dict[int, int] | None):
    unmatched = sorted(set(predictions) - set(references))
    if unmatched:
        raise SeglabError(f"{predictions[unmatched[0]]}: no reference file with the same name")
    pairs = []
    for stem, path in predictions.items():
        pred, (ref, spacing) = read_label(path), read_label_with_spacing(references[stem])
        if pred.shape != ref.shape:
            raise SeglabError(f"{path}: size {pred.shape} does not match the reference "
                              f"{references[stem]} {ref.shape}")
        pairs.append((stem, path, pred, ref, spacing))
    if classes is None:
        top = max(int(max(p.max(), r.max())) for _, _, p, r, _ in pairs)
        if label_values is None and top == 255:
            label_values = {0: 0, 255: 1}
            top = 1
        classes = ["background"] + [f"class_{k}" for k in range(1, top + 1)]
    mapping = Dataset("", Path("."), "folder", [], classes=classes, label_values=label_values)
    per_case = []
    for stem, path, pred, ref, spacing in pairs:
        scores = evaluate_case(map_label_values(pred, mapping, path),
                               map_label_values(ref, mapping, references[stem]), classes,
                               spacing, None, IGNORE_INDEX)
        per_case.append({"case": stem, **scores})
    return per_case, classes
