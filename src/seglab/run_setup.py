"""Creating a run folder (inspect, plan, split: all or nothing) and reading its cases back, through
the preprocessed cache, for training, validation and evaluation."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from seglab import __version__
from seglab.data.inspect import Fingerprint, inspect_dataset
from seglab.data.io import output_folder
from seglab.data.layouts import Dataset, find_dataset
from seglab.data.loading import load_case
from seglab.data.sequences import with_temporal_context
from seglab.errors import SeglabError
from seglab.device import Precision
from seglab.plan import Plan, make_plan, overridden_fields
from seglab.plan_budget import fit_to_budget
from seglab.preprocess import Prepared, PreparedCache, prepare_case
from seglab.run import Run, make_split


def create_run(data: str | Path, out: str | Path, overrides: dict[str, Any] | None = None,
               precision: Precision | None = None) -> Run:
    """Inspects the data, plans (for the device of `precision`; with a time budget, timing
    candidates on it: `seglab.plan_budget`), splits, and writes a new run folder (all or
    nothing: a bad dataset or plan leaves no folder behind)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SeglabError(f"{out}: is a file, not a folder; choose another --out")
    output_folder(out.parent)
    if out.exists() and any(out.iterdir()):
        hint = " (use --resume to continue it)" if (out / "plan.json").exists() else ""
        raise SeglabError(f"{out}: folder exists and is not empty{hint}")
    dataset = find_dataset(data)
    fingerprint = inspect_dataset(dataset)
    plan = plan_for(fingerprint, overrides or {}, precision or Precision.choose())
    return write_new_run(out, data, fingerprint, plan, planned_split(dataset, plan))


def plan_for(fingerprint: Fingerprint, overrides: dict[str, Any], precision: Precision) -> Plan:
    """The plan for the device of `precision`, fitted to its time budget (if any) by timing
    candidates on it (`seglab.plan_budget`); the fields in `overrides` stay as the user set them."""
    plan = make_plan(fingerprint, overrides, device=precision.device.type)
    return fit_to_budget(plan, fingerprint, overridden_fields(overrides), precision)


def planned_split(dataset: Dataset, plan: Plan) -> dict[str, list[str]]:
    """Train/val/test ids: the dataset's fixed subsets, overridden per subset by the plan's
    `split.fixed`, and the rest drawn with the plan's seed. A cross-validated plan validates
    on its folds instead: its own split keeps every non-test case for training. A
    semi-supervised plan also lists its unlabelled cases: those fixed as "unlabeled" (labelled
    cases whose masks are withheld) and the dataset's images without masks; without it, the
    cases fixed as "unlabeled" are left out of every subset."""
    fixed = {**(dataset.split or {}), **(plan.split.get("fixed") or {})}
    folds = plan.split.get("folds")
    val_fraction = 0.0 if folds else plan.split["val_fraction"]
    if folds:
        fixed.pop("val", None)
    split = make_split([c.case_id for c in dataset.cases], fixed, val_fraction,
                       plan.split["test_fraction"], plan.seed)
    if folds:
        split = {**split, "train": sorted(split["train"] + split["val"]), "val": []}
        if len(split["train"]) < folds:
            raise SeglabError(f"split.folds={folds}: only {len(split['train'])} training cases")
    if plan.semi_supervised["method"] == "none":
        split.pop("unlabeled", None)
    else:
        split["unlabeled"] = split.get("unlabeled", []) + [r.case_id for r in dataset.unlabeled]
        if not split["unlabeled"]:
            raise SeglabError(f"semi_supervised.method={plan.semi_supervised['method']}: "
                              f"{dataset.source} has no unlabelled images (images without "
                              "masks, an `unlabeled:` glob in seglab.yaml, or split.fixed."
                              "unlabeled)")
    return split


def fold_split(split: dict[str, list[str]], folds: int, k: int, seed: int) -> dict[str, list[str]]:
    """Fold k of `folds` over the training cases of `split` (shuffled with `seed`, cut into
    near-equal parts): that part validates, the rest trains; the test cases stay test cases."""
    order = np.random.default_rng(seed).permutation(len(split["train"]))
    held_out = {split["train"][i] for i in np.array_split(order, folds)[k]}
    unlabeled = {"unlabeled": split["unlabeled"]} if "unlabeled" in split else {}
    return {"train": [i for i in split["train"] if i not in held_out],
            "val": [i for i in split["train"] if i in held_out], "test": list(split["test"]),
            **unlabeled}


def fold_run(run: Run, k: int) -> Run:
    """Fold k of a cross-validated run, its folder created on first use (all or nothing)."""
    folds = run.fold_count()
    if not 0 <= k < folds:
        raise SeglabError(f"--fold {k}: the run has folds 0..{folds - 1}")
    fold = run.fold(k)
    if (fold.path / "run.json").is_file():
        return fold
    plan = run.plan()
    split = fold_split(run.read_json("split.json"), folds, k, plan.seed)
    plan.split = {**plan.split, "folds": None}  # the fold itself is one model
    plan.notes.append(f"fold {k} of {folds} of the cross-validated run {run.path.name}")
    fingerprint = Fingerprint.from_dict(run.read_json("fingerprint.json"))
    return write_new_run(fold.path, run.read_json("run.json")["data"], fingerprint, plan, split)


def write_new_run(out: Path, data: str | Path, fingerprint: Fingerprint, plan: Plan,
                  split: dict[str, list[str]]) -> Run:
    """Writes the run folder under a temporary name, then renames it: all or nothing. Of two
    processes creating the same run at once, the second is told so, and leaves nothing behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        run = Run(staging)
        plan.save(run.plan_path)
        run.write_json("fingerprint.json", fingerprint.to_dict())
        run.write_json("split.json", split)
        run.write_json("run.json", {"data": str(Path(data).resolve()), "seglab": __version__})
        staging.rename(out)  # replaces an empty folder; refuses one with files
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError) and (out / "plan.json").exists():
            raise SeglabError(f"{out}: another process created a run there at the same time; "
                              "choose another --out, or --resume to continue that one")
        raise
    return Run(out)


def open_dataset(run: Run) -> Dataset:
    """The run's dataset, read with the classes and label mapping recorded in its fingerprint;
    with temporal context, each case stacks its neighbouring frames."""
    fingerprint = Fingerprint.from_dict(run.read_json("fingerprint.json"))
    dataset = find_dataset(run.read_json("run.json")["data"])
    dataset.classes = fingerprint.classes
    dataset.label_values = fingerprint.label_values
    temporal = run.plan().temporal
    return with_temporal_context(dataset, temporal["context"], temporal["pattern"])


def prepare_cases(dataset: Dataset, ids: list[str], plan: Plan,
                  cache: PreparedCache | None = None) -> list[Prepared]:
    """The cases `ids` in the plan's space, read from (or first written to) `cache` when given."""
    refs = {ref.case_id: ref for ref in [*dataset.cases, *dataset.unlabeled]}
    missing = [i for i in ids if i not in refs]
    if missing:
        raise SeglabError(f"{dataset.source}: cases {missing[:5]} of the run's split are gone")
    if cache is None:
        return [prepare_case(load_case(dataset, refs[i]), plan) for i in ids]
    return [cache.get(i, lambda ref=refs[i]: prepare_case(load_case(dataset, ref), plan))
            for i in ids]
