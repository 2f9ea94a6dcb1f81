"""What each registered model costs: parameters and GFLOPs for a given input (`seglab models`)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from seglab import models
from seglab.errors import SeglabError


def model_cost(name: str, dims: int, in_channels: int, classes: int,
               size: tuple[int, ...]) -> dict[str, float]:
    """Parameters (millions) and forward GFLOPs for one input of `size` (multiply-adds x 2),
    counted on PyTorch's meta device: shapes only, no memory, no arithmetic."""
    with torch.device("meta"):
        net = models.create(name, dims, in_channels, classes).eval()
    params = sum(p.numel() for p in net.parameters()) / 1e6
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, in_channels, *size, device="meta"))
    return {"params_m": params, "gflops": counter.get_total_flops() / 1e9}


def models_table(size2d: tuple[int, int] = (256, 256),
                 size3d: tuple[int, int, int] = (64, 64, 64)) -> str:
    """One row per registered model and dims: parameters and GFLOPs at the given input sizes
    (each model with its builder's defaults: resnet34 or VGG16-BN encoders, MONAI's widths)."""
    width = max(len(entry.name) for entry in models.available())
    rows = [f"{'name':<{width}}  dims  params (M)  GFLOPs  input        paper",
            f"{'-' * width}  ----  ----------  ------  -----------  -----"]
    for entry in models.available():
        for dims in entry.dims:
            size = size2d if dims == 2 else size3d
            try:
                cost = model_cost(entry.name, dims, 1, 2, size)
            except (SeglabError, RuntimeError, ValueError) as error:  # input too small, etc.
                rows.append(f"{entry.name:<{width}}  {dims}D    unavailable: {error}")
                continue
            shape = "x".join(map(str, size))
            rows.append(f"{entry.name:<{width}}  {dims}D    {cost['params_m']:>10.2f}  "
                        f"{cost['gflops']:>6.1f}  {shape:<11}  {entry.paper}")
    return "\n".join(rows)
