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
