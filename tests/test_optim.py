"""The plan's optimizer section: each field changes what the training loop does."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from seglab import api
from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.plan import OPTIMIZER_DEFAULTS
from seglab.run import load_checkpoint
from seglab.train.loop import TrainStep
from seglab.train.optim import create_optimizer, learning_rate
from tests.test_train import TINY_2D

SPEC = dict(OPTIMIZER_DEFAULTS, lr=1.0)


@pytest.mark.parametrize(("schedule", "fraction", "expected"), [
    ("poly", 0.0, 1.0), ("poly", 0.5, 0.5**0.9), ("cosine", 0.5, 0.5),
    ("cosine", 0.25, (1 + math.sqrt(0.5)) / 2), ("constant", 0.7, 1.0)])
def test_each_schedule_gives_its_formula(schedule: str, fraction: float, expected: float) -> None:
    assert learning_rate({**SPEC, "schedule": schedule}, fraction) == pytest.approx(expected)


def test_warmup_ramps_linearly_then_the_schedule_starts_from_the_peak() -> None:
    spec = {**SPEC, "warmup_fraction": 0.2, "schedule": "cosine"}
    assert learning_rate(spec, 0.1) == pytest.approx((0.1 + 1e-3) / 0.2)
    assert learning_rate(spec, 0.2) == pytest.approx(1.0)
    assert learning_rate(spec, 0.6) == pytest.approx(0.5)


def test_each_optimizer_name_builds_its_optimizer_with_the_plans_settings() -> None:
    weights = [torch.nn.Parameter(torch.zeros(3))]
    assert type(create_optimizer(weights, {**SPEC, "name": "adamw"})) is torch.optim.AdamW
    assert type(create_optimizer(weights, {**SPEC, "name": "adam"})) is torch.optim.Adam
    sgd = create_optimizer(weights, {**SPEC, "name": "sgd", "momentum": 0.9, "nesterov": False})
    assert type(sgd) is torch.optim.SGD
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["nesterov"] is False
    with pytest.raises(SeglabError, match="rmsprop"):
        create_optimizer(weights, {**SPEC, "name": "rmsprop"})


def test_grad_clip_bounds_the_step_and_none_leaves_it_free() -> None:
    def moved(clip: float | None) -> float:
        model = torch.nn.Conv2d(1, 2, 1, bias=False)
        torch.nn.init.zeros_(model.weight)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        step = TrainStep(model, optimizer, lambda logits, labels: 1000 * logits.sum(),
                         Precision.choose("cpu", "fp32", "off"), None, clip)
        step(torch.ones(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
        return float(model.weight.detach().norm())

    assert moved(0.5) == pytest.approx(0.5)
    assert moved(None) == pytest.approx(1000 * 4 * math.sqrt(2))


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "state_key"), [
    ({}, "exp_avg"), ({"optimizer.name": "sgd"}, "momentum_buffer")])
def test_the_loop_trains_with_the_optimizer_the_plan_names(
        png_dataset: Path, tmp_path: Path, overrides: dict, state_key: str) -> None:
    run = api.train(png_dataset, tmp_path / "run", {**TINY_2D, "epochs": 1, **overrides},
                    progress=False, evaluate=False)
    state = load_checkpoint(run.checkpoints / "last.pt")["optimizer"]["state"]
    assert all(state_key in entry for entry in state.values())


@pytest.mark.slow
def test_the_loop_sets_the_learning_rate_the_plans_schedule_gives(png_dataset: Path,
                                                                   tmp_path: Path) -> None:
    rates = {}
    for schedule in ("constant", "poly"):
        run = api.train(png_dataset, tmp_path / schedule,
                        {**TINY_2D, "optimizer.schedule": schedule, "optimizer.lr": 0.01},
                        progress=False, evaluate=False)
        rates[schedule] = [record["lr"] for record in run.log()]
    assert rates["constant"] == [0.01, 0.01]
    # 2 epochs of 3 steps: the last step of each epoch is step 2 and 5 of 6
    assert rates["poly"] == pytest.approx([0.01 * (1 - 2 / 6) ** 0.9, 0.01 * (1 - 5 / 6) ** 0.9])
