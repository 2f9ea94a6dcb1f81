"""Inference: sliding windows with Gaussian blending over images and volumes of any size, optional
mirroring test-time augmentation, and predictions written in the input's own format and geometry."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab import models, postprocess
from seglab.measure import index_to_world, measure_mask, write_measurements
from seglab.models.mask_rcnn import build_mask_rcnn
from seglab.case import Case
from seglab.data.dicom_seg import seg_beside
from seglab.data.io import output_folder
from seglab.data.write import write_maps, write_mask, write_probabilities
from seglab.data.layouts import IGNORE_INDEX
from seglab.data.loading import load_case
from seglab.device import Precision
from seglab.plan import Plan
from seglab.infer_inputs import roi_dataset, stream_inputs, with_tta
from seglab.preprocess import network_image, resize
from seglab.run import Run, load_checkpoint
from seglab.run_setup import open_dataset
from seglab.sliding_window import WindowSource, blended_strips
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


def probability_strips(model: torch.nn.Module, image: WindowSource, plan: Plan,
                       precision: Precision, separate_passes: bool = False
                       ) -> Iterator[tuple[slice, torch.Tensor]]:
    """Class probabilities of a prepared (C, *spatial) image, strip by strip along its first
    axis (`seglab.sliding_window.blended_strips`): windows of the patch size overlapping by
    `plan.inference.overlap`, blended with Gaussian weights, each also mirrored along the
    plan's `mirror_axes` (or turned through the square's 8 symmetries: `quarter_turns`)."""
    options = plan.inference

    def predict(patches: torch.Tensor) -> torch.Tensor:
        with precision.autocast():
            logits = model(precision.memory_format(patches, model))
        return torch.softmax(logits.float(), dim=1)

    return blended_strips(image, plan.patch_size, predict, overlap=options["overlap"],
                          blend=options["blend"], batch_size=options["batch_size"],
                          mirror_axes=options.get("mirror_axes") or [],
                          quarter_turns=options.get("quarter_turns", False),
                          separate_passes=separate_passes, device=precision.device)


def sliding_window_predict(model: torch.nn.Module, image: WindowSource, plan: Plan,
                           precision: Precision) -> torch.Tensor:
    """Class probabilities (K, *spatial), float32 on the CPU, of a whole prepared image: the mean
    over the mirrored passes."""
    return torch.cat([probs[0] for _, probs in probability_strips(model, image, plan, precision)],
                     dim=1)


def predict_case(model: torch.nn.Module, case: Case, plan: Plan, precision: Precision,
                 steps: Sequence[dict[str, Any]] = (), probabilities: bool = True
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """(class-index mask, probabilities or None) in the case's own grid; outside the ROI is
    background; the post-processing `steps` (see `seglab.postprocess`) applied to the mask.

    Without `probabilities`, a case at the plan's spacing is turned into mask rows strip by
    strip: beyond the image and its mask, memory is bounded by a strip of windows."""
    image = network_image(case, plan)
    if probabilities or tuple(image.shape[1:]) != tuple(case.shape):
        probs = resize(sliding_window_predict(model, image, plan, precision).numpy(),
                       case.shape, "linear")
        return _mask_in_case(_class_map(torch.from_numpy(probs)), case, steps), probs
    mask = np.empty(case.shape, np.uint8)
    for rows, probs in probability_strips(model, image, plan, precision):
        mask[rows] = _class_map(probs[0])
    return _mask_in_case(mask, case, steps), None


def predict_case_uncertainty(model: torch.nn.Module, case: Case, plan: Plan,
                             precision: Precision, steps: Sequence[dict[str, Any]] = ()
                             ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """`predict_case` with the uncertainty maps of `seglab.uncertainty` in the case's grid: the
    entropy of the mean prediction, and the mutual information over every pass of every member
    (a cross-validated run's folds times the planned mirrorings) where there are two or more."""
    image = network_image(case, plan)
    passes = Passes()
    for member in model.members if isinstance(model, Ensemble) else [model]:
        strips = probability_strips(member, image, plan, precision, separate_passes=True)
        for probs in torch.cat([probs for _, probs in strips], dim=2):
            passes.add(probs.numpy())
    probs = resize(passes.mean(), case.shape, "linear")
    maps = {name: resize(value[None], case.shape, "linear")[0]
            for name, value in passes.maps().items()}
    return _mask_in_case(_class_map(torch.from_numpy(probs)), case, steps), probs, maps


def _class_map(probs: torch.Tensor) -> np.ndarray:
    """Class indices (uint8) of probabilities (K, *spatial): the first of tied classes."""
    return probs.argmax(0).to(torch.uint8).numpy()


def _mask_in_case(mask: np.ndarray, case: Case, steps: Sequence[dict[str, Any]]) -> np.ndarray:
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


def predict_files(run: Run, inputs: list[str | Path], out: Path, probabilities: bool = False,
                  precision: Precision | None = None, tta: str = "plan",
                  roi: str | Path | None = None, measure: bool = False,
                  uncertainty: bool = False) -> list[Path]:
    """`seglab predict` for a semantic run: masks (and optionally probability maps) for every
    input, in `out`; each input's region of interest as training had it (see `attach_rois`);
    with `measure`, each mask's classes and components in physical units too; with
    `uncertainty`, its entropy and mutual information maps (`predict_case_uncertainty`). The
    inputs are read ahead while the model loads and predicts (`stream_inputs`)."""
    precision = precision or Precision.choose()
    plan = with_tta(run.plan(), tta)
    cases = stream_inputs(inputs, plan, Path(roi) if roi else None, roi_dataset(run, plan, roi))
    model = load_model(run, precision)
    return write_predictions(model, plan, cases, out, probabilities, precision,
                             postprocessing_steps(run), measure, uncertainty)


def write_predictions(model: torch.nn.Module, plan: Plan, cases: Iterable[Case], out: Path,
                      probabilities: bool, precision: Precision,
                      steps: Sequence[dict[str, Any]] = (), measure: bool = False,
                      uncertainty: bool = False) -> list[Path]:
    """Predicts each case with `model` (PyTorch, or the ONNX adapter of `seglab.export`) and
    writes its mask (and probabilities, and uncertainty maps) in the case's own format and
    geometry; with `measure`, OUT/measurements.csv and .json (`seglab.measure`) for all. A
    writing thread encodes and writes each case's files while the next case is predicted."""
    value_map = output_value_map(plan)
    output_folder(out)
    measured: dict[str, Any] = {}
    foreground = {k: plan.classes[k] for k in range(1, plan.n_classes)}

    def write(case: Case, mask: np.ndarray, probs: np.ndarray | None,
              maps: dict[str, np.ndarray]) -> list[Path]:
        written = []
        if case.meta["format"] == "dicom":
            written += seg_beside(mask, case, out, dict(enumerate(plan.classes)))
        if probabilities:
            written.append(write_probabilities(probs.astype(np.float32), case, out))
        if maps:
            written += write_maps(maps, case, out)
        mask_file = write_mask(mask, case, out, value_map)  # last: a mask means a finished case
        if measure:
            measured[mask_file.name] = measure_mask(
                mask, foreground, case.spacing, index_to_world(case.meta, case.dims))
        return written + [mask_file]

    written: list[Path] = []
    with ThreadPoolExecutor(1, thread_name_prefix="seglab-writer") as writer:
        pending: deque = deque()
        for case in cases:
            maps: dict[str, np.ndarray] = {}
            if uncertainty:
                mask, probs, maps = predict_case_uncertainty(model, case, plan, precision, steps)
            else:
                mask, probs = predict_case(model, case, plan, precision, steps, probabilities)
            pending.append(writer.submit(write, case, mask, probs, maps))
            while len(pending) > 1:
                written += pending.popleft().result()
        while pending:
            written += pending.popleft().result()
    return written + (write_measurements(measured, out) if measure else [])
