"""What every classical segmenter shares: checked parameters, the intensity it works on (one
channel or a blend, scaled to [0, 1] inside the region of interest), and the map from its ordered
output levels to classes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
from skimage.filters import threshold_multiotsu, threshold_otsu

from seglab.errors import SeglabError

LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 weights of R, G, B


@dataclass(frozen=True)
class Param:
    """One parameter: its default, what it means, and the test a given value must pass."""

    default: Any
    doc: str
    check: Callable[[Any], bool]
    expected: str


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(default: int, doc: str, low: int, odd: bool = False) -> Param:
    return Param(default, doc, lambda v: _is_int(v) and v >= low and (not odd or v % 2 == 1),
                 f"{'an odd' if odd else 'an'} integer >= {low}")


def number(default: float, doc: str, low: float, high: float) -> Param:
    return Param(default, doc, lambda v: (_is_int(v) or isinstance(v, float)) and low <= v <= high,
                 f"a number in [{low:g}, {high:g}]")


def choice(default: str, doc: str, options: tuple[str, ...]) -> Param:
    return Param(default, doc, lambda v: v in options, " or ".join(options))


def _is_mapping(value: Any) -> bool:
    return value is None or (isinstance(value, list) and bool(value)
                             and all(_is_int(v) and v >= 0 for v in value))


COMMON: dict[str, Param] = {
    "channel": Param("auto", "the intensity: a channel index (CHASE fundus vessels: 1, the green "
                     "channel), 'luminance' (RGB), 'mean', or 'auto' (luminance for 3 channels, "
                     "else the mean); fitting tries each channel when it is not given",
                     lambda v: v in ("auto", "luminance", "mean") or (_is_int(v) and v >= 0),
                     "a channel index, auto, luminance or mean"),
    "polarity": choice("bright", "whether the foreground (the highest class) is the bright or the "
                       "dark end of the intensity order", ("bright", "dark")),
    "classes": integer(2, "output classes (a fitted method takes the dataset's)", low=2),
    "mapping": Param(None, "the class of each output level, darkest level first, e.g. [0, 1, 0]; "
                     "default: from the polarity; fitting chooses it by Dice",
                     _is_mapping, "a list of class indices such as [0, 1]"),
}


_REMEMBERED: dict[tuple, np.ndarray] | None = None  # see remembering_responses


@contextmanager
def remembering_responses() -> Iterator[None]:
    """While fitting or evaluating, a method may keep the costly part of its work that the
    parameters being tried, or a second look, do not change (`Segmenter.remembered`): vesselness
    filters each image once per channel and polarity, not once per `fraction`, and its score
    reuses its segmentation's filtering. Nothing is kept otherwise, so that timings are those of
    a first look at each image."""
    global _REMEMBERED
    _REMEMBERED = {}
    try:
        yield
    finally:
        _REMEMBERED = None


@dataclass
class Inputs:
    """The image as a method sees it. intensity: (*spatial) float32 in [0, 1] (the 0.5-99.5
    percentiles inside the ROI); filled: the same with the outside of the ROI set to the median
    inside, so that filters see no rim; values: the intensities inside the ROI; image: as given."""

    image: np.ndarray
    intensity: np.ndarray
    filled: np.ndarray
    values: np.ndarray
    roi: np.ndarray | None


def scale(array: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """`array` mapped to [0, 1] by the 0.5 and 99.5 percentiles of the pixels `inside`."""
    low, high = np.percentile(inside, [0.5, 99.5])
    span = high - low if high > low else 1.0
    return np.clip((array - low) / span, 0.0, 1.0).astype(np.float32)


def reduce_channels(image: np.ndarray, channel: str | int) -> np.ndarray:
    """One intensity (*spatial) from a (C, *spatial) image."""
    count = image.shape[0]
    if _is_int(channel):
        if channel >= count:
            raise SeglabError(f"channel={channel}: the image has {count} channel(s), "
                              f"0..{count - 1}")
        return image[channel].astype(np.float32)
    if channel == "luminance" or (channel == "auto" and count == 3):
        if count != 3:
            raise SeglabError(f"channel=luminance: needs 3 (RGB) channels, the image has {count}")
        return np.tensordot(LUMINANCE, image.astype(np.float32), axes=1)
    return image.mean(axis=0, dtype=np.float32)


def prepare(image: np.ndarray, roi: np.ndarray | None, channel: str | int) -> Inputs:
    raw = reduce_channels(image, channel)
    if roi is not None and not roi.any():
        roi = None  # an empty field of view: the whole image rather than nothing
    intensity = scale(raw, raw[roi] if roi is not None else raw)
    values = intensity[roi] if roi is not None else intensity.ravel()
    filled = intensity
    if roi is not None:
        filled = np.where(roi, intensity, np.median(values)).astype(np.float32)
    return Inputs(image, intensity, filled, values, roi)


def band_thresholds(values: np.ndarray, levels: int) -> np.ndarray:
    """Otsu's threshold (2 levels) or the multi-Otsu thresholds (more) of `values`."""
    if values.min() == values.max():
        return np.full(levels - 1, values.min())
    if levels == 2:
        return np.array([threshold_otsu(values)])
    try:
        return threshold_multiotsu(values, classes=levels)
    except ValueError as error:  # fewer distinct intensities than levels
        raise SeglabError(f"levels={levels}: {error}")


def order_mapping(levels: int, classes: int, polarity: str) -> list[int]:
    """Levels (darkest first) -> classes by intensity order: the darkest level is background and
    the brightest levels take the classes from the top (mirrored for a dark foreground)."""
    bright = [0] + [max(0, level - levels + classes) for level in range(1, levels)]
    return bright if polarity == "bright" else bright[::-1]


class Segmenter:
    """A classical segmenter. Subclasses set `name`, `dims`, `params`, `grid` (the values fitting
    tries), maybe `fit_cases`, and implement `partition` (levels 0..n_levels-1, darkest first
    where that means anything)."""

    name: ClassVar[str] = ""
    dims: ClassVar[tuple[int, ...]] = (2, 3)
    params: ClassVar[dict[str, Param]] = {}
    grid: ClassVar[dict[str, list]] = {}
    fit_cases: ClassVar[int | None] = None  # fewer fitting images for the slow methods
    # The level -> class map of methods whose levels mean one thing only (a strong vesselness
    # response is the vessel, never the background), by default and when fitted; None: by
    # intensity order and polarity by default, chosen by Dice when fitted.
    fixed_mapping: ClassVar[list[int] | None] = None

    def __init__(self, **given: Any) -> None:
        allowed = {**COMMON, **self.params}
        for key, value in given.items():
            if key not in allowed:
                raise SeglabError(f"{self.name}: unknown parameter {key!r} (its parameters: "
                                  f"{', '.join(allowed)})")
            if not allowed[key].check(value):
                raise SeglabError(f"{self.name}: {key}={value!r}: expected "
                                  f"{allowed[key].expected}")
        self.given = dict(given)
        self.values = {key: param.default for key, param in allowed.items()} | self.given
        mapping = self.values["mapping"]
        if mapping is not None and (len(mapping) != self.n_levels
                                    or max(mapping) >= self.values["classes"]):
            raise SeglabError(f"{self.name}: mapping={mapping}: expected {self.n_levels} class "
                              f"indices below classes={self.values['classes']}")

    @property
    def n_levels(self) -> int:
        return 2

    def default_mapping(self) -> list[int]:
        return self.fixed_mapping or order_mapping(self.n_levels, self.values["classes"],
                                                   self.values["polarity"])

    def mapping(self) -> list[int]:
        return self.values["mapping"] or self.default_mapping()

    def partition(self, x: Inputs) -> np.ndarray:
        raise NotImplementedError

    def levels(self, image: np.ndarray, roi: np.ndarray | None = None) -> np.ndarray:
        """The output levels (*spatial, int) of a (C, *spatial) image, before the class map."""
        if image.ndim - 1 not in self.dims:
            supported = " and ".join(f"{d}D" for d in self.dims)
            raise SeglabError(f"{self.name}: works on {supported} images, not {image.ndim - 1}D")
        return self.partition(prepare(image, roi, self.values["channel"]))

    def response(self, x: Inputs) -> np.ndarray:
        """The continuous map that a two-level method separates, level 1 at the high end: by
        default the intensity itself."""
        return x.intensity

    def remembered(self, x: Inputs, key: tuple, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """`compute()`, kept while fitting or evaluating for the same image (as scaled, with its
        ROI) and `key` (the parameters it depends on)."""
        if _REMEMBERED is None:
            return compute()
        digest = hashlib.blake2b(x.filled.tobytes(), digest_size=16)
        if x.roi is not None:
            digest.update(np.packbits(x.roi).tobytes())
        full = (self.name, digest.digest(), x.filled.shape, *key)
        if full not in _REMEMBERED:
            _REMEMBERED[full] = compute()
        return _REMEMBERED[full]

    def score(self, image: np.ndarray, roi: np.ndarray | None = None) -> np.ndarray | None:
        """A foreground score (*spatial, float) for ROC curves: the response, negated when the
        mapping makes its low level the foreground; None for a method with more than two
        levels or classes, where no single ordering exists."""
        if self.n_levels != 2 or self.values["classes"] != 2:
            return None
        response = self.response(prepare(image, roi, self.values["channel"]))
        return response if self.mapping() == [0, 1] else -response

    def segment(self, image: np.ndarray, roi: np.ndarray | None = None) -> np.ndarray:
        """The class-index mask (uint8, *spatial); outside the ROI is background."""
        mask = np.asarray(self.mapping(), dtype=np.uint8)[self.levels(image, roi)]
        if roi is not None:
            mask[~roi] = 0
        return mask

    def describe(self) -> str:
        """Every parameter's value in one line, e.g. for a comparison row."""
        return ", ".join(f"{key}={value}" for key, value in self.values.items()
                         if key != "mapping") + f", mapping={self.mapping()}"
