"""Which device and numeric precision a run uses, chosen from the hardware and recorded with why."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from seglab.errors import SeglabError


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX-512 BF16: the CPUs on which bf16 convolutions beat fp32 several times over."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


@dataclass
class Precision:
    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    reason: str

    @classmethod
    def choose(cls, device: str = "auto", precision: str = "auto") -> "Precision":
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise SeglabError("--device cuda: no CUDA GPU is visible to PyTorch")
        if device not in ("cpu", "cuda"):
            raise SeglabError(f"--device {device}: expected auto, cpu or cuda")
        if precision == "auto":
            if device == "cuda":
                precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
                reason = f"CUDA GPU {torch.cuda.get_device_name()}: {precision} autocast"
            elif cpu_has_fast_bf16():
                precision, reason = "bf16", "CPU with AMX/AVX512-BF16: bf16 autocast, channels_last"
            else:
                precision, reason = "fp32", "CPU without bf16 units: fp32"
        else:
            reason = f"chosen by the user: {precision}"
        dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        if precision not in dtypes:
            raise SeglabError(f"--precision {precision}: expected auto, fp32, bf16 or fp16")
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        channels_last = precision == "bf16" and device == "cpu"
        return cls(torch.device(device), dtypes[precision], channels_last, reason)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def memory_format(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.channels_last:
            return tensor
        layout = torch.channels_last if tensor.dim() == 4 else torch.channels_last_3d
        return tensor.contiguous(memory_format=layout)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=True)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            volumetric = any(isinstance(m, torch.nn.Conv3d) for m in model.modules())
            layout = torch.channels_last_3d if volumetric else torch.channels_last
            model = model.to(memory_format=layout)
        return model

    def describe(self) -> dict[str, str]:
        return {"device": str(self.device), "precision": self.name, "reason": self.reason}
