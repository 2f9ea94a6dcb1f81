"""End-to-end inference: `seglab predict` over a folder against nnU-Net's and MONAI's predictors.

    uv run --group bench python benchmarks/throughput.py              # all three
    uv run --group bench python benchmarks/throughput.py hippocampus  # some of them
    uv run --group bench python benchmarks/throughput.py --quick      # 1 repeat, not written

What is timed is the whole command a user runs, from its start to its last file: Python starting,
the model loading, every input read, predicted and written. Each row runs in a process of its own,
three times; the table gives the median and the range. A fourth run of each row measures peak
memory: the largest sum of proportional resident memory (PSS: shared pages divided among the
processes that map them) over the command's processes (nnU-Net's predictor starts worker
processes), sampled every 200 ms; sampling costs CPU time, hence a run of its own. The rows of
an interrupted run are kept (WORK/NAME/timings.json) and not measured again until the section
is written.

The inputs:
  - 2D: 100 images of 512 x 512, the 30 unlabelled ISBI 2012 test slices and their rotations by
    90, 180 and 270 degrees (the first 100), as grey PNG;
  - 3D: 20 MSD Hippocampus volumes (the first 20 test cases of examples/splits), NIfTI;
  - large: one 8000 x 8000 grey PNG, a mosaic of the ISBI test slices, through the ISBI network
    without mirroring, once per row, seglab and MONAI only (nnU-Net's predictor left out to keep
    the run short): what it measures is memory against the image's size.
The networks are the same size on all three sides: seglab's run for the dataset (the 30-minute
defaults run of benchmarks/real_data.py where it exists, else `seglab train --minutes 5`), nnU-Net
with its own plans for the data, edited to that network (stages, widths, kernels, strides, patch
and batch, a documented nnU-Net practice) and trained for its 1-epoch trainer
(`nnUNetTrainer_1epoch`, so that its masks look like masks), and MONAI's sliding-window inferer
running seglab's network and weights.

Rows:
  - seglab predict, as planned (mirroring as the plan says), and with --tta off;
  - nnUNetv2_predict with its defaults (mirroring along every axis combination: 4 passes in 2D, 8 in
    3D; 3 preprocessing and 3 export processes), and with --disable_tta;
  - MONAI: LoadImage, per-image z-score, `sliding_window_inference` (Gaussian, overlap 0.5, batch
    4), argmax, SaveImage, in the fastest mode MONAI offers on this CPU (seglab's precision policy:
    bf16 autocast and channels_last where the CPU has bf16 units), without mirroring.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

import numpy as np
import psutil
from common import ROOT, machine, write_section

SHARED = ROOT.parent / "shared" / "datasets"
WORK = ROOT / "runs" / "benchmarks" / "throughput"
DATASETS = {
    "isbi2012": {"id": 601, "config": "2d", "yaml": "isbi2012.yaml", "count": 100},
    "hippocampus": {"id": 604, "config": "3d_fullres", "yaml": "msd_hippocampus.yaml",
                    "count": 20},
    # one 8000 x 8000 image through the ISBI 2012 networks: memory against the image's size
    "large": {"id": 601, "config": "2d", "yaml": "isbi2012.yaml", "count": 1, "model": "isbi2012",
              "tta": "off", "repeats": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"some of {', '.join(DATASETS)} (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 repeat; BENCHMARKS.md untouched")
    parser.add_argument("--monai-worker", nargs=3, metavar=("RUN", "IN", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.monai_worker:
        return monai_predict(*map(Path, args.monai_worker))
    repeats = 1 if args.quick else args.repeats
    unknown = set(args.names) - set(DATASETS)
    if unknown:
        parser.error(f"unknown {', '.join(sorted(unknown))}: "
                     f"expected some of {', '.join(DATASETS)}")
    results = {name: measure(name, repeats) for name in args.names or DATASETS}
    text = section(results, repeats)
    print(text)
    if not args.quick:
        write_section("throughput", "end_to_end", text)
    for name in results:  # measured and reported: the next run measures afresh
        (WORK / name / "timings.json").unlink()


def measure(name: str, repeats: int) -> dict:
    spec = DATASETS[name]
    model = spec.get("model", name)
    inputs = write_inputs(name, WORK / name / "inputs", spec["count"])
    run = seglab_run(model, WORK / model)
    nnunet = NnUNet(WORK / model / "nnunet", spec["id"], model, spec["config"])
    nnunet.prepare(run, model)
    out = WORK / name / "outputs"
    seglab = [sys.executable, "-m", "seglab", "predict", str(run), str(inputs), "--out", str(out)]
    nnunet_predict = nnunet.predict_command(inputs, out)
    rows = {
        "seglab predict (as planned)": seglab,
        "seglab predict --tta off": seglab + ["--tta", "off"],
        "nnUNetv2_predict (defaults)": nnunet_predict,
        "nnUNetv2_predict --disable_tta": nnunet_predict + ["--disable_tta"],
        "MONAI sliding_window_inference": [sys.executable, __file__, "--monai-worker", str(run),
                                           str(inputs), str(out)],
    }
    if spec.get("tta") == "off":  # the large image: seglab's memory against MONAI's inferer
        rows = {label: command for label, command in rows.items()
                if label.startswith("seglab") and "tta" in label or "MONAI" in label}
    done = WORK / name / "timings.json"  # rows measured before an interruption
    timings = json.loads(done.read_text()) if done.is_file() else {}
    for label, command in rows.items():
        if label in timings:
            continue
        timings[label] = [timed(command, out, nnunet.env, spec["count"])
                          for _ in range(min(repeats, spec.get("repeats", repeats)))]
        timings[label].append(timed(command, out, nnunet.env, spec["count"], sample_memory=True))
        print(label, timings[label], flush=True)
        done.write_text(json.dumps(timings, indent=2))
    return {"rows": timings, "count": spec["count"], "params": parameters(run),
            "nnunet_params": nnunet.parameters(), "run": str(run.relative_to(ROOT)),
            "plan": plan_summary(run)}


def write_inputs(name: str, folder: Path, count: int) -> Path:
    """The benchmark's inputs, named as nnU-Net wants them (CASE_0000.ext): new PNGs in 2D,
    links to the shared volumes in 3D."""
    if folder.is_dir() and len(list(folder.iterdir())) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    from PIL import Image

    if name == "large":
        tiles = [np.asarray(Image.open(p)) for p in sorted(
            (SHARED / "ISBI2012_membrane" / "test").glob("*.png"), key=lambda p: int(p.stem))]
        rows = [np.concatenate([tiles[(r * 16 + c) % len(tiles)] for c in range(16)], axis=1)
                for r in range(16)]
        Image.fromarray(np.concatenate(rows)[:8000, :8000]).save(folder / "mosaic_0000.png")
    elif name == "isbi2012":
        slices = sorted((SHARED / "ISBI2012_membrane" / "test").glob("*.png"),
                        key=lambda p: int(p.stem))
        images = [np.rot90(np.asarray(Image.open(p)), k) for k in range(4) for p in slices]
        for k, image in enumerate(images[:count]):
            Image.fromarray(np.ascontiguousarray(image)).save(folder / f"em_{k:03d}_0000.png")
    else:
        split = json.loads((ROOT / "examples" / "splits" / "msd_hippocampus.json").read_text())
        images = SHARED / "MSD_Task04_Hippocampus" / "TrainingSet" / "images"
        for case_id in sorted(split["test"])[:count]:
            (folder / f"{case_id}_0000.nii.gz").symlink_to(images / f"{case_id}.nii.gz")
    return folder


def seglab_run(name: str, folder: Path) -> Path:
    """The defaults run of benchmarks/real_data.py, else one trained here for 5 minutes."""
    made = ROOT / "runs" / "benchmarks" / "real_data" / name / "seglab"
    if (made / "checkpoints").is_dir():
        return made
    run = folder / "seglab"
    if not (run / "checkpoints").is_dir():
        subprocess.run([sys.executable, "-m", "seglab", "train",
                        str(ROOT / "examples" / DATASETS[name]["yaml"]), "--out", str(run),
                        "--minutes", "5"], check=True)
    return run


def timed(command: list[str], out: Path, env: dict, count: int,
          sample_memory: bool = False) -> dict:
    """Wall seconds of one run of `command`, which must write `count` masks into the emptied
    `out`; with `sample_memory`, its peak memory in MB instead (the sampling costs CPU time, so
    it has runs of its own)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    errors = tempfile.TemporaryFile("w+")  # not a pipe: a full pipe would block the command
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors,
                               text=True)
    peak = 0
    root = psutil.Process(process.pid)
    while process.poll() is None:
        if sample_memory:
            peak = max(peak, _proportional_memory([root, *_children(root)]))
        time.sleep(0.2 if sample_memory else 0.01)
    wall = time.perf_counter() - started
    if process.returncode:
        errors.seek(0)
        raise SystemExit(f"{' '.join(command)} failed:\n{errors.read()[-3000:]}")
    errors.close()
    masks = [p for p in out.iterdir() if not p.name.endswith((".json", ".pkl", ".npz"))]
    if len(masks) != count:
        raise SystemExit(f"{' '.join(command)} wrote {len(masks)} masks, not {count}")
    return {"peak_mb": round(peak / 2**20)} if sample_memory else {"wall_s": round(wall, 2)}


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def _proportional_memory(processes: list[psutil.Process]) -> int:
    """The processes' summed PSS: resident memory with each shared page divided among the
    processes that map it, so that worker processes sharing libraries are not counted twice."""
    total = 0
    for process in processes:
        try:
            total += process.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def parameters(run: Path) -> int:
    from seglab.infer import build_model
    from seglab.run import Run

    return sum(p.numel() for p in build_model(Run.open(run).plan()).parameters())


def plan_summary(run: Path) -> str:
    from seglab.run import Run

    plan = Run.open(run).plan()
    return (f"{plan.model['name']} widths {plan.model.get('widths')}, patch "
            f"{'x'.join(map(str, plan.patch_size))}, mirror axes "
            f"{plan.inference.get('mirror_axes')}")


class NnUNet:
    """nnU-Net v2 driven through its own command-line tools, in a folder of its own."""

    def __init__(self, folder: Path, dataset_id: int, name: str, config: str,
                 trainer: str = "nnUNetTrainer_1epoch"):
        self.folder, self.id, self.config = folder, dataset_id, config
        self.dataset = f"Dataset{dataset_id}_{name}"
        self.env = {**os.environ, "nnUNet_raw": str(folder / "raw"),
                    "nnUNet_preprocessed": str(folder / "preprocessed"),
                    "nnUNet_results": str(folder / "results")}
        self.trainer = trainer
        self.model = (folder / "results" / self.dataset /
                      f"{self.trainer}__nnUNetPlans__{config}")

    def tool(self, *args: str) -> None:
        subprocess.run(list(args), env=self.env, check=True, stdout=subprocess.DEVNULL)

    def prepare(self, run: Path, name: str) -> None:
        """Raw dataset, fingerprint, plans (edited to seglab's network), preprocessing, training
        for one epoch: each step skipped where its output exists."""
        if (self.model / "fold_0" / "checkpoint_final.pth").is_file():
            return
        raw = self.folder / "raw" / self.dataset
        write_raw_dataset(raw, name)
        self.tool("nnUNetv2_extract_fingerprint", "-d", str(self.id))
        self.tool("nnUNetv2_plan_experiment", "-d", str(self.id))
        plans_file = self.folder / "preprocessed" / self.dataset / "nnUNetPlans.json"
        plans = json.loads(plans_file.read_text())
        match_network(plans["configurations"][self.config], run)
        plans_file.write_text(json.dumps(plans, indent=2))
        self.tool("nnUNetv2_preprocess", "-d", str(self.id), "-c", self.config, "-np", "2")
        self.tool("nnUNetv2_train", str(self.id), self.config, "0", "-tr", self.trainer,
                  "-device", "cpu")

    def predict_command(self, inputs: Path, out: Path,
                        checkpoint: str = "checkpoint_final.pth") -> list[str]:
        return ["nnUNetv2_predict", "-i", str(inputs), "-o", str(out), "-d", str(self.id),
                "-c", self.config, "-f", "0", "-tr", self.trainer, "-chk", checkpoint,
                "-device", "cpu"]

    def parameters(self) -> int:
        import torch

        state = torch.load(self.model / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                           weights_only=False)  # nnU-Net's own checkpoint, written above
        # nnU-Net's modules register some parameters under two names: count each tensor once
        unique = {v.data_ptr(): v.numel() for k, v in state["network_weights"].items()
                  if "running" not in k and "num_batches" not in k}
        return sum(unique.values())


def match_network(config: dict, run: Path) -> None:
    """nnU-Net's configuration given seglab's network: stages, widths, kernels, strides, patch and
    batch (2 convolutions per stage on both sides, instance norm, leaky ReLU)."""
    from seglab.run import Run

    plan = Run.open(run).plan()
    model = plan.model
    dims = plan.dims
    arch = config["architecture"]["arch_kwargs"]
    arch.update({"n_stages": len(model["widths"]), "features_per_stage": model["widths"],
                 "kernel_sizes": model["kernels"], "strides": [[1] * dims, *model["strides"]],
                 "n_conv_per_stage": [2] * len(model["widths"]),
                 "n_conv_per_stage_decoder": [2] * (len(model["widths"]) - 1)})
    config["patch_size"] = list(plan.patch_size)
    config["batch_size"] = plan.batch_size


def write_raw_dataset(raw: Path, name: str, exclude: Collection[str] = ()) -> None:
    """nnU-Net's raw layout of the dataset's training cases but those in `exclude` (seglab's case
    ids): links to the shared volumes, or the ISBI slices with their labels as 0/1 PNGs (nnU-Net
    wants consecutive label values)."""
    shutil.rmtree(raw, ignore_errors=True)
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    if name == "isbi2012":
        from PIL import Image

        source = SHARED / "ISBI2012_membrane" / "train"
        for path in sorted((source / "image").glob("*.png")):
            if path.stem in exclude:
                continue
            shutil.copy(path, raw / "imagesTr" / f"em_{int(path.stem):03d}_0000.png")
            label = np.asarray(Image.open(source / "label" / path.name)) == 0  # membrane
            Image.fromarray(label.astype(np.uint8)).save(
                raw / "labelsTr" / f"em_{int(path.stem):03d}.png")
        channels, labels, ending = {"0": "EM"}, {"background": 0, "membrane": 1}, ".png"
    else:
        source = SHARED / "MSD_Task04_Hippocampus" / "TrainingSet"
        for path in sorted((source / "images").glob("*.nii.gz")):
            case_id = path.name[:-len(".nii.gz")]
            if case_id in exclude:
                continue
            (raw / "imagesTr" / f"{case_id}_0000.nii.gz").symlink_to(path)
            (raw / "labelsTr" / path.name).symlink_to(source / "labels" / path.name)
        channels = {"0": "MRI"}
        labels, ending = {"background": 0, "anterior": 1, "posterior": 2}, ".nii.gz"
    count = len(list((raw / "labelsTr").iterdir()))
    (raw / "dataset.json").write_text(json.dumps(
        {"channel_names": channels, "labels": labels, "numTraining": count,
         "file_ending": ending}, indent=2))


def monai_predict(run_path: Path, inputs: Path, out: Path) -> None:
    """MONAI's inference loop as its tutorials write it, with seglab's network and weights."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import LoadImage, NormalizeIntensity, SaveImage

    from seglab.device import Precision
    from seglab.infer import load_model
    from seglab.run import Run

    run = Run.open(run_path)
    plan = run.plan()
    precision = Precision.choose()
    model = load_model(run, precision)
    load = LoadImage(image_only=True, ensure_channel_first=True)
    normalise = NormalizeIntensity(channel_wise=True)
    for path in sorted(inputs.iterdir()):
        image = normalise(load(path))
        with torch.no_grad(), precision.autocast():
            logits = sliding_window_inference(
                image[None].float(), plan.patch_size, 4,
                lambda x: model(precision.memory_format(x, model)), overlap=0.5,
                mode="gaussian")
        mask = logits.float().argmax(1).to(torch.uint8)
        ending = ".png" if path.suffix == ".png" else ".nii.gz"
        SaveImage(output_dir=out, output_postfix="", output_ext=ending, separate_folder=False,
                  output_dtype=np.uint8, print_log=False)(mask, meta_data=image.meta)


def section(results: dict, repeats: int) -> str:
    lines = ["## End-to-end inference: `seglab predict` against nnU-Net's and MONAI's predictors",
             "", "Command: `uv run --group bench python benchmarks/throughput.py"
             + (f" --repeats {repeats}" if repeats != 3 else "") + "` (rows kept from an "
             "interrupted run with other repeats say so by their count). "
             f"Machine: {machine()}. Each row: the median of its timed runs, their range in "
             "brackets, and how many. Each row is one command from its start to its last file "
             "(Python "
             "starting, the model loading, every input read, predicted and written); peak "
             "memory is the largest sum of proportional resident memory (PSS) over its "
             "processes, from a run of its own. See the "
             "script's docstring for the inputs and how the networks were matched.", ""]
    for name, result in results.items():
        count = result["count"]
        lines += [f"### {name}: {count} input{'s' if count > 1 else ''}", "",
                  f"seglab run `{result['run']}`: {result['plan']}; "
                  f"{result['params'] / 1e6:.2f} M parameters (nnU-Net's network as edited: "
                  f"{result['nnunet_params'] / 1e6:.2f} M).", "",
                  "| command | wall s [range] (runs) | inputs / s | peak memory MB |",
                  "|---|---|---|---|"]
        for label, runs in result["rows"].items():
            walls = [r["wall_s"] for r in runs if "wall_s" in r]
            wall = statistics.median(walls)
            peak = max(r.get("peak_mb", 0) for r in runs)
            lines.append(f"| {label} | {wall:.1f} [{min(walls):.1f}–{max(walls):.1f}] "
                         f"({len(walls)}) | {count / wall:.2f} | {peak} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
