"""Exporting a run's best model to ONNX, and predicting with the exported file alone.

`seglab export RUN` writes RUN/export/model.onnx: the network with a dynamic batch axis and the
plan's patch size (the sliding window feeds only that size), with the plan (JSON) and the seglab
version in the model's metadata_props. `seglab predict MODEL.onnx INPUTS --backend onnx` reads the
plan back from there and runs the same preprocessing, sliding window, resampling and writing as the
PyTorch path (`seglab.infer`); only the logits of each batch of patches come from ONNX Runtime.

`seglab export RUN --quantize int8` also writes model.int8.onnx beside it: a static int8 copy made
by ONNX Runtime's own quantiser (see `quantize_int8`), with the same plan in its metadata and a
report of what it costs (Dice against the reference and against the fp32 model, images per second)
under "seglab.quantization". Predicting with it is the same `--backend onnx` call.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime import quantization
from onnxruntime.quantization.shape_inference import quant_pre_process

from seglab import __version__
from seglab.data.io import atomic_path
from seglab.data.layouts import IGNORE_INDEX
from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.infer import load_model, postprocessing_steps, sliding_window_predict, write_predictions
from seglab.infer_inputs import attach_rois, read_inputs
from seglab.metrics import foreground_dice
from seglab.plan import Plan
from seglab.preprocess import Prepared, PreparedCache
from seglab.run import Run

DEFAULT_FILE = Path("export") / "model.onnx"  # inside the run folder
PLAN_KEY = "seglab.plan"
POSTPROCESSING_KEY = "seglab.postprocessing"  # the steps chosen for the run, applied as it does
VERSION_KEY = "seglab.version"
QUANTIZATION_KEY = "seglab.quantization"
QUANTIZE_CHOICES = ("int8",)
INPUT_NAME, OUTPUT_NAME = "image", "logits"
OPSET = 18
# The export is refused when ONNX Runtime's logits differ from PyTorch's by more than this, relative
# to the logits' scale; float32 reorderings alone stay around 1e-6.
TOLERANCE = 1e-3
CALIBRATION_PATCHES = 32  # cut from the training cases; the seed is the plan's
TIMING_PASSES, TIMING_SECONDS = 5, 3.0  # see `measure`


@dataclass(frozen=True)
class QuantizationReport:
    """What the int8 copy costs, measured on `cases` whole cases of the `split` split through the
    sliding window, in the plan's space: mean foreground Dice of each model against the
    reference, of the int8 masks against the fp32 ones, and images (cases) per second."""

    split: str
    cases: int
    calibration_patches: int
    dice_fp32: float
    dice_int8: float
    dice_int8_vs_fp32: float
    images_per_second_fp32: float
    images_per_second_int8: float
    method: str = ("onnxruntime quantize_static (MinMax calibration), QDQ, int8 weights per "
                   "channel, uint8 activations")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Exported(NamedTuple):
    path: Path
    max_abs_diff: float  # ONNX Runtime against PyTorch, logits of one random patch
    int8_path: Path | None = None  # with quantize="int8"
    quantization: QuantizationReport | None = None


class OnnxModel(torch.nn.Module):
    """An exported model called like the PyTorch one: a torch batch of patches in, torch logits out
    on the same device, ONNX Runtime in between. `seglab.infer` serves both backends unchanged."""

    def __init__(self, session: ort.InferenceSession):
        super().__init__()
        self.session = session

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        array = patches.detach().float().contiguous().cpu().numpy()
        logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})[0]
        return torch.from_numpy(logits).to(patches.device)


def export_onnx(run: Run, out: Path | None = None, quantize: str | None = None) -> Exported:
    """Exports the run's best model to `out` (default RUN/export/model.onnx) after checking ONNX
    Runtime against PyTorch on a random patch; nothing is written when they disagree. With
    quantize="int8", also its int8 copy beside it (`quantize_int8`). An int8 copy left there by
    an earlier export is removed either way: it was made from the model.onnx just replaced."""
    check_quantize(quantize)
    if run.plan().model["name"] == "mask_rcnn":
        raise SeglabError(f"{run.path}: a Mask R-CNN run is predicted with PyTorch (`seglab "
                          "predict`); its ONNX export is not supported")
    out = out or run.path / DEFAULT_FILE
    # The cases first: a run whose dataset has gone fails before anything is written.
    cases = quantization_cases(run) if quantize else None
    exported = _export_fp32(run, out)
    int8_path = int8_file(out)
    int8_path.unlink(missing_ok=True)
    if cases is None:
        return exported
    report = quantize_int8(out, int8_path, run.plan(), *cases)
    return exported._replace(int8_path=int8_path, quantization=report)


def check_quantize(quantize: str | None) -> None:
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise SeglabError(f"--quantize {quantize}: expected {' or '.join(QUANTIZE_CHOICES)} "
                          "(or leave it out for the fp32 model alone)")


def int8_file(out: Path) -> Path:
    """model.onnx -> model.int8.onnx, in the same folder."""
    stem = out.stem if out.suffix == ".onnx" else out.name
    return out.with_name(f"{stem}.int8.onnx")


def _export_fp32(run: Run, out: Path) -> Exported:
    plan = run.plan()
    model = load_model(run, Precision.choose("cpu", "fp32"))
    proto = _to_onnx(model, plan)
    onnx.helper.set_model_props(proto, {
        PLAN_KEY: json.dumps(plan.to_dict()), VERSION_KEY: __version__,
        POSTPROCESSING_KEY: json.dumps(postprocessing_steps(run))})
    data = proto.SerializeToString()
    patch = torch.randn(1, plan.in_channels, *plan.patch_size,
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(patch).numpy()
    session = ort.InferenceSession(data, providers=_providers("cpu"))
    got = session.run([OUTPUT_NAME], {INPUT_NAME: patch.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    scale = float(np.abs(expected).max())
    if not diff <= TOLERANCE * max(1.0, scale):  # NaN fails too
        raise SeglabError(f"{run.path}: the ONNX export disagrees with PyTorch (max abs diff "
                          f"{diff:.3g} on logits up to {scale:.3g}); nothing written")
    with atomic_path(out) as temporary:
        temporary.write_bytes(data)
    return Exported(out, diff)


def _to_onnx(model: torch.nn.Module, plan: Plan) -> onnx.ModelProto:
    """The model traced by torch.export on a batch of two patches, the batch axis left dynamic."""
    example = torch.zeros(2, plan.in_channels, *plan.patch_size)
    try:
        program = torch.onnx.export(
            model, (example,), dynamo=True, verbose=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as error:  # the exporter raises many types for an unsupported operator
        reason = (str(error).strip().splitlines() or [""])[0]
        raise SeglabError(f"model {plan.model['name']!r} cannot be exported to ONNX "
                          f"({type(error).__name__}: {reason})")
    return program.model_proto


def quantization_cases(run: Run) -> tuple[list[Prepared], str, list[Prepared]]:
    """Calibration cases (up to CALIBRATION_PATCHES training cases, drawn with the plan's seed),
    and the split measured with its cases: validation, else test, else train (a run may have
    no validation or test cases). Read through the run's preprocessing cache, as training does."""
    from seglab.run_setup import open_dataset, prepare_cases

    plan = run.plan()
    split = run.read_json("split.json")
    try:
        dataset = open_dataset(run)
    except SeglabError as error:
        raise SeglabError(f"--quantize calibrates and measures on the run's dataset: {error}")
    cache = PreparedCache(run.preprocessed, plan)
    order = np.random.default_rng(plan.seed).permutation(len(split["train"]))
    calibration = [split["train"][i] for i in order[:CALIBRATION_PATCHES]]
    name = next(n for n in ("val", "test", "train") if split[n])
    return (prepare_cases(dataset, calibration, plan, cache), name,
            prepare_cases(dataset, split[name], plan, cache))


def quantize_int8(fp32: Path, out: Path, plan: Plan, calibration: list[Prepared], split: str,
                  cases: list[Prepared]) -> QuantizationReport:
    """Writes a statically quantised int8 copy of the fp32 export `fp32` to `out`, with the fp32
    file's metadata (the plan...) and the report of what it costs (`measure`) added; nothing is
    written when any step fails."""
    with tempfile.TemporaryDirectory(prefix="seglab-quantize-") as folder:
        reader = CalibrationPatches(calibration, plan)
        quantized, session = _quantize(fp32, Path(folder), reader)
        reference = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
        report = measure({"fp32": reference, "int8": session}, plan, split, cases, reader.count)
        proto = onnx.load(quantized)
    metadata = reference.get_modelmeta().custom_metadata_map
    onnx.helper.set_model_props(proto, {**metadata,
                                        QUANTIZATION_KEY: json.dumps(report.to_dict())})
    with atomic_path(out) as temporary:
        temporary.write_bytes(proto.SerializeToString())
    return report


def _quantize(fp32: Path, folder: Path, reader: quantization.CalibrationDataReader
              ) -> tuple[Path, ort.InferenceSession]:
    """ONNX Runtime's quantiser run on `fp32`, writing in `folder`: the int8 file, and a CPU
    session of it.

    Static (activation ranges calibrated beforehand on `reader`'s patches) rather than dynamic:
    ONNX Runtime recommends it for convolutional networks, and it spares computing each
    activation's range at every call. QDQ format (a QuantizeLinear/DequantizeLinear pair around
    each quantised tensor) keeps a graph that every provider runs, fusing the pairs into int8
    kernels (QLinearConv...) where it has them. Weights int8 per output channel, since one scale
    for a whole convolution crushes its small channels. Activations uint8 (U8S8), not ONNX
    Runtime's default int8: on an AVX-512 VNNI Xeon its U8S8 kernels were the faster (the demo's
    U-Net, with instance norms: batches of patches 1.2-1.4x faster than fp32, where S8S8 gained
    nothing), at the same Dice.
    ONNX Runtime warns that U8S8 can saturate on x86 CPUs without VNNI; the report's Dice, measured
    here, is the check. Normalisation scales (one value per channel) are quantised along their
    only axis. `quant_pre_process` (shape inference and ONNX Runtime's basic graph optimisations)
    first, as ONNX Runtime advises, so that the quantiser sees every tensor's shape.
    """
    prepared, out = folder / "prepared.onnx", folder / "int8.onnx"
    try:
        _pre_process(fp32, prepared)
        quantization.quantize_static(
            str(prepared), str(out), reader, quant_format=quantization.QuantFormat.QDQ,
            per_channel=True, activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            extra_options={"QDQOpTypePerChannelSupportToAxis": {
                "InstanceNormalization": 0, "BatchNormalization": 0}})
        return out, ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    except Exception as error:  # the quantiser raises many types (ONNX, ORT, numpy)
        reason = (str(error).strip().splitlines() or [""])[0]
        raise SeglabError(f"{fp32}: int8 quantisation failed ({type(error).__name__}: "
                          f"{reason}); no int8 copy written")


def _pre_process(fp32: Path, out: Path) -> None:
    """`quant_pre_process`, without its symbolic shape inference where that fails (it gives up on
    some graphs, e.g. SegResNet's); ONNX's own shape inference still runs."""
    try:
        quant_pre_process(str(fp32), str(out))
    except Exception:  # "Incomplete symbolic shape inference", among others
        quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)


class CalibrationPatches(quantization.CalibrationDataReader):
    """CALIBRATION_PATCHES patches of the plan's size, one per call, cut at places drawn with the
    plan's seed from the training cases in turn, zero-padded where a case is smaller: what the
    sliding window feeds the network."""

    def __init__(self, cases: list[Prepared], plan: Plan, count: int = CALIBRATION_PATCHES):
        self.cases, self.plan, self.count = cases, plan, count
        self.rewind()

    def rewind(self) -> None:
        self.patches = self._patches()

    def get_next(self) -> dict[str, np.ndarray] | None:
        patch = next(self.patches, None)
        return None if patch is None else {INPUT_NAME: patch[None]}

    def _patches(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.plan.seed)
        size = self.plan.patch_size
        for index in range(self.count):
            image = self.cases[index % len(self.cases)].image
            padding = [(0, 0)] + [(0, max(0, p - n)) for p, n in zip(size, image.shape[1:])]
            image = np.pad(image, padding)
            starts = [int(rng.integers(0, n - p + 1)) for n, p in zip(image.shape[1:], size)]
            window = tuple(slice(start, start + p) for start, p in zip(starts, size))
            yield np.ascontiguousarray(image[(slice(None), *window)], dtype=np.float32)


def measure(sessions: dict[str, ort.InferenceSession], plan: Plan, split: str,
            cases: list[Prepared], calibration_patches: int) -> QuantizationReport:
    """Predicts `cases` with the "fp32" and the "int8" session through the sliding window that
    `seglab predict` uses, and compares them (see `QuantizationReport`).

    Speed is that of each model's fastest pass over the cases, after one patch has set its session
    up: a few validation images take well under a second, which other processes on the machine
    can double, so small sets are predicted again (up to TIMING_PASSES passes, until the timing
    has taken TIMING_SECONDS); a large set is predicted once."""
    precision = Precision.choose("cpu", "fp32")
    models = {name: OnnxModel(session) for name, session in sessions.items()}
    for model in models.values():
        model(torch.zeros(1, plan.in_channels, *plan.patch_size))
    dice, seconds = _compare(models, cases, plan, precision)
    passes = {name: [spent] for name, spent in seconds.items()}
    while (len(passes["fp32"]) < TIMING_PASSES
           and sum(map(sum, passes.values())) < TIMING_SECONDS):
        for name, model in models.items():
            started = time.perf_counter()
            for case in cases:
                sliding_window_predict(model, case.image, plan, precision)
            passes[name].append(time.perf_counter() - started)
    speed = {name: len(cases) / min(spent) for name, spent in passes.items()}
    return QuantizationReport(split, len(cases), calibration_patches, dice["fp32"], dice["int8"],
                              dice["agreement"], speed["fp32"], speed["int8"])


def _compare(models: dict[str, OnnxModel], cases: list[Prepared], plan: Plan,
             precision: Precision) -> tuple[dict[str, float], dict[str, float]]:
    """Mean Dice of each model against the reference and of "int8" against "fp32" ("agreement"),
    and the seconds each model took, one case after the other."""
    seconds = dict.fromkeys(models, 0.0)
    dice: dict[str, list[float]] = {name: [] for name in (*models, "agreement")}
    for case in cases:
        masks = {}
        for name, model in models.items():
            started = time.perf_counter()
            probabilities = sliding_window_predict(model, case.image, plan, precision)
            seconds[name] += time.perf_counter() - started
            masks[name] = probabilities.argmax(0).numpy()
        valid = case.label != IGNORE_INDEX
        if case.roi is not None:
            valid &= case.roi
        for name in models:
            dice[name].append(foreground_dice(masks[name], case.label, plan.n_classes,
                                              valid).mean())
        dice["agreement"].append(foreground_dice(masks["int8"], masks["fp32"], plan.n_classes,
                                                 valid).mean())
    return {name: float(np.mean(scores)) for name, scores in dice.items()}, seconds


def predict_onnx(source: str | Path, inputs: list[str | Path], out: Path,
                 probabilities: bool = False, device: str = "auto",
                 roi: str | Path | None = None) -> list[Path]:
    """`seglab predict --backend onnx`: `source` is an exported .onnx file or a run folder with
    export/model.onnx; the plan comes from the file's metadata, not from a run folder, and ROI
    masks (for a plan trained inside ROI files) from `roi`, as `seglab.infer_inputs.attach_rois` says."""
    model, plan = open_onnx(source, device)
    cases = read_inputs(inputs, plan)
    attach_rois(cases, plan, Path(roi) if roi else None)
    metadata = model.session.get_modelmeta().custom_metadata_map
    steps = json.loads(metadata.get(POSTPROCESSING_KEY, "[]"))
    return write_predictions(model, plan, cases, out, probabilities,
                             Precision.choose("cpu", "fp32"), steps)


def open_onnx(source: str | Path, device: str = "auto") -> tuple[OnnxModel, Plan]:
    """The exported model as an `OnnxModel`, and the plan stored in its metadata."""
    path = _model_file(Path(source))
    providers = _providers(device)
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as error:  # onnxruntime raises its own types for corrupt or foreign files
        raise SeglabError(f"{path}: not a readable ONNX model ({type(error).__name__})")
    metadata = session.get_modelmeta().custom_metadata_map
    if PLAN_KEY not in metadata:
        raise SeglabError(f"{path}: an ONNX model without a seglab plan in its metadata (export "
                          "one with `seglab export RUN`)")
    try:
        plan = Plan.from_dict(json.loads(metadata[PLAN_KEY]))
    except (json.JSONDecodeError, TypeError) as error:
        raise SeglabError(f"{path}: the seglab plan in its metadata is unreadable ({error})")
    return OnnxModel(session), plan


def _model_file(source: Path) -> Path:
    if source.is_dir():
        path = Run.open(source).path / DEFAULT_FILE
        if not path.is_file():
            raise SeglabError(f"{source}: the run has no {DEFAULT_FILE} (create it with "
                              f"`seglab export {source}`)")
        return path
    if not source.is_file():
        raise SeglabError(f"{source}: no such ONNX file or run folder")
    return source


def _providers(device: str) -> list[str]:
    """CUDA where asked for (or auto) and this onnxruntime has it, else the CPU."""
    if device not in ("auto", "cpu", "cuda"):
        raise SeglabError(f"--device {device}: expected auto, cpu or cuda")
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cuda" and not cuda:
        raise SeglabError("--device cuda: this onnxruntime has no CUDA provider "
                          "(the onnxruntime-gpu package has)")
    providers = ["CUDAExecutionProvider"] if cuda and device != "cpu" else []
    return [*providers, "CPUExecutionProvider"]
