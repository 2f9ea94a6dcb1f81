"""Budget-aware planning: candidates timed on this machine, the choice and its reasons recorded,
and the user's own settings left alone."""

from __future__ import annotations

import pytest

from seglab import plan_budget
from seglab.device import Precision
from seglab.plan import make_plan
from seglab.plan_budget import TARGET_STEPS, fit_to_budget
from tests.test_plan import _fingerprint

CPU = Precision.choose("cpu", "fp32", "off")


def _fake_timing(seconds_per_pixel: dict[str, float]):
    """Seconds per patch proportional to its pixels, at a rate per network width; an inference
    window a tenth of that."""
    def timed(candidate, plan, precision):
        pixels = 1
        for side in candidate["patch_size"]:
            pixels *= side
        seconds = seconds_per_pixel[candidate["network"]] * pixels
        return {**candidate, "seconds_per_sample": seconds, "seconds_per_window": seconds / 10,
                "params_m": 1.0}
    return timed


def _plan(minutes: float, overrides: dict | None = None):
    fp = _fingerprint(2, [512, 512], [1.0, 1.0])
    return fp, make_plan(fp, {"time_budget_minutes": minutes, **(overrides or {})})


def test_a_generous_budget_takes_the_largest_patch_and_the_wider_network(monkeypatch) -> None:
    monkeypatch.setattr(plan_budget, "_timed", _fake_timing({"narrow": 1e-9, "wide": 2e-9}))
    fp, plan = _plan(30)
    fitted = fit_to_budget(plan, fp, {"time_budget_minutes"}, CPU)
    assert fitted.patch_size == plan.patch_size
    assert fitted.model["widths"][0] == 32
    budget = fitted.planning["budget"]
    assert budget["expected_steps"] >= TARGET_STEPS and "largest patch" in budget["reason"]
    assert len(budget["candidates"]) == 8


def test_a_tight_budget_takes_a_smaller_patch_and_network_that_still_converge(
        monkeypatch) -> None:
    monkeypatch.setattr(plan_budget, "_timed", _fake_timing({"narrow": 5e-7, "wide": 2e-6}))
    fp, plan = _plan(30)
    fitted = fit_to_budget(plan, fp, {"time_budget_minutes"}, CPU)
    assert fitted.patch_size[0] < plan.patch_size[0] and fitted.model["widths"][0] == 16
    seconds = 30 * 60 * plan_budget.TRAINING_SHARE
    step = fitted.planning["budget"]["candidates"][0]["seconds_per_sample"]
    assert step * 8 * TARGET_STEPS > seconds  # the full-size patch could not have converged
    assert fitted.batch_size >= plan_budget.MIN_BATCH[2]
    assert fitted.epochs * fitted.iterations_per_epoch >= fitted.planning["budget"][
        "expected_steps"]  # the budget, not the epochs, ends training


def test_the_users_settings_stay_and_no_budget_changes_nothing(monkeypatch) -> None:
    monkeypatch.setattr(plan_budget, "_timed", _fake_timing({"narrow": 2e-7, "wide": 8e-7}))
    fp, plan = _plan(30, {"patch_size": [96, 96], "batch_size": 3, "epochs": 7})
    fitted = fit_to_budget(plan, fp, {"time_budget_minutes", "patch_size", "batch_size",
                                      "epochs"}, CPU)
    assert (fitted.patch_size, fitted.batch_size, fitted.epochs) == ([96, 96], 3, 7)
    fp, unbudgeted = _plan(30)
    unbudgeted.time_budget_minutes = None
    assert fit_to_budget(unbudgeted, fp, set(), CPU) is unbudgeted


@pytest.mark.slow
def test_candidates_are_really_timed_on_this_machine() -> None:
    fp = _fingerprint(2, [64, 64], [1.0, 1.0])
    plan = make_plan(fp, {"time_budget_minutes": 1.0})
    fitted = fit_to_budget(plan, fp, {"time_budget_minutes"}, CPU)
    candidates = fitted.planning["budget"]["candidates"]
    assert all(c["seconds_per_sample"] > 0 and c["params_m"] > 0 for c in candidates)
    assert all(0 < c["seconds_per_window"] < c["seconds_per_sample"] for c in candidates)
    wide = {tuple(c["patch_size"]): c for c in candidates if c["network"] == "wide"}
    narrow = {tuple(c["patch_size"]): c for c in candidates if c["network"] == "narrow"}
    assert all(wide[p]["params_m"] > narrow[p]["params_m"] for p in wide)


def test_mirroring_is_planned_where_its_passes_are_cheap_for_the_median_case(monkeypatch) -> None:
    monkeypatch.setattr(plan_budget, "_timed", _fake_timing({"narrow": 1e-9, "wide": 2e-9}))
    small = _fingerprint(3, [36, 50, 35], [1.0, 1.0, 1.0])
    plan = make_plan(small, {"time_budget_minutes": 30})
    fitted = fit_to_budget(plan, small, {"time_budget_minutes"}, CPU)
    assert fitted.inference["mirror_axes"] == [0, 1, 2] and "passes over" in fitted.inference[
        "tta_reason"]
    monkeypatch.setattr(plan_budget, "_timed", _fake_timing({"narrow": 1e-3, "wide": 2e-3}))
    slow = fit_to_budget(plan, small, {"time_budget_minutes"}, CPU)
    assert slow.inference["mirror_axes"] == []
    kept = fit_to_budget(plan, small, {"time_budget_minutes", "inference.mirror_axes"}, CPU)
    assert kept.inference["mirror_axes"] == []


def test_square_windows_of_microscopy_turn_where_eight_passes_are_cheap(monkeypatch) -> None:
    cells = _fingerprint(2, [256, 256], [1.0, 1.0], modality="microscopy")
    plan = make_plan(cells, {"time_budget_minutes": 30})
    monkeypatch.setattr(plan_budget, "_timed", _fake_timing({"narrow": 1e-9, "wide": 2e-9}))
    fitted = fit_to_budget(plan, cells, {"time_budget_minutes"}, CPU)
    assert fitted.inference["quarter_turns"] and "8 passes" in fitted.inference["tta_reason"]
    scene = _fingerprint(2, [256, 256], [1.0, 1.0], modality="photo")  # the sky is up
    assert not fit_to_budget(make_plan(scene, {"time_budget_minutes": 30}), scene,
                             {"time_budget_minutes"}, CPU).inference["quarter_turns"]
    wide = fit_to_budget(make_plan(cells, {"time_budget_minutes": 30, "patch_size": [128, 256]}),
                         cells, {"time_budget_minutes", "patch_size"}, CPU)
    assert wide.inference["mirror_axes"] == [0, 1] and not wide.inference["quarter_turns"]
    # 8 passes over the case too slow, 3 not: mirroring alone
    monkeypatch.setattr(plan_budget, "_timed", _fake_timing({"narrow": 2e-4, "wide": 4e-4}))
    mirrored = fit_to_budget(plan, cells, {"time_budget_minutes"}, CPU)
    assert mirrored.inference["mirror_axes"] == [0, 1]
    assert not mirrored.inference["quarter_turns"]
    assert "3 passes" in mirrored.inference["tta_reason"]


def test_epochs_are_sized_so_that_validation_takes_a_tenth_of_the_budget(monkeypatch) -> None:
    monkeypatch.setattr(plan_budget, "_timed", _fake_timing({"narrow": 2e-6, "wide": 8e-6}))
    fp = _fingerprint(2, [4000, 4000], [1.0, 1.0])
    plan = make_plan(fp, {"time_budget_minutes": 30, "split.val_fraction": 0.5})
    fitted = fit_to_budget(plan, fp, {"time_budget_minutes"}, CPU)
    budget = fitted.planning["budget"]
    assert 1 < budget["validations"] < plan_budget.MAX_VALIDATIONS  # validation binds here
    validations = budget["expected_steps"] / fitted.iterations_per_epoch
    assert validations == pytest.approx(budget["validations"], rel=0.05)
    seconds = 30 * 60 * plan_budget.TRAINING_SHARE
    assert validations * budget["validation_seconds"] <= 0.11 * seconds
    monkeypatch.setattr(plan_budget, "_timed", _fake_timing({"narrow": 1e-9, "wide": 2e-9}))
    fast = fit_to_budget(plan, fp, {"time_budget_minutes"}, CPU)
    assert fast.planning["budget"]["validations"] == plan_budget.MAX_VALIDATIONS
