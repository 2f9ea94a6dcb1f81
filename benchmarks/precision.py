"""What seglab's speed policy costs in accuracy, and the time it takes to reach a given Dice.

    uv run python benchmarks/precision.py isbi2012 hippocampus --epochs 8 --steps 50

Each dataset is trained the same number of steps (no time budget) under each policy, on the fixed
split of its example file, and its test split is scored:
- "fp32 (peer default)": what the peers do on a CPU: fp32, NCHW, no autocast, no compile;
- "seglab default": `Precision.choose()` on this machine (skipped where it is the same as another);
- "bf16": bf16 autocast with channels_last (channels_last_3d for volumes), forced.
Done when bf16 reaches a test Dice within 0.005 of fp32 at the same steps. The time-to-accuracy
table reads each run's log: minutes of training (validation not counted) until the validation Dice
first reaches 95% of the best the fp32 run reached, and the validation Dice after the minutes the
fp32 run needed for the whole budget's first half.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from common import ROOT, machine, write_section

from seglab.device import Precision
from seglab.evaluate import evaluate_run
from seglab.run import Run
from seglab.train.loop import train
from seglab.run_setup import create_run

DATASETS = {
    "isbi2012": ("ISBI 2012 EM membranes (2D, 22 train / 3 val / 5 test slices)",
                 ROOT / "examples" / "isbi2012.yaml", {"patch_size": [256, 256]}),
    "hippocampus": ("MSD Task04 Hippocampus (3D MRI, fixed 80/20 split)",
                    ROOT / "examples" / "msd_hippocampus.yaml", {"split.val_fraction": 0.1}),
}


def policies() -> dict[str, Precision]:
    """The arms: the peers' fp32, seglab's default where it differs, and forced bf16."""
    peer = Precision(torch.device("cpu"), None, channels_last=False,
                     reason="peer default: fp32, NCHW, eager")
    arms = {"fp32 (peer default)": peer, "seglab default": Precision.choose(),
            "bf16": Precision.choose("cpu", "bf16", "off")}
    if arms["seglab default"].describe()["precision"] == "bf16":
        del arms["bf16"]
    return arms


def train_arm(data: Path, out: Path, overrides: dict, policy: Precision) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    run = create_run(data, out, overrides)
    train(run, policy, progress=False)
    summary = evaluate_run(run, policy)
    log = Run.open(out).log()
    return {"log": log, "dice": summary["mean"]["dice"]["mean"], "precision": policy.name,
            "layout": "channels_last" if policy.channels_last else "NCHW",
            "minutes": log[-1]["elapsed_s"] / 60}


def minutes_to(log: list[dict], target: float) -> float | None:
    reached = [r["elapsed_s"] / 60 for r in log if r["mean_dice"] >= target]
    return reached[0] if reached else None


def dice_at(log: list[dict], minutes: float) -> float:
    """The best validation Dice among the epochs finished within `minutes` of training."""
    done = [r["mean_dice"] for r in log if r["elapsed_s"] / 60 <= minutes + 1e-9]
    return max(done) if done else float("nan")


def report(name: str, results: dict[str, dict], command: str, steps: int) -> str:
    title = DATASETS[name][0]
    fp32 = results["fp32 (peer default)"]
    target = 0.95 * max(r["mean_dice"] for r in fp32["log"])
    half = fp32["minutes"] / 2
    rows = ["| policy | precision, layout | steps | training min | test Dice | Δ vs fp32 | "
            f"min to val Dice {target:.3f} | val Dice at {half:.1f} min |",
            "|---|---|---|---|---|---|---|---|"]
    for arm, result in results.items():
        reach = minutes_to(result["log"], target)
        rows.append(f"| {arm} | {result['precision']}, {result['layout']} | {steps} | "
                    f"{result['minutes']:.1f} | {result['dice']:.4f} | "
                    f"{result['dice'] - fp32['dice']:+.4f} | "
                    f"{'not reached' if reach is None else f'{reach:.1f}'} | "
                    f"{dice_at(result['log'], half):.4f} |")
    same = "" if "seglab default" in results else (
        "- seglab's default policy on this machine trains this data as the fp32 row does\n")
    return "\n".join([f"### {title}", "", f"- command: `{command}`", f"- machine: {machine()}",
                      f"- seglab default: {Precision.choose().reason}", same, *rows, ""]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", choices=sorted(DATASETS))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50, help="steps per epoch")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/seglab-precision"))
    args = parser.parse_args()
    command = (f"uv run python benchmarks/precision.py {' '.join(args.datasets)} "
               f"--epochs {args.epochs} --steps {args.steps}")
    for name in args.datasets:
        _, data, extra = DATASETS[name]
        overrides = {"epochs": args.epochs, "iterations_per_epoch": args.steps, "batch_size": 2,
                     **extra}
        results, arms = {}, policies()
        for arm, policy in arms.items():
            if arm == "seglab default" and _runs_as_peer(policy, name == "hippocampus"):
                continue
            results[arm] = train_arm(data, args.workdir / name / arm.split()[0], overrides, policy)
            print(name, arm, f"test Dice {results[arm]['dice']:.4f}",
                  f"{results[arm]['minutes']:.1f} min", flush=True)
        text = report(name, results, command, args.epochs * args.steps)
        print(text)
        (args.workdir / f"{name}.json").write_text(json.dumps(results, indent=1))
        write_section("precision.py", name, text)


def _runs_as_peer(policy: Precision, volumetric: bool) -> bool:
    """Whether seglab's default trains this data exactly as the peer arm does (fp32 volumes stay
    NCHW, see seglab.device); then its row would measure nothing new and is left out."""
    layout = policy.channels_last_3d if volumetric else policy.channels_last
    return policy.autocast_dtype is None and not layout and not policy.compile


if __name__ == "__main__":
    main()
