"""How a plan predicts: sliding windows, and which test-time passes each window goes through
(plan field `inference`; `seglab.sliding_window` runs them, `seglab.plan_budget` times them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from seglab.data.inspect import Fingerprint

ORIENTATION_FREE = ("microscopy", "em")  # modalities whose images have no up


def inference_section(dims: int, device: str) -> dict[str, Any]:
    """Sliding windows, and mirroring (1 + dims passes) only where it is cheap: on a GPU."""
    mirror = device == "cuda"
    return {"overlap": 0.5, "blend": "gaussian", "batch_size": 4,
            "mirror_axes": list(range(dims)) if mirror else [], "quarter_turns": False,
            "tta_reason": ("planned on a GPU: mirroring along every axis costs 1 + dims passes, "
                           "cheap there" if mirror else
                           f"planned on {device}: no mirroring (it would cost {1 + dims}x the "
                           "inference time); set inference.mirror_axes to mirror")}


def quarter_turns_fit(fp: Fingerprint, patch: Sequence[int], augmentation: dict[str, Any]
                      ) -> bool:
    """Whether test-time passes may also turn the windows by quarter turns (the 8 symmetries of
    the square, `tta_transforms`, in place of 1 + dims mirror passes): square 2D windows
    (`patch`) of images whose orientation means nothing (microscopy, EM), trained with rotations
    through the whole circle (`augmentation`). Against the 3 mirror passes, on the same
    weights: +0.016 and +0.009 test DSB score on two DSB2018 runs (thresholds chosen on
    validation each time), +0.002 test Dice on ISBI 2012 (BENCHMARKS.md, "DSB2018 nuclei: the
    rim watershed in 30 CPU minutes")."""
    return (len(patch) == 2 and fp.modality.lower() in ORIENTATION_FREE
            and augmentation["rotate_degrees"] >= 180 and patch[0] == patch[1])


def tta_transforms(dims: int, mirror_axes: Sequence[int] = (), quarter_turns: bool = False
                   ) -> list[tuple[int, tuple[int, ...]]]:
    """The test-time passes as (quarter turns in the plane of the last two axes, spatial axes
    flipped before turning), the plain pass first: one pass per mirror axis, or with
    `quarter_turns` the 8 symmetries of the square (the 4 turns, then the 4 turns of the image
    mirrored along its last axis), whatever the mirror axes."""
    if quarter_turns:
        return [(k, flip) for flip in ((), (dims - 1,)) for k in range(4)]
    return [(0, ())] + [(0, (axis,)) for axis in mirror_axes]
