"""MONAI's tutorial training loop (the 3D spleen segmentation tutorial, in 2D or 3D), as a peer of
seglab in benchmarks/time_to_accuracy.py, with its best checkpoint copied at fixed minutes.

As the tutorial writes it: LoadImaged, z-score (NormalizeIntensityd, the MONAI tutorials' choice
for MRI), RandCropByPosNegLabeld (4 patches per image, half centred on foreground), a CacheDataset,
batches of 2 images, `monai.networks.nets.UNet` (16-256 channels, 4 strides of 2, 2 residual
units, batch norm), DiceLoss with softmax, Adam at 1e-4, after every epoch a validation by
`sliding_window_inference` and DiceMetric that keeps the best model. Deviations: patches of a
size that suits the data (the tutorial's 96³ would be mostly padding around a 35x50x35
hippocampus), random flips (as MONAI's BraTS tutorial adds), bf16 autocast where the CPU has bf16
units (MONAI's fast-training guide recommends AMP), and 2 data-loading workers on this 2-core CPU.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.inferers import sliding_window_inference
from monai.losses import DiceLoss
from monai.metrics import DiceMetric
from monai.networks.layers import Norm
from monai.networks.nets import UNet
from monai.transforms import (
    AsDiscrete,
    Compose,
    LoadImaged,
    MapLabelValued,
    NormalizeIntensityd,
    RandCropByPosNegLabeld,
    RandFlipd,
    SpatialPadd,
)

from seglab.device import cpu_has_fast_bf16

PATCH = {2: (256, 256), 3: (48, 64, 48)}


def _transforms(dims: int, label_values: dict[int, int] | None, train: bool,
                keys: tuple[str, ...] = ("image", "label")) -> Compose:
    keys = list(keys)
    steps = [LoadImaged(keys, ensure_channel_first=True, image_only=True,
                        **({"reverse_indexing": False} if dims == 2 else {}))]
    if label_values:
        steps.append(MapLabelValued("label", list(label_values), list(label_values.values())))
    steps.append(NormalizeIntensityd("image", channel_wise=True))
    if train:
        steps += [SpatialPadd(keys, PATCH[dims]),
                  RandCropByPosNegLabeld(keys, "label", PATCH[dims], pos=1, neg=1, num_samples=4,
                                         image_key="image", image_threshold=0),
                  *[RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(dims)]]
    return Compose(steps)


def network(dims: int, classes: int) -> UNet:
    return UNet(spatial_dims=dims, in_channels=1, out_channels=classes,
                channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2,
                norm=Norm.BATCH)


def _autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_has_fast_bf16())


def predict(model: UNet, image: torch.Tensor, dims: int) -> torch.Tensor:
    with torch.no_grad(), _autocast():
        logits = sliding_window_inference(image, PATCH[dims], 4, model, overlap=0.25)
    return logits.float().argmax(1)


def train(cases: dict[str, list[dict]], dims: int, classes: int,
          label_values: dict[int, int] | None, started: float, marks: list[float],
          out: Path) -> None:
    """Trains on cases["train"], validates on cases["val"] (dicts of image and label paths) and
    copies the best model to out/snapshot_MARK.pt at the first epoch end past each mark (the
    minute it was taken in out/snapshot_minutes.json)."""
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(CacheDataset(cases["train"], _transforms(dims, label_values, True),
                                     cache_rate=1.0, num_workers=2),
                        batch_size=2, shuffle=True, num_workers=2)
    validation = CacheDataset(cases["val"], _transforms(dims, label_values, False), num_workers=2)
    model = network(dims, classes)
    loss_function = DiceLoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    metric = DiceMetric(include_background=False, reduction="mean")
    one_hot = AsDiscrete(to_onehot=classes)
    best, pending, log, taken = -1.0, sorted(marks), [], {}
    while pending:
        model.train()
        for batch in loader:
            optimizer.zero_grad()
            with _autocast():
                loss = loss_function(model(batch["image"]).float(), batch["label"])
            loss.backward()
            optimizer.step()
        model.eval()
        for case in validation:
            found = predict(model, case["image"][None], dims)
            metric(y_pred=[one_hot(found)], y=[one_hot(case["label"])])
        dice = float(metric.aggregate().item())
        metric.reset()
        if dice > best:
            best = dice
            torch.save(model.state_dict(), out / "best_metric_model.pth")
        log.append({"elapsed_s": round(time.time() - started, 1), "val_dice": dice})
        while pending and time.time() - started >= pending[0] * 60:
            mark = pending.pop(0)
            shutil.copy(out / "best_metric_model.pth", out / f"snapshot_{mark:g}.pt")
            taken[f"{mark:g}"] = round((time.time() - started) / 60, 2)
    (out / "log.json").write_text(json.dumps(log))
    (out / "snapshot_minutes.json").write_text(json.dumps(taken))


def predict_cases(snapshot: Path, images: list[Path], dims: int, classes: int,
                  out: Path) -> None:
    """Each image's class map from the snapshot, saved as out/NAME.npy (its array order as
    MONAI's reader gives it: PNG rows first, NIfTI as stored)."""
    model = network(dims, classes)
    model.load_state_dict(torch.load(snapshot, map_location="cpu"))
    model.eval()
    load = _transforms(dims, None, False, keys=("image",))
    out.mkdir(parents=True, exist_ok=True)
    for path in images:
        image = load({"image": str(path)})["image"]
        mask = predict(model, image[None], dims)[0].numpy().astype(np.uint8)
        np.save(out / f"{path.name.split('.')[0]}.npy", mask)


def main() -> None:
    """`monai_tutorial.py JOB.json train STARTED` or `JOB.json predict` (time_to_accuracy.py)."""
    job = json.loads(Path(sys.argv[1]).read_text())
    out, dims, classes = Path(job["out"]), job["dims"], job["classes"]
    if sys.argv[2] == "train":
        values = job["label_values"]
        train(job["cases"], dims, classes, values and {int(k): v for k, v in values.items()},
              float(sys.argv[3]), job["marks"], out)
    else:
        for mark in job["marks"]:
            predict_cases(out / f"snapshot_{mark:g}.pt", [Path(p) for p in job["test"]], dims,
                          classes, out / f"test_{mark:g}")


if __name__ == "__main__":
    main()
