"""Exporting a run's best model to ONNX, and predicting with the exported file alone.

`seglab export RUN` writes RUN/export/model.onnx: the network with a dynamic batch axis and the
plan's patch size (the sliding window feeds only that size), with the plan (JSON) and the seglab
version in the model's metadata_props. `seglab predict MODEL.onnx INPUTS --backend onnx` reads the
plan back from there and runs the same preprocessing, sliding window, resampling and writing as the
PyTorch path (`seglab.infer`); only the logits of each batch of patches come from ONNX Runtime.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
import torch

from seglab import __version__
from seglab.data.io import atomic_path
from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.infer import load_model, read_inputs, write_predictions
from seglab.plan import Plan
from seglab.run import Run

DEFAULT_FILE = Path("export") / "model.onnx"  # inside the run folder
PLAN_KEY = "seglab.plan"
VERSION_KEY = "seglab.version"
INPUT_NAME, OUTPUT_NAME = "image", "logits"
OPSET = 18
# The export is refused when ONNX Runtime's logits differ from PyTorch's by more than this, relative
# to the logits' scale; float32 reorderings alone stay around 1e-6.
TOLERANCE = 1e-3


class Exported(NamedTuple):
    path: Path
    max_abs_diff: float  # ONNX Runtime against PyTorch, logits of one random patch


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


def export_onnx(run: Run, out: Path | None = None) -> Exported:
    """Exports the run's best model to `out` (default RUN/export/model.onnx) after checking ONNX
    Runtime against PyTorch on a random patch; nothing is written when they disagree."""
    plan = run.plan()
    model = load_model(run, Precision.choose("cpu", "fp32"))
    proto = _to_onnx(model, plan)
    onnx.helper.set_model_props(proto, {PLAN_KEY: json.dumps(plan.to_dict()),
                                        VERSION_KEY: __version__})
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
    out = out or run.path / DEFAULT_FILE
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


def predict_onnx(source: str | Path, inputs: list[str | Path], out: Path,
                 probabilities: bool = False, device: str = "auto") -> list[Path]:
    """`seglab predict --backend onnx`: `source` is an exported .onnx file or a run folder with
    export/model.onnx; the plan comes from the file's metadata, not from a run folder."""
    model, plan = open_onnx(source, device)
    cases = read_inputs(inputs, plan)
    return write_predictions(model, plan, cases, out, probabilities,
                             Precision.choose("cpu", "fp32"))


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
