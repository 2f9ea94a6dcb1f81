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
    the run short): what it measures is memory against the image's size;
  - brats: the 2 test volumes of examples/brats2015.yaml (DeepMedic's BraTS 2015 subset, FLAIR
    and T1c): for seglab and MONAI one 4D NIfTI per case (both channels), with the brain masks
    given to `seglab predict --roi` as the run was trained inside them; for nnU-Net a file per
    channel (CASE_0000, CASE_0001). MONAI's row normalises the whole volume (no ROI). Only the
    rows without mirroring: seglab plans none on a CPU, and nnU-Net's defaults would run 8
    passes per window where --disable_tta runs one.
The networks are the same size on all three sides: seglab's run for the dataset (a 30-minute
defaults run of benchmarks/real_data.py or time_to_accuracy.py where one exists, else
`seglab train --minutes 5`; for BraTS the default plan's network, `--set epochs=5`), nnU-Net
with its own plans for the data, edited to that network (stages, widths, kernels, strides, patch
and batch, a documented nnU-Net practice) and trained for its 1-epoch trainer
(`nnUNetTrainer_1epoch`, so that its masks look like masks; for BraTS, whose 250 iterations would
take long on a CPU, its default trainer for 5 minutes), and MONAI's sliding-window inferer running
seglab's network and weights.

Rows:
  - seglab predict, as planned (mirroring as the plan says), with --tta off, and with
    --compile on (torch.compile, off by default on a CPU: each row's first run compiles into an
    empty cache, its later runs find it filled);
  - nnUNetv2_predict with its defaults (mirroring along every axis combination: 4 passes in 2D, 8 in
    3D; 3 preprocessing and 3 export processes), and with --disable_tta;
  - MONAI: LoadImage, per-image z-score, `sliding_window_inference` (Gaussian, overlap 0.5, batch
    4), argmax, SaveImage, in the fastest mode MONAI offers on this CPU (seglab's precision policy:
    bf16 autocast and channels_last where the CPU has bf16 units), without mirroring.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from common import ROOT, machine, write_section
from nnunet_driver import BRATS, BRATS_CHANNELS, SHARED, NnUNet

WORK = ROOT / "runs" / "benchmarks" / "throughput"
DATASETS = {
    "isbi2012": {"id": 601, "config": "2d", "yaml": "isbi2012.yaml", "count": 100},
    "hippocampus": {"id": 604, "config": "3d_fullres", "yaml": "msd_hippocampus.yaml",
                    "count": 20},
    # one 8000 x 8000 image through the ISBI 2012 networks: memory against the image's size
    "large": {"id": 601, "config": "2d", "yaml": "isbi2012.yaml", "count": 1, "model": "isbi2012",
              "rows": ("seglab predict --tta off", "MONAI sliding_window_inference"),
              "repeats": 1},
    # 2 channels inside a brain mask. seglab: the default plan's network (a 5-minute budget
    # would plan a 28³ patch that no user's BraTS run has), trained for 5 of its 50 epochs;
    # nnU-Net's 1-epoch trainer (250 iterations) would take long here on a CPU, so its default
    # trainer runs for 5 minutes instead. The rows without mirroring only: seglab plans none on
    # a CPU, and nnU-Net's default mirroring runs 8 passes per window where --disable_tta runs 1
    "brats": {"id": 605, "config": "3d_fullres", "yaml": "brats2015.yaml", "count": 2,
              "train": ["--set", "epochs=5"], "nnunet_minutes": 5,
              "rows": ("seglab predict (as planned)", "seglab predict --compile on",
                       "nnUNetv2_predict --disable_tta", "MONAI sliding_window_inference")},
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
    if not args.quick:
        write_section("throughput", "end_to_end", HEADER)
    for name in args.names or DATASETS:  # each written when measured, its machine named
        text = section(name, measure(name, repeats), repeats)
        print(text)
        if not args.quick:
            write_section("throughput", name, text)
        (WORK / name / "timings.json").unlink()  # measured and reported: measured afresh next


def measure(name: str, repeats: int) -> dict:
    spec = DATASETS[name]
    model = spec.get("model", name)
    inputs = write_inputs(name, WORK / name / "inputs", spec["count"])
    run = seglab_run(model, WORK / model)
    trainer = "nnUNetTrainer" if spec.get("nnunet_minutes") else "nnUNetTrainer_1epoch"
    nnunet = NnUNet(WORK / model / "nnunet", spec["id"], model, spec["config"], trainer)
    out = WORK / name / "outputs"
    seglab = [sys.executable, "-m", "seglab", "predict", str(run), str(inputs.seglab), "--out",
              str(out), *(["--roi", str(inputs.roi)] if inputs.roi else [])]
    nnunet_predict = nnunet.predict_command(inputs.nnunet, out)
    rows = {
        "seglab predict (as planned)": seglab,
        "seglab predict --tta off": seglab + ["--tta", "off"],
        "seglab predict --compile on": seglab + ["--compile", "on"],
        "nnUNetv2_predict (defaults)": nnunet_predict,
        "nnUNetv2_predict --disable_tta": nnunet_predict + ["--disable_tta"],
        "MONAI sliding_window_inference": [sys.executable, __file__, "--monai-worker", str(run),
                                           str(inputs.seglab), str(out)],
    }
    rows = {label: rows[label] for label in spec.get("rows", rows)}
    with_nnunet = any(label.startswith("nnUNet") for label in rows)
    if with_nnunet:  # trained only where a row runs its predictor
        nnunet.prepare(run, model, spec.get("nnunet_minutes"))
    done = WORK / name / "timings.json"  # rows measured before an interruption
    timings = json.loads(done.read_text()) if done.is_file() else {}
    compiled = WORK / name / "inductor"  # torch.compile's cache: empty for the row's first run
    env = {**nnunet.env, "TORCHINDUCTOR_CACHE_DIR": str(compiled)}
    for label, command in rows.items():
        if label in timings:
            continue
        shutil.rmtree(compiled, ignore_errors=True)
        timings[label] = [timed(command, out, env, spec["count"])
                          for _ in range(min(repeats, spec.get("repeats", repeats)))]
        timings[label].append(timed(command, out, env, spec["count"], sample_memory=True))
        print(label, timings[label], flush=True)
        done.write_text(json.dumps(timings, indent=2))
    return {"rows": {label: timings[label] for label in rows}, "count": spec["count"],
            "params": parameters(run),
            "nnunet_params": nnunet.parameters() if with_nnunet else None,
            "run": str(run.relative_to(ROOT)),
            "plan": plan_summary(run)}


@dataclasses.dataclass
class Inputs:
    """One benchmark's input folders: seglab's (and MONAI's), nnU-Net's (CASE_0000.ext, one file
    per channel), and the regions of interest for `seglab predict --roi` where the run has them."""
    seglab: Path
    nnunet: Path
    roi: Path | None = None


def write_inputs(name: str, folder: Path, count: int) -> Inputs:
    """The benchmark's inputs, named as nnU-Net wants them (CASE_0000.ext): new PNGs in 2D,
    links to the shared volumes in 3D; for BraTS, seglab's 4D NIfTI of both channels beside
    nnU-Net's file per channel, and the brain masks."""
    if name == "brats":
        return _write_brats_inputs(folder, count)
    if folder.is_dir() and len(list(folder.iterdir())) == count:
        return Inputs(folder, folder)
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
    return Inputs(folder, folder)


def _write_brats_inputs(folder: Path, count: int) -> Inputs:
    """The test cases of examples/brats2015.yaml (DeepMedic's test/ folder)."""
    import nibabel as nib

    inputs = Inputs(folder / "seglab", folder / "nnunet", folder / "roi")
    if inputs.seglab.is_dir() and len(list(inputs.seglab.iterdir())) == count:
        return inputs
    shutil.rmtree(folder, ignore_errors=True)
    for path in (inputs.seglab, inputs.nnunet, inputs.roi):
        path.mkdir(parents=True)
    for case in sorted((BRATS / "test").iterdir())[:count]:
        volumes = [nib.load(case / f"{channel}.nii.gz") for channel in BRATS_CHANNELS]
        stacked = np.stack([np.asarray(v.dataobj, dtype=np.float32) for v in volumes], axis=-1)
        nib.save(nib.Nifti1Image(stacked, volumes[0].affine, volumes[0].header),
                 inputs.seglab / f"{case.name}.nii.gz")
        for k, channel in enumerate(BRATS_CHANNELS):
            (inputs.nnunet / f"{case.name}_{k:04d}.nii.gz").symlink_to(case / f"{channel}.nii.gz")
        (inputs.roi / f"{case.name}.nii.gz").symlink_to(case / "brainmask.nii.gz")
    return inputs


def seglab_run(name: str, folder: Path) -> Path:
    """A 30-minute defaults run of benchmarks/real_data.py or time_to_accuracy.py, else one
    trained here for 5 minutes (or as the dataset's "train" arguments say)."""
    made = [ROOT / "runs" / "benchmarks" / "real_data" / name / "seglab",
            ROOT / "runs" / "benchmarks" / "time_to_accuracy" / name / "seglab" / "run"]
    if found := next((run for run in made if (run / "checkpoints").is_dir()), None):
        return found
    run = folder / "seglab"
    if not (run / "checkpoints").is_dir():
        subprocess.run([sys.executable, "-m", "seglab", "train",
                        str(ROOT / "examples" / DATASETS[name]["yaml"]), "--out", str(run),
                        *DATASETS[name].get("train", ["--minutes", "5"])], check=True)
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


HEADER = """## End-to-end inference: `seglab predict` against nnU-Net's and MONAI's predictors

Each row is one command from its start to its last file (Python starting, the model loading, every
input read, predicted and written): the median of its timed runs, their range in brackets, and
how many (rows kept from an interrupted run with other repeats say so by their count). Peak memory
is the largest sum of proportional resident memory (PSS) over the command's processes, from a run
of its own. Each dataset is measured on its own (`benchmarks/throughput.py NAME`), on the machine
its section names. See the script's docstring for the inputs and how the networks were matched.

"""


def section(name: str, result: dict, repeats: int) -> str:
    count = result["count"]
    lines = [f"### {name}: {count} input{'s' if count > 1 else ''}", "",
             f"Command: `uv run --group bench python benchmarks/throughput.py {name}"
             + (f" --repeats {repeats}" if repeats != 3 else "") + f"`. Machine: {machine()}. "
             f"seglab run `{result['run']}`: {result['plan']}; "
             f"{result['params'] / 1e6:.2f} M parameters" + (
                 f" (nnU-Net's network as edited: {result['nnunet_params'] / 1e6:.2f} M)"
                 if result["nnunet_params"] else "") + ".", "",
             "| command | wall s [range] (runs) | inputs / s | peak memory MB |",
             "|---|---|---|---|"]
    for label, runs in result["rows"].items():
        walls = [r["wall_s"] for r in runs if "wall_s" in r]
        wall = statistics.median(walls)
        peak = max(r.get("peak_mb", 0) for r in runs)
        lines.append(f"| {label} | {wall:.1f} [{min(walls):.1f}–{max(walls):.1f}] "
                     f"({len(walls)}) | {count / wall:.3g} | {peak} |")
    return "\n".join(lines) + "\n\n"


if __name__ == "__main__":
    main()
