"""Classical segmenters: each finds what it should on small synthetic images with known answers,
fitting settles the polarity, map, channel and parameters, the ROI bounds everything, 3D works,
and bad names or parameters are one-line errors that list what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab import classical
from seglab.case import Case
from seglab.classical import ridges
from seglab.classical.fit import fit_method
from seglab.cli import main
from seglab.errors import SeglabError
from seglab.metrics import roc_auc
from tests.conftest import disc_image

METHODS = [entry.name for entry in classical.available()]
# Adaptive thresholding and vesselness mark what differs from its neighbourhood, lines: a disc's
# flat inside is neither.
BLOB_METHODS = [name for name in METHODS if name not in ("adaptive", "vesselness")]


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    pred, ref = pred > 0, ref > 0
    return 2 * (pred & ref).sum() / (pred.sum() + ref.sum())


def disc_case(seed: int, dark: bool = False, size: tuple[int, int] = (48, 56)) -> Case:
    image, mask = disc_image(np.random.default_rng(seed), size)
    image = 255 - image if dark else image
    return Case(f"c{seed}", image[None].astype(np.float32), (1.0, 1.0), label=mask)


def ball(seed: int, shape: tuple[int, int, int] = (20, 24, 24)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    mask = (zz - 10) ** 2 + (yy - 12) ** 2 + (xx - 11) ** 2 < 7**2
    return (60 + 120 * mask + rng.normal(0, 10, shape))[None].astype(np.float32), mask


@pytest.mark.parametrize("name", BLOB_METHODS)
def test_each_method_finds_a_bright_disc_on_a_dark_noisy_background(name: str) -> None:
    case = disc_case(0)
    assert dice(classical.create(name).segment(case.image), case.label) > 0.9


@pytest.mark.parametrize("name", BLOB_METHODS)
def test_fitting_on_dark_discs_flips_the_polarity_and_segments_a_new_one(name: str) -> None:
    new = disc_case(10, dark=True)
    assert dice(classical.create(name).segment(new.image), new.label) < 0.3  # bright by default
    fitted = fit_method(classical.create(name), [disc_case(s, dark=True) for s in range(3)], 2)
    assert fitted.dice > 0.9 and fitted.cases == min(3, fitted.segmenter.fit_cases or 3)
    assert dice(fitted.segmenter.segment(new.image), new.label) > 0.9
    if name != "region_growing":  # it may grow the background from bright seeds instead
        assert fitted.segmenter.values["polarity"] == "dark"


@pytest.mark.parametrize("name", BLOB_METHODS)
def test_each_method_finds_a_bright_ball_in_a_3d_volume(name: str) -> None:
    volume, mask = ball(1)
    assert dice(classical.create(name).segment(volume), mask) > 0.9


def test_multiotsu_separates_three_intensity_levels() -> None:
    rng = np.random.default_rng(2)
    truth = np.repeat([0, 1, 2], 20)[None, :].repeat(30, axis=0)  # three vertical bands
    image = (50 + 80 * truth + rng.normal(0, 8, truth.shape))[None].astype(np.float32)
    mask = classical.create("multiotsu", levels=3, classes=3).segment(image)
    assert (mask == truth).mean() > 0.99
    assert classical.create("otsu", classes=3).segment(image).max() == 2  # 2 levels: 0 and top


def test_adaptive_thresholding_copes_with_an_illumination_gradient_where_otsu_fails() -> None:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:64, :96]
    spots = ((yy % 16 - 8) ** 2 + (xx % 16 - 8) ** 2) < 3**2  # a grid of small spots
    image = (20 + 2.2 * xx + 40 * spots + rng.normal(0, 3, spots.shape))[None].astype(np.float32)
    assert dice(classical.create("otsu").segment(image), spots) < 0.5
    adaptive = classical.create("adaptive", block_size=15, offset=-0.03)
    assert dice(adaptive.segment(image), spots) > 0.9


def test_the_score_ranks_the_foreground_above_the_background_and_follows_the_polarity() -> None:
    bright, dark = disc_case(5), disc_case(5, dark=True)
    otsu = classical.create("otsu")
    assert roc_auc(otsu.score(bright.image), bright.label) > 0.99
    assert roc_auc(otsu.score(dark.image), dark.label) < 0.01  # bright foreground assumed
    flipped = classical.create("otsu", polarity="dark")
    assert roc_auc(flipped.score(dark.image), dark.label) > 0.99
    assert classical.create("multiotsu", levels=3).score(bright.image) is None


def test_adaptive_score_is_positive_exactly_where_it_segments() -> None:
    case = disc_case(6)
    adaptive = classical.create("adaptive", block_size=15, offset=-0.02)
    assert ((adaptive.score(case.image) > 0) == (adaptive.segment(case.image) == 1)).all()


def dark_lines(seed: int) -> Case:
    """Thin dark lines (2 px wide, 8% of the image) on a background brightening left to right."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:80, :96]
    lines = (np.abs((yy + 0.5 * xx + seed * 7) % 24 - 12) < 1) | (np.abs(xx % 32 - 16) < 1)
    image = 60 + 1.5 * xx - 35 * lines + rng.normal(0, 3, lines.shape)
    return Case(f"l{seed}", image[None].astype(np.float32), (1.0, 1.0),
                label=lines.astype(np.uint8))


def test_vesselness_finds_thin_dark_lines_under_uneven_light_where_otsu_fails() -> None:
    case = dark_lines(0)
    fitted_otsu = fit_method(classical.create("otsu"), [dark_lines(s) for s in (1, 2)], 2)
    assert dice(fitted_otsu.segmenter.segment(case.image), case.label) < 0.5
    cases = [dark_lines(s) for s in (1, 2)]
    fitted = fit_method(classical.create("vesselness", max_sigma=2), cases, 2)
    assert fitted.segmenter.values["ridges"] == "dark" and fitted.segmenter.mapping() == [0, 1]
    assert dice(fitted.segmenter.segment(case.image), case.label) > 0.8
    assert roc_auc(fitted.segmenter.score(case.image), case.label) > 0.95
    inverted = [Case(c.case_id, c.image, c.spacing, label=1 - c.label) for c in cases]
    assert fit_method(classical.create("vesselness", max_sigma=2), inverted,
                      2).segmenter.mapping() == [0, 1]  # the weak response is never the object


def test_the_roi_alone_sets_the_thresholds_and_its_outside_is_background() -> None:
    case = disc_case(4, size=(60, 60))
    yy, xx = np.mgrid[:60, :60]
    roi = (yy - 30) ** 2 + (xx - 30) ** 2 < 29**2
    dark, glaring = case.image.copy(), case.image.copy()
    dark[0][~roi], glaring[0][~roi] = 0, 255  # a black surround (fundus) or a glaring one
    assert classical.create("otsu").segment(glaring)[~roi].all()  # what the ROI prevents
    for name in METHODS:
        mask = classical.create(name).segment(glaring, roi)
        assert not mask[~roi].any(), name
        assert (mask == classical.create(name).segment(dark, roi)).all(), name
        if name in BLOB_METHODS:
            assert dice(mask, case.label & roi) > 0.9, name


def test_the_channel_parameter_picks_the_green_channel_and_fitting_finds_it() -> None:
    def green_case(seed: int) -> Case:
        rng = np.random.default_rng(seed)
        grey = disc_case(seed, dark=True)
        noise = rng.uniform(0, 255, (2, *grey.label.shape))  # red and blue carry nothing
        image = np.stack([noise[0], grey.image[0], noise[1]]).astype(np.float32)
        return Case(grey.case_id, image, (1.0, 1.0), label=grey.label)

    new = green_case(20)
    assert dice(classical.create("otsu", polarity="dark", channel=1).segment(new.image),
                new.label) > 0.9
    assert dice(classical.create("otsu", polarity="dark", channel=0).segment(new.image),
                new.label) < 0.6
    fitted = fit_method(classical.create("otsu"), [green_case(s) for s in range(3)], 2)
    assert fitted.segmenter.values["channel"] == 1


def test_fitting_keeps_the_parameters_the_user_gave_and_tries_the_others() -> None:
    cases = [disc_case(s, dark=True) for s in range(2)]
    fitted = fit_method(classical.create("kmeans", clusters=3), cases, 2).segmenter
    assert fitted.values["clusters"] == 3 and len(fitted.mapping()) == 3
    with pytest.raises(SeglabError, match="classes=3, but the dataset has 2"):
        fit_method(classical.create("otsu", classes=3), cases, 2)


def test_fitting_never_maps_every_level_to_one_class() -> None:
    """Labels unrelated to the image, 60% foreground: marking everything (Dice 0.75) would beat
    any split of the intensities, and is no segmentation."""
    rng = np.random.default_rng(7)
    cases = [Case(f"n{i}", rng.normal(100, 10, (1, 32, 32)).astype(np.float32), (1.0, 1.0),
                  label=(rng.random((32, 32)) < 0.6).astype(np.uint8)) for i in range(3)]
    fitted = fit_method(classical.create("otsu"), cases, 2)
    assert fitted.segmenter.mapping() in ([0, 1], [1, 0]) and fitted.dice < 0.7


def test_region_growing_grows_only_the_object_under_the_user_point() -> None:
    image = np.full((40, 80), 60.0)
    yy, xx = np.mgrid[:40, :80]
    left = (yy - 20) ** 2 + (xx - 20) ** 2 < 10**2
    right = (yy - 20) ** 2 + (xx - 60) ** 2 < 10**2
    image[left | right] = 180
    grower = classical.create("region_growing", points=[[20, 60]])
    mask = grower.segment(image[None].astype(np.float32))
    assert (mask.astype(bool) == right).all()
    with pytest.raises(SeglabError, match=r"points: \[50, 3\] is not inside the 40x80 image"):
        classical.create("region_growing", points=[[50, 3]]).segment(image[None])


@pytest.mark.parametrize("call, expected", [
    (lambda: classical.create("nope"), "classical method 'nope' is not registered (available: "
                                       "adaptive, kmeans, li, multiotsu, otsu, random_walker, "
                                       "region_growing, slic, triangle, vesselness, watershed)"),
    (lambda: classical.create("otsu", bogus=1),
     "otsu: unknown parameter 'bogus' (its parameters: channel, polarity, classes, mapping)"),
    (lambda: classical.create("adaptive", block_size=30),
     "adaptive: block_size=30: expected an odd integer >= 3"),
    (lambda: classical.create("otsu", polarity="up"), "otsu: polarity='up': expected bright or "
                                                      "dark"),
    (lambda: classical.create("otsu", mapping=[0, 1, 1]),
     "otsu: mapping=[0, 1, 1]: expected 2 class indices below classes=2"),
    (lambda: classical.create("otsu", channel=3).segment(np.zeros((3, 4, 4))),
     "channel=3: the image has 3 channel(s), 0..2"),
])
def test_a_bad_name_or_parameter_is_a_one_line_error_saying_what_is_allowed(call,
                                                                            expected) -> None:
    with pytest.raises(SeglabError) as raised:
        call()
    assert str(raised.value) == expected


def _write_pngs(folder: Path, cases: list[Case]) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for case in cases:
        paths.append(folder / f"{case.case_id}.png")
        Image.fromarray(case.image[0].astype(np.uint8)).save(paths[-1])
    return paths


def test_predict_method_writes_masks_like_a_model_and_fits_on_a_dataset(
        png_dataset: Path, tmp_path: Path, capsys) -> None:
    cases = [disc_case(30), disc_case(31)]
    _write_pngs(tmp_path / "in", cases)
    out = tmp_path / "out"
    assert main(["predict", "--method", "otsu", str(tmp_path / "in"), "--out", str(out)]) == 0
    assert "wrote 2 mask(s)" in capsys.readouterr().out
    for case in cases:
        mask = np.asarray(Image.open(out / f"{case.case_id}.png"))
        assert set(np.unique(mask)) == {0, 1} and dice(mask, case.label) > 0.9
    assert json.loads((out / "method.json").read_text())["params"]["polarity"] == "bright"

    fitted = tmp_path / "fitted"
    argv = ["predict", "--method", "kmeans", "--set", "seed=3", "--fit", str(png_dataset),
            str(tmp_path / "in" / "c30.png"), "--out", str(fitted)]
    assert main(argv) == 0
    assert "fitted on 5 training case(s)" in capsys.readouterr().out
    mask = np.asarray(Image.open(fitted / "c30.png"))
    assert set(np.unique(mask)) == {0, 255}  # the dataset stores its foreground as 255
    assert dice(mask, cases[0].label) > 0.9
    record = json.loads((fitted / "method.json").read_text())
    assert record["params"]["seed"] == 3 and record["fit_dice"] > 0.9


def test_predict_method_errors_are_one_line(tmp_path: Path, capsys) -> None:
    image = _write_pngs(tmp_path / "in", [disc_case(0)])[0]
    argv = ["predict", "--method", "adaptive", str(image), "--out", str(tmp_path / "o")]
    assert main([*argv, "--set", "block_size=4"]) == 2
    assert capsys.readouterr().err == ("seglab: error: adaptive: block_size=4: expected an odd "
                                       "integer >= 3\n")
    assert main([*argv, "--probabilities"]) == 2
    assert "gives masks only" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), str(image), "--out", "o", "--set", "a=1"]) == 2
    assert "only with a classical --method" in capsys.readouterr().err


def test_the_predict_help_names_every_method(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in METHODS)


def test_responses_are_kept_while_fitting_only(monkeypatch) -> None:
    calls = []
    original = ridges.frangi
    monkeypatch.setattr(ridges, "frangi", lambda *a, **k: calls.append(1) or original(*a, **k))
    cases = [dark_lines(s) for s in (1, 2)]
    fitted = fit_method(classical.create("vesselness", max_sigma=2), cases, 2).segmenter
    assert len(calls) == 2 * 2  # each image once per polarity, not once per fraction as well
    fitted.segment(cases[0].image)
    fitted.segment(cases[0].image)
    assert len(calls) == 4 + 2  # outside fitting, every look filters again
