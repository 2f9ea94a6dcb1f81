"""A load test of `seglab serve`, written into BENCHMARKS.md:

    uv run python benchmarks/serve_load.py [RUN] [--requests 200] [--clients 8]

Starts `seglab serve RUN` on 127.0.0.1 in its own process (default RUN: the ISBI 2012 run of
`benchmarks/real_data.py isbi2012`), sends REQUESTS predictions of the run's test images from
CLIENTS concurrent clients (each request bounded by a timeout), and reports how many succeeded,
the p50/p95/max latency, the throughput and the server's peak resident memory. Then it sends an
oversized, a truncated, a wrong-type and a path-like upload, each of which must get a 4xx with a
message, and a good request after them, which must succeed.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from common import ROOT, machine, write_section

from seglab.run import Run
from seglab.run_setup import open_dataset

DEFAULT_RUN = ROOT / "runs" / "benchmarks" / "real_data" / "isbi2012" / "seglab"
TIMEOUT_S = 120.0
UPLOAD_LIMIT_MB = 8


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _images(run: Run) -> list[tuple[str, bytes]]:
    dataset = open_dataset(run)
    refs = {ref.case_id: ref for ref in dataset.cases}
    return [(refs[i].images[0].name, refs[i].images[0].read_bytes())
            for i in run.read_json("split.json")["test"]]


def _bad_uploads(good: bytes) -> dict[str, tuple[str, bytes]]:
    return {"oversized": ("big.png", good[:8] + b"\0" * (UPLOAD_LIMIT_MB * 2**20 + 1)),
            "truncated": ("cut.png", good[: len(good) // 3]),
            "wrong type": ("notes.png", b"just some text, not an image"),
            "path-like name": ("../../../etc/passwd", good)}


def load_test(run_path: Path, requests: int, clients: int) -> str:
    run = Run(run_path)
    images = _images(run)
    port = _port()
    server = subprocess.Popen(
        [sys.executable, "-m", "seglab", "serve", str(run_path), "--port", str(port),
         "--max-upload-mb", str(UPLOAD_LIMIT_MB), "--queue", str(clients)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        with httpx.Client(timeout=TIMEOUT_S) as client:
            def one(index: int) -> tuple[int, float]:
                name, data = images[index % len(images)]
                started = time.perf_counter()
                answer = client.post(f"{base}/predict", files={"file": (name, data)})
                return answer.status_code, time.perf_counter() - started

            client.post(f"{base}/predict", files={"file": images[0]})  # warm-up
            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                results = list(pool.map(one, range(requests)))
            wall = time.perf_counter() - started
            bad = {kind: client.post(f"{base}/predict", files={"file": upload})
                   for kind, upload in _bad_uploads(images[0][1]).items()}
            after = client.post(f"{base}/predict", files={"file": images[0]}).status_code
        peak = _peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies = sorted(t for _, t in results)
    ok = sum(status == 200 for status, _ in results)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    lines = [
        "### `seglab serve` under load",
        "",
        f"- command: `uv run python benchmarks/serve_load.py {run_path.relative_to(ROOT)} "
        f"--requests {requests} --clients {clients}`",
        f"- machine: {machine()}",
        f"- model: the run's own ({run.plan().model['name']}, its planned test-time mirroring "
        f"{run.plan().inference['mirror_axes']}); inputs: its {len(images)} test images "
        f"({'x'.join(map(str, np.asarray(_shape(images[0][1]))))}) in turn",
        "",
        "| requests | concurrent clients | succeeded | p50 latency (s) | p95 latency (s) | "
        "max (s) | throughput (images/s) | server peak memory (MB) |",
        "|---|---|---|---|---|---|---|---|",
        f"| {requests} | {clients} | {ok} | {statistics.median(latencies):.2f} | {p95:.2f} | "
        f"{latencies[-1]:.2f} | {requests / wall:.2f} | {peak:.0f} |",
        "",
        "Bad uploads, sent after the load: " + "; ".join(
            f"{kind}: {answer.status_code} \"{answer.json().get('detail', '')[:80]}\""
            for kind, answer in bad.items()) + f"; the next good request: {after}.",
        "",
    ]
    return "\n".join(lines)


def _shape(data: bytes) -> tuple[int, ...]:
    from PIL import Image

    return Image.open(io.BytesIO(data)).size[::-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, default=DEFAULT_RUN)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    text = load_test(args.run.resolve(), args.requests, args.clients)
    write_section("serve_load", "serve", text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
