"""Inference: sliding windows with Gaussian blending over images and volumes of any size, optional
mirroring test-time augmentation, and predictions written in the input's own format and geometry."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from seglab import models, postprocess
from seglab.case import Case
from seglab.data.io import IMAGE_SUFFIXES, read_image, suffix_of, write_mask, write_probabilities
from seglab.data.layouts import IGNORE_INDEX
from seglab.data.loading import field_of_view, load_case
from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.plan import Plan
from seglab.preprocess import prepare_case, resize
from seglab.run import Run, load_checkpoint
from seglab.train.setup import open_dataset

POSTPROCESSING_FILE = "postprocessing.json"


def build_model(plan: Plan) -> torch.nn.Module:
    options = {k: v for k, v in plan.model.items() if k != "name"}
    return models.create(plan.model["name"], plan.dims, plan.in_channels, plan.n_classes, **options)


def load_model(run: Run, precision: Precision) -> torch.nn.Module:
    """The run's best checkpoint (or last, if no validation ran) in eval mode on the device."""
    plan = run.plan()
    model = build_model(plan)
    state = load_checkpoint(run.best_checkpoint())
    model.load_state_dict(state["model"])
    return precision.prepare_model(model).eval()


@torch.no_grad()
def sliding_window_predict(model: torch.nn.Module, image: np.ndarray, plan: Plan,
                           precision: Precision) -> torch.Tensor:
    """Class probabilities (K, *spatial), float32 on the CPU, for a prepared (C, *spatial) image.

    Windows of the patch size overlap by `plan.inference.overlap`; their softmax outputs are
    blended with Gaussian weights (MONAI's `sliding_window_inference`); images smaller than a
    patch are padded. Mirroring along `mirror_axes` averages the flipped predictions.
    """
    inputs = precision.to_device(torch.from_numpy(np.ascontiguousarray(image))[None])
    options = plan.inference

    def predictor(patches: torch.Tensor) -> torch.Tensor:
        with precision.autocast():
            logits = model(precision.memory_format(patches, model))
        return torch.softmax(logits.float(), dim=1)

    def window(x: torch.Tensor) -> torch.Tensor:
        return sliding_window_inference(
            x, roi_size=plan.patch_size, sw_batch_size=options["batch_size"], predictor=predictor,
            overlap=options["overlap"], mode=options["blend"], padding_mode="constant")

    probs = window(inputs)
    mirror_axes = options.get("mirror_axes") or []
    for axis in mirror_axes:
        flipped = (axis + 2,)
        probs = probs + window(inputs.flip(flipped)).flip(flipped)
    return (probs / (1 + len(mirror_axes)))[0].float().cpu()


def predict_case(model: torch.nn.Module, case: Case, plan: Plan, precision: Precision,
                 steps: Sequence[dict[str, Any]] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(class-index mask, probabilities) in the case's own grid; outside the ROI is background;
    the post-processing `steps` (see `seglab.postprocess`) applied to the mask."""
    prepared = prepare_case(case, plan)
    probs = sliding_window_predict(model, prepared.image, plan, precision).numpy()
    probs = resize(probs, case.shape, "linear")
    mask = probs.argmax(axis=0).astype(np.uint8)
    if case.roi is not None:
        mask[~case.roi] = 0
    return postprocess.apply(mask, steps), probs


def postprocessing_steps(run: Run) -> list[dict[str, Any]]:
    """The post-processing chosen for the run on its validation cases (none before the choice)."""
    path = run.path / POSTPROCESSING_FILE
    return run.read_json(POSTPROCESSING_FILE)["steps"] if path.is_file() else []


def choose_postprocessing(run: Run, precision: Precision) -> dict[str, Any]:
    """Predicts the validation cases with the best model and keeps the post-processing steps
    that raise their Dice (`seglab.postprocess.choose`); writes RUN/postprocessing.json."""
    plan = run.plan()
    model = load_model(run, precision)
    return choose_postprocessing_for(run, lambda case: predict_case(model, case, plan,
                                                                    precision)[0])


def choose_postprocessing_for(run: Run, segment: Callable[[Case], np.ndarray]) -> dict[str, Any]:
    """As `choose_postprocessing`, for the masks that `segment` gives (a model's, a classical
    method's) of the run's validation cases."""
    plan = run.plan()
    dataset = open_dataset(run)
    refs = {ref.case_id: ref for ref in dataset.cases}
    predictions, references, valid = [], [], []
    for case_id in run.read_json("split.json")["val"]:
        case = load_case(dataset, refs[case_id])
        predictions.append(segment(case))
        references.append(case.label)
        inside = case.label != IGNORE_INDEX
        valid.append(inside if case.roi is None else inside & case.roi)
    if predictions:
        report = postprocess.choose(predictions, references, valid, plan.n_classes)
    else:
        report = {"steps": [], "reason": "no validation cases to choose on"}
    run.write_json(POSTPROCESSING_FILE, report)
    return report


def output_value_map(plan: Plan) -> dict[int, int] | None:
    """Class index -> the raw value the dataset stores it as, when that is one value per class, so
    that predictions look like the dataset's own label files (e.g. membrane = 0, cell = 255)."""
    if not plan.label_values:
        return None
    inverse: dict[int, list[int]] = {}
    for raw, index in plan.label_values.items():
        inverse.setdefault(index, []).append(raw)
    if any(len(raws) > 1 for raws in inverse.values()):
        return None
    mapping = {index: raws[0] for index, raws in inverse.items()}
    return None if all(k == v for k, v in mapping.items()) else mapping


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given; folders expanded to their image files (a DICOM folder is one case)."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise SeglabError(f"{item}: no such file or folder")
        if item.is_dir() and not any(p.suffix.lower() == ".dcm" for p in item.iterdir()):
            found = sorted(p for p in item.iterdir()
                           if p.is_file() and suffix_of(p) in IMAGE_SUFFIXES)
            if not found:
                raise SeglabError(f"{item}: no image files in this folder")
            paths.extend(found)
        else:
            paths.append(item)
    return paths


def with_tta(plan: Plan, tta: str, device: torch.device) -> Plan:
    """The plan with test-time mirroring chosen: "on" averages the windows mirrored along each
    spatial axis (1 + dims forward passes: 3x the inference time in 2D, 4x in 3D), "off" none, and
    "auto" mirrors on CUDA, where it is cheap, and keeps the plan's own choice elsewhere (none by
    default: on a CPU the time is better spent on a larger model)."""
    if tta not in ("auto", "on", "off"):
        raise SeglabError(f"--tta {tta}: expected auto, on or off")
    if tta == "on" or (tta == "auto" and device.type == "cuda"):
        axes = list(range(plan.dims))
    elif tta == "off":
        axes = []
    else:
        axes = plan.inference.get("mirror_axes") or []
    return dataclasses.replace(plan, inference={**plan.inference, "mirror_axes": axes})


def predict_files(run: Run, inputs: list[str | Path], out: Path, probabilities: bool = False,
                  precision: Precision | None = None, tta: str = "auto") -> list[Path]:
    """`seglab predict`: masks (and optionally probability maps) for every input, in `out`."""
    precision = precision or Precision.choose()
    plan = with_tta(run.plan(), tta, precision.device)
    cases = read_inputs(inputs, plan)
    return write_predictions(load_model(run, precision), plan, cases, out, probabilities, precision,
                             postprocessing_steps(run))


def read_inputs(inputs: list[str | Path], plan: Plan) -> list[Case]:
    """Every input read and checked against the plan's dims and channels, before any model loads."""
    cases = [read_image(path) for path in expand_inputs(inputs)]
    for case in cases:
        if case.channels != plan.in_channels or case.dims != plan.dims:
            raise SeglabError(f"{case.meta['path']}: {case.dims}D with {case.channels} channel(s), "
                              f"but the run was trained on {plan.dims}D with {plan.in_channels}")
    return cases


def write_predictions(model: torch.nn.Module, plan: Plan, cases: list[Case], out: Path,
                      probabilities: bool, precision: Precision,
                      steps: Sequence[dict[str, Any]] = ()) -> list[Path]:
    """Predicts each case with `model` (PyTorch, or the ONNX adapter of `seglab.export`) and
    writes its mask (and probabilities) in the case's own format and geometry."""
    value_map = output_value_map(plan)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for case in cases:
        if plan.roi_rule == "auto":
            case.roi = field_of_view(case.image)
        mask, probs = predict_case(model, case, plan, precision, steps)
        written.append(write_mask(mask, case, out, value_map))
        if probabilities:
            written.append(write_probabilities(probs.astype(np.float32), case, out))
    return written
