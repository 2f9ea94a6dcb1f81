"""nnU-Net v2 driven through its own command-line tools, for the benchmarks that run it beside
seglab (throughput.py, time_to_accuracy.py): its raw layout of a shared dataset, its plans
edited to seglab's network, training, and its predictor's command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

import numpy as np
from common import ROOT

SHARED = ROOT.parent / "shared" / "datasets"
BRATS = SHARED / "BraTS2015_DeepMedic_subset" / "brats2015TrainingData"
BRATS_CHANNELS = ("Flair_subtrMeanDivStd", "T1c_subtrMeanDivStd")  # as examples/brats2015.yaml


class NnUNet:
    """nnU-Net v2 in a folder of its own: `trainer` names the trained model's folder."""

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

    def prepare(self, run: Path, name: str, minutes: float | None = None) -> None:
        """Raw dataset, fingerprint, plans (edited to seglab's network), preprocessing, and
        training: the 1-epoch trainer (250 iterations), or with `minutes` (for networks whose
        epoch would take long on a CPU) nnU-Net's default trainer stopped at the first epoch
        end past that many minutes (benchmarks/nnunet_snapshots.py). Skipped where the trained
        model exists."""
        if (self.model / "fold_0" / "checkpoint_final.pth").is_file():
            return
        raw = self.folder / "raw" / self.dataset
        split = write_raw_dataset(raw, name)
        self.tool("nnUNetv2_extract_fingerprint", "-d", str(self.id))
        self.tool("nnUNetv2_plan_experiment", "-d", str(self.id))
        plans_file = self.folder / "preprocessed" / self.dataset / "nnUNetPlans.json"
        plans = json.loads(plans_file.read_text())
        match_network(plans["configurations"][self.config], run)
        plans_file.write_text(json.dumps(plans, indent=2))
        self.tool("nnUNetv2_preprocess", "-d", str(self.id), "-c", self.config, "-np", "2")
        if split:  # the dataset's own split as nnU-Net's fold 0, instead of its 5 folds
            (plans_file.parent / "splits_final.json").write_text(json.dumps([split]))
        if minutes is None:
            self.tool("nnUNetv2_train", str(self.id), self.config, "0", "-tr", self.trainer,
                      "-device", "cpu")
            return
        if self.trainer != "nnUNetTrainer":
            raise ValueError("training for minutes runs nnU-Net's default trainer")
        self.tool(sys.executable, str(Path(__file__).with_name("nnunet_snapshots.py")),
                  str(self.id), self.config, str(time.time()), json.dumps([minutes]),
                  str(self.model / "fold_0"))

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


def write_raw_dataset(raw: Path, name: str,
                      exclude: Collection[str] = ()) -> dict[str, list[str]] | None:
    """nnU-Net's raw layout of the dataset's training cases but those in `exclude` (seglab's case
    ids): links to the shared volumes, or the ISBI slices with their labels as 0/1 PNGs (nnU-Net
    wants consecutive label values). For BraTS, the training and validation cases of
    examples/brats2015.yaml, Flair as channel 0000 and T1c as 0001. Returns the dataset's own
    train/val split where nnU-Net's 5 folds cannot be drawn (BraTS: 4 cases), else None."""
    split = None
    shutil.rmtree(raw, ignore_errors=True)
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    if name == "isbi2012":
        _write_isbi_raw(raw, exclude)
        channels, labels, ending = {"0": "EM"}, {"background": 0, "membrane": 1}, ".png"
    elif name == "brats":
        split = {part: sorted(case.name for case in (BRATS / folder).iterdir())
                 for part, folder in (("train", "train"), ("val", "validation"))}
        for case in sorted([*(BRATS / "train").iterdir(), *(BRATS / "validation").iterdir()]):
            for k, channel in enumerate(BRATS_CHANNELS):
                (raw / "imagesTr" / f"{case.name}_{k:04d}.nii.gz").symlink_to(
                    case / f"{channel}.nii.gz")
            (raw / "labelsTr" / f"{case.name}.nii.gz").symlink_to(case / "OTMultiClass.nii.gz")
        channels, ending = {"0": "FLAIR", "1": "T1c"}, ".nii.gz"
        labels = {"background": 0, "necrosis": 1, "edema": 2, "non_enhancing": 3,
                  "enhancing": 4}
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
    return split


def _write_isbi_raw(raw: Path, exclude: Collection[str]) -> None:
    from PIL import Image

    source = SHARED / "ISBI2012_membrane" / "train"
    for path in sorted((source / "image").glob("*.png")):
        if path.stem in exclude:
            continue
        shutil.copy(path, raw / "imagesTr" / f"em_{int(path.stem):03d}_0000.png")
        label = np.asarray(Image.open(source / "label" / path.name)) == 0  # membrane
        Image.fromarray(label.astype(np.uint8)).save(
            raw / "labelsTr" / f"em_{int(path.stem):03d}.png")
