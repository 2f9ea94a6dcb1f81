"""The run folder: everything one training run writes, and the only place later steps read from.

    RUN/run.json            where the data came from, seglab version, device, precision
    RUN/fingerprint.json    the dataset's fingerprint
    RUN/plan.json           the plan (every downstream step reads it instead of re-deciding)
    RUN/split.json          the case ids of train / val / test
    RUN/log.jsonl           one JSON line per epoch (loss, validation Dice, learning rate, time)
    RUN/checkpoints/        last.pt (every epoch) and best.pt (best validation Dice)
    RUN/predictions/test/   the test split predicted in the inputs' own format
    RUN/evaluation/         metrics per case and summary (CSV, JSON)
    RUN/.lock               who trains the run now (see `Run.training_lock`)
    RUN/fold_K/             with `split.folds`: one run folder per cross-validation fold, whose
                            split holds out its part of RUN's training cases for validation;
                            RUN itself then has no checkpoint: its model is the folds' ensemble
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.data.io import atomic_path, write_text_atomic
from seglab.errors import SeglabError
from seglab.plan import Plan


@dataclass(frozen=True)
class Run:
    path: Path

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        """An existing run; a folder without a plan is not one, and says so."""
        run = cls(Path(path))
        if not run.path.is_dir():
            raise SeglabError(f"{run.path}: no such run folder")
        if not (run.path / "plan.json").is_file() or not (run.path / "run.json").is_file():
            raise SeglabError(f"{run.path}: not a seglab run (no plan.json/run.json; create one "
                              "with `seglab train DATA --out RUN`)")
        return run

    @property
    def plan_path(self) -> Path:
        return self.path / "plan.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def log_path(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def preprocessed(self) -> Path:
        """The preprocessed cache, one for a cross-validated run and all its folds."""
        parent = self.path.parent
        if self.path.name.startswith("fold_") and (parent / "plan.json").is_file():
            return parent / "preprocessed"
        return self.path / "preprocessed"

    def fold_count(self) -> int:
        """The number of cross-validation folds of the run (0: a single model)."""
        return int(self.plan().split.get("folds") or 0)

    def fold(self, k: int) -> "Run":
        return Run(self.path / f"fold_{k}")

    def training_finished(self) -> bool:
        """Whether the last epoch logged reached the plan's epochs or its time budget."""
        log, plan = self.log(), self.plan()
        if not log:
            return False
        budget = plan.time_budget_minutes
        return log[-1]["epoch"] >= plan.epochs or bool(
            budget and log[-1]["elapsed_s"] >= budget * 60)

    def plan(self) -> Plan:
        return Plan.load(self.plan_path)

    def read_json(self, name: str) -> dict[str, Any]:
        path = self.path / name
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise SeglabError(f"{path}: cannot read ({error})")

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        write_text_atomic(self.path / name, json.dumps(data, indent=2) + "\n")

    def append_log(self, record: dict[str, Any]) -> None:
        """Appends one line and fsyncs it; a kill can lose at most the line being written."""
        with open(self.log_path, "a") as log:
            log.write(json.dumps(record) + "\n")
            log.flush()
            os.fsync(log.fileno())

    def log(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        records = []
        for line in self.log_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill -9: the checkpoint, not the log, is authoritative
        return records

    def remove_partial_writes(self) -> None:
        """Deletes the temporary files of writes that a kill interrupted (see `atomic_path`)."""
        for folder in (self.path, self.checkpoints):
            for leftover in folder.glob(".tmp-*"):
                leftover.unlink(missing_ok=True)

    @contextmanager
    def training_lock(self) -> Iterator[None]:
        """Held while a process trains the run: a second one fails at once with one line naming
        the holder. The lock is the kernel's (flock), so it dies with its process: the file a
        killed process leaves behind names a stale holder and is simply taken over."""
        handle = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise SeglabError(f"{self.path}: the run is being trained by {holder}; wait for it "
                              "or stop it first")
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            handle.flush()
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def best_checkpoint(self) -> Path:
        for name in ("best.pt", "last.pt"):
            if (self.checkpoints / name).is_file():
                return self.checkpoints / name
        raise SeglabError(f"{self.path}: the run has no checkpoint yet (train it first)")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Writes to a temporary file, fsyncs, then renames: never a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Loads tensors and plain containers only (`weights_only=True`): no arbitrary unpickling."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SeglabError(f"{path}: no such checkpoint")
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise SeglabError(f"{path}: not a readable seglab checkpoint ({type(error).__name__})")


def make_split(case_ids: list[str], fixed: dict[str, list[str]] | None, val_fraction: float,
               test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Train/val/test ids: fixed subsets are kept, the rest drawn at random with the seed. Cases
    fixed as "unlabeled" (their masks withheld: few-label experiments) are in no other subset,
    and listed under that name."""
    fixed = fixed or {}
    rng = np.random.default_rng(seed)
    taken = {i for ids in fixed.values() for i in ids}
    remaining = [i for i in case_ids if i not in taken]
    order = list(rng.permutation(len(remaining)))
    split = {"test": list(fixed.get("test", [])), "val": list(fixed.get("val", []))}
    for subset, fraction in (("test", test_fraction), ("val", val_fraction)):
        if subset not in fixed and fraction > 0:
            count = max(1, int(round(fraction * len(case_ids))))
            count = min(count, max(0, len(order) - 1))
            split[subset] = sorted(remaining[k] for k in order[:count])
            order = order[count:]
    split["train"] = list(fixed.get("train", [])) or sorted(remaining[k] for k in order)
    if not split["train"]:
        raise SeglabError("the split leaves no case for training")
    unlabeled = {"unlabeled": list(fixed["unlabeled"])} if fixed.get("unlabeled") else {}
    return {"train": split["train"], "val": split["val"], "test": split["test"], **unlabeled}
