"""What every benchmark script shares: the machine's description and the BENCHMARKS.md writer."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch

from seglab import __version__

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, seglab {__version__}"


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
