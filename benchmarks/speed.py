"""Speed against the peers: seglab's default device policy against each peer on the same
architecture and input, the peer both as its plainest loop and in the fastest mode its own docs
offer on this hardware, on one machine in one run, written into BENCHMARKS.md:

    uv run --group bench python benchmarks/speed.py             # section `cpu` (or `cuda`)
    uv run --group bench python benchmarks/speed.py --quick     # tiny sizes, 1 repeat: prints only
    uv run --group bench python benchmarks/speed.py --only 3d   # one part: prints only

What is measured, and why: the same architecture and input for the peer (a) and seglab (b), so
that the ratio (b)/(a) is what seglab's defaults are worth on this machine against each mode.
- Peer modes: "plain" is fp32, NCHW, no autocast; "fastest" adds what PyTorch's and the peers'
  performance guides offer a user on this device: channels_last (channels_last_3d for volumes),
  bf16 autocast where the device has bf16 units (seglab's own test of the CPU flags, so the peer
  gets bf16 exactly where seglab does), and for inference torch.compile where it is faster than
  eager on this machine (tried on each inference case; the row says which won).
- 2D U-Net, ResNet-34 encoder: training 8x3x256x256, inference 8x3x256x256 and 1x3x512x512. The
  peer: smp's Unet (AdamW, cross-entropy); seglab: the same network from its registry, prepared by
  `Precision.choose()` (layout, autocast, compile), trained by `TrainStep` with Dice +
  cross-entropy, inferred in the policy's autocast and layout.
- 3D: a hippocampus-sized 64^3 patch (training batch 2) with the topology seglab plans for it;
  the peers: MONAI's DynUNet and nnU-Net's PlainConvUNet (dependency group `bench`).
- ONNX Runtime: int8 against fp32 of the same trained weights (`seglab export --quantize int8` on
  an ISBI 2012 run of benchmarks/real_data.py or time_to_accuracy.py, when one exists), with the
  Dice of each on the run's test slices; and fp32 ONNX of the random-weight 2D network against
  the PyTorch rows.
- The conv throughput of this machine: a large 3x3 Conv2d in fp32 and bf16, each layout, as the
  reference for what bf16 units are worth here (no row is given as a percentage of it: a network
  can beat one convolution's rate).
Each figure is images per second over --repeats timed repeats after warm-up: the median, with the
minimum and maximum. With CUDA, all of it runs on the GPU, into its own section. How a step is
timed and how each peer's loop runs: benchmarks/speed_measure.py.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import segmentation_models_pytorch as smp
import torch
from common import ROOT, machine, write_section
from monai.networks.nets import DynUNet
from speed_measure import (Bench, Row, Stat, fingerprint, forward_gflops, infer, peer_infer,
                           peer_modes, peer_train, timed_row, train)
from torch import nn

from seglab import export, models
from seglab.device import Precision
from seglab.plan import make_plan
from seglab.preprocess import Prepared
from seglab.train.sampling import PatchSampler

# train2d: (batch, size); infer2d: [(batch, size)]; vol: cube side; conv: (batch, channels, size)
FULL = {"train2d": (8, 256), "infer2d": [(8, 256), (1, 512)], "vol": 64, "conv": (8, 64, 128)}
QUICK = {"train2d": (2, 64), "infer2d": [(2, 64), (1, 128)], "vol": 32, "conv": (2, 16, 32)}
CUDA_CONV = (32, 256, 128)  # on a GPU the CPU's conv would be too small to reach the ceiling
BATCH_3D = 2
PEER_2D = "smp Unet"


def part_2d(b: Bench) -> list[Row]:
    policy = b.policy
    ours = policy.prepare_model(models.create("encoder_unet", 2, 3, 2, encoder="resnet34"))
    n, size = b.sizes["train2d"]
    x = torch.randn(n, 3, size, size, device=policy.device)
    y = torch.randint(0, 2, (n, size, size), device=policy.device)
    mine = b.measure(train(ours, x, y, policy), n)
    rows = []
    for mode_name, mode in peer_modes(b).items():
        peer = smp.Unet("resnet34", encoder_weights=None, classes=2).to(policy.device)
        rows.append(timed_row(f"2D train {n}x3x{size}²", f"{PEER_2D}, {mode_name}",
                              3 * forward_gflops(peer, x.shape),
                              b.measure(peer_train(peer, x, y, mode), n), mine))
    for n, size in b.sizes["infer2d"]:
        x = torch.randn(n, 3, size, size, device=policy.device)
        mine = b.measure(infer(ours, x, policy), n)
        for mode_name, mode in peer_modes(b).items():
            peer = smp.Unet("resnet34", encoder_weights=None, classes=2).to(policy.device)
            gflops = forward_gflops(peer, x.shape)
            timing, how = peer_infer(b, peer, x, mode, n)
            rows.append(timed_row(f"2D infer {n}x3x{size}²", f"{PEER_2D}, {mode_name}{how}",
                                  gflops, timing, mine))
    return rows


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
    """seglab is measured once per case; each peer in each mode gets its row against it."""
    policy, side = b.policy, b.sizes["vol"]
    # seglab's plan for a side^3 volume, the memory budget set so that the whole cube is the patch
    fp = fingerprint(3, 1, ["background", "anterior", "posterior"], (side,) * 3)
    plan = make_plan(fp, memory_budget_voxels=4 * side**3)
    options = {k: v for k, v in plan.model.items() if k != "name"}
    ours = policy.prepare_model(models.create("unet", 3, 1, 3, **options))
    peers = {"MONAI DynUNet": lambda: monai_dynunet(options),
             "nnU-Net PlainConvUNet": lambda: nnunet_plain(options)}
    x = torch.randn(BATCH_3D, 1, side, side, side, device=policy.device)
    y = torch.randint(0, 3, (BATCH_3D, side, side, side), device=policy.device)
    single = torch.randn(1, 1, side, side, side, device=policy.device)
    rows = []
    for training, inputs in ((True, x), (False, single)):
        case = f"3D {'train' if training else 'infer'} {len(inputs)}x1x{side}³"
        step = train(ours, x, y, policy) if training else infer(ours, inputs, policy)
        mine = b.measure(step, len(inputs))
        gflops = (3 if training else 1) * forward_gflops(monai_dynunet(options), inputs.shape)
        for name, build in peers.items():
            for mode_name, mode in peer_modes(b).items():
                peer = build()
                if isinstance(peer, str):
                    rows.append(Row(case, f"{name}: {peer}", None, mine[0], gflops, None,
                                    mine[1]))
                    break
                peer = peer.to(policy.device)
                if training:
                    timing, how = b.measure(peer_train(peer, x, y, mode), len(inputs)), ""
                else:
                    timing, how = peer_infer(b, peer, inputs, mode, len(inputs))
                rows.append(timed_row(case, f"{name}, {mode_name}{how}", gflops, timing, mine))
    return rows, options


def part_onnx(b: Bench) -> tuple[list[Row], list[str]]:
    """seglab's export (`export._to_onnx`, what `seglab export` writes) in fp32 under ONNX
    Runtime against the PyTorch peer in each mode; and int8 against fp32 of the same trained
    weights on real test images (`onnx_int8_on_isbi`)."""
    size = b.sizes["infer2d"][-1][1]
    fp = fingerprint(2, 3, ["background", "foreground"], (size, size))
    plan = make_plan(fp, {"patch_size": [size, size], "model.name": "encoder_unet"})
    cpu_fp32 = Precision.choose("cpu", "fp32", "off")
    model = cpu_fp32.prepare_model(models.create("encoder_unet", 2, 3, 2, encoder="resnet34"))
    proto = export._to_onnx(model.eval(), plan)
    on_gpu = (b.policy.device.type == "cuda"
              and "CUDAExecutionProvider" in ort.get_available_providers())
    short = "CUDA" if on_gpu else "CPU"
    x = torch.randn(1, 3, size, size, device="cuda" if on_gpu else "cpu")
    onnx_model = export.OnnxModel(ort.InferenceSession(
        proto.SerializeToString(), providers=[f"{short}ExecutionProvider"]))
    mine = b.measure(lambda: onnx_model(x), 1)
    rows = []
    for mode_name, mode in peer_modes(b).items():
        peer = smp.Unet("resnet34", encoder_weights=None, classes=2).to(b.policy.device)
        timing, how = peer_infer(b, peer, x.to(b.policy.device), mode, 1)
        row = timed_row(f"2D infer 1x3x{size}²", f"{PEER_2D}, {mode_name}{how}",
                        forward_gflops(peer, x.shape), timing, mine)
        row.seglab_label = f"seglab ONNX Runtime fp32 ({short})"
        rows.append(row)
    return rows, onnx_int8_on_isbi()


# ISBI 2012 runs of seglab's defaults, in order of preference: the 30-minute run of
# benchmarks/real_data.py, else the seglab run of benchmarks/time_to_accuracy.py
ISBI_RUNS = (ROOT / "runs" / "benchmarks" / "real_data" / "isbi2012" / "seglab",
             ROOT / "runs" / "benchmarks" / "time_to_accuracy" / "isbi2012" / "seglab" / "run")


def onnx_int8_on_isbi() -> list[str]:
    """`seglab export --quantize int8` of an ISBI 2012 run (ISBI_RUNS), measured
    by seglab's own report (`export.measure`) on the run's test slices: Dice of fp32 and int8
    against the reference and against each other, and images per second of each."""
    from seglab.preprocess import PreparedCache
    from seglab.run import Run
    from seglab.run_setup import open_dataset, prepare_cases

    folder = next((f for f in ISBI_RUNS if (f / "checkpoints").is_dir()), None)
    if folder is None:
        return ["- ONNX int8: no ISBI 2012 run here (benchmarks/real_data.py isbi2012 or "
                "benchmarks/time_to_accuracy.py isbi2012 makes one)"]
    run = Run.open(folder)
    plan = run.plan()
    with tempfile.TemporaryDirectory() as temporary:
        exported = export.export_onnx(run, Path(temporary) / "isbi.onnx", quantize="int8")
        test = prepare_cases(open_dataset(run), run.read_json("split.json")["test"], plan,
                             PreparedCache(run.preprocessed, plan))
        sessions = {name: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                    for name, path in (("fp32", exported.path), ("int8", exported.int8_path))}
        report = export.measure(sessions, plan, "test", test,
                                exported.quantization.calibration_patches)
    ratio = report.images_per_second_int8 / report.images_per_second_fp32
    return [f"- ONNX Runtime int8 against fp32 of the same weights (`seglab export --quantize "
            f"int8` of `{folder.relative_to(ROOT)}`, {plan.model['name']} widths "
            f"{plan.model.get('widths')}), whole {report.cases} ISBI 2012 test slices of 512², "
            f"CPU: {report.images_per_second_fp32:.2f} against {report.images_per_second_int8:.2f}"
            f" images/s, int8 **{ratio:.2f}x** fp32 (each its fastest of up to "
            f"{export.TIMING_PASSES} passes); membrane Dice {report.dice_fp32:.4f} fp32, "
            f"{report.dice_int8:.4f} int8 ({report.dice_int8 - report.dice_fp32:+.4f}); the "
            f"int8 masks agree with the fp32 ones at Dice {report.dice_int8_vs_fp32:.4f}"]


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
            result[name] = b.measure(step, 1)[0][1] * flops / 1e9
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
    batch_s = n / on_cpu.measure(sampler.batch, n)[0][1]
    share = batch_s / (batch_s + step_s)
    return (f"- waiting for data: `PatchSampler.batch()` for {n}x3x{size}² takes "
            f"{batch_s * 1e3:.0f} ms, seglab's training step {step_s * 1e3:.0f} ms: "
            f"{100 * share:.1f}% of the training loop's time goes to drawing batches")


def table(rows: list[Row], cuda: bool) -> str:
    def rate(stat: Stat | None) -> str:
        return "–" if stat is None else f"{stat[1]:.3g} [{stat[0]:.3g}–{stat[2]:.3g}]"

    def achieved(row: Row) -> str:
        return " / ".join("–" if stat is None else f"{stat[1] * row.gflops:.0f}"
                          for stat in (row.peer_ips, row.seglab_ips))

    head = ["case", "peer (a), mode", "(a) img/s", "(b)", "(b) img/s", "(b)/(a)",
            "GFLOP/s (a / b)"]
    head += ["peak CUDA MB (a / b)"] if cuda else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ratio = (f"{r.seglab_ips[1] / r.peer_ips[1]:.2f}x" if r.peer_ips and r.seglab_ips
                 else "–")
        cells = [r.case, r.peer, rate(r.peer_ips), r.seglab_label, rate(r.seglab_ips), ratio,
                 achieved(r)]
        mb = (f"{r.peer_mb:.0f}" if r.peer_mb else "–", f"{r.seglab_mb:.0f}" if r.seglab_mb
              else "–")
        cells += [" / ".join(mb)] if cuda else []
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
    gain = ceiling["bf16"] / ceiling["fp32"]
    tf32 = " (fp32 convolutions run as TF32 on CUDA, PyTorch's default)" if cuda else ""
    return "\n".join([
        f"### Speed against the peers on the {where} (`benchmarks/speed.py`)", "",
        f"- command: `{command}`",
        f"- machine: {machine()}" + (f"; {where}" if cuda else ""),
        f"- seglab's policy (`Precision.choose().describe()`): {b.policy.describe()}",
        f"- this machine's convolutions, GFLOP/s of a 3x3 Conv2d {c}->{c} forward on "
        f"{n}x{c}x{s}²: {measured}{tf32}; bf16 (best layout) runs **{gain:.2f}x** fp32 (best "
        "layout) here",
        (f"- images per second: the median of {b.repeats} timed repeats after {b.warmup} "
         "warm-up, [min–max]; the backend flags the policy sets globally (cuDNN benchmark, TF32) "
         "hold for the peers too"),
        *notes, "",
        *([table(rows, cuda), ""] if rows else []),
        ("(a) plain fp32: the peer's own loop in fp32, NCHW, AdamW + cross-entropy, "
         "`inference_mode`. (a) fastest: the same loop in the layout and autocast that seglab's "
         "policy picks for this device, and for inference torch.compile where it beat eager "
         "(the row says, with the seconds its first call took to compile from an empty cache: "
         "what a user pays the first time, once per input shape, or about 0 s where this run "
         "compiled the same graph before; seglab's default leaves compile off on the CPU, "
         "`--compile on` turns it on). (b): the same architecture built by seglab, prepared by "
         "its default policy, trained by `TrainStep` with Dice + cross-entropy. GFLOP/s: PyTorch's "
         "FlopCounterMode on one forward of the peer (x3 for a training step) times the median "
         "images per second."), ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement")
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat at tiny sizes, to check the script; prints only")
    parser.add_argument("--only", choices=["2d", "3d", "onnx", "ceiling"],
                        help="one part (with the ceilings); prints only")
    args = parser.parse_args()
    # an empty compile cache: the first compiled call costs what it costs a user the first time
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="speed-inductor-")
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
    if "2d" in parts:
        rows += part_2d(b)
        notes.append(data_wait(b, sizes["train2d"][0] / rows[0].seglab_ips[1]))
    if "3d" in parts:
        rows_3d, options = part_3d(b)
        rows += rows_3d
        notes.append(f"- 3D topology (seglab's plan for a {sizes['vol']}³ volume): "
                     + ", ".join(f"{k} {options[k]}" for k in ("widths", "kernels", "strides")))
    if "onnx" in parts:
        rows_onnx, int8 = part_onnx(b)
        rows += rows_onnx
        notes += int8
    text = section(args, b, rows, ceiling, notes)
    print("\n" + text)
    if not args.quick and not args.only:
        write_section("speed", policy.device.type, text)


if __name__ == "__main__":
    main()
