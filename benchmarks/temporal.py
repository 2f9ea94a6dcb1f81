"""What neighbouring frames buy: the same data, model and budget, each frame seen alone or with
its neighbours stacked as channels (`temporal.context`); written into BENCHMARKS.md.

    uv run python benchmarks/temporal.py video camvid

- video: the video demo's data (`seglab demo --task video`: 10 noisy videos of 12 frames, cells
  that fade out of a quarter of the frames; the last two videos are the test split, the one
  before validates), one run per seed and arm; test Dice of the cells.
- camvid: CamVid's labelled frames (examples/camvid.yaml): the training folder keeps every
  second labelled frame, so neighbours are 2 s apart (1 s in the val folder, the test split);
  mIoU over the 11 classes from the summed confusion matrix, as in real_data.py.

Each arm is `seglab train DATA --minutes M`; one adds `temporal.context=0` (each frame alone),
the other `temporal.context=1` (a neighbour on each side). The video demo declares its sequences,
so its defaults are the second arm; CamVid's frame numbers are found but not declared, so its
defaults are the first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import ROOT, arm_row, class_dice, machine, plot_validation, train_arm, write_section
from real_data import camvid_classes

from seglab.data.demo import generate_video_demo_dataset

WORKDIR = ROOT / "runs" / "benchmarks" / "temporal"
FIGURES = ROOT / "benchmarks" / "figures"
ARMS = {"each frame alone": {"temporal.context": 0},
        "with a neighbour on each side": {"temporal.context": 1}}


def camvid_miou(summary: dict) -> tuple[float, str]:
    value = float(np.nanmean(list(camvid_classes(summary).values())))
    return value, f"{value:.4f}"


SETUPS = {
    "video": {"title": "Temporal context on the video demo (noisy frames, fading cells)",
              "score": "cell Dice (test, mean ± std over frames)", "minutes": 3.0,
              "seeds": [0, 1, 2], "measure": class_dice("cell")},
    "camvid": {"title": "Temporal context on CamVid's labelled frames (11 classes)",
               "score": "mIoU (test)", "minutes": 10.0, "seeds": [0],
               "measure": camvid_miou},
}


def data_for(name: str, seed: int) -> Path:
    if name == "camvid":
        return ROOT / "examples" / "camvid.yaml"
    folder = WORKDIR / "video" / f"data_{seed}"
    if not (folder / "seglab.yaml").is_file():
        generate_video_demo_dataset(folder, seed=seed)
    return folder


def section(name: str, minutes: float, seeds: list[int]) -> str:
    setup, rows = SETUPS[name], {}
    for seed in seeds:
        for arm in ARMS:
            rows[f"seed {seed}, {arm}"] = arm_row(
                WORKDIR / name / f"{seed}_{ARMS[arm]['temporal.context']}", setup["measure"])
    figure = FIGURES / f"temporal_{name}.png"
    plot_validation(setup["title"], rows, figure)
    table = [f"| arm | {setup['score']} | steps | batch x patch | model | wall min |",
             "|---" * 6 + "|"]
    table += [f"| {label} | {r['score']} | {r['steps']} | {r['batch']} | {r['model']} | "
              f"{r['wall']:.1f} |" for label, r in rows.items()]
    means = [r["mean"] for r in rows.values()]
    gains = [b - a for a, b in zip(means[::2], means[1::2])]
    return "\n".join([
        f"### {setup['title']}", "",
        f"- command: `uv run python benchmarks/temporal.py {name} --minutes {minutes:g}"
        f" --seeds {','.join(map(str, seeds))}`",
        f"- machine: {machine()}",
        f"- each arm: `seglab train` with a budget of {minutes:g} minutes and "
        "`temporal.context=0` or `=1`; nothing else differs", "", *table, "",
        f"With neighbours minus alone, per seed: {', '.join(f'{g:+.4f}' for g in gains)} "
        f"(mean {np.mean(gains):+.4f}).", "",
        f"![validation Dice against training minutes]({figure.relative_to(ROOT)})", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", choices=sorted(SETUPS))
    parser.add_argument("--minutes", type=float, help="training minutes per arm")
    parser.add_argument("--seeds", help="seeds, e.g. 0,1,2 (the video demo's data and the run)")
    parser.add_argument("--resume", action="store_true", help="keep the arms already scored")
    args = parser.parse_args()
    for name in args.datasets:
        minutes = args.minutes or SETUPS[name]["minutes"]
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else SETUPS[name]["seeds"]
        for seed in seeds:
            for overrides in ARMS.values():
                out = WORKDIR / name / f"{seed}_{overrides['temporal.context']}"
                if not (args.resume and (out / "evaluation" / "metrics.json").is_file()):
                    train_arm(data_for(name, seed), out, {**overrides, "seed": seed}, minutes)
        write_section("temporal", name, section(name, minutes, seeds))


if __name__ == "__main__":
    main()
