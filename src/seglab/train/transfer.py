"""Fine-tuning: starting a model from another run's weights, also across datasets whose number of
classes or input channels differs from the source's.

Weights are matched by name and shape. A layer whose only difference is its number of input
channels (the first convolution, when going from grey to colour or back) is adapted: the source
filter's mean over its input channels is repeated for each new channel and rescaled, so a grey
image copied into every channel gives the same response as before (the rule timm uses for
pretrained encoders, generalised to any channel counts). Everything else that does not match
(the class head, usually) keeps its fresh initialisation, and the report names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from seglab.errors import SeglabError
from seglab.run import Run, load_checkpoint


def initialise_from(model: nn.Module, source: str | Path) -> dict[str, Any]:
    """Copies the matching weights of `source` (a run folder, or a checkpoint file) into `model`;
    returns what was loaded, adapted and re-initialised."""
    path = Path(source)
    checkpoint = Run.open(path).best_checkpoint() if path.is_dir() else path
    saved = load_checkpoint(checkpoint)
    weights = saved.get("model", saved)
    chosen: dict[str, torch.Tensor] = {}
    adapted, reinitialised, loaded = [], [], 0
    first_name: dict[int, str] = {}
    for name, tensor in model.state_dict().items():
        alias = first_name.setdefault(tensor.data_ptr(), name)
        if alias != name:  # one module registered under two names (MONAI's DynUNet does this)
            if alias in chosen:
                chosen[name] = chosen[alias]
            continue
        theirs = weights.get(name)
        if theirs is not None and theirs.shape == tensor.shape:
            chosen[name] = theirs
            loaded += 1
        elif theirs is not None and _differs_in_input_channels_only(theirs, tensor):
            chosen[name] = adapt_input_channels(theirs, tensor.shape[1])
            adapted.append(f"{name} ({theirs.shape[1]} -> {tensor.shape[1]} input channels)")
        elif _is_learned(name):
            reinitialised.append(name)
    if not chosen:
        raise SeglabError(f"{checkpoint}: none of its weights fit this model (another architecture?)")
    model.load_state_dict(chosen, strict=False)
    return {"from": str(checkpoint), "loaded": loaded, "adapted": adapted,
            "reinitialised": reinitialised}


def adapt_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A conv weight (out, in, *k) for `channels` inputs from one for `in` inputs."""
    mean = weight.float().mean(dim=1, keepdim=True)
    scale = weight.shape[1] / channels
    return (mean * scale).repeat(1, channels, *[1] * (weight.dim() - 2)).to(weight.dtype)


def _differs_in_input_channels_only(theirs: torch.Tensor, ours: torch.Tensor) -> bool:
    return (theirs.dim() == ours.dim() >= 3 and theirs.shape[0] == ours.shape[0]
            and theirs.shape[2:] == ours.shape[2:])


def _is_learned(name: str) -> bool:
    """Buffers such as BatchNorm's batch counter are not worth reporting."""
    return not name.endswith("num_batches_tracked")


def describe_transfer(report: dict[str, Any]) -> str:
    """One line for the console."""
    parts = [f"initialised from {report['from']}: {report['loaded']} tensors loaded"]
    if report["adapted"]:
        parts.append(f"adapted: {', '.join(report['adapted'])}")
    if report["reinitialised"]:
        parts.append(f"re-initialised: {', '.join(report['reinitialised'])}")
    return "; ".join(parts)
