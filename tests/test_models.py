"""The models registry."""

from __future__ import annotations

import pytest
import torch

from seglab import models
from seglab.errors import SeglabError


@pytest.mark.parametrize("dims,shape", [(2, (32, 48)), (3, (16, 16, 8))])
def test_unet_maps_channels_to_class_logits_at_full_resolution(dims, shape) -> None:
    net = models.create("unet", dims, in_channels=3, classes=5, widths=[8, 16, 32],
                        strides=[[2] * dims] * 2)
    assert net(torch.zeros(2, 3, *shape)).shape == (2, 5, *shape)


def test_unknown_model_and_unsupported_dims_are_clear_errors(monkeypatch) -> None:
    with pytest.raises(SeglabError, match="not registered"):
        models.create("nonet", 2, 1, 2)
    monkeypatch.setitem(models._REGISTRY, "flat_only",
                        models.ModelEntry("flat_only", (2,), lambda **kw: torch.nn.Identity(), "-"))
    with pytest.raises(SeglabError, match="2D only"):
        models.create("flat_only", 3, 1, 2)


def test_registry_lists_every_model_with_its_paper() -> None:
    entry = next(e for e in models.available() if e.name == "unet")
    assert entry.dims == (2, 3) and "Ronneberger" in entry.paper


def test_model_cost_counts_parameters_and_flops_of_a_known_convolution(monkeypatch) -> None:
    from seglab.models.summary import model_cost, models_table

    def one_conv(dims, in_channels, classes):
        return torch.nn.Conv2d(in_channels, classes, 3, padding=1)

    monkeypatch.setitem(models._REGISTRY, "conv", models.ModelEntry("conv", (2,), one_conv, "-"))
    cost = model_cost("conv", 2, 1, 2, (8, 8))
    assert cost["params_m"] * 1e6 == pytest.approx(2 * 9 + 2)
    assert cost["gflops"] * 1e9 == pytest.approx(2 * 9 * 2 * 64)
    table = models_table((64, 64), (32, 32, 32))
    assert "conv     2D" in table and "unet     3D" in table
