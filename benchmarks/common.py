"""What every benchmark script shares: the machine's description and the BENCHMARKS.md writer."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from seglab import __version__

ROOT = Path(__file__).resolve().parents[1]


BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def machine() -> str:
    """CPU model, cores, whether the CPU has bf16 units (the /proc/cpuinfo flags that seglab's
    precision policy looks for), torch and seglab versions."""
    cpu, flags = None, None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu is None:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and flags is None:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    cpu = cpu or platform.processor() or platform.machine()
    if flags is None:
        bf16 = "bf16 units unknown"
    else:
        found = [flag for flag in BF16_FLAGS if flag in flags]
        bf16 = f"bf16 units: {'+'.join(found)}" if found else "no bf16 units (no avx512_bf16/amx)"
    return (f"{cpu}, {os.cpu_count()} cores, {bf16}, torch {torch.__version__}, "
            f"seglab {__version__}")


def cell(stat: dict) -> str:
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def write_section(script: str, name: str, text: str) -> None:
    """Replaces this benchmark's section of BENCHMARKS.md (between its markers), keeping the rest."""
    path = ROOT / "BENCHMARKS.md"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    begin, end = f"<!-- {script}:{name} -->", f"<!-- /{script}:{name} -->"
    block = f"{begin}\n{text}{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    updated = pattern.sub(lambda _: block, current) if pattern.search(current) else (
        current.rstrip() + "\n\n" + block + "\n")
    temporary = path.with_name(".BENCHMARKS.md.tmp")
    temporary.write_text(updated)
    temporary.replace(path)


def train_arm(data: Path, out: Path, overrides: dict[str, Any], minutes: float) -> None:
    """One arm of a comparison: `seglab train DATA --minutes M` with `overrides`, in `out`
    (started afresh), its wall time recorded in out/benchmark.json."""
    from seglab import api

    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    api.train(data, out, {**overrides, "time_budget_minutes": minutes}, progress=False)
    (out / "benchmark.json").write_text(json.dumps(
        {"overrides": overrides, "minutes": minutes,
         "wall_s": round(time.monotonic() - started, 1)}, indent=2))


def class_dice(class_name: str) -> Callable[[dict], tuple[float, str]]:
    """A score for `arm_row`: one class's test Dice, as mean and "mean ± std"."""
    def score(summary: dict) -> tuple[float, str]:
        return summary["classes"][class_name]["dice"]["mean"], cell(
            summary["classes"][class_name]["dice"])
    return score


def arm_row(folder: Path, score: Callable[[dict], tuple[float, str]]) -> dict[str, Any]:
    """A trained arm's table row: its test score, cases, steps, patch, model, log and minutes."""
    from seglab.run import Run

    run = Run.open(folder)
    mean, text = score(run.read_json("evaluation/metrics.json")["summary"])
    split, log, plan = run.read_json("split.json"), run.log(), run.plan()
    return {"score": text, "mean": mean,
            "labelled": len(split["train"]) + len(split["val"]),
            "unlabelled": len(split.get("unlabeled", [])), "steps": log[-1]["step"],
            "batch": f"{plan.batch_size} x {'x'.join(map(str, plan.patch_size))}",
            "model": plan.model["name"], "log": log,
            "wall": json.loads((folder / "benchmark.json").read_text())["wall_s"] / 60}


def plot_validation(title: str, rows: dict[str, dict], path: Path) -> None:
    """Each arm's validation Dice against its training minutes, in one figure."""
    plot_curves(title, {label: [(r["elapsed_s"] / 60, r["mean_dice"]) for r in entry["log"]]
                        for label, entry in rows.items()},
                "training minutes", "validation Dice", path, markersize=3)


def plot_curves(title: str, curves: dict[str, list[tuple[float, float]]], xlabel: str,
                ylabel: str, path: Path, markersize: float = 6) -> None:
    """One line of (x, y) points per label, in one figure written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, points in curves.items():
        ax.plot(*zip(*points), marker="o", markersize=markersize, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
