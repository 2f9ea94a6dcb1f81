"""Cross-validation and ensembling on MSD Hippocampus, written into BENCHMARKS.md.

    uv run python benchmarks/cross_validation.py --folds 5 --minutes 6

`seglab train examples/msd_hippocampus.yaml --folds 5 --minutes M`: each fold is planned for and
trained within M minutes (the plan fitted to that budget on this machine), validated on its fifth
of the 167 training cases; the test split (41 cases, the repo's fixed split) is never seen by any
fold. The table gives each fold's test Dice and the ensemble's (the folds' mean probabilities,
post-processing chosen on the out-of-fold predictions), and the time it all took.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import ROOT, cell, machine, write_section

from seglab import api

DATA = ROOT / "examples" / "msd_hippocampus.yaml"


def _summary(run: Path) -> dict:
    return json.loads((run / "evaluation" / "metrics.json").read_text())["summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=6.0, help="training minutes per fold")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "benchmarks" / "cv")
    args = parser.parse_args()
    out = args.workdir / "hippocampus"
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    run = api.train(DATA, out, folds=args.folds, minutes=args.minutes, progress=False)
    wall = time.monotonic() - started
    plan = run.fold(0).plan()
    rows = ["| model | mean Dice (± std over test cases) | anterior | posterior | training min |",
            "|---|---|---|---|---|"]
    best_fold = 0.0
    for k in range(args.folds):
        summary = _summary(run.fold(k).path)
        best_fold = max(best_fold, summary["mean"]["dice"]["mean"])
        minutes = run.fold(k).log()[-1]["elapsed_s"] / 60
        rows.append(f"| fold {k} | {cell(summary['mean']['dice'])} | "
                    f"{summary['classes']['anterior']['dice']['mean']:.4f} | "
                    f"{summary['classes']['posterior']['dice']['mean']:.4f} | {minutes:.1f} |")
    ensemble = _summary(run.path)
    rows.append(f"| **ensemble of {args.folds}** | **{cell(ensemble['mean']['dice'])}** | "
                f"{ensemble['classes']['anterior']['dice']['mean']:.4f} | "
                f"{ensemble['classes']['posterior']['dice']['mean']:.4f} | |")
    gain = ensemble["mean"]["dice"]["mean"] - best_fold
    section = "\n".join([
        f"### MSD Hippocampus, {args.folds}-fold cross-validation and the folds' ensemble",
        "",
        f"- command: `uv run python benchmarks/cross_validation.py --folds {args.folds} "
        f"--minutes {args.minutes:g}` (`seglab train DATA --folds {args.folds} --minutes "
        f"{args.minutes:g}`, nothing else set)",
        f"- machine: {machine()}",
        f"- each fold's plan: {plan.model['name']} widths {plan.model.get('widths')}, batch "
        f"{plan.batch_size} x patch {plan.patch_size}; "
        f"{plan.planning['budget']['reason']}",
        f"- wall time for all folds, post-processing choice and evaluations: {wall / 60:.1f} min",
        f"- test cases: {ensemble['n_cases']} (never seen by any fold)",
        "",
        *rows,
        "",
        f"The ensemble against the best single fold: {gain:+.4f} mean Dice.",
        "",
    ])
    write_section("cross_validation", "hippocampus", section)
    print(section)


if __name__ == "__main__":
    main()
