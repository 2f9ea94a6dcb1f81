"""Class activation maps: a small network trained to find one bright square (2D) or cube (3D)
puts most of its map's mass there; the explained layer is the last one before the head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from seglab import models
from seglab.case import Case
from seglab.errors import SeglabError
from seglab.explain import explain_case, last_feature_layer
from tests.conftest import small_plan


def _square_case(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Noise with one bright square (cube) of side 6 somewhere; its mask."""
    image = rng.normal(0.0, 1.0, shape).astype(np.float32)
    corner = [int(rng.integers(2, s - 8)) for s in shape]
    region = tuple(slice(c, c + 6) for c in corner)
    mask = np.zeros(shape, np.int64)
    mask[region] = 1
    image[region] += 4.0
    return image, mask


def _trained(dims: int, shape: tuple[int, ...]) -> torch.nn.Module:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = models.create("unet", dims, 1, 2, widths=[8, 16, 16], kernels=[[3] * dims] * 3,
                          strides=[[2] * dims] * 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60 if dims == 2 else 40):
        pairs = [_square_case(rng, shape) for _ in range(4)]
        images = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None]
        labels = torch.from_numpy(np.stack([p[1] for p in pairs]))
        loss = F.cross_entropy(model(images), labels, weight=torch.tensor([1.0, 5.0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize(("dims", "shape"), [(2, (40, 40)), (3, (20, 20, 20))])
def test_the_map_of_a_network_that_finds_one_square_lies_mostly_on_it(
        dims: int, shape: tuple[int, ...]) -> None:
    model = _trained(dims, shape)
    image, mask = _square_case(np.random.default_rng(123), shape)
    case = Case("c", image[None], (1.0,) * dims)
    cam = explain_case(model, case, small_plan(shape), 1)
    assert cam.shape == shape and 0 <= cam.min() and cam.max() <= 1
    near = ndimage.binary_dilation(mask > 0, iterations=2)
    assert cam[near].sum() / cam.sum() > 0.5  # the square (and its rim) is a small part
    assert near.mean() < 0.25


def test_the_explained_layer_is_the_one_whose_output_the_head_reads() -> None:
    head = torch.nn.Conv2d(4, 3, 1)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), head)
    assert last_feature_layer(model, torch.zeros(1, 1, 16, 16), 3) is model[1]
    unet = models.create("unet", 2, 1, 3, widths=[4, 8, 8], kernels=[[3, 3]] * 3,
                         strides=[[2, 2]] * 2)
    layer = last_feature_layer(unet, torch.zeros(1, 1, 16, 16), 3)
    assert not isinstance(layer, torch.nn.Conv2d)  # the block's output, after its activation


def test_an_unknown_method_is_refused() -> None:
    model = models.create("unet", 2, 1, 2, widths=[4, 8, 8], kernels=[[3, 3]] * 3,
                          strides=[[2, 2]] * 2)
    case = Case("c", np.zeros((1, 16, 16), np.float32), (1.0, 1.0))
    with pytest.raises(SeglabError, match="--method scorecam: expected one of gradcam"):
        explain_case(model, case, small_plan((16, 16)), 1, method="scorecam")


def test_seglab_explain_writes_maps_and_png_overlays_for_a_run(tmp_path) -> None:
    from PIL import Image

    from seglab import api
    from tests.conftest import write_disc_dataset
    from tests.test_train import TINY_2D

    data = write_disc_dataset(tmp_path / "pngs", seed=1)
    run = api.train(data, tmp_path / "run", TINY_2D, progress=False, evaluate=False)
    name = run.plan().classes[1]
    written = api.explain(run.path, [data / "images" / "case00.png"], tmp_path / "cams")
    assert [p.name for p in written] == ["case00_maps.npz", f"case00_cam_{name}.png"]
    with np.load(written[0]) as maps:
        assert maps[f"cam_{name}"].shape == (40, 48)
    assert Image.open(written[1]).size == (48, 40)
    with pytest.raises(SeglabError, match="--class nope: not a foreground class"):
        api.explain(run.path, [data / "images" / "case00.png"], tmp_path / "c2", "nope")
