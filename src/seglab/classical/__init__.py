"""The classical segmenters beside the deep models: `create(name, **params)`.

Each method maps a (C, *spatial) image, and optionally its ROI, to ordered output levels (darkest
first) and those to classes: by intensity order and `polarity` by default, or as chosen by
`fit_method` on a few labelled training images (polarity, level -> class map, channel and a small
grid of the method's own parameters, by Dice). Every method takes `channel`, `polarity`,
`classes` and `mapping` besides its own parameters; see each class for when to use it.

| name | dims | method | built on |
|---|---|---|---|
| otsu | 2, 3 | Otsu, IEEE TSMC 1979 | skimage threshold_otsu |
| multiotsu | 2, 3 | Liao, Chen, Chung, J. Inf. Sci. Eng. 2001 | skimage threshold_multiotsu |
| li | 2, 3 | Li and Tam, Pattern Recognition Letters 1998 | skimage threshold_li |
| triangle | 2, 3 | Zack, Rogers, Latt, J. Histochem. Cytochem. 1977 | skimage threshold_triangle |
| adaptive | 2, 3 | local (Gaussian-weighted mean) threshold | skimage threshold_local |
| kmeans | 2, 3 | Lloyd's k-means with k-means++ start | scipy kmeans2 |
| region_growing | 2, 3 | seeded region growing | skimage label |
| watershed | 2, 3 | Beucher and Meyer 1993, marker-based | skimage watershed, sobel |
| random_walker | 2, 3 | Grady, IEEE TPAMI 2006 | skimage random_walker |
| slic | 2, 3 | Achanta et al., IEEE TPAMI 2012, per-superpixel vote | skimage slic |
| vesselness | 2, 3 | Frangi et al., MICCAI 1998, top fraction of the response | skimage frangi |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from seglab.classical.base import Segmenter
from seglab.errors import SeglabError


@dataclass(frozen=True)
class MethodEntry:
    name: str
    dims: tuple[int, ...]
    cls: type[Segmenter]

    @property
    def summary(self) -> str:
        """The first sentence of the method's docstring."""
        return re.split(r"(?<! al)\. ", " ".join((self.cls.__doc__ or "").split()))[0]


_REGISTRY: dict[str, MethodEntry] = {}


def register(cls: type[Segmenter]) -> type[Segmenter]:
    """Class decorator that adds a segmenter to the registry under its `name`."""
    _REGISTRY[cls.name] = MethodEntry(cls.name, cls.dims, cls)
    return cls


def available() -> list[MethodEntry]:
    return sorted(_REGISTRY.values(), key=lambda entry: entry.name)


def is_method(name: str) -> bool:
    return name in _REGISTRY


def entry(name: str) -> MethodEntry:
    found = _REGISTRY.get(name)
    if found is None:
        raise SeglabError(f"classical method {name!r} is not registered (available: "
                          f"{', '.join(sorted(_REGISTRY))})")
    return found


def create(name: str, **params: Any) -> Segmenter:
    """A registered segmenter with `params`; unknown names and parameters, and values a parameter
    does not take, are one-line errors that list what is allowed."""
    return entry(name).cls(**params)


# The methods register themselves on import.
from seglab.classical import clustering, regions, ridges, thresholds  # noqa: E402,F401
