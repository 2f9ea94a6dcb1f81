"""Creating a run folder (inspect, plan, split: all or nothing) and reading its cases back, through
the preprocessed cache, for training, validation and evaluation."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from seglab import __version__
from seglab.data.inspect import Fingerprint, inspect_dataset
from seglab.data.layouts import Dataset, find_dataset
from seglab.data.loading import load_case
from seglab.errors import SeglabError
from seglab.plan import Plan, make_plan
from seglab.preprocess import Prepared, PreparedCache, prepare_case
from seglab.run import Run, make_split


def create_run(data: str | Path, out: str | Path, overrides: dict[str, Any] | None = None) -> Run:
    """Inspects the data, plans, splits, and writes a new run folder (all or nothing)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        hint = " (use --resume to continue it)" if (out / "plan.json").exists() else ""
        raise SeglabError(f"{out}: folder exists and is not empty{hint}")
    dataset = find_dataset(data)
    fingerprint = inspect_dataset(dataset)
    plan = make_plan(fingerprint, overrides)
    return write_new_run(out, data, fingerprint, plan, planned_split(dataset, plan))


def planned_split(dataset: Dataset, plan: Plan) -> dict[str, list[str]]:
    """Train/val/test ids: the dataset's fixed subsets, overridden per subset by the plan's
    `split.fixed`, and the rest drawn with the plan's seed."""
    fixed = {**(dataset.split or {}), **(plan.split.get("fixed") or {})}
    return make_split([c.case_id for c in dataset.cases], fixed, plan.split["val_fraction"],
                      plan.split["test_fraction"], plan.seed)


def write_new_run(out: Path, data: str | Path, fingerprint: Fingerprint, plan: Plan,
                  split: dict[str, list[str]]) -> Run:
    """Writes the run folder under a temporary name, then renames it: all or nothing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    run = Run(staging)
    plan.save(run.plan_path)
    run.write_json("fingerprint.json", fingerprint.to_dict())
    run.write_json("split.json", split)
    run.write_json("run.json", {"data": str(Path(data).resolve()), "seglab": __version__})
    if out.exists():
        out.rmdir()
    staging.rename(out)
    return Run(out)


def open_dataset(run: Run) -> Dataset:
    """The run's dataset, read with the classes and label mapping recorded in its fingerprint."""
    fingerprint = Fingerprint.from_dict(run.read_json("fingerprint.json"))
    dataset = find_dataset(run.read_json("run.json")["data"])
    dataset.classes = fingerprint.classes
    dataset.label_values = fingerprint.label_values
    return dataset


def prepare_cases(dataset: Dataset, ids: list[str], plan: Plan,
                  cache: PreparedCache | None = None) -> list[Prepared]:
    """The cases `ids` in the plan's space, read from (or first written to) `cache` when given."""
    refs = {ref.case_id: ref for ref in dataset.cases}
    missing = [i for i in ids if i not in refs]
    if missing:
        raise SeglabError(f"{dataset.source}: cases {missing[:5]} of the run's split are gone")
    if cache is None:
        return [prepare_case(load_case(dataset, refs[i]), plan) for i in ids]
    return [cache.get(i, lambda ref=refs[i]: prepare_case(load_case(dataset, ref), plan))
            for i in ids]
