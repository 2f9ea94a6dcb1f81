"""Checking a dataset file by file and summarising it as a fingerprint that the planner reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from skimage.morphology import skeletonize

from seglab.data.io import read_label
from seglab.data.layouts import IGNORE_INDEX, Dataset
from seglab.data.loading import load_case, read_case_instances
from seglab.data.sequences import sequence_summary
from seglab.errors import SeglabError

INTENSITY_SAMPLES_PER_CASE = 10_000
WIDTH_CASES = 20  # cases whose label skeletons measure the classes' widths


@dataclass
class Fingerprint:
    """What the planner needs to know about a dataset; written as JSON into every run."""

    name: str
    layout: str
    source: str
    dims: int
    channels: int
    n_cases: int
    n_unlabeled: int
    classes: list[str]
    label_values: dict[int, int] | None
    ignore_label: int | None
    roi_rule: str | None
    modality: str
    class_voxels: list[int]
    shapes: list[list[int]]
    spacings: list[list[float]]
    intensity: list[dict[str, float]]
    notes: list[str] = field(default_factory=list)
    task: str = "semantic"  # "instance" where the labels give objects
    # Instance datasets: objects per class (class-index order) and per case (min, median, max).
    objects: dict[str, Any] | None = None
    # 2D: each class's mean width in pixels (its pixels per skeleton pixel over the first
    # WIDTH_CASES cases; None where absent there, and for volumes). Thin colour classes get the
    # dynamic U-Net (plan._model).
    class_widths: list[float | None] | None = None
    # Frames of sequences among the case ids (`seglab.data.sequences.sequence_summary`): count,
    # median frames and frame step, the pattern that found them and whether seglab.yaml declared
    # it; None where there are none.
    sequences: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Fingerprint":
        data = dict(data)
        if data.get("label_values"):
            data["label_values"] = {int(k): int(v) for k, v in data["label_values"].items()}
        return cls(**data)


def inspect_dataset(dataset: Dataset) -> Fingerprint:
    """Reads every case, checks it, and returns the fingerprint; all problems raised at once."""
    if not dataset.cases:
        raise SeglabError(f"{dataset.source}: no labelled cases found (empty dataset)")
    problems: list[str] = []
    records, object_counts, diameters = [], [], []
    rng = np.random.default_rng(0)
    for ref in dataset.cases:
        try:
            case = load_case(dataset, ref, with_label=False)
            if not ref.labels:
                raise SeglabError(f"{ref.images[0]}: no label file found for case {ref.case_id!r}")
            if ref.objects:  # objects: read through the loader (it checks each file)
                instances = read_case_instances(ref, case.shape)
                raw = instances.semantic().astype(np.int64)
                object_counts.append(instances.counts_per_class())
                diameters += equivalent_diameters(instances.ids).tolist()
            else:
                raw = read_label(ref.labels[0])
            if raw.shape != case.shape:
                raise SeglabError(f"{ref.labels[0]}: size {raw.shape} does not match its image "
                                  f"{case.shape} ({ref.images[0].name})")
            if not all(np.isfinite(s) and 0 < s < 1e4 for s in case.spacing):
                raise SeglabError(f"{ref.images[0]}: implausible voxel spacing {case.spacing}")
        except SeglabError as error:
            problems.append(str(error))
            continue
        records.append(_record(case, raw, ref.labels[0], rng, len(records) < WIDTH_CASES))
    dims = {r["dims"] for r in records}
    if len(dims) > 1:
        by_dims = {d: next(r["path"] for r in records if r["dims"] == d) for d in sorted(dims)}
        problems.append("mixed 2D and 3D images: " + ", ".join(
            f"{d}D e.g. {p}" for d, p in by_dims.items()))
    channels = {r["channels"] for r in records}
    if len(channels) > 1:
        problems.append(f"{dataset.source}: cases have different channel counts {sorted(channels)}")
    notes: list[str] = []
    if records and not problems:
        _resolve_classes(dataset, records, notes, problems)
    if problems:
        raise SeglabError("\n".join(problems))
    fingerprint = _fingerprint(dataset, records, notes)
    if dataset.task == "instance":
        fingerprint.task, fingerprint.objects = "instance", _objects(
            object_counts, diameters, len(dataset.classes))
    return fingerprint


def equivalent_diameters(ids: np.ndarray) -> np.ndarray:
    """Each object's equivalent diameter in voxels: of the disc (2D) or ball (3D) of its size."""
    sizes = np.bincount(ids.ravel())[1:]
    sizes = sizes[sizes > 0].astype(float)
    if ids.ndim == 2:
        return np.sqrt(4 * sizes / np.pi)
    return np.cbrt(6 * sizes / np.pi)


def _objects(counts: list[dict[int, int]], diameters: list[float],
             n_classes: int) -> dict[str, Any]:
    per_case = [sum(c.values()) for c in counts]
    per_class = [sum(c.get(k, 0) for c in counts) for k in range(n_classes)]
    spread = np.percentile(diameters, [10, 50, 90]) if diameters else [0.0] * 3
    return {"total": sum(per_case), "per_class": per_class,
            "per_case": {"min": min(per_case), "median": float(np.median(per_case)),
                         "max": max(per_case)},
            "diameter": {"p10": float(spread[0]), "median": float(spread[1]),
                         "p90": float(spread[2])}}


def _record(case, raw: np.ndarray, label_path: Path, rng: np.random.Generator,
            measure_widths: bool) -> dict:
    values, counts = np.unique(raw, return_counts=True)
    skeletons = ({int(v): int(skeletonize(raw == v).sum()) for v in values}
                 if measure_widths and raw.ndim == 2 else {})
    flat_index = rng.integers(0, raw.size, size=min(INTENSITY_SAMPLES_PER_CASE, raw.size))
    return {
        "path": case.meta["path"],
        "label_path": str(label_path),
        "dims": case.dims,
        "channels": case.channels,
        "shape": list(case.shape),
        "spacing": [float(s) for s in case.spacing],
        "values": {int(v): int(c) for v, c in zip(values, counts)},
        "skeletons": skeletons,
        "sample_labels": raw.reshape(-1)[flat_index],
        "sample_intensities": case.image.reshape(case.channels, -1)[:, flat_index],
    }


def _resolve_classes(dataset: Dataset, records: list[dict], notes: list[str],
                     problems: list[str]) -> None:
    """Decides the class list when the dataset does not declare one, and checks every label."""
    seen = sorted({v for r in records for v in r["values"]} - {dataset.ignore_label})
    if dataset.label_values is None and dataset.classes is None:
        if seen == [0, 255]:
            dataset.label_values = {0: 0, 255: 1}
            notes.append("labels stored as 0/255: read as background/foreground (255 -> 1)")
        elif seen[-1] >= IGNORE_INDEX:
            problems.append(f"{dataset.source}: label values up to {seen[-1]} need a "
                            "`label_values` mapping in seglab.yaml")
            return
        else:
            notes.append(f"no classes declared: {seen[-1] + 1} classes from the label values")
            dataset.classes = ["background"] + [f"class_{k}" for k in range(1, seen[-1] + 1)]
    if dataset.classes is None:
        dataset.classes = ["background"] + [
            f"class_{k}" for k in range(1, max(dataset.label_values.values()) + 1)]
    allowed = set(range(len(dataset.classes))) | set(dataset.label_values or {})
    allowed |= {dataset.ignore_label} - {None}
    for record in records:
        bad = sorted(set(record["values"]) - allowed)
        if bad:
            problems.append(f"{record['label_path']}: label values {bad[:6]} are neither class "
                            f"indices ({len(dataset.classes)} classes) nor named in label_values;"
                            f" add `{bad[0]}: <class index>` under label_values in seglab.yaml")


def _fingerprint(dataset: Dataset, records: list[dict], notes: list[str]) -> Fingerprint:
    n_classes = len(dataset.classes)
    lookup = {k: k for k in range(n_classes)} | (dataset.label_values or {})
    class_voxels = [0] * n_classes
    width_pixels, skeleton_pixels = np.zeros(n_classes), np.zeros(n_classes)
    for record in records:
        for value, count in record["values"].items():
            if value in lookup:
                class_voxels[lookup[value]] += count
        for value, count in record["skeletons"].items():
            if value in lookup:
                width_pixels[lookup[value]] += record["values"][value]
                skeleton_pixels[lookup[value]] += count
    labels = np.concatenate([r["sample_labels"] for r in records])
    intensities = np.concatenate([r["sample_intensities"] for r in records], axis=1)
    foreground = np.isin(labels, [v for v, k in lookup.items() if k > 0])
    if foreground.sum() < 100:
        foreground = np.ones_like(foreground)
    stats = []
    for channel in intensities[:, foreground]:
        stats.append({
            "mean": float(channel.mean()), "std": float(channel.std()),
            "p00_5": float(np.percentile(channel, 0.5)), "p99_5": float(np.percentile(channel, 99.5)),
        })
    if dataset.roi_rule == "auto":
        notes.append("region of interest derived from each image (field of view: channel mean above "
                     "10% of its 99th percentile, largest component, holes filled, eroded 2 px)")
    return Fingerprint(
        name=dataset.name, layout=dataset.layout, source=dataset.source,
        dims=records[0]["dims"], channels=records[0]["channels"],
        n_cases=len(records), n_unlabeled=len(dataset.unlabeled),
        classes=list(dataset.classes), label_values=dataset.label_values,
        ignore_label=dataset.ignore_label, roi_rule=dataset.roi_rule, modality=dataset.modality,
        class_voxels=class_voxels, shapes=[r["shape"] for r in records],
        spacings=[r["spacing"] for r in records], intensity=stats, notes=notes,
        class_widths=[round(float(p / n), 2) if n else None
                      for p, n in zip(width_pixels, skeleton_pixels)] if records[0]["dims"] == 2
        else None,
        sequences=sequence_summary([r.case_id for r in [*dataset.cases, *dataset.unlabeled]],
                                   dataset.sequence),
    )


def format_fingerprint(fp: Fingerprint) -> str:
    """A human summary for `seglab inspect`."""
    shapes = np.array(fp.shapes)
    spacings = np.array(fp.spacings)
    total = max(sum(fp.class_voxels), 1)
    lines = [
        f"dataset   {fp.name}  ({fp.layout}: {fp.source})",
        f"cases     {fp.n_cases} labelled, {fp.n_unlabeled} unlabelled",
        f"images    {fp.dims}D, {fp.channels} channel(s), modality {fp.modality}",
        f"size      min {_row(shapes.min(0))}  median {_row(np.median(shapes, 0))}  "
        f"max {_row(shapes.max(0))}",
        f"spacing   min {_row(spacings.min(0), 4)}  median {_row(np.median(spacings, 0), 4)}  "
        f"max {_row(spacings.max(0), 4)}",
        "classes   " + ", ".join(
            f"{k} {name} {100 * n / total:.2f}%" for k, (name, n) in
            enumerate(zip(fp.classes, fp.class_voxels))),
    ]
    if fp.objects:
        per_case, per_class = fp.objects["per_case"], fp.objects["per_class"]
        lines.append(f"objects   {fp.objects['total']} in all; per case min {per_case['min']} "
                     f"median {per_case['median']:g} max {per_case['max']}")
        lines.append("per class " + ", ".join(f"{name} {n}" for name, n in
                                               zip(fp.classes[1:], per_class[1:]) if n))
        if diameter := fp.objects.get("diameter"):
            lines.append(f"diameter  {diameter['p10']:.1f} / {diameter['median']:.1f} / "
                         f"{diameter['p90']:.1f} voxels (10th percentile / median / 90th)")
    if fp.sequences:
        lines.append(f"sequences {fp.sequences['count']} of frames (median "
                     f"{fp.sequences['frames']:g} frames, frame step {fp.sequences['step']:g})")
    if fp.ignore_label is not None:
        lines.append(f"ignored   label value {fp.ignore_label} (not trained on, not scored)")
    lines += [f"note      {note}" for note in fp.notes]
    return "\n".join(lines)


def _row(values, digits: int = 0) -> str:
    return "x".join(f"{v:.{digits}f}" for v in values)
