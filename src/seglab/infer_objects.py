"""Inference for instance runs: objects from Mask R-CNN's detections or from the rim watershed,
the thresholds chosen for them on the validation cases, and `seglab predict`'s outputs for them
(object-id masks, objects.csv in physical units, COCO results JSON, DICOM SEG for a series)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as coco_mask

from seglab import instance_split, measure
from seglab.case import Case
from seglab.data.dicom_seg import seg_beside
from seglab.data.instances import Instances, renumbered
from seglab.data.io import output_folder, write_text_atomic
from seglab.data.write import write_mask
from seglab.data.loading import load_case
from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.infer import load_model, predict_case
from seglab.infer_inputs import run_inputs
from seglab.models.mask_rcnn import objects_from_detections
from seglab.plan import Plan
from seglab.preprocess import prepare_case, resize
from seglab.run import Run
from seglab.run_setup import open_dataset

INSTANCE_SPLIT_FILE = "instance_split.json"  # the thresholds chosen for an instance run


def predict_object_files(run: Run, inputs: list[str | Path], out: Path,
                         precision: Precision | None = None, tta: str = "plan",
                         roi: str | Path | None = None,
                         probabilities: bool = False) -> list[Path]:
    """`seglab predict` for an instance run: per input its object-id mask, and objects.csv
    (objects.json in 2D) for all (`write_objects`)."""
    if probabilities:
        raise SeglabError(f"--probabilities: {run.path} is an instance run; it writes object ids, "
                          "objects.csv and objects.json (with each object's score)")
    precision = precision or Precision.choose()
    plan, cases = run_inputs(run, inputs, tta, roi)
    return write_objects(load_model(run, precision), plan, cases, out, precision,
                         instance_split_settings(run))


def predict_objects(model: torch.nn.Module, case: Case, plan: Plan, precision: Precision,
                    split: dict[str, Any]) -> Instances:
    """An instance plan's objects in the case's own grid, with the thresholds of `split`
    (RUN/instance_split.json): Mask R-CNN's detections, or the network's probabilities split by
    seeded watershed; none outside the ROI."""
    if plan.instances["method"] == "mask_rcnn":
        found = objects_from_detections(detections(model, prepare_case(case, plan).image,
                                                   precision), split["score_threshold"],
                                        split["mask_threshold"])
        ids = resize(found.ids[None], case.shape, "nearest")[0].astype(np.int32)
        if case.roi is not None:
            ids[~case.roi] = 0
        present = set(np.unique(ids).tolist())
        return renumbered(ids, {k: c for k, c in found.classes.items() if k in present},
                          scores=found.scores)
    _, probs = predict_case(model, case, plan, precision)
    if case.roi is not None:
        probs[:, ~case.roi] = 0
        probs[0, ~case.roi] = 1
    return instance_split.split_objects(probs, plan.instances["rim_class"],
                                        split["seed_threshold"], split["mask_threshold"],
                                        split["min_seed"])


@torch.no_grad()
def detections(model: torch.nn.Module, image: np.ndarray,
               precision: Precision) -> dict[str, torch.Tensor]:
    """Mask R-CNN's output for one prepared (C, *spatial) image: boxes, labels, scores and mask
    probabilities (N, 1, *spatial), on the CPU."""
    model.eval()
    tensor = precision.to_device(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)))
    with precision.autocast():
        found = model([tensor])[0]
    return {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in found.items()}


def instance_split_settings(run: Run) -> dict[str, Any]:
    """The thresholds chosen for the run on its validation cases (the plan's, or the watershed's
    defaults, before that)."""
    path = run.path / INSTANCE_SPLIT_FILE
    if path.is_file():
        return run.read_json(INSTANCE_SPLIT_FILE)
    instances = run.plan().instances
    return dict(instances) if instances["method"] == "mask_rcnn" else dict(instance_split.DEFAULTS)


def choose_instance_split(run: Run, precision: Precision) -> dict[str, Any]:
    """Predicts the validation cases with the best model and chooses the thresholds that give
    them the best mean DSB score: Mask R-CNN's score threshold, or the watershed's seed and mask
    thresholds (`seglab.instance_split.choose`); writes RUN/instance_split.json. For a
    cross-validated run, the out-of-fold predictions choose: each fold's validation cases
    predicted by that fold's model."""
    plan = run.plan()
    dataset = open_dataset(run)
    refs = {ref.case_id: ref for ref in dataset.cases}
    outputs, references = [], []
    for source in [run.fold(k) for k in range(run.fold_count())] or [run]:
        model = load_model(source, precision)
        for case_id in source.read_json("split.json")["val"]:
            case = load_case(dataset, refs[case_id])
            references.append(case.instances)
            if plan.instances["method"] == "mask_rcnn":
                outputs.append(detections(model, prepare_case(case, plan).image, precision))
            else:
                outputs.append(predict_case(model, case, plan, precision)[1])
    if plan.instances["method"] == "mask_rcnn":
        report = instance_split.choose_score_threshold(outputs, references,
                                                       plan.instances["mask_threshold"])
    else:
        report = instance_split.choose(outputs, references, plan.instances["rim_class"])
    run.write_json(INSTANCE_SPLIT_FILE, report)
    return report


def write_objects(model: torch.nn.Module, plan: Plan, cases: list[Case], out: Path,
                  precision: Precision, split: dict[str, Any]) -> list[Path]:
    """An instance run's predictions: per case, its object-id mask (0 = none) in the case's own
    format and geometry, and one objects.csv row per object, measured in physical units
    (`seglab.measure`: size, equivalent diameter, centroid, bounding box)."""
    output_folder(out)
    written, lines, header, results = [], [], None, []
    for case in cases:
        found = predict_objects(model, case, plan, precision, split)
        written.append(write_mask(found.ids, case, out))
        if case.meta["format"] == "dicom":
            written += seg_beside(found.ids, case, out, {
                k: f"{plan.classes[c]} {k}" for k, c in found.classes.items()})
        rows = measure.object_rows(found.ids, found.classes, plan.classes, case.spacing,
                                   case.meta.get("affine"), found.scores)
        header = header or (["case", *rows[0]] if rows else None)
        lines += measure.csv_text(rows, case.case_id)
        if plan.dims == 2:
            results += coco_results(found, case.case_id)
    table = out / "objects.csv"
    columns = header or ["case", "object", "class", "voxels"]
    write_text_atomic(table, "\n".join([",".join(columns), *lines]) + "\n")
    if plan.dims == 2:
        coco = out / "objects.json"
        write_text_atomic(coco, json.dumps(results) + "\n")
        return [*written, table, coco]
    return [*written, table]


def coco_results(found: Instances, image_id: str) -> list[dict[str, Any]]:
    """2D objects in COCO's results format (what `COCO.loadRes` reads): image id, category (the
    plan's class index), RLE mask, box (x, y, width, height), area and score."""
    results = []
    for object_id, class_index in found.classes.items():
        mask = np.asfortranarray(found.ids == object_id)
        rle = coco_mask.encode(mask.astype(np.uint8))
        rle["counts"] = rle["counts"].decode("ascii")
        results.append({"image_id": image_id, "category_id": int(class_index),
                        "segmentation": rle, "bbox": [float(v) for v in coco_mask.toBbox(rle)],
                        "area": float(coco_mask.area(rle)),
                        "score": float((found.scores or {}).get(object_id, 1.0))})
    return results
