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
    name: str
    dims: tuple[int, ...]
    build: Callable[..., nn.Module]
    paper: str


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, dims: tuple[int, ...], paper: str):
    """Decorator that adds a model builder to the registry."""

    def wrap(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelEntry(name, dims, build, paper)
        return build

    return wrap


def available() -> list[ModelEntry]:
    return sorted(_REGISTRY.values(), key=lambda entry: entry.name)


def create(name: str, dims: int, in_channels: int, classes: int, **options) -> nn.Module:
    """Builds a registered model; unknown names and unsupported dims are clear errors."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise SeglabError(f"model {name!r} is not registered (available: {sorted(_REGISTRY)})")
    if dims not in entry.dims:
        supported = " and ".join(f"{d}D" for d in entry.dims)
        raise SeglabError(f"model {name!r} exists in {supported} only, not {dims}D")
    return entry.build(dims=dims, in_channels=in_channels, classes=classes, **options)


from seglab.models import unet  # noqa: E402,F401  (registers itself)
