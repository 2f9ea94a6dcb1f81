"""Which device, numeric precision, memory layout and compiler a run uses, chosen from the hardware
and recorded with why.

The CPU choices are measured, not assumed (2-core Xeon, PyTorch 2.15, `benchmarks/speed.py`):
channels_last speeds 2D convolutions up in fp32 too (a 3x3 conv 80 -> 109 GFLOP/s, the ResNet-34
U-Net's training step 1.4x) but not networks with instance norm, whose channels_last kernels are
slow (the 2D DynUNet trained 7% slower on ISBI 2012, 3D ones no faster), so fp32 models with
instance norm stay NCHW; bf16 pays only on CPUs with AMX
or AVX512-BF16 (elsewhere it is emulated and 2.5x slower than fp32); torch.compile gave no training
gain on the CPU for a two-minute compile, so it is on by default only on CUDA.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seglab.errors import SeglabError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_CHOICES = ("auto", "on", "off")


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX-512 BF16: the CPUs on which bf16 convolutions beat fp32 several times over."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


@dataclass
class Precision:
    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    reason: str
    compile: bool = False
    channels_last_3d: bool = False

    @classmethod
    def choose(cls, device: str = "auto", precision: str = "auto",
               compile: str = "auto") -> "Precision":
        """The policy for this machine; any of the three may be forced by the user."""
        device = _choose_device(device)
        if precision not in ("auto", *PRECISIONS):
            raise SeglabError(f"--precision {precision}: expected auto, fp32, bf16 or fp16")
        if compile not in COMPILE_CHOICES:
            raise SeglabError(f"--compile {compile}: expected auto, on or off")
        if precision == "auto":
            precision, reason = _auto_precision(device)
        else:
            reason = f"{precision} chosen by the user"
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        compiled = compile == "on" or (compile == "auto" and device == "cuda")
        reason += "; torch.compile " + ("on" if compiled else "off") + (
            "" if compile == "auto" else " (chosen by the user)")
        on_cpu = device == "cpu"
        return cls(torch.device(device), PRECISIONS[precision], channels_last=on_cpu,
                   reason=reason, compile=compiled,
                   channels_last_3d=on_cpu and precision == "bf16")

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def memory_format(self, tensor: torch.Tensor,
                      model: torch.nn.Module | None = None) -> torch.Tensor:
        """The input in the policy's layout, or as it is when `model` was left NCHW."""
        layout = self._layout(tensor.dim() == 5)
        if layout is None or (model is not None and not _in_layout(model, layout)):
            return tensor
        return tensor.contiguous(memory_format=layout)

    def _layout(self, volumetric: bool) -> torch.memory_format | None:
        if volumetric:
            return torch.channels_last_3d if self.channels_last_3d else None
        return torch.channels_last if self.channels_last else None

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=True)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """On the device, in the policy's memory layout, and compiled when the policy says so."""
        model = model.to(self.device)
        volumetric = any(isinstance(m, torch.nn.Conv3d) for m in model.modules())
        layout = self._layout(volumetric)
        instance_norm = any(isinstance(m, torch.nn.modules.instancenorm._InstanceNorm)
                            for m in model.modules())
        if layout is not None and not (instance_norm and self.autocast_dtype is None):
            model = model.to(memory_format=layout)
        if self.compile:
            compile_with_fallback(model)
        return model

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "precision": self.name, "compile": self.compile,
                "reason": self.reason}


def _in_layout(model: torch.nn.Module, layout: torch.memory_format) -> bool:
    """Whether the model's convolution weights are stored in `layout` (all of them: a weight
    with one input channel or a 1x1 kernel is contiguous in both layouts and decides nothing)."""
    weights = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d,
                                                                  torch.nn.Conv3d))]
    return bool(weights) and all(w.is_contiguous(memory_format=layout) for w in weights)


def _choose_device(device: str) -> str:
    if device not in DEVICES:
        raise SeglabError(f"--device {device}: expected auto, cpu, cuda or mps")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SeglabError("--device cuda: no CUDA GPU is visible to PyTorch")
    if device == "mps" and not _mps_available():
        raise SeglabError("--device mps: no Apple GPU (MPS) is available to PyTorch")
    return device


def _auto_precision(device: str) -> tuple[str, str]:
    if device == "cuda":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return precision, f"CUDA GPU {torch.cuda.get_device_name()}: {precision} autocast, TF32"
    if device == "mps":
        return "fp32", "Apple GPU (MPS): fp32"
    if cpu_has_fast_bf16():
        return "bf16", "CPU with AMX/AVX512-BF16: bf16 autocast, channels_last"
    return "fp32", "CPU without bf16 units (bf16 would be emulated, slower): fp32, channels_last"


def compile_with_fallback(model: torch.nn.Module) -> None:
    """Compiles `model.forward` in place (its state_dict keys stay as they are); the first time the
    compiled forward fails (no C++ compiler, an unsupported operator, an old GPU), one warning line
    is printed and the model runs eagerly from then on: compiling never ends a run."""
    eager = model.forward
    compiled = torch.compile(eager)

    def forward(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except Exception as error:  # the compiler stack raises many types
            reason = (str(error).strip().splitlines() or [""])[0][:200]
            print(f"warning: torch.compile failed ({type(error).__name__}: {reason}); running "
                  "eagerly", file=sys.stderr)
            model.forward = eager
            return eager(*args, **kwargs)

    model.forward = forward
