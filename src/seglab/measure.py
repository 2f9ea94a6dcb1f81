"""Objects and masks measured in physical units (2D or 3D): one row per object of an object-id
map, and for a class mask (`seglab measure`, `predict --measure`) each class's total area or
volume and one row per connected component with its largest diameter.

Sizes use the voxel spacing (mm, or the unit the file declares): area in mm² for 2D images,
volume in mm³ and mL for volumes; the equivalent diameter is that of the disc or sphere of the
same size. Centroids are given in voxel indices and, through the image's affine where the file
has one (NIfTI, DICOM), in world coordinates; otherwise as index times spacing. Bounding boxes
are voxel index ranges, the end exclusive. Computed with SciPy's per-label reductions, one pass
each, for any number of objects.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from seglab.data.io import output_folder, read_image, write_text_atomic
from seglab.errors import SeglabError


def object_rows(ids: np.ndarray, classes: dict[int, int], class_names: list[str],
                spacing: tuple[float, ...], affine: np.ndarray | None = None,
                scores: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """One dict per object of `ids` (0 = none), in id order: id, class, (score,) voxels, size,
    equivalent diameter, centroid (voxel and world), bounding box."""
    object_ids = sorted(classes)
    if not object_ids:
        return []
    voxel = float(np.prod(spacing))
    counts = np.bincount(ids.ravel(), minlength=max(object_ids) + 1)
    centroids = ndimage.center_of_mass(np.ones(ids.shape), ids, object_ids)
    boxes = ndimage.find_objects(ids)
    rows = []
    for object_id, centroid in zip(object_ids, centroids):
        size = int(counts[object_id]) * voxel
        box = boxes[object_id - 1]
        row = {"object": object_id, "class": class_names[classes[object_id]],
               **({"score": round(scores[object_id], 4)} if scores is not None else {}),
               "voxels": int(counts[object_id]), **_size(size, ids.ndim),
               "centroid_index": [round(float(c), 2) for c in centroid],
               "centroid_world": _world(centroid, spacing, affine),
               "bbox_start": [s.start for s in box], "bbox_stop": [s.stop for s in box]}
        rows.append(row)
    return rows


def _size(size: float, dims: int) -> dict[str, float]:
    if dims == 2:
        return {"area_mm2": round(size, 4),
                "equivalent_diameter_mm": round(2 * math.sqrt(size / math.pi), 4)}
    return {"volume_mm3": round(size, 4), "volume_ml": round(size / 1000, 6),
            "equivalent_diameter_mm": round((6 * size / math.pi) ** (1 / 3), 4)}


def _world(centroid: tuple[float, ...], spacing: tuple[float, ...],
           affine: np.ndarray | None) -> list[float]:
    if affine is not None and np.asarray(affine).shape == (len(centroid) + 1,) * 2:
        return [round(float(v), 3) for v in (np.asarray(affine) @ np.array([*centroid, 1.0]))[:-1]]
    return [round(float(c) * s, 3) for c, s in zip(centroid, spacing)]


def csv_text(rows: list[dict[str, Any]], case_id: str | None = None) -> list[str]:
    """The rows as CSV lines (lists joined by spaces), without a header."""
    lines = []
    for row in rows:
        values = [case_id] if case_id is not None else []
        values += [" ".join(str(v) for v in value) if isinstance(value, list) else str(value)
                   for value in row.values()]
        lines.append(",".join(values))
    return lines


def largest_diameter(points: np.ndarray) -> float:
    """The largest distance between two of `points` (N, dims), in their units: over the vertices
    of their convex hull (all pairs where the points are too few or flat for a hull)."""
    if len(points) < 2:
        return 0.0
    try:
        points = points[ConvexHull(points).vertices]
    except QhullError:  # collinear or coplanar: every point is a candidate
        pass
    return float(np.sqrt(max(((points[i] - points[i + 1:]) ** 2).sum(1).max()
                             for i in range(len(points) - 1))))


def component_rows(mask: np.ndarray, class_names: dict[int, str], spacing: tuple[float, ...],
                   affine: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One dict per connected component (full connectivity: 8 neighbours in 2D, 26 in 3D) of
    each class value in `class_names`: class, component number, `object_rows`' size, centroid
    and box, and its largest diameter in physical units (between voxel centres, the spacing
    applied per axis, so anisotropic voxels count right)."""
    rows = []
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    scale = np.asarray(spacing, float)
    for value, name in class_names.items():
        components, count = ndimage.label(mask == value, structure=structure)
        if not count:
            continue
        measured = object_rows(components, dict.fromkeys(range(1, count + 1), 0), [name],
                               spacing, affine)
        for row, box in zip(measured, ndimage.find_objects(components)):
            inside = components[box] == row["object"]
            edge = inside & ~ndimage.binary_erosion(inside, structure)
            points = (np.argwhere(edge) + [s.start for s in box]) * scale
            rows.append({"class": name, "component": row.pop("object"), **row,
                         "largest_diameter_mm": round(largest_diameter(points), 4)})
    return rows


def class_summary(rows: list[dict[str, Any]], class_names: dict[int, str],
                  dims: int) -> dict[str, dict[str, Any]]:
    """Per class: its components' count and total size (area in mm², or volume in mm³ and
    mL), from `component_rows`."""
    key = "area_mm2" if dims == 2 else "volume_mm3"
    summary = {}
    for name in class_names.values():
        own = [row for row in rows if row["class"] == name]
        total = round(sum(row[key] for row in own), 4)
        summary[name] = {"components": len(own), key: total,
                         **({"volume_ml": round(total / 1000, 6)} if dims == 3 else {})}
    return summary


def index_to_world(meta: dict[str, Any], dims: int) -> np.ndarray | None:
    """The (dims + 1)² affine from array indices to world coordinates that a file's meta gives:
    NIfTI's own affine (its array is in the affine's axis order), or for DICOM and ITK files
    SimpleITK's origin, direction and spacing, whose (x, y, z) order is the array's reversed."""
    if meta.get("affine") is not None:
        return np.asarray(meta["affine"], float)
    if meta.get("origin") is None or dims != len(meta["origin"]):
        return None
    direction = np.asarray(meta["direction"], float).reshape(dims, dims)
    linear = direction @ np.diag(meta["sitk_spacing"])
    affine = np.eye(dims + 1)
    affine[:dims, :dims] = linear[:, ::-1]  # columns follow the array's (z, y, x) indices
    affine[:dims, dims] = meta["origin"]
    return affine


def measure_mask(mask: np.ndarray, class_names: dict[int, str], spacing: tuple[float, ...],
                 affine: np.ndarray | None = None) -> dict[str, Any]:
    """One mask's spacing, per-class totals and components (`component_rows`)."""
    rows = component_rows(mask, class_names, spacing, affine)
    return {"spacing": [float(s) for s in spacing],
            "classes": class_summary(rows, class_names, mask.ndim), "components": rows}


def write_measurements(measured: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    """OUT/measurements.csv (one row per component, by mask) and OUT/measurements.json."""
    lines, header = [], None
    for name, report in measured.items():
        rows = report["components"]
        header = header or (["mask", *rows[0]] if rows else None)
        lines += csv_text(rows, name)
    output_folder(out)
    table, document = out / "measurements.csv", out / "measurements.json"
    columns = header or ["mask", "class", "component", "voxels"]
    write_text_atomic(table, "\n".join([",".join(columns), *lines]) + "\n")
    write_text_atomic(document, json.dumps(measured, indent=2) + "\n")
    return [table, document]


def measure_files(paths: list[Path], out: Path, spacing: tuple[float, ...] | None = None,
                  class_names: dict[int, str] | None = None) -> list[Path]:
    """`seglab measure`: every mask's classes and connected components in physical units
    (`write_measurements`). `spacing` (array axis order) replaces the files' own (and their
    world geometry); `class_names` names the label values to measure (default: every non-zero
    value found, as "class V")."""
    measured = {}
    for path in paths:
        case = read_image(path)
        mask = np.rint(case.image[0]).astype(np.int64)
        if case.channels != 1 or not np.array_equal(case.image[0], mask):
            raise SeglabError(f"{path}: not a mask (expected one channel of integer labels)")
        own = tuple(spacing or case.spacing)
        if len(own) != mask.ndim:
            raise SeglabError(f"--spacing {','.join(map(str, own))}: {path} is {mask.ndim}D")
        names = class_names or {int(v): f"class {v}" for v in np.unique(mask) if v != 0}
        measured[str(path)] = measure_mask(mask, names, own, None if spacing else
                                           index_to_world(case.meta, mask.ndim))
    return write_measurements(measured, out)


def class_sizes(prediction: np.ndarray, reference: np.ndarray, class_names: dict[int, str],
                spacing: tuple[float, ...],
                counted: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Per class of a scored case: its predicted and reference size (area in mm², or volume in
    mL) where the metrics count, and the predicted connected components (full connectivity)."""
    counted = np.ones(prediction.shape, bool) if counted is None else counted
    unit, scale = ("mm2", 1.0) if prediction.ndim == 2 else ("ml", 1e-3)
    voxel = float(np.prod(spacing)) * scale
    structure = ndimage.generate_binary_structure(prediction.ndim, prediction.ndim)
    sizes = {}
    for value, name in class_names.items():
        predicted = (prediction == value) & counted
        sizes[name] = {f"predicted_{unit}": round(float(predicted.sum()) * voxel, 6),
                       f"reference_{unit}": round(float(((reference == value) & counted).sum())
                                                  * voxel, 6),
                       "components": int(ndimage.label(predicted, structure)[1])}
    return sizes
