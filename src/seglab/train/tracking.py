"""Watching a run as it trains (`seglab train --log tensorboard|mlflow`): every epoch's record
(loss, validation Dice per class, learning rate, step, minutes) and overlays of the first
validation cases (image | reference | prediction; a volume's middle slice), in local files that
need no server: RUN/tensorboard (`tensorboard --logdir RUN/tensorboard`) or RUN/mlruns (MLflow's
file store: `mlflow ui --backend-store-uri RUN/mlruns`), each resumed run appending to the same
place.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from seglab.data.display import display_rgb
from seglab.errors import SeglabError
from seglab.run import Run

KINDS = ("tensorboard", "mlflow")
_COLOURS = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
                     (245, 130, 48), (145, 30, 180), (70, 240, 240)], np.uint8)


class Tracker:
    """Where the epochs go; `epoch` takes the loop's record and RGB overlays (maybe none)."""

    def epoch(self, record: dict[str, Any], overlays: list[np.ndarray]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TensorBoard(Tracker):
    def __init__(self, run: Run):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run.path / "tensorboard"))

    def epoch(self, record: dict[str, Any], overlays: list[np.ndarray]) -> None:
        for name, value in _numbers(record).items():
            self.writer.add_scalar(name, value, record["step"])
        for index, overlay in enumerate(overlays):
            self.writer.add_image(f"validation/overlay_{index}", overlay, record["step"],
                                  dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflow(Tracker):
    """MLflow's local file store (which MLflow keeps in maintenance mode and so asks to be
    allowed explicitly); one MLflow run per seglab run, found again by its name on resume."""

    def __init__(self, run: Run):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=(run.path / "mlruns").resolve().as_uri())
        found = self.client.get_experiment_by_name("seglab")
        experiment = found.experiment_id if found else self.client.create_experiment("seglab")
        name = run.path.resolve().name
        earlier = self.client.search_runs([experiment], f"attributes.run_name = '{name}'")
        self.id = (earlier[0] if earlier else
                   self.client.create_run(experiment, run_name=name)).info.run_id

    def epoch(self, record: dict[str, Any], overlays: list[np.ndarray]) -> None:
        for name, value in _numbers(record).items():
            self.client.log_metric(self.id, name, value, step=record["step"])
        for index, overlay in enumerate(overlays):
            self.client.log_image(self.id, overlay, key=f"validation_overlay_{index}",
                                  step=record["step"])

    def close(self) -> None:
        self.client.set_terminated(self.id)


def open_tracker(kind: str | None, run: Run) -> Tracker | None:
    if kind is None:
        return None
    if kind not in KINDS:
        raise SeglabError(f"--log {kind}: expected one of {', '.join(KINDS)}")
    return TensorBoard(run) if kind == "tensorboard" else MLflow(run)


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}


def overlay(image: np.ndarray, label: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """image | reference | prediction side by side (H, 3W, 3) uint8; classes in fixed colours
    over the grey image; a volume by its middle slice along the first axis."""
    if label.ndim == 3:
        middle = label.shape[0] // 2
        image, label, prediction = image[:, middle], label[middle], prediction[middle]
    base = (display_rgb(image, rgb=False) * 255).astype(np.uint8)

    def painted(classes: np.ndarray) -> np.ndarray:
        colours = _COLOURS[np.clip(classes, 0, len(_COLOURS) - 1) % len(_COLOURS)]
        inside = (classes > 0) & (classes < 255)
        out = base.copy()
        out[inside] = (0.5 * base[inside] + 0.5 * colours[inside]).astype(np.uint8)
        return out

    return np.concatenate([base, painted(label), painted(prediction)], axis=1)
