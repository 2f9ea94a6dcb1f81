"""What every benchmark script shares: the machine's description and the BENCHMARKS.md writer."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch

from seglab import __version__

ROOT = Path(__file__).resolve().parents[1]


BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def machine() -> str:
    """CPU model, cores, whether the CPU has bf16 units (the /proc/cpuinfo flags that seglab's
    precision policy looks for), torch and seglab versions."""
    cpu, flags = None, None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu is None:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and flags is None:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    cpu = cpu or platform.processor() or platform.machine()
    if flags is None:
        bf16 = "bf16 units unknown"
    else:
        found = [flag for flag in BF16_FLAGS if flag in flags]
        bf16 = f"bf16 units: {'+'.join(found)}" if found else "no bf16 units (no avx512_bf16/amx)"
    return (f"{cpu}, {os.cpu_count()} cores, {bf16}, torch {torch.__version__}, "
            f"seglab {__version__}")


def cell(stat: dict) -> str:
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def write_section(script: str, name: str, text: str) -> None:
    """Replaces this benchmark's section of BENCHMARKS.md (between its markers), keeping the rest."""
    path = ROOT / "BENCHMARKS.md"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    begin, end = f"<!-- {script}:{name} -->", f"<!-- /{script}:{name} -->"
    block = f"{begin}\n{text}{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    updated = pattern.sub(lambda _: block, current) if pattern.search(current) else (
        current.rstrip() + "\n\n" + block + "\n")
    temporary = path.with_name(".BENCHMARKS.md.tmp")
    temporary.write_text(updated)
    temporary.replace(path)
