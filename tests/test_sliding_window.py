"""Sliding windows handed on strip by strip: the same blend as MONAI's whole-image inferer, strips
no taller than a window, mirroring per window, and the lazily normalised image it reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from seglab.case import Case
from seglab.device import Precision
from seglab import infer
from seglab.infer import predict_case
from seglab.preprocess import NormalizedView, normalize
from seglab.plan_inference import tta_transforms
from seglab.sliding_window import blended_strips
from tests.conftest import small_plan


def _network(dims: int, channels: int) -> torch.nn.Module:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    return torch.nn.Sequential(conv(channels, 3, 3, padding=1), torch.nn.Softmax(dim=1))


@pytest.mark.parametrize("shape,patch", [((1, 97, 131), (32, 32)), ((1, 5, 7), (16, 16)),
                                         ((1, 40, 12), (16, 16)), ((2, 21, 17, 9), (8, 8, 8))])
def test_strips_blend_as_monai_blends_the_whole_image(shape, patch) -> None:
    network = _network(len(patch), shape[0])
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    whole = sliding_window_inference(torch.from_numpy(image)[None], patch, 4, network,
                                     overlap=0.5, mode="gaussian", padding_mode="constant")[0]
    strips = list(blended_strips(image, patch, network, overlap=0.5))
    rows = [r for r, _ in strips]
    assert rows[0].start == 0 and rows[-1].stop == shape[1]
    assert all(a.stop == b.start for a, b in zip(rows, rows[1:]))  # in order, each row once
    assert all(r.stop - r.start <= patch[0] for r in rows)  # never more than a window held
    # equal to float rounding: the sums' order differs where the image is padded (a 2-core AMD
    # EPYC rounds the last bit differently; a Xeon gave equal tensors)
    torch.testing.assert_close(torch.cat([p[0] for _, p in strips], dim=1), whole.detach(),
                               rtol=1e-6, atol=1e-7)


def test_mirroring_averages_each_window_with_its_flips_and_can_keep_the_passes_apart() -> None:
    image = np.random.default_rng(1).normal(size=(1, 40, 36)).astype(np.float32)
    network = _network(2, 1)
    flipped = image[:, :, ::-1].copy()
    plain = torch.cat([p[0] for _, p in blended_strips(image, (16, 16), network, overlap=0.5)],
                      dim=1)
    mirrored_input = torch.cat([p[0] for _, p in blended_strips(flipped, (16, 16), network,
                                                                overlap=0.5)], dim=1)
    passes = torch.cat([p for _, p in blended_strips(image, (16, 16), network, overlap=0.5,
                                                     mirror_axes=[1], separate_passes=True)],
                       dim=2)
    mean = torch.cat([p[0] for _, p in blended_strips(image, (16, 16), network, overlap=0.5,
                                                      mirror_axes=[1])], dim=1)
    assert passes.shape == (2, 3, 40, 36)
    torch.testing.assert_close(passes[0], plain)
    # 36 = 16 + 2 x 8 + 4: the grid is not symmetric, so the mirrored pass is the flipped
    # windows' blend, not the blend of the flipped image
    assert not torch.allclose(passes[1], mirrored_input.flip(2), atol=1e-4)
    torch.testing.assert_close(mean, passes.mean(0))


def test_quarter_turns_are_the_eight_symmetries_of_the_square_each_turned_back() -> None:
    transforms = tta_transforms(2, [0, 1], quarter_turns=True)
    assert len(set(transforms)) == 8 and transforms[0] == (0, ())
    assert tta_transforms(2, [0, 1]) == [(0, ()), (0, (0,)), (0, (1,))]
    image = np.random.default_rng(2).normal(size=(1, 40, 40)).astype(np.float32)
    network = _network(2, 1)
    passes = torch.cat([p for _, p in blended_strips(image, (40, 40), network, overlap=0.5,
                                                     quarter_turns=True, separate_passes=True)],
                       dim=2)
    window = torch.from_numpy(image)[None]
    for (turns, flip), seen in zip(transforms, passes):
        dims = [axis + 2 for axis in flip]
        turned = torch.rot90(window.flip(dims) if dims else window, turns, (-2, -1))
        expected = torch.rot90(network(turned), -turns, (-2, -1))
        torch.testing.assert_close(seen, (expected.flip(dims) if dims else expected)[0].detach())
    assert not torch.allclose(passes[1], passes[0], atol=1e-4)  # the network is no symmetric one
    mean = torch.cat([p[0] for _, p in blended_strips(image, (40, 40), network, overlap=0.5,
                                                      quarter_turns=True)], dim=1)
    torch.testing.assert_close(mean, passes.mean(0))


def test_a_mask_made_strip_by_strip_equals_the_argmax_of_the_whole_probabilities(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plan = small_plan((16, 16))
    plan.inference = {"overlap": 0.5, "blend": "gaussian", "batch_size": 3, "mirror_axes": [0]}
    image = np.random.default_rng(2).normal(size=(1, 70, 45)).astype(np.float32) * 3 + 5
    case = Case("c", image, (1.0, 1.0))
    network = torch.nn.Conv2d(1, 2, 3, padding=1)
    precision = Precision.choose("cpu", "fp32", "off")
    mask, probs = predict_case(network, case, plan, precision)

    def whole_image(*args, **kwargs):
        raise AssertionError("the whole image's probabilities were made")

    monkeypatch.setattr(infer, "sliding_window_predict", whole_image)
    streamed, none = predict_case(network, case, plan, precision, probabilities=False)
    assert none is None and streamed.dtype == np.uint8
    assert np.array_equal(streamed, mask) and np.array_equal(mask, probs.argmax(0))
    assert 0.1 < mask.mean() < 0.9


def test_a_normalised_view_gives_the_windows_of_the_normalised_image() -> None:
    image = np.random.default_rng(3).normal(4, 3, size=(2, 50, 30)).astype(np.float32)
    roi = np.zeros((50, 30), bool)
    roi[10:40, 5:25] = True
    plan = small_plan((8, 8))
    for inside in (None, roi):
        whole = normalize(image, plan, inside)
        values = image[0][inside] if inside is not None else image[0]
        np.testing.assert_allclose(whole[0].mean() if inside is None else whole[0][roi].mean(),
                                   0, atol=1e-5)
        np.testing.assert_allclose(whole[0], (image[0] - values.mean()) / values.std(),
                                   rtol=1e-5, atol=1e-5)
        window = (slice(None), slice(7, 23), slice(3, 19))
        np.testing.assert_array_equal(NormalizedView(image, plan, inside)[window], whole[window])
    plan.normalization = {"scheme": "ct", "channels": [{"clip": [0, 5], "mean": 2, "std": 4}] * 2}
    np.testing.assert_allclose(normalize(image, plan), (np.clip(image, 0, 5) - 2) / 4)


def test_a_normalised_view_of_stored_integers_equals_that_of_their_floats() -> None:
    image = np.random.default_rng(4).integers(0, 256, size=(1, 40, 30), dtype=np.uint8)
    plan = small_plan((8, 8))
    window = (slice(None), slice(5, 21), slice(2, 18))
    np.testing.assert_array_equal(NormalizedView(image, plan)[window],
                                  NormalizedView(image.astype(np.float32), plan)[window])
