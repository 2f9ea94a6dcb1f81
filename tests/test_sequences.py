"""Frames of a sequence: found from their names, stacked with their neighbours in frame order for
training, sampling and prediction, and the video demo that needs them."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab import api
from seglab.data.layouts import find_dataset
from seglab.data.loading import load_case
from seglab.data.sequences import neighbours, sequence_summary, sequences, with_temporal_context
from seglab.errors import SeglabError
from seglab.infer_inputs import read_inputs
from seglab.plan import make_plan
from seglab.preprocess import prepare_case
from seglab.train.sampling import PatchSampler
from tests.test_train import TINY_2D

NO_AUGMENTATION = {f"augmentation.{name}_probability": 0.0 for name in (
    "rotate", "scale", "noise", "brightness", "contrast", "gamma", "elastic")}


def test_frames_are_ordered_by_number_and_their_neighbours_clamp_at_the_ends() -> None:
    names = ["a_10", "a_2", "a_1", "b_7", "b_8", "lonely_3", "17"]
    assert sequences(names) == {"a_": ["a_1", "a_2", "a_10"], "b_": ["b_7", "b_8"]}
    stacks = neighbours(names, context=1)
    assert stacks["a_2"] == ["a_2", "a_1", "a_10"]
    assert stacks["a_1"] == ["a_1", "a_1", "a_2"] and stacks["a_10"] == ["a_10", "a_2", "a_10"]
    assert stacks["lonely_3"] == ["lonely_3"] * 3 and stacks["17"] == ["17"] * 3
    assert neighbours(names, context=2)["a_2"] == ["a_2", "a_1", "a_1", "a_10", "a_10"]
    summary = sequence_summary(names)
    assert summary["count"] == 2 and summary["step"] == 1.0 and not summary["declared"]
    assert sequence_summary(["x", "y"]) is None


def _clip(root: Path, frames: int = 5, size: int = 24) -> Path:
    """One sequence whose frame t is the constant 10 t (frames written in shuffled order)."""
    for folder in ("frames", "labels"):
        (root / folder).mkdir(parents=True)
    order = list(range(frames))
    random.Random(0).shuffle(order)
    for t in order:
        Image.fromarray(np.full((size, size), 10 * t, np.uint8)).save(
            root / "frames" / f"clip_f{t}.png")
        label = np.zeros((size, size), np.uint8)
        label[4:12, 4:12] = 1
        Image.fromarray(label).save(root / "labels" / f"clip_f{t}.png")
    (root / "seglab.yaml").write_text(
        "images: frames/*.png\nlabels: labels/{id}.png\nclasses: [background, cell]\n"
        "modality: ct\nsequence: '^(?P<sequence>clip)_f(?P<frame>\\d+)$'\n")
    return root


def _frame_values(image: np.ndarray) -> list[float]:
    return [float(np.unique(channel)[0]) for channel in image]


def test_a_sequence_keeps_its_frame_order_through_training_cases_sampling_and_prediction(
        tmp_path: Path) -> None:
    data = _clip(tmp_path / "data")
    plan = make_plan(api.inspect(data), {"patch_size": [16, 16], **NO_AUGMENTATION})
    assert plan.temporal["context"] == 1 and plan.in_channels == 3
    dataset = find_dataset(data)
    stacked = with_temporal_context(dataset, 1, plan.temporal["pattern"])
    cases = {ref.case_id: load_case(stacked, ref) for ref in stacked.cases}
    assert _frame_values(cases["clip_f2"].image) == [20, 10, 30]
    assert _frame_values(cases["clip_f0"].image) == [0, 0, 10]  # the first frame stands in
    assert _frame_values(cases["clip_f4"].image) == [40, 30, 40]
    prepared = prepare_case(cases["clip_f2"], plan)
    images, _ = PatchSampler([prepared], plan, np.random.default_rng(0)).batch()
    means = images[0].flatten(1).mean(1)  # CT statistics: equal values stay ordered
    assert means[1] < means[0] < means[2]
    inputs = sorted((data / "frames").iterdir(), reverse=True)
    read = {Path(c.meta["path"]).name: c for c in read_inputs(inputs, plan)}
    assert _frame_values(read["clip_f2.png"].image) == [20, 10, 30]
    assert _frame_values(read["clip_f4.png"].image) == [40, 30, 40]


def test_frame_numbers_found_without_a_declaration_are_noted_not_used(tmp_path: Path) -> None:
    data = _clip(tmp_path / "data")
    yaml = data / "seglab.yaml"
    yaml.write_text("\n".join(yaml.read_text().splitlines()[:-1]) + "\n")
    plan = make_plan(api.inspect(data))
    assert plan.temporal["context"] == 0 and plan.in_channels == 1
    assert "temporal.context=1" in plan.planning["temporal"]
    assert make_plan(api.inspect(data), {"temporal.context": 1}).in_channels == 3


@pytest.mark.parametrize("pattern, problem", [("'(?P<sequence>clip'", "not a valid regular"),
                                              ("'clip_f(\\d+)'", "named groups")])
def test_a_broken_sequence_regex_is_one_error_naming_the_file(tmp_path: Path, pattern: str,
                                                               problem: str) -> None:
    data = _clip(tmp_path / "data")
    yaml = data / "seglab.yaml"
    yaml.write_text("\n".join(yaml.read_text().splitlines()[:-1]) + f"\nsequence: {pattern}\n")
    with pytest.raises(SeglabError, match=problem) as error:
        find_dataset(data)
    assert str(yaml) in str(error.value)


def test_the_video_demo_trains_and_predicts_each_frame_with_its_neighbours(
        tmp_path: Path) -> None:
    run, summary = api.demo(tmp_path / "demo", progress=False, task="video",
                            overrides={**TINY_2D, "time_budget_minutes": None})
    assert run.plan().in_channels == 3 and run.plan().temporal["context"] == 1
    assert summary["n_cases"] == 24  # the two test videos' frames, each predicted
    assert len(list((run.path / "predictions" / "test").glob("video*_f*.png"))) == 24
