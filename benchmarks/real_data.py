"""Accuracy on real data within a training-time budget, written into BENCHMARKS.md.

    uv run python benchmarks/real_data.py chasedb1 hippocampus --minutes 30

CHASE_DB1: the first 20 images train (3 of them validate), the last 8 test, observer 1 as truth,
scored inside the field of view that seglab derives from each image (examples/chasedb1.yaml).
MSD Task04 Hippocampus: the fixed 80/20 split of examples/splits/msd_hippocampus.json.
Each run trains on this machine for the given minutes of wall-clock training time (validation and
the final test evaluation not counted), then predicts and scores the test split.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import ROOT, cell, machine, write_section

from seglab import api

# Both runs: batch 2 (more updates per CPU-second than larger batches), epochs of 100 steps,
# 10% of the training cases for validation, and epochs enough that the time budget binds.
COMMON = {"batch_size": 2, "epochs": 1000, "iterations_per_epoch": 100, "split.val_fraction": 0.1}

BENCHMARKS = {
    "chasedb1": {
        "data": ROOT / "examples" / "chasedb1.yaml",
        "title": "CHASE_DB1 retinal vessels (2D, 20 train / 8 test, 1stHO, inside the FOV)",
        "overrides": {"patch_size": [256, 256], "model.widths": [16, 32, 64, 128, 256],
                      "model.kernels": [[3, 3]] * 5, "model.strides": [[2, 2]] * 4},
        "published": "U-Net (as re-run) F1 0.7783, LadderNet 0.8031, IterNet 0.8073 (J. Healthc. "
                     "Eng. 2022, 'Multiscale U-Net with Spatial Positional Attention', Table 5; "
                     "protocols vary)",
    },
    "hippocampus": {
        "data": ROOT / "examples" / "msd_hippocampus.yaml",
        "title": "MSD Task04 Hippocampus (3D MRI, 167 train / 41 test, fixed split)",
        "overrides": {},
        "published": "nnU-Net 5-fold CV on the 260 training cases: anterior ~0.90, posterior "
                     "~0.89 (Isensee et al. 2018, arXiv:1809.10486; not re-verified)",
    },
}


def run_one(name: str, minutes: float, workdir: Path) -> str:
    spec = BENCHMARKS[name]
    out = workdir / name
    shutil.rmtree(out, ignore_errors=True)
    overrides = {**COMMON, **spec["overrides"], "time_budget_minutes": minutes}
    started = time.monotonic()
    run = api.train(spec["data"], out, overrides, progress=False)
    wall = time.monotonic() - started
    summary = json.loads((run.path / "evaluation" / "metrics.json").read_text())["summary"]
    log = run.log()
    plan = run.plan()
    precision = json.loads((run.path / "run.json").read_text())
    rows = ["| class | Dice (mean ± std over test cases) | IoU | HD95 | ASSD |", "|---|---|---|---|---|"]
    for cls, metrics in summary["classes"].items():
        rows.append(f"| {cls} | {cell(metrics['dice'])} | {cell(metrics['iou'])} | "
                    f"{cell(metrics['hd95'])} | {cell(metrics['assd'])} |")
    rows.append(f"| **mean** | **{cell(summary['mean']['dice'])}** | {cell(summary['mean']['iou'])}"
                f" | {cell(summary['mean']['hd95'])} | {cell(summary['mean']['assd'])} |")
    return "\n".join([
        f"### {spec['title']}",
        "",
        f"- command: `uv run python benchmarks/real_data.py {name} --minutes {minutes:g}`",
        f"- machine: {machine()}; device {precision.get('device')}, precision "
        f"{precision.get('precision')} ({precision.get('reason')})",
        f"- training: {log[-1]['elapsed_s'] / 60:.1f} min of training, {log[-1]['step']} steps of "
        f"batch {plan.batch_size} x patch {plan.patch_size}, {len(log)} epochs; "
        f"best validation Dice {max(r['mean_dice'] for r in log):.4f}; wall time with "
        f"validation and test evaluation {wall / 60:.1f} min",
        f"- test cases: {summary['n_cases']}",
        "",
        *rows,
        "",
        f"Published for comparison: {spec['published']}.",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", choices=sorted(BENCHMARKS))
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "benchmarks")
    args = parser.parse_args()
    for name in args.datasets:
        section = run_one(name, args.minutes, args.workdir)
        write_section("real_data", name, section)
        print(section)


if __name__ == "__main__":
    main()
