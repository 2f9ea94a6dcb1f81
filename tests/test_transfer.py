"""Fine-tuning from another run: matching weights copied, input channels adapted, the class head
re-initialised and reported, and the encoder frozen for the first epochs when asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab import api, models
from seglab.errors import SeglabError
from seglab.run import load_checkpoint
from seglab.train.transfer import adapt_input_channels, initialise_from
from tests.test_train import TINY_2D


def test_adapted_filter_answers_a_grey_image_in_every_channel_as_the_grey_filter_did() -> None:
    torch.manual_seed(0)
    grey = torch.nn.Conv2d(1, 4, 3)
    colour = torch.nn.Conv2d(3, 4, 3)
    colour.weight.data = adapt_input_channels(grey.weight.data, 3)
    colour.bias.data = grey.bias.data
    image = torch.randn(1, 1, 9, 9)
    assert torch.allclose(colour(image.repeat(1, 3, 1, 1)), grey(image), atol=1e-5)
    back = adapt_input_channels(colour.weight.data, 1)
    assert torch.allclose(back, grey.weight.data, atol=1e-6)


@pytest.fixture
def colour_three_class_dataset(tmp_path: Path) -> Path:
    """images/ + labels/ of 8 RGB 40x48 PNGs with classes 0, 1 (a square) and 2 (a bar)."""
    root = tmp_path / "rgb3"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(3)
    for index in range(8):
        label = np.zeros((40, 48), np.uint8)
        y, x = rng.integers(4, 20, 2)
        label[y:y + 12, x:x + 12] = 1
        label[30:34, 5 + index:40] = 2
        image = rng.normal(60, 8, (40, 48, 3)) + 80 * label[..., None] * [1.0, 0.5, 0.2]
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"c{index}.png")
        Image.fromarray(label).save(root / "labels" / f"c{index}.png")
    return root


def test_fine_tuning_a_grey_two_class_run_on_colour_three_class_data_reports_what_changed(
        png_dataset: Path, colour_three_class_dataset: Path, tmp_path: Path) -> None:
    source = api.train(png_dataset, tmp_path / "source", TINY_2D, progress=False, evaluate=False)
    target = api.train(colour_three_class_dataset, tmp_path / "target",
                       {**TINY_2D, "epochs": 1, "transfer.init_from": str(source.path),
                        "model.name": "unet"},
                       progress=False, evaluate=False)
    report = target.read_json("run.json")["transfer"]
    assert report["from"].endswith("best.pt")
    assert len(report["adapted"]) == 1 and "1 -> 3 input channels" in report["adapted"][0]
    assert report["reinitialised"] == ["net.output_block.conv.conv.weight",
                                       "net.output_block.conv.conv.bias"]
    assert report["loaded"] > 10
    assert target.plan().n_classes == 3 and target.plan().in_channels == 3


def test_initialising_from_an_unrelated_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"model": {"something.else": torch.zeros(3)}}, path)
    net = models.create("unet", 2, 1, 2, widths=[4, 8, 16], strides=[[2, 2]] * 2,
                        kernels=[[3, 3]] * 3)
    with pytest.raises(SeglabError, match="none of its weights fit"):
        initialise_from(net, path)


def test_frozen_encoder_keeps_the_source_weights_while_the_decoder_learns(
        png_dataset: Path, tmp_path: Path) -> None:
    source = api.train(png_dataset, tmp_path / "source", TINY_2D, progress=False, evaluate=False)
    target = api.train(png_dataset, tmp_path / "target",
                       {**TINY_2D, "transfer.init_from": str(source.path),
                        "transfer.freeze_encoder_epochs": 2}, progress=False, evaluate=False)
    before = load_checkpoint(source.path / "checkpoints" / "best.pt")["model"]
    after = load_checkpoint(target.path / "checkpoints" / "last.pt")["model"]
    net = models.create("unet", 2, 1, 2, **{k: v for k, v in target.plan().model.items()
                                             if k != "name"})
    encoder = {id(p) for p in models.encoder_parameters(net)}
    names = {name: id(p) in encoder for name, p in net.named_parameters()}
    assert any(names.values()) and not all(names.values())
    for name, in_encoder in names.items():
        assert torch.equal(before[name], after[name]) == in_encoder, name
