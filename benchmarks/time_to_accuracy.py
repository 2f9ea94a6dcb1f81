"""Time to accuracy: test Dice against wall-clock minutes, seglab's defaults beside nnU-Net v2's
and MONAI's tutorial loop, on the same CPU, training cases and test cases.

    uv run --group bench python benchmarks/time_to_accuracy.py                 # both datasets
    uv run --group bench python benchmarks/time_to_accuracy.py isbi2012 --quick  # marks 1, 2

For each dataset (MSD Hippocampus in 3D, ISBI 2012 in 2D), one tool after the other, alone:
  - seglab: `seglab train examples/NAME.yaml --minutes 30`, the budget the only setting;
  - nnU-Net v2: `nnUNetv2_plan_and_preprocess -c CONFIG` on seglab's training and validation cases
    (its own 5-fold split of them; fold 0 trained), then its default trainer
    (benchmarks/nnunet_snapshots.py: epochs of 25 iterations, a checkpoint every epoch, nothing
    else changed);
  - MONAI: the 3D spleen tutorial's loop (benchmarks/monai_tutorial.py) on seglab's training
    cases, validated on seglab's validation cases.
The clock starts when the tool's first command starts (planning and preprocessing count). At the
first epoch end past each mark (minutes), the tool's best checkpoint by its own validation, as it
stands then, is kept; afterwards each is predicted on the test cases by the tool's own inference
(`seglab predict` and `nnUNetv2_predict` with their defaults, test-time mirroring included; MONAI's
`sliding_window_inference`) and scored by one Dice (`seglab.metrics.foreground_dice`: the mean
over the foreground classes, then over the test cases). Each tool's result is kept in
WORK/NAME/results.json with the machine it ran on, so an interrupted run resumes on the same
machine; each dataset's section of BENCHMARKS.md is written when its three tools are measured
(one dataset takes about 100 minutes, so each may be run on its own, its machine named).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import ROOT, machine, plot_curves, write_section
from nnunet_driver import NnUNet, write_raw_dataset

from seglab.data.io import read_label
from seglab.data.layouts import IGNORE_INDEX, Dataset, find_dataset
from seglab.data.loading import load_case, map_label_values
from seglab.metrics.case import foreground_dice

WORK = ROOT / "runs" / "benchmarks" / "time_to_accuracy"
BENCH = ROOT / "benchmarks"
MARKS = (2.0, 5.0, 10.0, 20.0, 30.0)
DATASETS = {
    "hippocampus": {"yaml": "msd_hippocampus.yaml", "id": 704, "config": "3d_fullres", "dims": 3},
    "isbi2012": {"yaml": "isbi2012.yaml", "id": 701, "config": "2d", "dims": 2},
}
TOOLS = ("seglab", "nnU-Net", "MONAI")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"some of {', '.join(DATASETS)} (default: both)")
    parser.add_argument("--quick", action="store_true",
                        help="marks at 1 and 2 minutes; BENCHMARKS.md untouched")
    args = parser.parse_args()
    marks = (1.0, 2.0) if args.quick else MARKS
    for name in args.names or DATASETS:
        rows = measure(name, marks)
        text = section(name, rows, marks)
        print(text)
        if not args.quick:
            write_section("time_to_accuracy", name, text)
            plot_curves(f"{name}: test Dice against minutes",
                        {tool: [(row["minutes"][m], d) for m, d in row["dice"].items()]
                         for tool, row in rows.items()},
                        "wall-clock minutes since the tool's first command", "test Dice",
                        ROOT / "benchmarks" / "figures" / f"time_to_accuracy_{name}.png")


def measure(name: str, marks: tuple[float, ...]) -> dict[str, dict]:
    """Every tool's test Dice at each mark on dataset `name`, measured or kept from an
    interrupted run on this machine."""
    spec, folder = DATASETS[name], WORK / name
    dataset = find_dataset(ROOT / "examples" / spec["yaml"])
    saved = folder / "results.json"
    results = json.loads(saved.read_text()) if saved.is_file() else {}
    results = {tool: r for tool, r in results.items()
               if r["machine"] == machine() and r["marks"] == list(marks)}
    for tool in TOOLS:
        if tool in results:
            continue
        arm = {"seglab": seglab_arm, "nnU-Net": nnunet_arm, "MONAI": monai_arm}[tool]
        started = time.time()
        measured = arm(name, dataset, folder / tool, marks)
        results[tool] = {"machine": machine(), "marks": list(marks), **measured,
                         "wall_s": round(time.time() - started, 1)}
        print(name, tool, measured, flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(results, indent=2))
    return results


def split_of(name: str) -> dict[str, list[str]]:
    """seglab's split of the dataset (the first arm's run): the others train on the same cases."""
    return json.loads((WORK / name / "seglab" / "run" / "split.json").read_text())


def test_inputs(name: str, dataset: Dataset) -> Path:
    """The test images, linked as nnU-Net names its inputs (CASE_0000.ext), made by the first
    arm that asks (the split is fixed)."""
    folder = WORK / name / "test_inputs"
    if folder.is_dir():
        return folder
    folder.mkdir(parents=True)
    test = set(split_of(name)["test"])
    for ref in dataset.cases:
        if ref.case_id in test:
            image = ref.images[0]
            ending = "".join(image.suffixes[-2:]) if image.name.endswith(".gz") else image.suffix
            (folder / f"{ref.case_id}_0000{ending}").symlink_to(image)
    return folder


def score(name: str, dataset: Dataset, read) -> float:
    """Mean over the test cases of the mean foreground Dice; `read(case_id)` gives the
    predicted class indices."""
    return float(np.mean([
        np.mean(foreground_dice(read(case.case_id), case.label, len(dataset.classes), case.roi,
                                IGNORE_INDEX))
        for case in _test_cases(name, dataset)]))


_TEST_CASES: dict[str, list] = {}  # per dataset: its test cases, read once for every snapshot


def _test_cases(name: str, dataset: Dataset) -> list:
    if name not in _TEST_CASES:
        refs = {ref.case_id: ref for ref in dataset.cases}
        _TEST_CASES[name] = [load_case(dataset, refs[case_id])
                             for case_id in split_of(name)["test"]]
    return _TEST_CASES[name]


def seglab_arm(name: str, dataset: Dataset, folder: Path, marks: tuple[float, ...]) -> dict:
    shutil.rmtree(folder, ignore_errors=True)
    run = folder / "run"
    started = time.time()
    process = subprocess.Popen(
        [sys.executable, "-m", "seglab", "train", str(ROOT / "examples" / DATASETS[name]["yaml"]),
         "--minutes", f"{max(marks):g}", "--out", str(run)], stdout=subprocess.DEVNULL)
    pending, snapshots, taken = sorted(marks), {}, {}
    last = run / "checkpoints" / "last.pt"
    while pending:  # seglab writes its checkpoints atomically: a copy is never half a file
        ended = process.poll() is not None
        if ended and process.returncode:
            raise SystemExit(f"seglab train failed on {name} (exit {process.returncode})")
        if ended or (last.is_file() and last.stat().st_mtime >= started + pending[0] * 60):
            mark = pending.pop(0)
            snapshots[mark] = _run_snapshot(run, folder / f"snapshot_{mark:g}")
            taken[f"{mark:g}"] = round((time.time() - started) / 60, 2)
        else:
            time.sleep(1.0)
    process.terminate()  # past the last mark: the rest of its budget is not measured
    process.wait()
    inputs = test_inputs(name, dataset)
    dice = {}
    for mark, snapshot in snapshots.items():
        out = folder / f"test_{mark:g}"
        subprocess.run([sys.executable, "-m", "seglab", "predict", str(snapshot), str(inputs),
                        "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
        dice[f"{mark:g}"] = score(name, dataset, lambda case_id, out=out: _stored_mask(
            next(out.glob(f"{case_id}_0000.*")), dataset))
    return {"dice": dice, "minutes": taken}


def _stored_mask(path: Path, dataset: Dataset) -> np.ndarray:
    """A mask `seglab predict` wrote (in the dataset's stored label values) as class indices."""
    return map_label_values(read_label(path), dataset, path)


def _run_snapshot(run: Path, dest: Path) -> Path:
    """The run as `seglab predict` would use it now: its records and its best checkpoint."""
    (dest / "checkpoints").mkdir(parents=True)
    for path in [*run.glob("*.json"), run / "log.jsonl"]:
        shutil.copy(path, dest / path.name)
    best = run / "checkpoints" / "best.pt"
    shutil.copy(best if best.is_file() else run / "checkpoints" / "last.pt",
                dest / "checkpoints" / "best.pt")
    return dest


def nnunet_arm(name: str, dataset: Dataset, folder: Path, marks: tuple[float, ...]) -> dict:
    spec = DATASETS[name]
    shutil.rmtree(folder, ignore_errors=True)
    nnunet = NnUNet(folder, spec["id"], name, spec["config"], trainer="nnUNetTrainer")
    write_raw_dataset(folder / "raw" / nnunet.dataset, name, exclude=split_of(name)["test"])
    started = time.time()
    nnunet.tool("nnUNetv2_plan_and_preprocess", "-d", str(spec["id"]), "-c", spec["config"])
    fold = nnunet.model / "fold_0"
    subprocess.run([sys.executable, str(BENCH / "nnunet_snapshots.py"), str(spec["id"]),
                    spec["config"], str(started), json.dumps(list(marks)), str(fold)],
                   env=nnunet.env, check=True, stdout=subprocess.DEVNULL)
    inputs = test_inputs(name, dataset)
    dice = {}
    for mark in marks:
        out = folder / f"test_{mark:g}"
        subprocess.run(nnunet.predict_command(inputs, out, f"snapshot_{mark:g}.pth"),
                       env=nnunet.env, check=True, stdout=subprocess.DEVNULL)
        dice[f"{mark:g}"] = score(name, dataset, lambda case_id, out=out: read_label(
            next(out.glob(f"{case_id}.*"))))
    return {"dice": dice, "minutes": json.loads((fold / "snapshot_minutes.json").read_text())}


def monai_arm(name: str, dataset: Dataset, folder: Path, marks: tuple[float, ...]) -> dict:
    spec, split = DATASETS[name], split_of(name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    refs = {ref.case_id: ref for ref in dataset.cases}
    job = {"dims": spec["dims"], "classes": len(dataset.classes), "marks": list(marks),
           "label_values": dataset.label_values, "out": str(folder),
           "cases": {part: [{"image": str(refs[c].images[0]), "label": str(refs[c].labels[0])}
                            for c in split[part]] for part in ("train", "val")},
           "test": sorted(str(p) for p in test_inputs(name, dataset).iterdir())}
    (folder / "job.json").write_text(json.dumps(job, indent=2))
    worker = [sys.executable, str(BENCH / "monai_tutorial.py"), str(folder / "job.json")]
    subprocess.run(worker + ["train", str(time.time())], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(worker + ["predict"], check=True, stdout=subprocess.DEVNULL)
    dice = {f"{mark:g}": score(name, dataset, lambda case_id, mark=mark: np.load(
        folder / f"test_{mark:g}" / f"{case_id}_0000.npy")) for mark in marks}
    return {"dice": dice,
            "minutes": json.loads((folder / "snapshot_minutes.json").read_text())}


def reached(row: dict, target: float) -> float | None:
    """The minute of the first snapshot whose Dice reaches `target`, None if none does."""
    return next((row["minutes"][mark] for mark, value in row["dice"].items() if value >= target),
                None)


def section(name: str, rows: dict[str, dict], marks: tuple[float, ...]) -> str:
    last = f"{max(marks):g}"
    target = rows["nnU-Net"]["dice"][last]
    nnunet_minutes = rows["nnU-Net"]["minutes"][last]
    lines = [f"## Time to accuracy on {name}: seglab, nnU-Net v2 and MONAI's tutorial loop on "
             "one CPU", "",
             f"- command: `uv run --group bench python benchmarks/time_to_accuracy.py {name}`",
             f"- machine: {rows['seglab']['machine']}",
             "- how: see the script's docstring. Each cell: the mean foreground test Dice of the "
             "tool's best checkpoint (by its own validation) at the first epoch end past the "
             "mark, and in brackets the minute that epoch ended (wall clock since the tool's "
             "first command)", "",
             "| tool | " + " | ".join(f"{m:g} min" for m in marks)
             + f" | minutes to nnU-Net's {last}-minute Dice ({target:.4f}) | share of "
             "nnU-Net's time |",
             "|---|" + "---|" * (len(marks) + 2)]
    for tool, row in rows.items():
        minutes = reached(row, target)
        cells = [f"{row['dice'][f'{m:g}']:.4f} ({row['minutes'][f'{m:g}']:.1f})" for m in marks]
        lines.append(f"| {tool} | " + " | ".join(cells) + " | " + (
            f"{minutes:.1f} | {minutes / nnunet_minutes:.2f} |" if minutes is not None
            else f"not within {last} | – |"))
    lines += ["", f"![test Dice against minutes](benchmarks/figures/time_to_accuracy_{name}.png)",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
