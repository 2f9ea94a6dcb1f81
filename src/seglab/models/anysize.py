"""Any input size for every model: pad up to the multiple the network needs, crop the output back.

Builders state the multiple by setting `size_multiple` (an int, or one int per axis) on the module
they return; `create()` wraps every model in `AnySize`. The training loop's patches are multiples
of the plan's strides, which need not be multiples of 32 (an ImageNet encoder's stride), and
images at inference time can have any size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class AnySize(nn.Module):
    """Runs `net` on the input zero-padded at the end of each axis to a multiple of `multiple`, and
    crops the output's trailing spatial axes back to the input's size, which also covers DynUNet's
    deep-supervision output (B, heads, C, *S). Inputs that are already multiples pass straight
    through. The wrapped network is `self.net` (its parameter names gain a `net.` prefix)."""

    def __init__(self, net: nn.Module, multiple: Sequence[int]):
        super().__init__()
        self.net = net
        self.multiple = tuple(multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        extra = [-s % m for s, m in zip(size, self.multiple)]
        if not any(extra):
            return self.net(x)
        out = self.net(F.pad(x, [p for e in reversed(extra) for p in (0, e)]))
        return out[(..., *(slice(0, s) for s in size))]


def size_multiple(net: nn.Module, dims: int) -> tuple[int, ...]:
    """The per-axis multiple that `net` declares (1 where it declares none)."""
    multiple = getattr(net, "size_multiple", 1)
    return (multiple,) * dims if isinstance(multiple, int) else tuple(multiple)


def stride_product(strides: Sequence[Sequence[int] | int], dims: int) -> tuple[int, ...]:
    """The total downsampling per axis of per-stage strides (each an int or one int per axis)."""
    per_axis = [[s] * dims if isinstance(s, int) else list(s) for s in strides]
    return tuple(math.prod(stage[axis] for stage in per_axis) for axis in range(dims))
