"""check_plan: planned plans pass; each wrong field is refused with a message that names it."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

from seglab.errors import SeglabError
from seglab.plan import make_plan
from seglab.plan_check import check_plan
from tests.test_plan import _fingerprint


def _plan(dims: int = 2, overrides: dict[str, Any] | None = None, modality: str = "MRI") -> dict:
    """A complete plan dict, as `Plan.to_dict()` gives it, through JSON (string keys)."""
    fp = (_fingerprint(2, [97, 131], [1.0, 1.0], modality) if dims == 2
          else _fingerprint(3, [128, 128, 20], [0.5, 0.5, 4.0], modality))
    return json.loads(json.dumps(make_plan(fp, overrides).to_dict()))


@pytest.mark.parametrize("dims,modality", [(2, "MRI"), (3, "CT")])
def test_planned_plans_pass(dims: int, modality: str) -> None:
    check_plan(_plan(dims, modality=modality))


def test_other_models_and_optional_fields_pass() -> None:
    data = _plan(2, {"model.name": "encoder_unet"})
    data.update(label_values={"0": 0, "255": 1}, ignore_label=255, planning={"why": ["x"]})
    data["split"].update(fixed={"train": ["a", "b"], "test": "c"}, folds=5)
    data["inference"]["tta_reason"] = "mirroring helped on val"
    check_plan(data)
    check_plan(_plan(3, {"model.name": "segresnet"}))


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        *parents, leaf = path.split(".")
        for part in parents:
            data = data[part]
        data[leaf] = value
    return edit


def _mismatched_unet(data: dict) -> None:
    data["model"]["widths"] = data["model"]["widths"][:-1]


def _unknown_encoder_unet_option(data: dict) -> None:
    data["model"] = {"name": "encoder_unet", "encoder": "resnet18", "encoder_weights": None,
                     "widths": [16, 32]}


REJECTIONS = [
    (_set("epochs", "abc"), r"'epochs': expected an integer >= 1, got 'abc'"),
    (_set("epochs", 0), r"'epochs': expected an integer >= 1, got 0"),
    (_set("batch_size", 0), r"'batch_size': expected an integer >= 1, got 0"),
    (_set("batch_size", True), r"'batch_size': expected an integer >= 1, got True"),
    (_set("model.widths", "x"), r"'model.widths': expected a list of integers >= 1"),
    (_set("model.widths", [16, 0, 32, 64, 128, 256]), r"'model.widths\[1\]'.* got 0"),
    (_mismatched_unet, r"'model': .*5 widths, 6 kernels and 5 strides"),
    (_set("optimizer.name", "rmsprop"), r"'optimizer.name': expected one of 'adamw'.*'rmsprop'"),
    (_set("optimizer.lr", -1), r"'optimizer.lr': expected a number > 0, got -1"),
    (_set("split.val_fraction", 1.5), r"'split.val_fraction': expected a number in \[0, 1\)"),
    (_set("inference.mirror_axes", [2]), r"'inference.mirror_axes\[0\]'.*in \[0, 2\), got 2"),
    (_set("patch_size", [64, 64, 64]), r"'patch_size': expected a list of 2 integers >= 1"),
    (_set("epoch", 3), r"'epoch': unknown \(fields of the plan: .*epochs"),
    (_set("optimizer.nam", "sgd"), r"'optimizer.nam': unknown \(fields of 'optimizer': .*lr"),
    (_unknown_encoder_unet_option,
     r"'model.widths': unknown \(options of model 'encoder_unet': encoder, encoder_weights\)"),
    (_set("loss.name", "hinge"), r"'loss.name': expected one of 'dice_ce'.*got 'hinge'"),
]


@pytest.mark.parametrize("edit,message", REJECTIONS)
def test_wrong_fields_are_refused_naming_the_field(edit: Callable[[dict], None],
                                                   message: str) -> None:
    data = _plan(2)
    edit(data)
    with pytest.raises(SeglabError, match=r"^plan field " + message):
        check_plan(data)
