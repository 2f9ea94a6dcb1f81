"""`seglab train`: creates or resumes a run, trains on patches, validates every epoch, and keeps the
last and best checkpoints so that a kill at any moment loses at most the current epoch."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from seglab import __version__, models
from seglab.data.io import write_text_atomic
from seglab.data.inspect import Fingerprint, inspect_dataset
from seglab.data.layouts import IGNORE_INDEX, Dataset, find_dataset
from seglab.data.loading import load_case
from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.infer import build_model, sliding_window_predict
from seglab.plan import Plan, apply_overrides, make_plan
from seglab.preprocess import Prepared, prepare_case
from seglab.run import Run, load_checkpoint, make_split, save_checkpoint
from seglab.train.adversarial import Adversary
from seglab.train.loss import create_loss, main_output
from seglab.train.sampling import PatchSampler
from seglab.train.transfer import describe_transfer, initialise_from


def create_run(data: str | Path, out: str | Path, overrides: dict[str, Any] | None = None) -> Run:
    """Inspects the data, plans, splits, and writes a new run folder (all or nothing)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        hint = " (use --resume to continue it)" if (out / "plan.json").exists() else ""
        raise SeglabError(f"{out}: folder exists and is not empty{hint}")
    dataset = find_dataset(data)
    fingerprint = inspect_dataset(dataset)
    plan = make_plan(fingerprint, overrides)
    return write_new_run(out, data, fingerprint, plan, planned_split(dataset, plan))


def planned_split(dataset: Dataset, plan: Plan) -> dict[str, list[str]]:
    """Train/val/test ids: the dataset's fixed subsets, overridden per subset by the plan's
    `split.fixed`, and the rest drawn with the plan's seed."""
    fixed = {**(dataset.split or {}), **(plan.split.get("fixed") or {})}
    return make_split([c.case_id for c in dataset.cases], fixed, plan.split["val_fraction"],
                      plan.split["test_fraction"], plan.seed)


def write_new_run(out: Path, data: str | Path, fingerprint: Fingerprint, plan: Plan,
                  split: dict[str, list[str]]) -> Run:
    """Writes the run folder under a temporary name, then renames it: all or nothing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    run = Run(staging)
    plan.save(run.plan_path)
    run.write_json("fingerprint.json", fingerprint.to_dict())
    run.write_json("split.json", split)
    run.write_json("run.json", {"data": str(Path(data).resolve()), "seglab": __version__})
    if out.exists():
        out.rmdir()
    staging.rename(out)
    return Run(out)


def open_dataset(run: Run) -> Dataset:
    """The run's dataset, read with the classes and label mapping recorded in its fingerprint."""
    fingerprint = Fingerprint.from_dict(run.read_json("fingerprint.json"))
    dataset = find_dataset(run.read_json("run.json")["data"])
    dataset.classes = fingerprint.classes
    dataset.label_values = fingerprint.label_values
    return dataset


def prepare_cases(dataset: Dataset, ids: list[str], plan: Plan) -> list[Prepared]:
    refs = {ref.case_id: ref for ref in dataset.cases}
    missing = [i for i in ids if i not in refs]
    if missing:
        raise SeglabError(f"{dataset.source}: cases {missing[:5]} of the run's split are gone")
    return [prepare_case(load_case(dataset, refs[i]), plan) for i in ids]


def train(run: Run, precision: Precision | None = None, progress: bool = True,
          overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trains (or continues training) `run` to the end of its plan; returns the final log record."""
    if overrides:
        apply_overrides(run.plan(), overrides).save(run.plan_path)
    plan = run.plan()
    precision = precision or Precision.choose()
    dataset = open_dataset(run)
    split = run.read_json("split.json")
    train_cases = prepare_cases(dataset, split["train"], plan)
    val_cases = prepare_cases(dataset, split["val"], plan)

    torch.manual_seed(plan.seed)
    rng = np.random.default_rng(plan.seed)
    model = precision.prepare_model(build_model(plan))
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.optimizer["lr"],
                                  weight_decay=plan.optimizer["weight_decay"])
    adversary = (Adversary(plan.patch_size, plan.in_channels, plan.n_classes, plan.adversarial,
                           precision.device) if plan.adversarial["weight"] > 0 else None)
    state = {"epoch": 0, "step": 0, "elapsed": 0.0, "best_dice": -1.0, "finished": False}
    last = run.checkpoints / "last.pt"
    if last.exists():
        saved = load_checkpoint(last)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if adversary:
            adversary.load_state_dict(saved["adversary"])
        rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
        state = saved["progress"]
    elif plan.transfer["init_from"]:
        _initialise(run, model, plan.transfer["init_from"], progress)
    _trim_log(run, state["epoch"])
    run.remove_partial_writes()
    budget = plan.time_budget_minutes * 60 if plan.time_budget_minutes else None
    # Recomputed rather than read back, so that resuming with more epochs or minutes goes on.
    state["finished"] = state["epoch"] >= plan.epochs or bool(budget and state["elapsed"] >= budget)
    if state["finished"]:
        return run.log()[-1] if run.log() else {}
    run.write_json("run.json", {**run.read_json("run.json"), **precision.describe()})

    sampler = PatchSampler(train_cases, plan, rng)
    step = TrainStep(model, optimizer, create_loss(plan.loss), precision, adversary)
    encoder = models.encoder_parameters(model) if plan.transfer["freeze_encoder_epochs"] else []
    total_steps = plan.epochs * plan.iterations_per_epoch
    record: dict[str, Any] = {}
    while state["epoch"] < plan.epochs and not state["finished"]:
        model.train()
        for parameter in encoder:
            parameter.requires_grad_(state["epoch"] >= plan.transfer["freeze_encoder_epochs"])
        started, losses = time.monotonic(), []
        bar = tqdm(range(plan.iterations_per_epoch), disable=not progress, leave=False,
                   desc=f"epoch {state['epoch'] + 1}/{plan.epochs}")
        for _ in bar:
            progress_fraction = max(state["step"] / total_steps,
                                    (state["elapsed"] + time.monotonic() - started) / budget
                                    if budget else 0.0)
            for group in optimizer.param_groups:
                group["lr"] = plan.optimizer["lr"] * (1 - min(progress_fraction, 0.999)) ** 0.9
            losses.append(step(*sampler.batch()))
            state["step"] += 1
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}",
                            val_dice=f"{max(state['best_dice'], 0):.4f}")
            if budget and state["elapsed"] + time.monotonic() - started >= budget:
                state["finished"] = True
                break
        state["elapsed"] += time.monotonic() - started
        state["epoch"] += 1
        state["finished"] = state["finished"] or state["epoch"] >= plan.epochs
        val = validate(model, val_cases, plan, precision)
        improved = val["mean_dice"] > state["best_dice"] or not val_cases
        if improved:
            state["best_dice"] = val["mean_dice"]
        record = {"epoch": state["epoch"], "step": state["step"], "loss": float(np.mean(losses)),
                  "lr": optimizer.param_groups[0]["lr"], "elapsed_s": round(state["elapsed"], 2),
                  **val}
        # Log line, then best, then last: last.pt is the commit point. A kill before it is
        # rolled back on resume (`_trim_log` drops lines past the checkpoint); after it, all agree.
        run.append_log(record)
        if improved:
            save_checkpoint(run.checkpoints / "best.pt", {"model": model.state_dict(),
                                                         "progress": dict(state)})
        save_checkpoint(last, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               **({"adversary": adversary.state_dict()} if adversary else {}),
                               "numpy_rng": rng.bit_generator.state,
                               "torch_rng": torch.get_rng_state(), "progress": dict(state)})
        if progress:
            tqdm.write(f"epoch {state['epoch']:>3}  loss {record['loss']:.4f}  val Dice "
                       f"{val['mean_dice']:.4f}  ({state['elapsed']:.0f} s)")
    return record


class TrainStep:
    """One optimisation step: forward, the plan's loss (plus the adversarial term when on),
    backward with gradient clipping, and the discriminator's own step."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: torch.nn.Module, precision: Precision, adversary: Adversary | None):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.precision, self.adversary = precision, adversary
        self.scaler = torch.amp.GradScaler(enabled=precision.autocast_dtype == torch.float16)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        images = self.precision.memory_format(self.precision.to_device(images))
        labels = labels.to(self.precision.device)
        with self.precision.autocast():
            logits = self.model(images)
        loss = self.loss_fn(logits, labels)
        if self.adversary:
            main = main_output(logits, labels)
            loss = loss + self.adversary.segmenter_loss(images, main, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 12.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.adversary:
            self.adversary.discriminator_step(images, main, labels)
        return float(loss.detach())


def _initialise(run: Run, model: torch.nn.Module, source: str, progress: bool) -> None:
    """Fine-tuning: the source's matching weights, with what could not be used recorded."""
    report = initialise_from(model, source)
    run.write_json("run.json", {**run.read_json("run.json"), "transfer": report})
    if progress:
        tqdm.write(describe_transfer(report))


def _trim_log(run: Run, epoch: int) -> None:
    """Drops log lines of epochs after the checkpoint (written just before a kill)."""
    kept = [r for r in run.log() if r.get("epoch", 0) <= epoch]
    write_text_atomic(run.log_path, "".join(json.dumps(r) + "\n" for r in kept))


@torch.no_grad()
def validate(model: torch.nn.Module, cases: list[Prepared], plan: Plan,
             precision: Precision) -> dict[str, float]:
    """Dice per foreground class on whole validation cases (sliding window), in the plan's space."""
    if not cases:
        return {"mean_dice": float("nan")}
    model.eval()
    scores = np.zeros((len(cases), plan.n_classes - 1))
    for row, case in enumerate(cases):
        mask = sliding_window_predict(model, case.image, plan, precision).argmax(0).numpy()
        valid = case.label != IGNORE_INDEX
        if case.roi is not None:
            valid &= case.roi
        for k in range(1, plan.n_classes):
            pred, ref = (mask == k) & valid, (case.label == k) & valid
            total = pred.sum() + ref.sum()
            scores[row, k - 1] = 1.0 if total == 0 else 2 * (pred & ref).sum() / total
    per_class = scores.mean(axis=0)
    result = {f"dice_{name}": float(v) for name, v in zip(plan.classes[1:], per_class)}
    return {"mean_dice": float(per_class.mean()), **result}
