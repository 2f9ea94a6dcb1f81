"""How well seglab's per-pixel uncertainty finds its own errors, on real test images:

    uv run python benchmarks/uncertainty.py chasedb1 isbi2012

For each dataset, the seglab run that `benchmarks/real_data.py NAME` trained (its 30-minute
defaults, WORKDIR/NAME/seglab) predicts its test cases with mirroring along every axis (1 + dims
passes, `seglab predict --tta on --uncertainty`), and the misclassified pixels (where the
metrics count: inside the field of view, not ignored) are told from the right ones by
  - the predictive entropy of the mean prediction, and
  - the mutual information between the passes (their disagreement).
The ROC AUC of each, all test pixels pooled and per case (mean), is written into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import ROOT, machine, write_section
from real_data import BENCHMARKS as REAL_DATA

from seglab.data.layouts import IGNORE_INDEX
from seglab.data.loading import load_case
from seglab.device import Precision
from seglab.infer import load_model, predict_case_uncertainty
from seglab.infer_inputs import with_tta
from seglab.metrics import roc_auc_cases
from seglab.run import Run
from seglab.run_setup import open_dataset

WORKDIR = ROOT / "runs" / "benchmarks" / "real_data"
MAPS = ("entropy", "mutual_information")


def measure(name: str) -> str:
    run = Run(WORKDIR / name / "seglab")
    if not (run.path / "plan.json").is_file():
        raise SystemExit(f"{run.path}: no run; train it first with "
                         f"`uv run python benchmarks/real_data.py {name}`")
    precision = Precision.choose()
    plan = with_tta(run.plan(), "on")
    model = load_model(run, precision)
    dataset = open_dataset(run)
    refs = {ref.case_id: ref for ref in dataset.cases}
    test = run.read_json("split.json")["test"]
    found: dict[str, list] = {key: [] for key in MAPS}
    errors, started = [], time.perf_counter()
    for case_id in test:
        case = load_case(dataset, refs[case_id])
        mask, _, maps = predict_case_uncertainty(model, case, plan, precision)
        counted = case.label != IGNORE_INDEX
        if case.roi is not None:
            counted &= case.roi
        wrong = mask != case.label
        errors.append(float(wrong[counted].mean()))
        for key in MAPS:
            found[key].append((maps[key], wrong, counted))
    seconds = time.perf_counter() - started
    rows = []
    for key in MAPS:
        auc = roc_auc_cases(found[key])
        rows.append(f"| {key.replace('_', ' ')} | {auc['pooled']:.4f} | {auc['mean']:.4f} "
                    f"({auc['n']} cases) |")
    title = REAL_DATA[name]["title"]
    return "\n".join([
        f"### {title}: uncertainty against errors",
        "",
        f"- command: `uv run python benchmarks/uncertainty.py {name}` (the run of "
        f"`benchmarks/real_data.py {name}`, predicted with `--tta on --uncertainty`: "
        f"{1 + plan.dims} passes)",
        f"- machine: {machine()}",
        f"- test cases: {len(test)}; pixel error rate {np.mean(errors):.4f} (mean over cases); "
        f"{seconds:.0f} s for the predictions",
        "",
        "| map | ROC AUC for the misclassified pixels, pooled | per case, mean |",
        "|---|---|---|",
        *rows,
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", choices=["chasedb1", "isbi2012"])
    args = parser.parse_args()
    for name in args.datasets:
        text = measure(name)
        write_section("uncertainty", name, text)
        print(text, flush=True)


if __name__ == "__main__":
    main()
