"""Temporal context: whether the network sees each frame with its neighbours
(`seglab.data.sequences`: the neighbours' channels stacked after the frame's own).

A dataset that declares its frames (`sequence:` in seglab.yaml) gets CONTEXT frames on each
side: on the demo's noisy videos that raised the test Dice from 0.81 to 0.94 (mean of three
seeds, 3 CPU minutes each; BENCHMARKS.md, "Temporal context"). Frames found only by the default
pattern (a number ending each id) are noted, not used: on CamVid, whose labelled frames are one
to two seconds apart, stacking them lowered the test mIoU from 0.456 to 0.408 (10 CPU minutes
each), and ISBI 2012's slice numbers match the pattern too. `temporal.context` overrides.
"""

from __future__ import annotations

from typing import Any

from seglab.data.inspect import Fingerprint
from seglab.data.sequences import FRAME_PATTERN

CONTEXT = 1  # frames on each side of a declared sequence's frame
TEMPORAL_DEFAULTS = {"context": 0, "pattern": FRAME_PATTERN}


def temporal_section(fp: Fingerprint) -> tuple[dict[str, Any], str | None]:
    """The plan's `temporal` section and why, or None where the data has no sequences."""
    found = fp.sequences
    if not found:
        return dict(TEMPORAL_DEFAULTS), None
    summary = (f"{found['count']} sequences of frames (median {found['frames']:g} frames, "
               f"step {found['step']:g})")
    if found["declared"]:
        return {"context": CONTEXT, "pattern": found["pattern"]}, (
            f"{summary} declared by `sequence:`: each frame is seen with {CONTEXT} neighbour(s) "
            "on each side, stacked as channels")
    return {"context": 0, "pattern": found["pattern"]}, (
        f"{summary} found by the frame numbers ending the ids: not used unless declared "
        "(`sequence:` in seglab.yaml) or set (temporal.context=1)")


def stack_frames(plan: Any) -> None:
    """Sets a new plan's input channels (and CT statistics) to those of its 1 + 2 x context
    frames stacked."""
    frames = 1 + 2 * plan.temporal["context"]
    plan.in_channels *= frames
    if plan.normalization["scheme"] == "ct":
        plan.normalization["channels"] = plan.normalization["channels"] * frames


def frame_channels(in_channels: int, temporal: dict[str, Any]) -> int:
    """The channels of one frame, where the network's input stacks 1 + 2 x context frames."""
    return in_channels // (1 + 2 * temporal["context"])
