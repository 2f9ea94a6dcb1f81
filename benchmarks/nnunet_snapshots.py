"""nnU-Net v2's default trainer, with its test Dice readable at fixed wall-clock minutes.

    python benchmarks/nnunet_snapshots.py DATASET_ID CONFIG STARTED MARKS_JSON OUT_DIR

What `nnUNetv2_train DATASET_ID CONFIG 0 -device cpu` does (its `run_training` without the final
validation), with three attributes of its `nnUNetTrainer` changed, as issue 14 allows:
  - an epoch is 10 training iterations instead of 250 (and 2 validation iterations instead of 50),
    with 25x the epochs, so that the learning-rate schedule per iteration stays nnU-Net's and an
    epoch ends often enough to be near each mark;
  - a checkpoint every epoch (`save_every = 1`) instead of every 50;
  - at the first epoch end past each mark (minutes since STARTED, a Unix time taken before its
    planning and preprocessing), its checkpoint_best.pth as it stands is copied to
    OUT_DIR/snapshot_MARK.pth, and the minute it was taken in OUT_DIR/snapshot_minutes.json;
    training stops after the last mark.
Everything else (plans, network, loss, augmentation, optimiser) is nnU-Net's default.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import psutil
import torch
from nnunetv2.run.run_training import get_trainer_from_args

ITERATIONS = 10


class Finished(Exception):
    """The last mark is past."""


def main() -> None:
    dataset, config, started, marks, out = sys.argv[1:6]
    started, pending, out = float(started), sorted(json.loads(marks)), Path(out)
    torch.set_num_threads(multiprocessing.cpu_count())  # as nnUNetv2_train does on a CPU
    trainer = get_trainer_from_args(dataset, config, 0, "nnUNetTrainer",
                                    device=torch.device("cpu"))
    scale = trainer.num_iterations_per_epoch // ITERATIONS
    trainer.num_epochs *= scale
    trainer.num_val_iterations_per_epoch = max(1, trainer.num_val_iterations_per_epoch // scale)
    trainer.num_iterations_per_epoch = ITERATIONS
    trainer.save_every = 1
    end_epoch, taken = trainer.on_epoch_end, {}

    def on_epoch_end() -> None:
        end_epoch()
        folder = Path(trainer.output_folder)
        best = folder / "checkpoint_best.pth"
        while pending and time.time() - started >= pending[0] * 60:
            mark = pending.pop(0)
            shutil.copy(best if best.is_file() else folder / "checkpoint_latest.pth",
                        out / f"snapshot_{mark:g}.pth")
            taken[f"{mark:g}"] = round((time.time() - started) / 60, 2)
        if not pending:
            (out / "snapshot_minutes.json").write_text(json.dumps(taken))
            raise Finished

    trainer.on_epoch_end = on_epoch_end
    out.mkdir(parents=True, exist_ok=True)
    try:
        trainer.run_training()
    except Finished:
        trainer.on_train_end()  # nnU-Net's own ending: final checkpoint, data loaders shut down
    for worker in psutil.Process().children(recursive=True):  # none should be left; if one is,
        worker.kill()  # it would take CPU from the tools measured after this one
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
