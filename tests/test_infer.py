"""Sliding-window inference over any size, and the mapping of predictions back to stored values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.infer import output_value_map, sliding_window_predict
from seglab.infer_inputs import with_tta
from tests.conftest import small_plan


class SignModel(torch.nn.Module):
    """Class 1 wherever the input is positive: a model whose right answer is known everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x[:, :1], x[:, :1]], dim=1) * 10


@pytest.mark.parametrize("shape,patch", [((97, 131), (32, 32)), ((5, 7), (16, 16)),
                                         ((21, 17, 9), (8, 8, 8))])
def test_sliding_window_covers_any_size_with_the_exact_answer(shape, patch) -> None:
    plan = small_plan(patch)
    plan.inference = {"overlap": 0.5, "blend": "gaussian", "batch_size": 4, "mirror_axes": [0]}
    image = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    probs = sliding_window_predict(SignModel(), image, plan, Precision.choose("cpu", "fp32"))
    assert probs.shape == (2, *shape)
    assert torch.allclose(probs.sum(0), torch.ones(shape), atol=1e-5)
    assert np.array_equal(probs.argmax(0).numpy(), image[0] > 0)


def test_predictions_are_written_back_in_the_datasets_own_values() -> None:
    plan = small_plan((8, 8))
    plan.label_values = {255: 0, 0: 1}
    assert output_value_map(plan) == {0: 255, 1: 0}
    plan.label_values = {0: 0, 1: 1}
    assert output_value_map(plan) is None
    plan.label_values = {0: 1, 32: 1, 255: 0}
    assert output_value_map(plan) is None
    plan.label_values = {255: 1}  # partial: class 0 is stored as 0
    assert output_value_map(plan) == {0: 0, 1: 255}


def test_volumes_are_resampled_to_the_target_spacing_and_predicted_back_on_their_own_grid() -> None:
    from seglab.case import Case
    from seglab.infer import predict_case
    from seglab.preprocess import prepare_case

    plan = small_plan((8, 8, 8))
    plan.inference = {"overlap": 0.5, "blend": "gaussian", "batch_size": 4, "mirror_axes": []}
    plan.target_spacing = [1.8, 1.8, 2.0]
    image = np.full((1, 20, 18, 9), -1.0, np.float32)
    image[:, 5:15, 4:14, 2:7] = 3.0
    case = Case("v", image, (0.9, 0.9, 2.0))
    assert prepare_case(case, plan).image.shape == (1, 10, 9, 9)
    mask, probs = predict_case(SignModel(), case, plan, Precision.choose("cpu", "fp32"))
    assert mask.shape == (20, 18, 9) and probs.shape == (2, 20, 18, 9)
    assert (mask == (image[0] > 0)).mean() > 0.95


def test_tta_keeps_the_plans_mirroring_unless_the_user_turns_it_on_or_off() -> None:
    plan = small_plan((8, 8, 8))
    plan.inference = {"mirror_axes": [2]}
    assert with_tta(plan, "on").inference["mirror_axes"] == [0, 1, 2]
    assert with_tta(plan, "off").inference["mirror_axes"] == []
    assert with_tta(plan, "plan").inference["mirror_axes"] == [2]
    assert plan.inference == {"mirror_axes": [2]}  # the run's plan is not changed
    with pytest.raises(SeglabError, match="expected plan, on or off"):
        with_tta(plan, "auto")
