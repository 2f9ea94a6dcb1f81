"""Checks a plan's plain dict (`Plan.to_dict()`, after overrides) field by field.

`check_plan` raises `SeglabError` with one line naming the field, the value and what was expected,
e.g. `plan field 'epochs': expected an integer >= 1, got 'abc'`. The `PLAN` table at the end is
the schema: what a plan may hold, field by field. A bool is not an integer; an integer is a
number; `DIMS` stands for the plan's own `dims`. The `model` options come from the builder's
signature and type hints (`int` and `list[int]`: integers >= 1, `float`: a number >= 0), the
`loss` parameters from `LOSS_DEFAULTS` below (each of the kind of its default).
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from seglab.errors import SeglabError

DIMS = "dims"  # a list length or bound that is the plan's own `dims`
MODEL_INPUTS = ("dims", "in_channels", "classes")  # builder arguments that come from the plan


@dataclass(eq=False)
class Spec:
    """What a value may be: `test(value, dims)` says whether it fits, `text(dims, plural)` says
    what fits, `inner(value, path, dims)` then checks its parts (raising on the first misfit)."""

    text: Callable[[int, bool], str]
    test: Callable[[Any, int], bool]
    inner: Callable[[Any, str, int], None] = lambda value, path, dims: None

    def check(self, value: Any, path: str, dims: int) -> None:
        if not self.test(value, dims):
            raise _error(path, f"expected {self.text(dims, False)}, got {_show(value)}")
        self.inner(value, path, dims)


def _error(path: str, problem: str) -> SeglabError:
    return SeglabError(f"plan field {path!r}: {problem}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _resolve(n: Any, dims: int) -> Any:
    return dims if n == DIMS else n


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _is_json(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, str)) or _is_number(value)


def _kind(singular: str, plural: str, test: Callable[[Any], bool]) -> Spec:
    return Spec(lambda d, p: plural if p else singular, lambda v, d: test(v))


def _ranged(kind: Spec, low: Any, high: Any, open_low: bool, open_high: bool) -> Spec:
    """`kind` between `low` and `high` (None: unbounded; DIMS: the plan's dims)."""
    def bounds(d: int) -> str:
        lo, hi = _resolve(low, d), _resolve(high, d)
        if lo is not None and hi is not None:
            return f" in {'(' if open_low else '['}{lo}, {hi}{')' if open_high else ']'}"
        return f" {'>' if open_low else '>='} {lo}" if lo is not None else ""

    def fits(v: Any, d: int) -> bool:
        lo, hi = _resolve(low, d), _resolve(high, d)
        return (kind.test(v, d) and (lo is None or v > lo or (v == lo and not open_low))
                and (hi is None or v < hi or (v == hi and not open_high)))
    return Spec(lambda d, p: kind.text(d, p) + bounds(d), fits)


def integer(min: Any = None, max: Any = None, open_max: bool = False) -> Spec:
    return _ranged(INT, min, max, False, open_max)


def number(min: float | None = None, max: float | None = None, open_min: bool = False,
           open_max: bool = False) -> Spec:
    return _ranged(NUMBER, min, max, open_min, open_max)


def choice(*options: str) -> Spec:
    names = ", ".join(repr(o) for o in options)
    return Spec(lambda d, p: f"{'any' if p else 'one'} of {names}",
                lambda v, d: isinstance(v, str) and v in options)


def either(*specs: Spec) -> Spec:
    """A value that fits any of `specs` (the first that fits checks its parts)."""
    def inner(value: Any, path: str, dims: int) -> None:
        next(s for s in specs if s.test(value, dims)).inner(value, path, dims)
    return Spec(lambda d, p: " or ".join(s.text(d, p) for s in specs),
                lambda v, d: any(s.test(v, d) for s in specs), inner)


def optional(spec: Spec) -> Spec:
    return either(spec, NULL)


def list_of(item: Spec, length: Any = None, min_length: int = 0, ordered: bool = False) -> Spec:
    """A list of `item`s; `ordered`: a [low, high] pair with low <= high."""
    def count(d: int) -> str:
        n = _resolve(length, d)
        return f"{n} " if n is not None else f"at least {min_length} " if min_length else ""

    def inner(value: list, path: str, dims: int) -> None:
        for index, element in enumerate(value):
            item.check(element, f"{path}[{index}]", dims)
        if ordered and value[0] > value[1]:
            raise _error(path, f"expected low <= high, got {_show(value)}")
    noun = ("pairs [low, high]", "a pair [low, high]") if ordered else ("lists", "a list")
    return Spec(lambda d, p: f"{noun[not p]} of {'' if ordered else count(d)}{item.text(d, True)}",
                lambda v, d: isinstance(v, list) and len(v) >= min_length
                and (length is None or len(v) == _resolve(length, d)), inner)


def pair(item: Spec) -> Spec:
    return list_of(item, length=2, ordered=True)


def mapping(key: Spec, value: Spec) -> Spec:
    def inner(data: dict, path: str, dims: int) -> None:
        for k, v in data.items():
            if not key.test(k, dims):
                raise _error(path, f"expected keys: {key.text(dims, True)}, got key {_show(k)}")
            value.check(v, f"{path}.{k}", dims)
    return Spec(lambda d, p: f"{'mappings' if p else 'a mapping'} of {key.text(d, True)} to "
                             f"{value.text(d, True)}", lambda v, d: isinstance(v, dict), inner)


def section(fields: dict[str, Spec], optional: tuple[str, ...] = (), hint: str | None = None,
            after: Callable[[dict, str, int], None] | None = None) -> Spec:
    """An object with exactly these fields (all required but `optional`); `after` checks what
    concerns several fields; `hint` lists the known names in an unknown-field error."""
    def inner(data: dict, path: str, dims: int) -> None:
        prefix = f"{path}." if path else ""
        for name in data:
            if name not in fields:
                where = f"fields of {path!r}" if path else "fields of the plan"
                known = hint or f"{where}: {', '.join(sorted(fields))}"
                raise _error(f"{prefix}{name}", f"unknown ({known})")
        for name, spec in fields.items():
            if name in data:
                spec.check(data[name], prefix + name, dims)
            elif name not in optional:
                raise _error(prefix + name, f"missing (expected {spec.text(dims, False)})")
        if after:
            after(data, path, dims)
    return Spec(lambda d, p: f"{'objects' if p else 'an object'} with fields {', '.join(fields)}",
                lambda v, d: isinstance(v, dict), inner)


def variant(key: str, sections: Callable[[int], dict[str, Spec]]) -> Spec:
    """An object whose `key` (e.g. "name") picks its section among `sections(dims)`."""
    def inner(data: dict, path: str, dims: int) -> None:
        choices = sections(dims)
        if key not in data:
            raise _error(f"{path}.{key}", f"missing (expected one of {', '.join(choices)})")
        choice(*choices).check(data[key], f"{path}.{key}", dims)
        choices[data[key]].inner(data, path, dims)
    return Spec(lambda d, p: f"{'objects' if p else 'an object'} with a {key!r}",
                lambda v, d: isinstance(v, dict), inner)


INT = _kind("an integer", "integers", _is_int)
NUMBER = _kind("a number", "numbers", _is_number)
NULL = _kind("null", "nulls", lambda v: v is None)
ANY = _kind("any JSON value", "JSON values", _is_json)
STRING = _kind("a string", "strings", lambda v: isinstance(v, str))
BOOLEAN = _kind("true or false", "booleans", lambda v: isinstance(v, bool))
DIGITS = _kind("an integer", "integers (or strings of digits)",
               lambda v: _is_int(v) or (isinstance(v, str) and v.lstrip("-").isdigit()))
COUNT = integer(min=1)
POSITIVE = number(min=0, open_min=True)
AXIS = integer(min=0, max=DIMS, open_max=True)
FRACTION = number(min=0, max=1, open_max=True)
PROBABILITY = number(min=0, max=1)

# Model options: a builder's type hints -> specs; some options are narrowed by name or model.
ANNOTATIONS: dict[Any, Spec] = {bool: BOOLEAN, int: COUNT, float: number(min=0), str: STRING,
                                Path: STRING, list: list_of(ANY)}
OPTION_SPECS: dict[str, Spec] = {"dropout": FRACTION}
UNET_OPTIONS = {"kernels": optional(list_of(list_of(COUNT, length=DIMS), min_length=1)),
                "strides": optional(list_of(list_of(COUNT, length=DIMS)))}


def _from_annotation(hint: Any, name: str) -> Spec:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        specs = list(dict.fromkeys(_from_annotation(a, name) for a in args if a is not type(None)))
        specs += [NULL] if type(None) in args else []
        return either(*specs) if len(specs) > 1 else specs[0]
    if name in OPTION_SPECS:
        return OPTION_SPECS[name]
    if origin is list and args:
        return list_of(_from_annotation(args[0], name))
    return ANNOTATIONS.get(hint, ANY)


def _unet_agreement(model: dict, path: str, dims: int) -> None:
    """len(kernels) == len(widths) == len(strides) + 1, counting the builder's defaults."""
    strides = len(model["strides"]) if model.get("strides") is not None else 4
    kernels = len(model["kernels"]) if model.get("kernels") is not None else strides + 1
    widths = len(model["widths"]) if model.get("widths") is not None else kernels
    if not kernels == widths == strides + 1:
        raise _error(path, f"expected one width and kernel per stage and one stride per stage "
                           f"after the first, got {widths} widths, {kernels} kernels and "
                           f"{strides} strides")


def _model_sections(dims: int) -> dict[str, Spec]:
    from seglab import models
    from seglab.models.mask_rcnn import build_mask_rcnn
    result = {found.name: _builder_section(found.name, found.build)
              for found in models.available() if dims in found.dims}
    if dims == 2:  # an instance method's detector, outside the registry of logit models
        result["mask_rcnn"] = _builder_section("mask_rcnn", build_mask_rcnn)
    return result


def _builder_section(name: str, build: Callable) -> Spec:
    """A model's plan section: its name and the options of its builder, typed by its hints."""
    parameters = inspect.signature(build).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return mapping(STRING, ANY)  # a builder taking any option
    hints = typing.get_type_hints(getattr(build, "func", build))  # partials too
    options = {p: _from_annotation(hints.get(p, Any), p)
               for p in parameters if p not in MODEL_INPUTS}
    options.update(UNET_OPTIONS if name == "unet" else {})
    hint = f"options of model {name!r}: {', '.join(options) or 'none'}"
    return section({"name": STRING, **options}, tuple(options), hint,
                   _unet_agreement if name == "unet" else None)


# The losses a plan may name and every parameter of each, with its default; `train.loss`
# builds them (see its docstring for the papers) and the planner writes the defaults.
LOSS_DEFAULTS: dict[str, dict] = {
    "dice_ce": {"dice_weight": 1.0, "ce_weight": 1.0},
    "focal": {"gamma": 2.0, "alpha": None, "focal_weight": 1.0, "dice_weight": 1.0},
    "tversky": {"alpha": 0.3, "beta": 0.7, "ce_weight": 1.0},
    "focal_tversky": {"alpha": 0.3, "beta": 0.7, "gamma": 0.75, "ce_weight": 1.0},
    "cldice": {"dice_weight": 1.0, "ce_weight": 1.0, "cldice_weight": 0.5, "iterations": 3},
}


def _loss_sections(dims: int) -> dict[str, Spec]:
    result = {}
    for name, defaults in LOSS_DEFAULTS.items():
        params = {k: _like(v) for k, v in defaults.items() if k != "name"}
        hint = f"parameters of loss {name!r}: {', '.join(params) or 'none'}"
        result[name] = section({"name": STRING, **params}, tuple(params), hint)
    return result


def _like(default: Any) -> Spec:
    """A loss parameter's spec: of the kind of its default (None: any JSON value)."""
    kinds = [(BOOLEAN, BOOLEAN), (INT, integer(min=0)), (NUMBER, number(min=0)),
             (list_of(ANY), optional(list_of(ANY))), (STRING, STRING)]
    return next((spec for kind, spec in kinds if kind.test(default, 0)), ANY)


# A classical method's plan (`seglab compare`): its name and parameters, which the method checks.
_CLASSICAL = section({"name": STRING, "classical": mapping(STRING, ANY)})
CLASSICAL_MODEL = Spec(_CLASSICAL.text, lambda v, d: isinstance(v, dict) and "classical" in v,
                       _CLASSICAL.inner)
CHANNEL = section({"clip": pair(number()), "mean": number(), "std": POSITIVE})
NORMALIZATIONS = {"zscore": section({"scheme": STRING}),
                  "ct": section({"scheme": STRING, "channels": list_of(CHANNEL, min_length=1)})}
DIMS_SPEC = integer(min=2, max=3)

PLAN = section({
    "dims": DIMS_SPEC,
    "in_channels": COUNT,
    "classes": list_of(STRING, min_length=2),
    "label_values": optional(mapping(DIGITS, integer(min=0))),
    "ignore_label": optional(integer(min=0, max=255)),
    "roi_rule": optional(STRING),
    "normalization": variant("scheme", lambda dims: NORMALIZATIONS),
    "target_spacing": optional(list_of(POSITIVE, length=DIMS)),
    "patch_size": list_of(COUNT, length=DIMS),
    "batch_size": COUNT,
    "model": either(CLASSICAL_MODEL, variant("name", _model_sections)),
    "loss": variant("name", _loss_sections),
    "optimizer": section({
        "name": choice("adamw", "adam", "sgd"), "lr": POSITIVE, "weight_decay": number(min=0),
        "momentum": FRACTION, "nesterov": BOOLEAN, "warmup_fraction": FRACTION,
        "schedule": choice("poly", "cosine", "constant"), "grad_clip": optional(POSITIVE)}),
    "epochs": COUNT,
    "iterations_per_epoch": COUNT,
    "time_budget_minutes": optional(POSITIVE),
    "foreground_oversampling": PROBABILITY,
    "augmentation": section({
        "flip_axes": list_of(AXIS), "rotate_degrees": number(min=0),
        "rotate_in_plane_only": BOOLEAN, "rotate_probability": PROBABILITY,
        "scale_range": pair(POSITIVE), "scale_probability": PROBABILITY,
        "noise_probability": PROBABILITY, "brightness_probability": PROBABILITY,
        "contrast_probability": PROBABILITY, "gamma_probability": PROBABILITY,
        "elastic_probability": PROBABILITY, "elastic_spacing": COUNT,
        "elastic_magnitude": number(min=0), "channel_shuffle_probability": PROBABILITY,
        "grayscale_probability": PROBABILITY, "invert_probability": PROBABILITY},
        optional=("elastic_probability", "elastic_spacing", "elastic_magnitude",
                  "channel_shuffle_probability", "grayscale_probability", "invert_probability")),
    "inference": section({
        "overlap": FRACTION, "blend": choice("gaussian", "constant"), "batch_size": COUNT,
        "mirror_axes": list_of(AXIS), "quarter_turns": BOOLEAN, "tta_reason": STRING},
        optional=("quarter_turns", "tta_reason")),  # older plans: no quarter turns
    "split": section({
        "val_fraction": FRACTION, "test_fraction": FRACTION, "folds": optional(integer(min=2)),
        "fixed": optional(mapping(choice("train", "val", "test", "unlabeled"),
                                  either(list_of(STRING), STRING)))}, optional=("folds",)),
    "transfer": section({"init_from": optional(STRING), "freeze_encoder_epochs": integer(min=0)}),
    "adversarial": section({"weight": number(min=0), "lr": POSITIVE, "width": COUNT}),
    "semi_supervised": section({"method": choice("none", "mean_teacher", "pseudo_labels",
                                                 "cross_pseudo_supervision"),
                                "weight": number(min=0), "rampup_fraction": FRACTION,
                                "ema_decay": PROBABILITY, "noise": number(min=0),
                                "confidence": PROBABILITY},
                               optional=("confidence",)),  # older plans: no pseudo-labels
    "seed": integer(min=0),
    "notes": list_of(STRING),
    "planning": mapping(STRING, ANY),
    "task": choice("semantic", "instance"),
    "instances": optional(variant("method", lambda dims: {
        "rim_watershed": section({"method": STRING, "rim_class": integer(min=1),
                                  "contact_width": integer(min=1), "contact": BOOLEAN},
                                 optional=("contact_width", "contact")),  # older plans: 1, false
        "mask_rcnn": section({"method": STRING, "score_threshold": PROBABILITY,
                              "mask_threshold": PROBABILITY})})),
    "temporal": section({"context": integer(min=0), "pattern": STRING}),
}, optional=("transfer", "adversarial", "semi_supervised", "seed", "notes", "planning",
             "task", "instances", "temporal"))  # Plan's defaulted fields


def check_plan(data: dict) -> None:
    """Raises `SeglabError` naming the first field of `data` that the `PLAN` schema refuses."""
    if not isinstance(data, dict):
        raise SeglabError(f"plan: expected a JSON object, got {_show(data)}")
    if "dims" not in data:
        raise _error("dims", f"missing (expected {DIMS_SPEC.text(0, False)})")
    DIMS_SPEC.check(data["dims"], "dims", 0)  # first: other fields' lengths depend on it
    PLAN.check(data, "", data["dims"])
    patch = data["patch_size"]
    if data["inference"].get("quarter_turns") and patch[-1] != patch[-2]:
        raise _error("inference.quarter_turns", f"turns need square windows; patch_size is {patch}")
