"""Accuracy on real data within a training-time budget: seglab's defaults against a plain U-Net.

    uv run python benchmarks/real_data.py chasedb1 hippocampus camvid isbi2012 --minutes 30
    uv run python benchmarks/real_data.py isbi2012 --quick   # smoke test: 0.3 min, not written

For each dataset, in the same run of this script:
  1. seglab with its defaults: `api.train(data, out, {"time_budget_minutes": M})`, i.e. whatever
     plan seglab's planner makes, the time budget being the only override; its test split is
     predicted and scored by seglab itself (RUN/evaluation/metrics.json);
  2. the reference, `benchmarks/reference_unet.py` (a plain PyTorch U-Net), trained for the same
     minutes on the same split (the seglab run's split.json), its test predictions scored by the
     same code (`seglab.metrics`: evaluate_case, summarize, roc_auc_classes).
No plan field is set for seglab but the budget: its row measures the defaults users get.
Each result is written into BENCHMARKS.md (the dataset's own section) with a plot of validation
Dice against training minutes (benchmarks/figures/real_data_NAME.png).

Training time counts the optimisation steps (and the patch sampling between them) only:
validation and the final prediction of the test split come on top (the wall time is given too).
Runs live in WORKDIR/NAME/{seglab,reference}; --seglab-only and --reference-only
redo one side and keep the other (the reference reads the split of WORKDIR/NAME/seglab).
--rescore keeps both trained runs and redoes what follows seglab's training with the current code
(the post-processing chosen on the validation cases, the test split scored, the report); the
section then says so, with the commit that rescored it.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import reference_unet
from common import ROOT, machine, write_section

from seglab import api
from seglab.data.layouts import IGNORE_INDEX, find_dataset
from seglab.data.loading import load_case
from seglab.device import Precision
from seglab.evaluate import evaluate_run
from seglab.infer import build_model, choose_postprocessing
from seglab.metrics import add_roc_auc, evaluate_case, roc_auc_classes, summarize, write_tables
from seglab.report.run_page import write_report
from seglab.run import Run

FIGURES = ROOT / "benchmarks" / "figures"


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def num(value: Any) -> str:
    return "n/a" if _nan(value) else f"{value:.4f}"


def stat(entry: dict | None) -> str:
    """mean ± std over the test cases of a summary entry (None/NaN as n/a)."""
    if not entry or _nan(entry.get("mean")):
        return "n/a"
    return f"{entry['mean']:.4f} ± {entry['std']:.4f}"


def pooled(summary: dict, name: str, metric: str) -> Any:
    return summary.get("pooled_classes", {}).get(name, {}).get(metric)


def chase_figures(s: dict) -> dict[str, str]:
    return {"F1 (vessel Dice), mean ± std over images": stat(s["classes"]["vessel"]["dice"]),
            "F1 pooled": num(pooled(s, "vessel", "f1")),
            "ROC AUC pooled": num(s.get("roc_auc", {}).get("vessel", {}).get("pooled")),
            "Se pooled": num(pooled(s, "vessel", "recall")),
            "Acc pooled": num(pooled(s, "vessel", "accuracy"))}


def hippocampus_figures(s: dict) -> dict[str, str]:
    return {"mean foreground Dice": stat(s["mean"]["dice"]),
            **{f"{name} Dice": stat(s["classes"][name]["dice"])
               for name in ("anterior", "posterior")},
            "mean HD95 (mm)": stat(s["mean"]["hd95"])}


def camvid_figures(s: dict) -> dict[str, str]:
    """SegNet's CamVid figures, from the confusion matrix summed over the test images (void not
    counted): IoU of each of the 11 classes (sky, class 0, included: CamVid has no background),
    their mean; global pixel accuracy; class-average accuracy (mean recall)."""
    matrix = np.asarray(s["confusion"]["matrix"], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.diag(matrix) / (matrix.sum(0) + matrix.sum(1) - np.diag(matrix))
        recall = np.diag(matrix) / matrix.sum(1)
    return {"mIoU (11 classes)": num(float(np.nanmean(iou))),
            "global accuracy": num(float(np.trace(matrix) / matrix.sum())),
            "class-average accuracy": num(float(np.nanmean(recall)))}


def camvid_classes(s: dict) -> dict[str, float]:
    """IoU per class from the summed confusion matrix."""
    m = np.asarray(s["confusion"]["matrix"], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.diag(m) / (m.sum(0) + m.sum(1) - np.diag(m))
    return dict(zip(s["confusion"]["classes"], iou.tolist()))


def isbi_figures(s: dict) -> dict[str, str]:
    return {"membrane Dice, mean ± std over slices": stat(s["classes"]["membrane"]["dice"]),
            "membrane Dice pooled": num(pooled(s, "membrane", "dice")),
            "pixel accuracy": stat(s["pixel_accuracy"]),
            "ROC AUC pooled": num(s.get("roc_auc", {}).get("membrane", {}).get("pooled"))}


BENCHMARKS = {
    "chasedb1": {
        "data": ROOT / "examples" / "chasedb1.yaml",
        "title": "CHASE_DB1 retinal vessels (2D, 20 train / 8 test, 1stHO, inside the FOV)",
        "figures": chase_figures,
        "scored": "F1 = Dice of the vessel class inside the field of view that seglab derives from "
                  "each image; ROC AUC of the vessel probabilities inside the FOV, all test "
                  "pixels ranked together (pooled); Se = recall, Acc = pixel accuracy (pooled)",
        "published": "U-Net (as re-run) F1 0.7783 / AUC 0.9772, LadderNet 0.8031 / 0.9839, "
                     "IterNet 0.8073 / 0.9851 (J. Healthc. Eng. 2022, 'Multiscale U-Net with "
                     "Spatial Positional Attention', Table 5; protocols vary)",
    },
    "hippocampus": {
        "data": ROOT / "examples" / "msd_hippocampus.yaml",
        "title": "MSD Task04 Hippocampus (3D MRI, 167 train / 41 test, fixed split)",
        "figures": hippocampus_figures,
        "scored": "Dice per foreground class (anterior, posterior), mean ± std over the test "
                  "volumes; the mean over both classes",
        "published": "nnU-Net 5-fold CV on the 260 training cases: anterior ~0.90, posterior "
                     "~0.89 (Isensee et al. 2018, arXiv:1809.10486; not re-verified)",
    },
    "camvid": {
        "data": ROOT / "examples" / "camvid.yaml",
        "title": "CamVid road scenes (2D, 11 classes, 184 train images, the 101 val images "
                 "as test)",
        "figures": camvid_figures,
        "per_class": camvid_classes,
        "scored": "from the confusion matrix summed over the test images, void (label 11) not "
                  "counted: IoU of each of the 11 classes (sky, class 0, included) and their mean; "
                  "global pixel accuracy; class-average accuracy. The validation curve is seglab's "
                  "validation Dice, which leaves class 0 (sky) out as 'background'",
        "published": "SegNet mIoU 60.1, class avg. acc. 71.2, global acc. 90.4 on the 233-image "
                     "CamVid test set with all 367 training images (Badrinarayanan et al., TPAMI "
                     "2017; not re-verified); here the test set is withheld, half the training "
                     "frames are missing, and the val folder serves as test",
    },
    "isbi2012": {
        "data": ROOT / "examples" / "isbi2012.yaml",
        "title": "ISBI 2012 EM membranes (2D, 22 train / 3 val / 5 test slices, fixed split)",
        "figures": isbi_figures,
        "scored": "Dice of the membrane class (class 1; the stored label 0 is membrane, see "
                  "examples/isbi2012.yaml), mean ± std over the 5 test slices and pooled",
        "published": "U-Net on the ISBI 2012 challenge's own hidden test set, warping error "
                     "0.000353, Rand error 0.0382 (Ronneberger et al. 2015, Table 1); pixel-wise "
                     "Dice on a held-out part of the training stack is not reported there",
    },
}


def train_seglab(data: Path, out: Path, overrides: dict[str, Any]) -> None:
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    api.train(data, out, overrides, progress=False)
    (out / "benchmark.json").write_text(json.dumps(
        {"overrides": overrides, "wall_s": round(time.monotonic() - started, 1)}, indent=2))


def rescore_seglab(out: Path) -> None:
    """The trained run's post-processing re-chosen and its test split re-scored by this code."""
    run, policy = Run.open(out), Precision.choose()
    choose_postprocessing(run, policy)
    evaluate_run(run, policy)
    write_report(run)
    bench = json.loads((out / "benchmark.json").read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True).stdout.strip()
    bench["rescored"] = {"commit": commit, "date": time.strftime("%Y-%m-%d")}
    (out / "benchmark.json").write_text(json.dumps(bench, indent=2))


def train_reference(data: Path, out: Path, split: dict, minutes: float) -> None:
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    reference_unet.run(data, split, minutes, out)
    wall = time.monotonic() - started
    score_predictions(data, out, split["test"])
    (out / "benchmark.json").write_text(json.dumps(
        {"split": split, "minutes": minutes, "wall_s": round(wall, 1)}, indent=2))


def score_predictions(data: Path, out: Path, test_ids: list[str]) -> dict:
    """The reference's test masks (and vessel/membrane probabilities) scored as seglab's
    evaluation scores its own: same cases, ROI, ignore label, spacing and metric code."""
    dataset = find_dataset(data)
    refs = {ref.case_id: ref for ref in dataset.cases}
    per_case, scored = [], []
    for case_id in test_ids:
        case = load_case(dataset, refs[case_id])
        saved = np.load(out / "predictions" / f"{case_id}.npz")
        per_case.append({"case": case_id, **evaluate_case(
            saved["mask"], case.label, dataset.classes, case.spacing, case.roi, IGNORE_INDEX)})
        if "prob" in saved:
            scored.append(({1: saved["prob"]}, case.label, case.roi))
    summary = summarize(per_case)
    if scored:
        summary["roc_auc"] = add_roc_auc(per_case, roc_auc_classes(scored, dataset.classes,
                                                                   IGNORE_INDEX))
    write_tables(per_case, summary, out / "evaluation")
    return summary


def seglab_row(folder: Path) -> dict[str, Any] | None:
    if not (folder / "evaluation" / "metrics.json").is_file():
        return None
    run = Run.open(folder)
    plan, log = run.plan(), run.log()
    info = run.read_json("run.json")
    bench = json.loads((folder / "benchmark.json").read_text())
    params = sum(p.numel() for p in build_model(plan).parameters())
    widths = plan.model.get("widths")
    return {"summary": run.read_json("evaluation/metrics.json")["summary"], "log": log,
            "steps": log[-1]["step"] if log else 0,
            "batch": f"{plan.batch_size} x {'x'.join(map(str, plan.patch_size))}",
            "model": f"{plan.model['name']}{' ' + '-'.join(map(str, widths)) if widths else ''}"
                     f", {params / 1e6:.2f} M",
            "minutes": log[-1]["elapsed_s"] / 60 if log else 0.0,
            "precision": f"{info.get('device')} {info.get('precision')}",
            "wall": bench["wall_s"] / 60, "overrides": bench["overrides"],
            "rescored": bench.get("rescored"), "split": run.read_json("split.json")}


def reference_row(folder: Path) -> dict[str, Any] | None:
    if not (folder / "evaluation" / "metrics.json").is_file():
        return None
    info = json.loads((folder / "run.json").read_text())
    bench = json.loads((folder / "benchmark.json").read_text())
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return {"summary": json.loads((folder / "evaluation" / "metrics.json").read_text())["summary"],
            "log": log, "steps": info["steps"],
            "batch": f"{info['batch_size']} x {'x'.join(map(str, info['patch_size']))}",
            "model": f"{info['model']}, {info['parameters'] / 1e6:.2f} M",
            "minutes": info["training_s"] / 60, "precision": f"{info['device']} fp32",
            "wall": bench["wall_s"] / 60, "split": bench["split"]}


def plot(title: str, rows: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, row in rows.items():
        points = [(r["elapsed_s"] / 60, r["mean_dice"]) for r in row["log"]
                  if not _nan(r.get("mean_dice"))]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3, label=label)
    ax.set_xlabel("training minutes")
    ax.set_ylabel("validation Dice (mean over foreground classes)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def section(name: str, root: Path, minutes: float, figure: Path) -> str:
    spec = BENCHMARKS[name]
    rows: dict[str, dict] = {}
    seglab = seglab_row(root / "seglab")
    if seglab:
        rows["seglab (defaults)"] = seglab
    reference = reference_row(root / "reference")
    notes = []
    if reference and seglab and reference["split"] != seglab["split"]:
        notes.append("The reference run in the work folder used another split: left out.")
        reference = None
    if reference:
        rows["reference U-Net"] = reference
    if not rows:
        return f"### {spec['title']}\n\nNo finished run in {root}.\n\n"
    figures = {label: spec["figures"](row["summary"]) for label, row in rows.items()}
    columns = list(next(iter(figures.values())))
    table = ["| | " + " | ".join(columns) + " | steps | batch x patch | model, parameters "
             "| training min | device, precision | wall min |",
             "|---" * (len(columns) + 7) + "|"]
    for label, row in rows.items():
        table.append(f"| **{label}** | " + " | ".join(figures[label].values()) +
                     f" | {row['steps']} | {row['batch']} | {row['model']} | {row['minutes']:.1f}"
                     f" | {row['precision']} | {row['wall']:.1f} |")
    if "per_class" in spec:
        per_class = {label: spec["per_class"](row["summary"]) for label, row in rows.items()}
        classes = list(next(iter(per_class.values())))
        table += ["", "| IoU per class | " + " | ".join(classes) + " |",
                  "|---" * (len(classes) + 1) + "|"]
        table += [f"| {label} | " + " | ".join(num(v) for v in values.values()) + " |"
                  for label, values in per_class.items()]
    split = next(iter(rows.values()))["split"]
    lines = [
        f"### {spec['title']}",
        "",
        f"- command: `uv run python benchmarks/real_data.py {name} --minutes {minutes:g}`",
        f"- machine: {machine()}",
        f"- split: {len(split['train'])} train, {len(split['val'])} validation, "
        f"{len(split['test'])} test cases (the seglab run's split.json, used by every row)",
    ]
    if seglab:
        lines.append("- seglab (defaults): the plan seglab's planner makes; the only override is "
                     f"`{json.dumps(seglab['overrides'])}`")
        if seglab["rescored"]:
            lines.append(f"- seglab's post-processing re-chosen and its test split re-scored on "
                         f"the same trained weights at commit {seglab['rescored']['commit']} "
                         f"({seglab['rescored']['date']}, `--rescore`)")
    if reference:
        lines.append("- reference U-Net: `benchmarks/reference_unet.py`, a plain PyTorch U-Net "
                     "(BatchNorm in 2D, InstanceNorm in 3D), Adam 1e-3, Dice + CE, random patches "
                     "with flips, fp32, validated after every tenth of the budget, the weights "
                     "with the best validation Dice, 50%-overlap tiles at test time")
    lines += [f"- scored: {spec['scored']}", "", *table, "", *notes,
              f"![validation Dice against training minutes]({_link(figure)})", "",
              f"Published for comparison: {spec['published']}.", ""]
    plot(spec["title"], rows, figure)
    return "\n".join(lines)


def _link(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", choices=sorted(BENCHMARKS))
    parser.add_argument("--minutes", type=float, default=None,
                        help="training minutes per run (default 30; 0.3 with --quick)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "benchmarks" / "real_data")
    side = parser.add_mutually_exclusive_group()
    side.add_argument("--seglab-only", action="store_true",
                      help="train seglab only; keep the reference runs of WORKDIR")
    side.add_argument("--reference-only", action="store_true",
                      help="train the reference only, on the split of WORKDIR's seglab run")
    side.add_argument("--rescore", action="store_true",
                      help="train nothing: re-choose seglab's post-processing and re-score its "
                           "test split with the current code")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 0.3 min unless --minutes; BENCHMARKS.md left as it is, "
                             "the plot written into WORKDIR")
    args = parser.parse_args()
    minutes = args.minutes if args.minutes is not None else 0.3 if args.quick else 30.0
    for name in args.datasets:
        spec, root = BENCHMARKS[name], args.workdir / name
        if args.rescore:
            rescore_seglab(root / "seglab")
        elif not args.reference_only:
            train_seglab(spec["data"], root / "seglab", {"time_budget_minutes": minutes})
        if not (args.seglab_only or args.rescore):
            split_file = root / "seglab" / "split.json"
            if not split_file.is_file():
                parser.error(f"{split_file}: no seglab run to take the split from (run without "
                             "--reference-only first)")
            train_reference(spec["data"], root / "reference", json.loads(split_file.read_text()),
                            minutes)
        figure = root / "validation_dice.png" if args.quick else FIGURES / f"real_data_{name}.png"
        text = section(name, root, minutes, figure)
        if not args.quick:
            write_section("real_data", name, text)
        print(text)


if __name__ == "__main__":
    main()
