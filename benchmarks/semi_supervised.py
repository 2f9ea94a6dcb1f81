"""What unlabelled images buy: the same model, budget and labelled cases, trained with and without
the images whose masks it never sees (the mean teacher, pseudo-labels, cross pseudo
supervision); written into BENCHMARKS.md.

    uv run python benchmarks/semi_supervised.py isbi2012 chasedb1 --minutes 10

- isbi2012: 5 labelled training slices (spread through the stack), the usual 3 validation and 5
  test slices; unlabelled: the challenge's 30 test slices (`unlabeled: test/*.png`), which have
  no published masks.
- chasedb1: 4 labelled images (3 train, 1 validates) of the usual 20 training images; the other
  16 are used without their masks; the usual 8 test images (11L-14R), F1 inside the FOV.

Each arm is `seglab train DATA --minutes M` with the split fixed as above; each semi-supervised
arm adds `semi_supervised.method=mean_teacher` or `cross_pseudo_supervision` and nothing else.
--labelled N1,N2,.. repeats the comparison at other label counts (the first N of the listed
labelled cases). One more arm, the ceiling, has a mask on every training case (ISBI 2012's 22
labelled training slices, CHASE_DB1's 19 training images): what the images used without masks
could buy at most, were they labelled.
"""

from __future__ import annotations

import argparse
from typing import Any

from common import (ROOT, arm_row, class_dice, machine, plot_validation, train_arm,
                    write_section)

WORKDIR = ROOT / "runs" / "benchmarks" / "semi_supervised"
FIGURES = ROOT / "benchmarks" / "figures"
CHASE_TRAIN = [f"{k:02d}{side}" for k in range(1, 11) for side in "LR"]
SETUPS = {
    "isbi2012": {
        "data": ROOT / "examples" / "isbi2012.yaml",
        "title": "ISBI 2012 membranes: 5 labelled slices, with and without the 30 unlabelled ones",
        "labelled": ["0", "17", "6", "22", "11", "2", "9", "20", "13", "19"],  # spread, in order
        "val": ["4", "14", "24"], "withheld": [], "class": "membrane", "score": "membrane Dice",
        "counts": [5], "all": [str(k) for k in range(25) if k not in (4, 14, 24)],
    },
    "chasedb1": {
        "data": ROOT / "examples" / "chasedb1.yaml",
        "title": "CHASE_DB1 vessels: 4 labelled images, with and without 16 used without masks",
        "labelled": ["01L", "05R", "08L", "03R", "10R", "07L"], "val": ["02L"],
        "withheld": None,  # the training images neither labelled nor validating
        "class": "vessel", "score": "vessel F1 inside the FOV", "counts": [3],
        "all": [i for i in CHASE_TRAIN if i != "02L"],
    },
}


METHODS = {"mean teacher": "mean_teacher", "pseudo-labels": "pseudo_labels",
           "cross pseudo supervision": "cross_pseudo_supervision"}


def arms(name: str, count: int) -> dict[str, dict[str, Any]]:
    """Each arm's plan overrides for `count` labelled training cases, by folder name: labelled
    only, then each semi-supervised method."""
    setup = SETUPS[name]
    labelled = setup["labelled"][:count]
    withheld = setup["withheld"]
    if withheld is None:
        withheld = [i for i in CHASE_TRAIN if i not in labelled + setup["val"]]
    fixed = {"train": labelled, "val": setup["val"], **({"unlabeled": withheld} if withheld
                                                         else {})}
    return {f"{count}_only": {"split.fixed": fixed},
            **{f"{count}_{method}": {"split.fixed": fixed, "semi_supervised.method": method}
               for method in METHODS.values()}}


def ceiling(name: str) -> dict[str, Any]:
    """The ceiling arm's plan overrides: every training case labelled."""
    return {"split.fixed": {"train": SETUPS[name]["all"], "val": SETUPS[name]["val"]}}


def section(name: str, counts: list[int], minutes: float) -> str:
    setup, rows, gains, bounds = SETUPS[name], {}, [], []
    top = arm_row(WORKDIR / name / "all_labelled", class_dice(setup["class"]))
    for count in counts:
        labelled = f"{count} train + {len(setup['val'])} val labelled"
        alone = arm_row(WORKDIR / name / f"{count}_only", class_dice(setup["class"]))
        rows[f"{labelled}, labelled only"] = alone
        for label, method in METHODS.items():
            row = arm_row(WORKDIR / name / f"{count}_{method}", class_dice(setup["class"]))
            rows[f"{labelled}, + {label}"] = row
            gains.append(f"{label} {row['mean'] - alone['mean']:+.4f} ({count} labelled)")
        bounds.append(f"{top['mean'] - alone['mean']:+.4f} ({count} labelled)")
    figure = FIGURES / f"semi_supervised_{name}.png"
    plot_validation(setup["title"], {**rows, "ceiling: every training case labelled": top},
                    figure)
    table = [f"| arm | {setup['score']} (test, mean ± std) | labelled | unlabelled | steps | "
             "batch x patch | model | wall min |", "|---" * 8 + "|"]
    table += [_table_row(label, r) for label, r in rows.items()]
    table.append(_table_row(f"ceiling: all {len(setup['all'])} train + {len(setup['val'])} val "
                            "labelled", top))
    return "\n".join([
        f"### {setup['title']}", "",
        f"- command: `uv run python benchmarks/semi_supervised.py {name} --minutes {minutes:g}"
        f"{' --labelled ' + ','.join(map(str, counts)) if counts != setup['counts'] else ''}`",
        f"- machine: {machine()}",
        "- each arm: `seglab train` with the split fixed and a budget of "
        f"{minutes:g} minutes; each semi-supervised arm adds `semi_supervised.method=METHOD` "
        "and nothing else", "", *table, "",
        f"Each method minus labelled only: {', '.join(gains)}. The ceiling "
        f"(masks on every training case) minus labelled only: {', '.join(bounds)}, what the "
        "unlabelled images could buy at most were they labelled.", "",
        f"![validation Dice against training minutes]({figure.relative_to(ROOT)})", ""])


def _table_row(label: str, r: dict[str, Any]) -> str:
    return (f"| {label} | {r['score']} | {r['labelled']} | {r['unlabelled']} | {r['steps']} | "
            f"{r['batch']} | {r['model']} | {r['wall']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", choices=sorted(SETUPS))
    parser.add_argument("--minutes", type=float, default=10.0, help="training minutes per arm")
    parser.add_argument("--labelled", help="labelled training cases per comparison, e.g. 2,5")
    parser.add_argument("--resume", action="store_true", help="keep the arms already scored")
    args = parser.parse_args()
    for name in args.datasets:
        counts = ([int(n) for n in args.labelled.split(",")] if args.labelled
                  else SETUPS[name]["counts"])
        jobs = {folder: overrides for count in counts
                for folder, overrides in arms(name, count).items()}
        for folder, overrides in {**jobs, "all_labelled": ceiling(name)}.items():
            out = WORKDIR / name / folder
            if not (args.resume and (out / "evaluation" / "metrics.json").is_file()):
                train_arm(SETUPS[name]["data"], out, overrides, args.minutes)
        text = section(name, counts, args.minutes)
        write_section("semi_supervised", name, text)
        print(text, flush=True)


if __name__ == "__main__":
    main()
