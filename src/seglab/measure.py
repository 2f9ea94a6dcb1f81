"""Objects measured in physical units: one row per object of an object-id map (2D or 3D).

Sizes use the voxel spacing (mm, or the unit the file declares): area in mm² for 2D images,
volume in mm³ and mL for volumes; the equivalent diameter is that of the disc or sphere of the
same size. Centroids are given in voxel indices and, through the image's affine where the file
has one (NIfTI, DICOM), in world coordinates; otherwise as index times spacing. Bounding boxes
are voxel index ranges, the end exclusive. Computed with SciPy's per-label reductions, one pass
each, for any number of objects.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage


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
