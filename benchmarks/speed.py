"""Speed against the peers: seglab's default device policy against plain PyTorch on the same
architecture and input, on one machine in one run, written into BENCHMARKS.md:

    uv run --group bench python benchmarks/speed.py             # section `cpu` (or `cuda`)
    uv run --group bench python benchmarks/speed.py --quick     # tiny sizes, 1 repeat: prints only
    uv run --group bench python benchmarks/speed.py --only 3d   # one part: prints only

What is measured, and why: the same architecture and input for the peer (a) and seglab (b), so
that the ratio (b)/(a) is what seglab's defaults are worth on this machine.
- 2D U-Net, ResNet-34 encoder: training 8x3x256x256, inference 8x3x256x256 and 1x3x512x512. (a):
  smp's Unet in a plain fp32 NCHW loop (AdamW, cross-entropy); (b): the same network from seglab's
  registry, prepared by `Precision.choose()` (layout, autocast, compile), trained by `TrainStep`
  with seglab's Dice + cross-entropy, inferred in the policy's autocast and layout.
- 3D: a hippocampus-sized 64^3 patch (training batch 2) with the topology seglab plans for it;
  (a): MONAI's DynUNet and nnU-Net's PlainConvUNet (dependency group `bench`), fp32.
- ONNX Runtime on seglab's export at 1x3x512x512, fp32 and int8 (`seglab export --quantize int8`).
- Ceilings: a large 3x3 Conv2d in fp32 (NCHW, channels_last) and bf16, so that each throughput
  reads as a fraction of what this machine's convolutions reach; and the share of seglab's
  training loop spent in `PatchSampler.batch()`.
Times are medians over --repeats after warm-up. With CUDA, all of it runs on the GPU, into its
own section.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from common import machine, write_section
from monai.networks.nets import DynUNet
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from seglab import export, models
from seglab.data.inspect import Fingerprint
from seglab.device import Precision
from seglab.plan import make_plan
from seglab.preprocess import Prepared
from seglab.train.loop import TrainStep
from seglab.train.loss import create_loss
from seglab.train.sampling import PatchSampler

# train2d: (batch, size); infer2d: [(batch, size)]; vol: cube side; conv: (batch, channels, size)
FULL = {"train2d": (8, 256), "infer2d": [(8, 256), (1, 512)], "vol": 64, "conv": (8, 64, 128)}
QUICK = {"train2d": (2, 64), "infer2d": [(2, 64), (1, 128)], "vol": 32, "conv": (2, 16, 32)}
CUDA_CONV = (32, 256, 128)  # on a GPU the CPU's conv would be too small to reach the ceiling
BATCH_3D = 2
LOSS = {"name": "dice_ce", "dice_weight": 1.0, "ce_weight": 1.0}
PEER_2D = "smp Unet fp32"
Step = Callable[[], Any]
Timing = tuple[float, float | None]  # images per second, peak CUDA MB


@dataclass
class Bench:
    policy: Precision
    repeats: int
    warmup: int
    sizes: dict

    def measure(self, fn: Step, batch: int) -> Timing:
        """Images per second (median over the repeats, after warm-up), and peak CUDA MB."""
        cuda = self.policy.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
        return batch / statistics.median(times), peak


@dataclass
class Row:
    case: str
    peer: str
    peer_ips: float | None
    seglab_ips: float | None
    gflops: float  # per image: one forward, or x3 for a training step
    peer_mb: float | None = None
    seglab_mb: float | None = None


def _row(case: str, peer: str, gflops: float, a: Timing, b: Timing) -> Row:
    print(f"  {case}: {peer} {a[0]:.3g} img/s, seglab {b[0]:.3g} img/s", flush=True)
    return Row(case, peer, a[0], b[0], gflops, a[1], b[1])


def forward_gflops(model: nn.Module, shape: torch.Size) -> float:
    """GFLOPs of one forward of one input (batch 1) of `shape`, counted on the eager model."""
    x = torch.zeros(1, *shape[1:], device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 1e9


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
          policy: Precision | None = None) -> Step:
    """A training step: the peer's plain loop (fp32, the input as given, AdamW, cross-entropy, no
    autocast), or with a policy seglab's `TrainStep` (the policy's layout and autocast, seglab's
    loss) on a model that `policy.prepare_model` prepared."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if policy is not None:
        seglab_step = TrainStep(model, optimizer, create_loss(LOSS), policy, adversary=None)
        return lambda: seglab_step(x, y)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def infer(model: nn.Module, x: torch.Tensor, policy: Precision | None = None) -> Step:
    """Inference in `inference_mode`: plain (fp32, as given), or in the policy's autocast and
    memory layout."""
    model.eval()
    autocast = policy.autocast if policy else contextlib.nullcontext
    def layout(tensor: torch.Tensor) -> torch.Tensor:
        return policy.memory_format(tensor, model) if policy else tensor

    def run() -> torch.Tensor:
        with torch.inference_mode(), autocast():
            return model(layout(x))

    return run


def part_2d(b: Bench) -> list[Row]:
    policy = b.policy
    peer = smp.Unet("resnet34", encoder_weights=None, classes=2).to(policy.device)
    ours = policy.prepare_model(models.create("encoder_unet", 2, 3, 2, encoder="resnet34"))
    n, size = b.sizes["train2d"]
    x = torch.randn(n, 3, size, size, device=policy.device)
    y = torch.randint(0, 2, (n, size, size), device=policy.device)
    peer_timing = b.measure(train(peer, x, y), n)
    rows = [_row(f"2D train {n}x3x{size}²", PEER_2D, 3 * forward_gflops(peer, x.shape),
                 peer_timing, b.measure(train(ours, x, y, policy), n))]
    for n, size in b.sizes["infer2d"]:
        x = torch.randn(n, 3, size, size, device=policy.device)
        peer_timing = b.measure(infer(peer, x), n)
        rows.append(_row(f"2D infer {n}x3x{size}²", PEER_2D, forward_gflops(peer, x.shape),
                         peer_timing, b.measure(infer(ours, x, policy), n)))
    return rows


def fingerprint(dims: int, channels: int, classes: list[str],
                shape: tuple[int, ...]) -> Fingerprint:
    """A one-case dataset of `shape` at unit spacing: what the planner needs to plan for it."""
    return Fingerprint(name="speed", layout="synthetic", source="benchmarks/speed.py", dims=dims,
                       channels=channels, n_cases=1, n_unlabeled=0, classes=classes,
                       label_values=None, ignore_label=None, roi_rule=None, modality="MR",
                       class_voxels=[1] * len(classes), shapes=[list(shape)],
                       spacings=[[1.0] * dims], intensity=[{} for _ in range(channels)])


def monai_dynunet(options: dict) -> nn.Module:
    """MONAI's DynUNet, built directly with the topology of seglab's `unet` for the patch."""
    return DynUNet(spatial_dims=3, in_channels=1, out_channels=3, kernel_size=options["kernels"],
                   strides=[[1, 1, 1], *options["strides"]],
                   upsample_kernel_size=options["strides"], filters=options["widths"],
                   norm_name=("instance", {"affine": True}),
                   act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}))


def nnunet_plain(options: dict) -> nn.Module | str:
    """nnU-Net's PlainConvUNet (its default blocks) with the same topology, or why it is absent."""
    try:
        from dynamic_network_architectures.architectures.unet import PlainConvUNet
    except ImportError:
        return "not installed (uv sync --group bench)"
    return PlainConvUNet(1, len(options["kernels"]), options["widths"], nn.Conv3d,
                         options["kernels"], [[1, 1, 1], *options["strides"]], 2, 3, 2,
                         conv_bias=True, norm_op=nn.InstanceNorm3d,
                         norm_op_kwargs={"eps": 1e-5, "affine": True},
                         nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})


def part_3d(b: Bench) -> tuple[list[Row], dict]:
    """seglab is measured once per case; each peer gets its row against that measurement."""
    policy, side = b.policy, b.sizes["vol"]
    # seglab's plan for a side^3 volume, the memory budget set so that the whole cube is the patch
    fp = fingerprint(3, 1, ["background", "anterior", "posterior"], (side,) * 3)
    plan = make_plan(fp, memory_budget_voxels=4 * side**3)
    options = {k: v for k, v in plan.model.items() if k != "name"}
    ours = policy.prepare_model(models.create("unet", 3, 1, 3, **options))
    dynunet = monai_dynunet(options).to(policy.device)
    peers = {"MONAI DynUNet fp32": dynunet, "nnU-Net PlainConvUNet fp32": nnunet_plain(options)}
    x = torch.randn(BATCH_3D, 1, side, side, side, device=policy.device)
    y = torch.randint(0, 3, (BATCH_3D, side, side, side), device=policy.device)
    single = torch.randn(1, 1, side, side, side, device=policy.device)
    rows = []
    for training, inputs in ((True, x), (False, single)):
        case = f"3D {'train' if training else 'infer'} {len(inputs)}x1x{side}³"
        step = train(ours, x, y, policy) if training else infer(ours, inputs, policy)
        mine = b.measure(step, len(inputs))
        gflops = (3 if training else 1) * forward_gflops(dynunet, inputs.shape)
        for name, peer in peers.items():
            if isinstance(peer, str):
                rows.append(Row(case, f"{name}: {peer}", None, mine[0], gflops, None, mine[1]))
                continue
            peer = peer.to(policy.device)
            step = train(peer, x, y) if training else infer(peer, inputs)
            rows.append(_row(case, name, gflops, b.measure(step, len(inputs)), mine))
    return rows, options


def part_onnx(b: Bench, peer: Row | None) -> list[Row]:
    """seglab's export (`export._to_onnx`, what `seglab export` writes) under ONNX Runtime, against
    the plain PyTorch peer's row of the 2D part (measured here when that part did not run)."""
    size = b.sizes["infer2d"][-1][1]
    fp = fingerprint(2, 3, ["background", "foreground"], (size, size))
    plan = make_plan(fp, {"patch_size": [size, size], "model.name": "encoder_unet"})
    cpu_fp32 = Precision.choose("cpu", "fp32", "off")
    model = cpu_fp32.prepare_model(models.create("encoder_unet", 2, 3, 2, encoder="resnet34"))
    proto = export._to_onnx(model.eval(), plan)
    if peer is None:
        smp_peer = smp.Unet("resnet34", encoder_weights=None, classes=2).to(b.policy.device)
        x = torch.randn(1, 3, size, size, device=b.policy.device)
        ips, mb = b.measure(infer(smp_peer, x), 1)
        peer = Row("", PEER_2D, ips, None, forward_gflops(smp_peer, x.shape), mb)
    on_gpu = (b.policy.device.type == "cuda"
              and "CUDAExecutionProvider" in ort.get_available_providers())
    short = "CUDA" if on_gpu else "CPU"
    provider = f"{short}ExecutionProvider"
    x = torch.randn(1, 3, size, size, device="cuda" if on_gpu else "cpu")
    rows = []
    for kind, data in (("fp32", proto.SerializeToString()), ("int8", int8_model(proto, plan))):
        case = f"2D infer 1x3x{size}², ONNX Runtime {kind} ({short})"
        if isinstance(data, str):
            rows.append(Row(f"{case}: {data}", PEER_2D, peer.peer_ips, None, peer.gflops))
            continue
        onnx_model = export.OnnxModel(ort.InferenceSession(data, providers=[provider]))
        rows.append(_row(case, PEER_2D, peer.gflops, (peer.peer_ips, peer.peer_mb),
                         (b.measure(lambda m=onnx_model: m(x), 1)[0], None)))
    return rows


def int8_model(proto: onnx.ModelProto, plan) -> bytes | str:
    """The int8 copy that `seglab export --quantize int8` would make (`export._quantize`: static
    QDQ, U8S8, per-channel weights), calibrated on patches of random stand-in images since the
    network's weights are random too; or why quantisation failed."""
    rng = np.random.default_rng(0)
    images = [Prepared(f"random{i}", rng.standard_normal((3, *plan.patch_size), dtype=np.float32),
                       None, None, tuple(plan.patch_size)) for i in range(4)]
    reader = export.CalibrationPatches(images, plan, count=8)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "fp32.onnx"
        source.write_bytes(proto.SerializeToString())
        try:
            quantized, _ = export._quantize(source, Path(folder), reader)
            return quantized.read_bytes()
        except Exception as error:  # noqa: BLE001 - reported in the table, the benchmark goes on
            return f"quantisation failed ({type(error).__name__}: {error})"[:160]


def ceilings(b: Bench) -> dict[str, float]:
    """GFLOP/s of a 3x3 Conv2d (channels -> channels, forward) in each precision and layout;
    `fp32` and `bf16` are the better layout of each."""
    n, c, s = b.sizes["conv"]
    flops = 2 * n * c * c * 9 * s * s
    result = {}
    for dtype in (torch.float32, torch.bfloat16):
        for layout in (torch.contiguous_format, torch.channels_last):
            conv = nn.Conv2d(c, c, 3, padding=1, bias=False).to(b.policy.device, dtype)
            x = torch.randn(n, c, s, s, device=b.policy.device, dtype=dtype)
            step = infer(conv.to(memory_format=layout), x.contiguous(memory_format=layout))
            name = ("fp32" if dtype == torch.float32 else "bf16") + (
                " NCHW" if layout == torch.contiguous_format else " channels_last")
            result[name] = b.measure(step, 1)[0] * flops / 1e9
    for precision in ("fp32", "bf16"):
        result[precision] = max(v for k, v in result.items() if k.startswith(precision + " "))
    return result


def data_wait(b: Bench, step_s: float) -> str:
    """PatchSampler.batch() for the 2D training batch, drawn from 3-channel cases twice the patch
    size, against seglab's training step: the loop runs `step(*sampler.batch())`."""
    n, size = b.sizes["train2d"]
    side = 2 * size
    plan = make_plan(fingerprint(2, 3, ["background", "foreground"], (side, side)),
                     {"patch_size": [size, size], "batch_size": n})
    rng = np.random.default_rng(0)
    cases = [Prepared(f"case{i}", rng.standard_normal((3, side, side), dtype=np.float32),
                      (rng.random((side, side)) > 0.7).astype(np.uint8), None, (side, side))
             for i in range(4)]
    sampler = PatchSampler(cases, plan, rng)
    on_cpu = Bench(Precision.choose("cpu", "fp32", "off"), b.repeats, 1, b.sizes)
    batch_s = n / on_cpu.measure(sampler.batch, n)[0]
    share = batch_s / (batch_s + step_s)
    return (f"- waiting for data: `PatchSampler.batch()` for {n}x3x{size}² takes "
            f"{batch_s * 1e3:.0f} ms, seglab's training step {step_s * 1e3:.0f} ms: "
            f"{100 * share:.1f}% of the training loop's time goes to drawing batches")


def table(rows: list[Row], ceiling: dict, cuda: bool) -> str:
    def num(value: float | None) -> str:
        return "–" if value is None else f"{value:.3g}"

    def pct(row: Row, key: str) -> str:
        cells = ["–" if ips is None else f"{100 * ips * row.gflops / ceiling[key]:.0f}%"
                 for ips in (row.peer_ips, row.seglab_ips)]
        return " / ".join(cells)

    head = ["case", "peer (a)", "peer img/s", "seglab (b) img/s", "ratio (b)/(a)", "GFLOPs/img",
            "% of fp32 ceiling (a / b)", "% of bf16 ceiling (a / b)"]
    head += ["peak CUDA MB (a / b)"] if cuda else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ratio = f"{r.seglab_ips / r.peer_ips:.2f}x" if r.peer_ips and r.seglab_ips else "–"
        cells = [r.case, r.peer, num(r.peer_ips), num(r.seglab_ips), ratio, f"{r.gflops:.1f}",
                 pct(r, "fp32"), pct(r, "bf16")]
        cells += [f"{num(r.peer_mb)} / {num(r.seglab_mb)}"] if cuda else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section(args: argparse.Namespace, b: Bench, rows: list[Row], ceiling: dict,
            notes: list[str]) -> str:
    cuda = b.policy.device.type == "cuda"
    where = f"CUDA GPU ({torch.cuda.get_device_name()})" if cuda else "CPU"
    command = "uv run --group bench python benchmarks/speed.py" + (
        f" --repeats {args.repeats}" if args.repeats != 5 else "") + (
        " --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
    n, c, s = b.sizes["conv"]
    measured = ", ".join(f"{k} {v:.3g}" for k, v in ceiling.items() if " " in k)
    tf32 = " (fp32 convolutions run as TF32 on CUDA, PyTorch's default)" if cuda else ""
    return "\n".join([
        f"### Speed against the peers on the {where} (`benchmarks/speed.py`)", "",
        f"- command: `{command}`",
        f"- machine: {machine()}" + (f"; {where}" if cuda else ""),
        f"- seglab's policy (`Precision.choose().describe()`): {b.policy.describe()}",
        f"- ceilings, GFLOP/s of a 3x3 Conv2d {c}->{c} forward on {n}x{c}x{s}²: {measured}{tf32}",
        (f"- medians of {b.repeats} repeats after {b.warmup} warm-up; the backend flags the "
         "policy sets globally (cuDNN benchmark, TF32) hold for the peers too"),
        *notes, "",
        *([table(rows, ceiling, cuda), ""] if rows else []),
        ("(a): plain fp32 PyTorch, NCHW, AdamW + cross-entropy, `inference_mode`. (b): the same "
         "architecture built by seglab, prepared by its default policy, trained by `TrainStep` "
         "with Dice + cross-entropy. GFLOPs/img: PyTorch's FlopCounterMode on one forward of the "
         "peer, x3 for a training step. % of a ceiling: GFLOPs/img x img/s against the conv "
         "ceiling above in that precision (best layout)."), ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement")
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat at tiny sizes, to check the script; prints only")
    parser.add_argument("--only", choices=["2d", "3d", "onnx", "ceiling"],
                        help="one part (with the ceilings); prints only")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    policy = Precision.choose()
    cuda = policy.device.type == "cuda"
    sizes = QUICK if args.quick else {**FULL, "conv": CUDA_CONV} if cuda else FULL
    b = Bench(policy, 1 if args.quick else args.repeats, 3 if cuda else 1, sizes)
    parts = [args.only] if args.only else ["2d", "3d", "onnx"]
    print(f"policy: {policy.describe()}", flush=True)
    ceiling = ceilings(b)
    print("ceilings, GFLOP/s:", {k: round(v) for k, v in ceiling.items()}, flush=True)
    rows: list[Row] = []
    notes: list[str] = []
    peer_2d = None
    if "2d" in parts:
        rows += part_2d(b)
        peer_2d = rows[-1]  # the largest inference case, the one the ONNX rows repeat
        notes.append(data_wait(b, sizes["train2d"][0] / rows[0].seglab_ips))
    if "3d" in parts:
        rows_3d, options = part_3d(b)
        rows += rows_3d
        notes.append(f"- 3D topology (seglab's plan for a {sizes['vol']}³ volume): "
                     + ", ".join(f"{k} {options[k]}" for k in ("widths", "kernels", "strides")))
    if "onnx" in parts:
        rows += part_onnx(b, peer_2d)
    text = section(args, b, rows, ceiling, notes)
    print("\n" + text)
    if not args.quick and not args.only:
        write_section("speed", policy.device.type, text)


if __name__ == "__main__":
    main()
