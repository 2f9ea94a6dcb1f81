"""`seglab train`: trains (or resumes) a run on patches, validates every epoch, and keeps the last
and best checkpoints so that a kill at any moment loses at most the current epoch. On one process,
or on several started by `torchrun` (see `seglab.train.distributed`)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from seglab import models
from seglab.data.io import write_text_atomic
from seglab.data.layouts import IGNORE_INDEX
from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.infer import build_model, sliding_window_predict
from seglab.metrics import foreground_dice
from seglab.plan import Plan, apply_overrides
from seglab.preprocess import Prepared, PreparedCache
from seglab.run import Run, load_checkpoint, save_checkpoint
from seglab.train.adversarial import Adversary
from seglab.train.detection import DetectionSampler, DetectionStep, detection_scores
from seglab.train.distributed import Distributed
from seglab.train.loss import create_loss, main_output
from seglab.train.optim import create_optimizer, learning_rate, set_learning_rate
from seglab.train.sampling import EpochBatches, PatchSampler, WithUnlabeled
from seglab.train.semi import Semi, semi_supervision
from seglab.train.tracking import Tracker, open_tracker
from seglab.train.tracking import overlay as tracking_overlay
from seglab.run_setup import open_dataset, prepare_cases
from seglab.train.transfer import describe_transfer, initialise_from


def train(run: Run, precision: Precision | None = None, progress: bool = True,
          overrides: dict[str, Any] | None = None, log: str | None = None) -> dict[str, Any]:
    """Trains (or continues training) `run` to the end of its plan; returns the final log record.
    The run is locked while it trains (`Run.training_lock`): a second process exits at once.
    `log` ("tensorboard" or "mlflow") also writes every epoch there (`seglab.train.tracking`)."""
    dist = Distributed.from_environment()
    with run.training_lock() if dist.is_main else contextlib.nullcontext():
        tracker = open_tracker(log, run) if dist.is_main else None
        try:
            return _train(run, dist, precision, progress, overrides, tracker)
        finally:
            if tracker is not None:
                tracker.close()


def _train(run: Run, dist: Distributed, precision: Precision | None, progress: bool,
           overrides: dict[str, Any] | None, tracker: Tracker | None) -> dict[str, Any]:
    if overrides and dist.is_main:
        apply_overrides(run.plan(), overrides).save(run.plan_path)
    dist.barrier()
    plan = run.plan()
    precision = precision or Precision.choose()
    if dist.active and plan.adversarial["weight"] > 0:
        raise SeglabError("adversarial training runs on one process only; start it without "
                          "torchrun")
    if dist.active and plan.semi_supervised["method"] == "cross_pseudo_supervision":
        raise SeglabError("semi_supervised.method=cross_pseudo_supervision runs on one process "
                          "only; start it without torchrun, or use mean_teacher")
    train_cases, val_cases, unlabeled_cases = _cases(run, plan, dist)

    torch.manual_seed(plan.seed)
    model = precision.prepare_model(build_model(plan))
    loss_fn = create_loss(plan.loss)
    semi = semi_supervision(plan.semi_supervised, model, lambda: _partner(plan, precision),
                            loss_fn) if unlabeled_cases else None
    trained = [*model.parameters(), *(semi.trained_parameters() if semi else [])]
    optimizer = create_optimizer(trained, plan.optimizer)
    adversary = (Adversary(plan.patch_size, plan.in_channels, plan.n_classes, plan.adversarial,
                           precision.device) if plan.adversarial["weight"] > 0 else None)
    state = _restore(run, plan, model, optimizer, adversary, semi, progress and dist.is_main)
    if dist.is_main:
        _trim_log(run, state["epoch"])
        run.remove_partial_writes()
    budget = plan.time_budget_minutes * 60 if plan.time_budget_minutes else None
    # Recomputed rather than read back, so that resuming with more epochs or minutes goes on.
    state["finished"] = state["epoch"] >= plan.epochs or bool(budget and state["elapsed"] >= budget)
    if state["finished"]:
        return run.log()[-1] if run.log() else {}
    workers = loader_workers(precision.device)
    if dist.is_main:
        run.write_json("run.json", {**run.read_json("run.json"), **precision.describe(),
                                    "processes": dist.world, "loader_workers": workers})

    freeze = plan.transfer["freeze_encoder_epochs"]
    net = dist.wrap(model, find_unused=bool(freeze))
    detector = plan.model["name"] == "mask_rcnn"  # Mask R-CNN: its batches, step, validation
    rng, batch_size = np.random.default_rng(plan.seed), max(1, plan.batch_size // dist.world)
    sampler = (DetectionSampler if detector else PatchSampler)(train_cases, plan, rng,
                                                               batch_size=batch_size)
    if semi:
        sampler = WithUnlabeled(sampler, PatchSampler(unlabeled_cases, plan, rng, batch_size,
                                                      labeled=False))
    step = (DetectionStep(net, optimizer, precision, plan.optimizer["grad_clip"]) if detector
            else TrainStep(net, optimizer, loss_fn, precision, adversary,
                           plan.optimizer["grad_clip"], semi))
    validated = semi.validated(model) if semi else model  # what validation and best.pt see
    encoder = models.encoder_parameters(model) if freeze else []
    record: dict[str, Any] = {}
    while state["epoch"] < plan.epochs and not state["finished"]:
        for parameter in encoder:
            parameter.requires_grad_(state["epoch"] >= freeze)
        batches = DataLoader(EpochBatches(sampler, plan.iterations_per_epoch, plan.seed,
                                          state["epoch"], dist.rank),
                             batch_size=None, num_workers=workers,
                             pin_memory=precision.device.type == "cuda",
                             multiprocessing_context="fork" if workers else None)
        losses = _train_epoch(net, step, batches, plan, state, budget, dist, progress)
        val = _validate(validated, val_cases, plan, precision, dist)
        # A later model that scores as well is kept: ties go to the longer-trained one.
        improved = val["mean_dice"] >= state["best_dice"] or not val_cases
        if improved:
            state["best_dice"] = val["mean_dice"]
        record = {"epoch": state["epoch"], "step": state["step"],
                  "loss": float(np.mean([x for rank in dist.gather(losses) for x in rank])),
                  "lr": optimizer.param_groups[0]["lr"], "elapsed_s": round(state["elapsed"], 2),
                  **_consistency(step), **val}
        if dist.is_main:
            _save(run, record, state, improved, model, optimizer, adversary, semi)
        if tracker is not None:
            shown = [] if detector else val_cases[:TRACKED_CASES]
            tracker.epoch(record, [_overlay(validated, case, plan, precision)
                                   for case in shown])
        if progress and dist.is_main:
            tqdm.write(f"epoch {state['epoch']:>3}  step {state['step']}  loss "
                       f"{record['loss']:.4f}  val Dice {val['mean_dice']:.4f}  lr "
                       f"{record['lr']:.2e}  ({state['elapsed']:.0f} s)")
            sys.stdout.flush()  # a piped log shows each epoch when it ends
    dist.barrier()
    return record


def _consistency(step: "TrainStep | DetectionStep") -> dict[str, float]:
    """The epoch's mean weighted consistency term of a semi-supervised run (then cleared)."""
    values = getattr(step, "consistencies", None)
    if not values:
        return {}
    mean = float(np.mean(values))
    values.clear()
    return {"consistency_loss": mean}


def loader_workers(device: torch.device) -> int:
    """DataLoader worker processes for this machine. Patches are cut by one grid_sample each, a few
    percent of a CPU step (`benchmarks/speed.py` measures it), so on a CPU a worker would only take
    cores from the convolutions: none below 8 cores, one above. A GPU step leaves the CPU idle:
    up to 6 workers, one core kept for the main process (per process under torchrun)."""
    cores = (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device.type == "cpu":
        return 0 if cores < 8 else 1
    return max(0, min(6, cores - 1))


def _cases(run: Run, plan: Plan, dist: Distributed
           ) -> tuple[list[Prepared], list[Prepared], list[Prepared]]:
    """Training cases, this rank's share of the validation cases, and the unlabelled cases of a
    semi-supervised plan (their labels, where they have any, never read). Rank 0 fills the
    preprocessed cache first; the other ranks then map the same files."""
    dataset = open_dataset(run)
    split = run.read_json("split.json")
    cache = PreparedCache(run.preprocessed, plan)
    if not dist.is_main:
        dist.barrier()
    train_cases = prepare_cases(dataset, split["train"], plan, cache)
    val_cases = prepare_cases(dataset, split["val"], plan, cache)
    unlabeled = (prepare_cases(dataset, split.get("unlabeled", []), plan, cache)
                 if plan.semi_supervised["method"] != "none" else [])
    if dist.is_main:
        dist.barrier()
    return train_cases, val_cases[dist.rank::dist.world], unlabeled


def _partner(plan: Plan, precision: Precision) -> torch.nn.Module:
    """Cross pseudo supervision's second network: the model's architecture, its own random
    initialisation (a pretrained encoder's weights are shared)."""
    torch.manual_seed(plan.seed + 1)
    return precision.prepare_model(build_model(plan))


def _restore(run: Run, plan: Plan, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             adversary: Adversary | None, semi: Semi | None,
             progress: bool) -> dict[str, Any]:
    """The progress to continue from: last.pt when there is one (weights, optimiser, teacher or
    partner, random state), else a fresh start, initialised from another run when the plan says
    so."""
    last = run.checkpoints / "last.pt"
    if not last.exists():
        if plan.transfer["init_from"]:
            _initialise(run, model, plan.transfer["init_from"], progress)
            if semi:
                semi.follow_initialisation(model)
        return {"epoch": 0, "step": 0, "elapsed": 0.0, "best_dice": -1.0, "finished": False}
    saved = load_checkpoint(last)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if adversary:
        adversary.load_state_dict(saved["adversary"])
    if semi:
        semi.load_state_dict(saved[semi.KEY])
    torch.set_rng_state(saved["torch_rng"])
    return saved["progress"]


def _train_epoch(net: torch.nn.Module, step: "TrainStep", batches: DataLoader, plan: Plan,
                 state: dict[str, Any], budget: float | None, dist: Distributed,
                 progress: bool) -> list[float]:
    """One epoch of steps under the plan's learning-rate schedule, stopping early (on every rank
    at the same step) when the time budget runs out; updates `state` and returns the losses."""
    net.train()
    started, losses = time.monotonic(), []
    total_steps = plan.epochs * plan.iterations_per_epoch
    # A bar redrawn in place only on a terminal: piped into a log it would leave thousands of
    # carriage-return frames; there the epoch's one line (`_train`) is the progress.
    bar = tqdm(batches, disable=not (progress and dist.is_main and sys.stderr.isatty()),
               leave=False,
               desc=f"epoch {state['epoch'] + 1}/{plan.epochs}")
    for batch in bar:
        # The slowest rank's clock, so that every rank sets the same rate and stops together.
        elapsed = max(dist.gather(state["elapsed"] + time.monotonic() - started))
        if budget and elapsed >= budget:
            state["finished"] = True
            break
        fraction = max(state["step"] / total_steps, elapsed / budget if budget else 0.0)
        set_learning_rate(step.optimizer, learning_rate(plan.optimizer, fraction))
        step.fraction = fraction  # the semi-supervised ramp-up reads it
        losses.append(step(*batch))
        state["step"] += 1
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}",
                        val_dice=f"{max(state['best_dice'], 0):.4f}")
    state["elapsed"] += max(dist.gather(time.monotonic() - started))
    state["epoch"] += 1
    state["finished"] = state["finished"] or state["epoch"] >= plan.epochs
    return losses


def _save(run: Run, record: dict[str, Any], state: dict[str, Any], improved: bool,
          model: torch.nn.Module, optimizer: torch.optim.Optimizer,
          adversary: Adversary | None, semi: Semi | None) -> None:
    """Log line, then best (the validated network's: a mean teacher's, where there is one),
    then last: last.pt is the commit point. A kill before it is rolled back on resume
    (`_trim_log` drops lines past the checkpoint); after it, all agree."""
    run.append_log(record)
    if improved:
        best = semi.validated(model) if semi else model
        save_checkpoint(run.checkpoints / "best.pt", {"model": best.state_dict(),
                                                     "progress": dict(state)})
    save_checkpoint(run.checkpoints / "last.pt", {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        **({"adversary": adversary.state_dict()} if adversary else {}),
        **({semi.KEY: semi.state_dict()} if semi else {}),
        "torch_rng": torch.get_rng_state(), "progress": dict(state)})


class TrainStep:
    """One optimisation step: forward, the plan's loss (plus the adversarial term, and the
    semi-supervised term on unlabelled patches, when on), backward with the plan's gradient
    clipping over everything the optimiser trains, then the discriminator's own step and the
    teacher's update."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: torch.nn.Module, precision: Precision, adversary: Adversary | None,
                 grad_clip: float | None = None, semi: Semi | None = None):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.precision, self.adversary, self.grad_clip = precision, adversary, grad_clip
        self.semi, self.fraction = semi, 0.0  # fraction: of training done (`_train_epoch`)
        self.consistencies: list[float] = []  # this epoch's weighted consistency terms
        self.scaler = torch.amp.GradScaler(enabled=precision.autocast_dtype == torch.float16)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 unlabeled: torch.Tensor | None = None) -> float:
        images = self.precision.memory_format(self.precision.to_device(images), self.model)
        labels = labels.to(self.precision.device)
        with self.precision.autocast():
            logits = self.model(images)
        loss = self.loss_fn(logits, labels)
        if self.semi is not None and unlabeled is not None:
            unlabeled = self.precision.memory_format(self.precision.to_device(unlabeled),
                                                     self.model)
            with self.precision.autocast():
                added, consistency = self.semi.term(self.model, unlabeled, self.fraction,
                                                       images, labels)
            self.consistencies.append(float(consistency.detach()))
            loss = loss + added
        if self.adversary:
            main = main_output(logits, labels)
            loss = loss + self.adversary.segmenter_loss(images, main, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for group in self.optimizer.param_groups for p in group["params"]],
                self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.adversary:
            self.adversary.discriminator_step(images, main, labels)
        if self.semi is not None:
            self.semi.update(self.model)
        return float(loss.detach())


def _initialise(run: Run, model: torch.nn.Module, source: str, progress: bool) -> None:
    """Fine-tuning: the source's matching weights, with what could not be used recorded."""
    report = initialise_from(model, source)
    run.write_json("run.json", {**run.read_json("run.json"), "transfer": report})
    if progress:
        tqdm.write(describe_transfer(report))


TRACKED_CASES = 3  # validation cases whose overlays a tracker receives each epoch


@torch.no_grad()
def _overlay(model: torch.nn.Module, case: Prepared, plan: Plan,
             precision: Precision) -> np.ndarray:
    """A validation case, its reference and the model's prediction, for the tracker."""
    model.eval()
    mask = sliding_window_predict(model, case.image, plan, precision).argmax(0).numpy()
    return tracking_overlay(case.image, case.label, mask)


def _trim_log(run: Run, epoch: int) -> None:
    """Drops log lines of epochs after the checkpoint (written just before a kill)."""
    kept = [r for r in run.log() if r.get("epoch", 0) <= epoch]
    write_text_atomic(run.log_path, "".join(json.dumps(r) + "\n" for r in kept))


def _validate(model: torch.nn.Module, cases: list[Prepared], plan: Plan, precision: Precision,
              dist: Distributed) -> dict[str, float]:
    """Mean Dice per foreground class over all ranks' validation cases (of the classes of the
    objects found, for Mask R-CNN)."""
    score = detection_scores if plan.model["name"] == "mask_rcnn" else validation_scores
    scores = [row for rank in dist.gather(score(model, cases, plan, precision)) for row in rank]
    if not scores:
        return {"mean_dice": float("nan")}
    table = np.asarray(scores, dtype=float)
    seen = ~np.isnan(table)
    per_class = np.where(seen, table, 0).sum(axis=0) / np.maximum(seen.sum(axis=0), 1)
    per_class[~seen.any(axis=0)] = np.nan  # a class no case scored
    result = {f"dice_{name}": float(v) for name, v in zip(plan.classes[1:], per_class)}
    scored = per_class[~np.isnan(per_class)]
    return {"mean_dice": float(scored.mean()) if scored.size else float("nan"), **result}


@torch.no_grad()
def validation_scores(model: torch.nn.Module, cases: list[Prepared], plan: Plan,
                      precision: Precision) -> list[list[float]]:
    """Dice per foreground class for each whole validation case (sliding window), in the plan's
    space; an empty reference predicted empty scores 1."""
    model.eval()
    scores = []
    for case in cases:
        mask = sliding_window_predict(model, case.image, plan, precision).argmax(0).numpy()
        scores.append(foreground_dice(mask, case.label, plan.n_classes, case.roi,
                                      IGNORE_INDEX).tolist())
    return scores
