"""The plan: derived from a fingerprint, overridable, and a faithful JSON round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seglab.data.inspect import Fingerprint
from seglab.errors import SeglabError
from seglab.plan import Plan, apply_overrides, make_plan, parse_overrides


def _fingerprint(dims: int, shape: list[int], spacing: list[float], modality: str = "MRI",
                 channels: int = 1):
    return Fingerprint(
        name="t", layout="folders", source="/x", dims=dims, channels=channels, n_cases=3,
        n_unlabeled=0,
        classes=["background", "a"], label_values=None, ignore_label=None, roi_rule=None,
        modality=modality, class_voxels=[90, 10], shapes=[shape] * 3, spacings=[spacing] * 3,
        intensity=[{"mean": 5.0, "std": 2.0, "p00_5": -100.0, "p99_5": 300.0}])


def test_2d_patch_is_divisible_by_the_network_downsampling() -> None:
    plan = make_plan(_fingerprint(2, [97, 131], [1.0, 1.0]))
    divisor = np.prod(np.array(plan.model["strides"]), axis=0)
    assert all(p % d == 0 for p, d in zip(plan.patch_size, divisor))
    assert plan.patch_size[0] >= 97 and plan.patch_size[1] >= 131
    assert len(plan.model["widths"]) == len(plan.model["strides"]) + 1


def test_anisotropic_volume_is_not_pooled_along_its_coarse_axis_at_first() -> None:
    plan = make_plan(_fingerprint(3, [128, 128, 20], [0.5, 0.5, 4.0]))
    assert plan.target_spacing == [0.5, 0.5, 4.0]
    assert plan.model["strides"][0] == [2, 2, 1]
    assert plan.model["kernels"][0] == [3, 3, 1]
    assert plan.augmentation["rotate_in_plane_only"]


def test_large_images_are_cut_into_patches_that_fit_the_memory_budget() -> None:
    budget = 2**18
    plan = make_plan(_fingerprint(3, [200, 200, 200], [1.0, 1.0, 1.0]), memory_budget_voxels=budget)
    assert plan.batch_size * np.prod(plan.patch_size) <= 1.5 * budget
    assert plan.batch_size >= 2


def test_ct_gets_clipping_and_dataset_zscore_other_modalities_per_image() -> None:
    ct = make_plan(_fingerprint(3, [40, 40, 40], [1.0, 1.0, 1.0], modality="CT"))
    assert ct.normalization == {"scheme": "ct", "channels": [
        {"clip": [-100.0, 300.0], "mean": 5.0, "std": 2.0}]}
    assert make_plan(_fingerprint(2, [40, 40], [1.0, 1.0])).normalization == {"scheme": "zscore"}


def test_colour_microscopy_alone_gets_stain_and_polarity_augmentation() -> None:
    def colour_augmentation(modality: str, channels: int) -> list[float]:
        plan = make_plan(_fingerprint(2, [64, 64], [1.0, 1.0], modality, channels=channels))
        return [plan.augmentation[f"{name}_probability"]
                for name in ("channel_shuffle", "grayscale", "invert")]

    assert all(p > 0 for p in colour_augmentation("microscopy", 3))
    assert colour_augmentation("microscopy", 1) == [0.0, 0.0, 0.0]  # EM: one polarity
    assert colour_augmentation("photo", 3) == [0.0, 0.0, 0.0]  # a red car stays red


def test_dotted_overrides_reach_nested_fields_and_unknown_fields_are_refused() -> None:
    plan = make_plan(_fingerprint(2, [64, 64], [1.0, 1.0]), {"epochs": 3, "optimizer.lr": 0.5})
    assert plan.epochs == 3 and plan.optimizer["lr"] == 0.5
    with pytest.raises(SeglabError, match="no such field"):
        apply_overrides(plan, {"optimizer.momentum_typo": 1})
    with pytest.raises(SeglabError, match="not a section"):
        apply_overrides(plan, {"epochs.x": 1})


def test_parse_overrides_reads_json_values_and_files(tmp_path: Path) -> None:
    extra = tmp_path / "o.json"
    extra.write_text('{"batch_size": 4}')
    assert parse_overrides(["epochs=5", "model.widths=[8,16]", "loss.name=dice_ce"], [extra]) == {
        "batch_size": 4, "epochs": 5, "model.widths": [8, 16], "loss.name": "dice_ce"}
    with pytest.raises(SeglabError, match="key=value"):
        parse_overrides(["epochs"])


def test_plan_round_trips_through_json(tmp_path: Path) -> None:
    plan = make_plan(_fingerprint(2, [64, 64], [1.0, 1.0]))
    plan.label_values = {0: 1, 255: 0}
    plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json") == plan


def test_colour_images_get_a_pretrained_encoder_and_grey_ones_the_dynamic_unet() -> None:
    colour = make_plan(_fingerprint(2, [97, 131], [1.0, 1.0], "photo", channels=3))
    assert colour.model == {"name": "encoder_unet", "encoder": "tf_efficientnet_lite0",
                            "encoder_weights": "imagenet"}
    assert all(p % 32 == 0 for p in colour.patch_size)
    assert colour.optimizer["lr"] == 1e-3 and "pretrained" in colour.planning["model"]
    grey = make_plan(_fingerprint(2, [97, 131], [1.0, 1.0]))
    assert grey.model["name"] == "unet" and "dynamic U-Net" in grey.planning["model"]
    named = make_plan(_fingerprint(2, [97, 131], [1.0, 1.0], channels=3), {"model.name": "unet"})
    assert named.model["name"] == "unet" and named.planning["model"] == "named by the user"


def test_colour_images_of_thin_structures_get_the_dynamic_unet_with_their_widths() -> None:
    fp = _fingerprint(2, [97, 131], [1.0, 1.0], "fundus", channels=3)
    for widths, family in (([30.0, 6.4], "unet"), ([30.0, 12.0], "encoder_unet"),
                           ([30.0, None], "encoder_unet"), (None, "encoder_unet")):
        fp.class_widths = widths
        plan = make_plan(fp)
        assert plan.model["name"] == family
        assert ("thin structures (mean width 6.4 px" in plan.planning["model"]) == (
            family == "unet")
    fp.class_widths, fp.task = [30.0, 6.4], "instance"
    fp.objects = {"total": 90, "per_class": [0, 90], "per_case": {"min": 30, "median": 30,
                  "max": 30}, "diameter": {"p10": 6.0, "median": 7.0, "p90": 8.0}}
    assert make_plan(fp).model["name"] == "encoder_unet"


def test_mirroring_is_planned_on_a_gpu_only() -> None:
    fp = _fingerprint(3, [40, 50, 30], [1.0, 1.0, 1.0])
    assert make_plan(fp, device="cuda").inference["mirror_axes"] == [0, 1, 2]
    assert make_plan(fp, device="cpu").inference["mirror_axes"] == []


def test_quarter_turns_go_with_mirroring_of_square_microscopy_windows_only() -> None:
    cells = _fingerprint(2, [128, 128], [1.0, 1.0], modality="microscopy")
    assert make_plan(cells, device="cuda").inference["quarter_turns"]
    assert not make_plan(cells, device="cpu").inference["quarter_turns"]  # nor mirroring
    assert not make_plan(cells, {"patch_size": [128, 256]}, device="cuda").inference[
        "quarter_turns"]
    scene = _fingerprint(2, [128, 128], [1.0, 1.0], modality="photo")
    assert not make_plan(scene, device="cuda").inference["quarter_turns"]
    with pytest.raises(SeglabError, match="turns need square windows"):
        make_plan(cells, {"patch_size": [128, 256], "inference.quarter_turns": True})


@pytest.mark.parametrize(("pair", "field"), [
    ("epochs=abc", "epochs"), ("batch_size=0", "batch_size"), ("model.widths=x", "model.widths"),
    ("optimizer.name=rmsprop", "optimizer.name"), ("optimizer.nam=sgd", "optimizer")])
def test_a_wrong_override_exits_2_with_one_line_and_leaves_no_run_folder(
        pair: str, field: str, png_dataset: Path, tmp_path: Path, capsys) -> None:
    from seglab.cli import main

    out = tmp_path / "run"
    assert main(["train", str(png_dataset), "--out", str(out), "--set", pair]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("seglab: error: ") and field in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]


def test_a_named_loss_gets_its_own_parameters_and_the_default_is_dice_ce() -> None:
    fp = _fingerprint(2, [97, 131], [1.0, 1.0])
    assert make_plan(fp).loss == {"name": "dice_ce", "dice_weight": 1.0, "ce_weight": 1.0}
    focal = make_plan(fp, {"loss.name": "focal", "loss.gamma": 3.0})
    assert focal.loss["name"] == "focal" and focal.loss["gamma"] == 3.0
    assert "ce_weight" not in focal.loss and focal.planning["loss"] == "named by the user"
