"""Inference: sliding windows with Gaussian blending over images and volumes of any size, optional
mirroring test-time augmentation, and predictions written in the input's own format and geometry."""

from __future__ import annotations

import dataclasses
import glob
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from seglab import models, postprocess
from seglab.measure import index_to_world, measure_mask, write_measurements
from seglab.models.mask_rcnn import build_mask_rcnn
from seglab.case import Case
from seglab.data.dicom_seg import seg_beside
from seglab.data.io import (IMAGE_SUFFIXES, output_folder, read_label, suffix_of,
                            write_maps, write_mask, write_probabilities)
from seglab.data.layouts import IGNORE_INDEX, Dataset
from seglab.data.loading import field_of_view, load_case
from seglab.data.sequences import input_frames, read_frames
from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.plan import Plan
from seglab.preprocess import prepare_case, resize
from seglab.run import Run, load_checkpoint
from seglab.run_setup import open_dataset
from seglab.uncertainty import Passes

POSTPROCESSING_FILE = "postprocessing.json"


def build_model(plan: Plan) -> torch.nn.Module:
    options = {k: v for k, v in plan.model.items() if k != "name"}
    if plan.model["name"] == "mask_rcnn":
        return build_mask_rcnn(plan.in_channels, plan.n_classes, **options)
    return models.create(plan.model["name"], plan.dims, plan.in_channels, plan.n_classes, **options)


def load_model(run: Run, precision: Precision) -> torch.nn.Module:
    """The run's best checkpoint (or last, if no validation ran) in eval mode on the device; for
    a cross-validated run, the ensemble of its folds' models."""
    if run.fold_count():
        return Ensemble([load_model(run.fold(k), precision) for k in range(run.fold_count())])
    plan = run.plan()
    model = build_model(plan)
    state = load_checkpoint(run.best_checkpoint())
    model.load_state_dict(state["model"])
    return precision.prepare_model(model).eval()


class Ensemble(torch.nn.Module):
    """Averages its members' class probabilities, as nnU-Net ensembles its folds. It returns the
    log of the mean, so that the softmax that inference applies to any model's output gives the
    mean probabilities back exactly."""

    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = sum(torch.softmax(m(x).float(), dim=1) for m in self.members) / len(self.members)
        return torch.log(mean.clamp_min(1e-12))


@torch.no_grad()
def sliding_window_passes(model: torch.nn.Module, image: np.ndarray, plan: Plan,
                          precision: Precision) -> Iterator[torch.Tensor]:
    """Class probabilities (K, *spatial), float32 on the CPU, of each pass over a prepared
    (C, *spatial) image: the image itself, then mirrored along each of `mirror_axes` (flipped
    back).

    Windows of the patch size overlap by `plan.inference.overlap`; their softmax outputs are
    blended with Gaussian weights (MONAI's `sliding_window_inference`); images smaller than a
    patch are padded.
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

    yield window(inputs)[0].float().cpu()
    for axis in options.get("mirror_axes") or []:
        flipped = (axis + 2,)
        yield window(inputs.flip(flipped)).flip(flipped)[0].float().cpu()


def sliding_window_predict(model: torch.nn.Module, image: np.ndarray, plan: Plan,
                           precision: Precision) -> torch.Tensor:
    """The mean of `sliding_window_passes`: mirroring along `mirror_axes` averages the flipped
    predictions."""
    total, count = None, 0
    for probs in sliding_window_passes(model, image, plan, precision):
        total = probs if total is None else total + probs
        count += 1
    return total / count


def predict_case(model: torch.nn.Module, case: Case, plan: Plan, precision: Precision,
                 steps: Sequence[dict[str, Any]] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(class-index mask, probabilities) in the case's own grid; outside the ROI is background;
    the post-processing `steps` (see `seglab.postprocess`) applied to the mask."""
    prepared = prepare_case(case, plan)
    probs = sliding_window_predict(model, prepared.image, plan, precision).numpy()
    probs = resize(probs, case.shape, "linear")
    return _mask_in_case(probs, case, steps), probs


def predict_case_uncertainty(model: torch.nn.Module, case: Case, plan: Plan,
                             precision: Precision, steps: Sequence[dict[str, Any]] = ()
                             ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """`predict_case` with the uncertainty maps of `seglab.uncertainty` in the case's grid: the
    entropy of the mean prediction, and the mutual information over every pass of every member
    (a cross-validated run's folds times the planned mirrorings) where there are two or more."""
    prepared = prepare_case(case, plan)
    passes = Passes()
    for member in model.members if isinstance(model, Ensemble) else [model]:
        for probs in sliding_window_passes(member, prepared.image, plan, precision):
            passes.add(probs.numpy())
    probs = resize(passes.mean(), case.shape, "linear")
    maps = {name: resize(value[None], case.shape, "linear")[0]
            for name, value in passes.maps().items()}
    return _mask_in_case(probs, case, steps), probs, maps


def _mask_in_case(probs: np.ndarray, case: Case, steps: Sequence[dict[str, Any]]) -> np.ndarray:
    mask = probs.argmax(axis=0).astype(np.uint8)
    if case.roi is not None:
        mask[~case.roi] = 0
    return postprocess.apply(mask, steps)


def postprocessing_steps(run: Run) -> list[dict[str, Any]]:
    """The post-processing chosen for the run on its validation cases (none before the choice)."""
    path = run.path / POSTPROCESSING_FILE
    return run.read_json(POSTPROCESSING_FILE)["steps"] if path.is_file() else []


def choose_postprocessing(run: Run, precision: Precision) -> dict[str, Any]:
    """Predicts the validation cases with the best model and keeps the post-processing steps
    that raise their Dice (`seglab.postprocess.choose`); writes RUN/postprocessing.json. For a
    cross-validated run, the out-of-fold predictions choose: each fold's validation cases
    predicted by that fold's model."""
    plan = run.plan()
    folds = [run.fold(k) for k in range(run.fold_count())] or [run]
    model_of = {}
    for source in folds:
        model = load_model(source, precision)
        model_of.update(dict.fromkeys(source.read_json("split.json")["val"], model))
    return choose_postprocessing_for(
        run, lambda case: predict_case(model_of[case.case_id], case, plan, precision)[0],
        list(model_of))


def choose_postprocessing_for(run: Run, segment: Callable[[Case], np.ndarray],
                              case_ids: list[str] | None = None) -> dict[str, Any]:
    """As `choose_postprocessing`, for the masks that `segment` gives (a model's, a classical
    method's) of `case_ids` (default: the run's validation cases)."""
    plan = run.plan()
    dataset = open_dataset(run)
    refs = {ref.case_id: ref for ref in dataset.cases}
    predictions, references, valid = [], [], []
    if case_ids is None:
        case_ids = run.read_json("split.json")["val"]
    for case_id in case_ids:
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
    that predictions look like the dataset's own label files (e.g. membrane = 0, cell = 255). A
    class that a partial `label_values` does not name is stored as its own index."""
    if not plan.label_values:
        return None
    inverse: dict[int, list[int]] = {}
    for raw, index in plan.label_values.items():
        inverse.setdefault(index, []).append(raw)
    for index in range(plan.n_classes):
        if index not in inverse and index not in plan.label_values:
            inverse[index] = [index]
    if any(len(raws) > 1 for raws in inverse.values()) or len(inverse) < plan.n_classes:
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


def with_tta(plan: Plan, tta: str) -> Plan:
    """The plan's test-time mirroring ("plan": as planned, and as validation and evaluation
    scored it), or the user's deviation from it: "on" averages the windows mirrored along each
    spatial axis (1 + dims forward passes: 3x the inference time in 2D, 4x in 3D), "off" none."""
    if tta not in ("plan", "on", "off"):
        raise SeglabError(f"--tta {tta}: expected plan, on or off")
    if tta == "plan":
        return plan
    axes = list(range(plan.dims)) if tta == "on" else []
    return dataclasses.replace(plan, inference={**plan.inference, "mirror_axes": axes})


def predict_files(run: Run, inputs: list[str | Path], out: Path, probabilities: bool = False,
                  precision: Precision | None = None, tta: str = "plan",
                  roi: str | Path | None = None, measure: bool = False,
                  uncertainty: bool = False) -> list[Path]:
    """`seglab predict` for a semantic run: masks (and optionally probability maps) for every
    input, in `out`; each input's region of interest as training had it (see `attach_rois`);
    with `measure`, each mask's classes and components in physical units too; with
    `uncertainty`, its entropy and mutual information maps (`predict_case_uncertainty`)."""
    precision = precision or Precision.choose()
    plan, cases = run_inputs(run, inputs, tta, roi)
    model = load_model(run, precision)
    return write_predictions(model, plan, cases, out, probabilities, precision,
                             postprocessing_steps(run), measure, uncertainty)


def run_inputs(run: Run, inputs: list[str | Path], tta: str = "plan",
               roi: str | Path | None = None) -> tuple[Plan, list[Case]]:
    """The run's plan (with `tta`) and every input read, checked and given its ROI."""
    plan = with_tta(run.plan(), tta)
    cases = read_inputs(inputs, plan)
    dataset = open_dataset(run) if plan.roi_rule == "file" and roi is None else None
    attach_rois(cases, plan, Path(roi) if roi else None, dataset)
    return plan, cases


def read_inputs(inputs: list[str | Path], plan: Plan) -> list[Case]:
    """Every input read (with its neighbouring frames, for temporal context) and checked against
    the plan's dims and channels, before any model loads."""
    read: dict[Path, Case] = {}
    cases = [read_frames(files, read) for files in input_frames(
        expand_inputs(inputs), plan.temporal["context"], plan.temporal["pattern"])]
    check_inputs(cases, plan)
    return cases


def check_inputs(cases: list[Case], plan: Plan) -> None:
    """One clear error for the first input whose dims or channels the run was not trained on."""
    for case in cases:
        if case.channels != plan.in_channels or case.dims != plan.dims:
            raise SeglabError(f"{case.meta['path']}: {case.dims}D with {case.channels} channel(s), "
                              f"but the run was trained on {plan.dims}D with {plan.in_channels}")


def attach_rois(cases: list[Case], plan: Plan, roi_folder: Path | None = None,
                dataset: Dataset | None = None) -> None:
    """Sets each case's region of interest as training had it, before normalisation (which is
    taken inside it): a mask of the same name in `roi_folder` when given; else for a run trained
    with ROI files, the dataset's own file when the input is one of its cases; else for
    `roi: auto`, the field of view derived from the image. None when the plan has no ROI."""
    own = {ref.images[0].resolve(): ref.roi for ref in dataset.cases if ref.roi} if dataset else {}
    for case in cases:
        path = Path(case.meta["path"])
        if roi_folder is not None:
            case.roi = _roi_from_folder(roi_folder, path, case.shape)
        elif plan.roi_rule == "file":
            if (roi := own.get(path.resolve())) is None:
                raise SeglabError(f"{path}: the run was trained inside ROI masks read from files; "
                                  "give --roi DIR with a mask of the same name for each input")
            case.roi = _read_roi(roi, case.shape)
        elif plan.roi_rule == "auto":
            case.roi = field_of_view(case.image)


def _roi_from_folder(folder: Path, image: Path, shape: tuple[int, ...]) -> np.ndarray:
    stem = image.name[: -len(suffix_of(image))]
    found = sorted(p for p in folder.glob(f"{glob.escape(stem)}.*")
                   if suffix_of(p) in IMAGE_SUFFIXES and p.name[: -len(suffix_of(p))] == stem)
    if not found:
        raise SeglabError(f"{image}: no ROI mask named {stem}.* in {folder}")
    return _read_roi(found[0], shape)


def _read_roi(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    roi = read_label(path)
    if roi.shape != tuple(shape):
        raise SeglabError(f"{path}: ROI size {roi.shape} does not match its image {tuple(shape)}")
    return roi > 0


def write_predictions(model: torch.nn.Module, plan: Plan, cases: list[Case], out: Path,
                      probabilities: bool, precision: Precision,
                      steps: Sequence[dict[str, Any]] = (), measure: bool = False,
                      uncertainty: bool = False) -> list[Path]:
    """Predicts each case with `model` (PyTorch, or the ONNX adapter of `seglab.export`) and
    writes its mask (and probabilities, and uncertainty maps) in the case's own format and
    geometry; with `measure`, OUT/measurements.csv and .json (`seglab.measure`) for all."""
    value_map = output_value_map(plan)
    output_folder(out)
    written, measured = [], {}
    foreground = {k: plan.classes[k] for k in range(1, plan.n_classes)}
    for case in cases:
        if uncertainty:
            mask, probs, maps = predict_case_uncertainty(model, case, plan, precision, steps)
        else:
            mask, probs = predict_case(model, case, plan, precision, steps)
        if case.meta["format"] == "dicom":
            written += seg_beside(mask, case, out, dict(enumerate(plan.classes)))
        if probabilities:
            written.append(write_probabilities(probs.astype(np.float32), case, out))
        if uncertainty:
            written += write_maps(maps, case, out)
        mask_file = write_mask(mask, case, out, value_map)  # last: a mask means a finished case
        written.append(mask_file)
        if measure:
            measured[mask_file.name] = measure_mask(
                mask, foreground, case.spacing, index_to_world(case.meta, case.dims))
    return written + (write_measurements(measured, out) if measure else [])


