"""The models registry: `create(name, dims, in_channels, classes, **options)`.

Every model maps a (B, in_channels, *spatial) tensor to (B, classes, *spatial) logits.

| name | dims | paper |
|---|---|---|
| unet | 2, 3 | Ronneberger et al., "U-Net", MICCAI 2015; configured from the plan as in nnU-Net (Isensee et al., Nature Methods 2021) |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from seglab.errors import SeglabError


@dataclass(frozen=True)
class ModelEntry:
    """`defaults(dims, topology)` gives the model's plan options; `topology` is the planner's
    {"widths", "kernels", "strides"} for the dataset (per-stage, anisotropy-aware)."""

    name: str
    dims: tuple[int, ...]
    build: Callable[..., nn.Module]
    paper: str
    defaults: Callable[[int, dict], dict] | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, dims: tuple[int, ...], paper: str,
             defaults: Callable[[int, dict], dict] | None = None):
    """Decorator that adds a model builder to the registry."""

    def wrap(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelEntry(name, dims, build, paper, defaults)
        return build

    return wrap


def available() -> list[ModelEntry]:
    return sorted(_REGISTRY.values(), key=lambda entry: entry.name)


def entry(name: str) -> ModelEntry:
    found = _REGISTRY.get(name)
    if found is None:
        raise SeglabError(f"model {name!r} is not registered (available: {sorted(_REGISTRY)})")
    return found


def default_options(name: str, dims: int, topology: dict) -> dict:
    """The plan's `model` section for `name`: its name and its options for this dataset."""
    found = entry(name)
    return {"name": name, **(found.defaults(dims, topology) if found.defaults else {})}


def create(name: str, dims: int, in_channels: int, classes: int, **options) -> nn.Module:
    """Builds a registered model; unknown names and unsupported dims are clear errors."""
    found = entry(name)
    if dims not in found.dims:
        supported = " and ".join(f"{d}D" for d in found.dims)
        raise SeglabError(f"model {name!r} exists in {supported} only, not {dims}D")
    return found.build(dims=dims, in_channels=in_channels, classes=classes, **options)


from seglab.models import unet  # noqa: E402,F401  (registers itself)
