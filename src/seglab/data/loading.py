"""Reading one case of a dataset: its channels, its label mapped to class indices, its ROI."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from seglab.case import Case
from seglab.data.instance_layouts import CITYSCAPES_CLASSES, CITYSCAPES_THINGS, coco_file
from seglab.data.instances import (Instances, from_cityscapes, from_mask_files, from_voc,
                                   from_yolo)
from seglab.data.io import read_image, read_label
from seglab.data.layouts import IGNORE_INDEX, CaseRef, Dataset
from seglab.errors import SeglabError


def load_case(dataset: Dataset, ref: CaseRef, with_label: bool = True) -> Case:
    """Reads a case's channels (stacked), its label (mapped to class indices) and its ROI."""
    parts = [read_image(path, ref.case_id) for path in ref.images]
    first = parts[0]
    for part in parts[1:]:
        if part.shape != first.shape:
            raise SeglabError(
                f"{part.meta['path']}: channel size {part.shape} differs from "
                f"{first.meta['path']} {first.shape}"
            )
    image = np.concatenate([p.image for p in parts], axis=0) if len(parts) > 1 else first.image
    spacing = first.spacing
    if dataset.spacing is not None:
        if len(dataset.spacing) != first.dims:
            raise SeglabError(f"{dataset.source}: `spacing` has {len(dataset.spacing)} values "
                              f"for {first.dims}D images")
        spacing = dataset.spacing
    case = Case(ref.case_id, image, tuple(spacing), meta=dict(first.meta))
    case.meta["channels"] = [str(p) for p in ref.images]
    if with_label and ref.labels:
        if ref.objects:
            case.instances = read_case_instances(ref, case.shape)
            case.label = case.instances.semantic()
        else:
            case.label = read_case_label(dataset, ref, case.shape)
    if ref.roi is not None:
        roi = read_label(ref.roi)
        _check_shape(ref.roi, roi.shape, case.shape)
        case.roi = roi > 0
    elif dataset.roi_rule == "auto":
        case.roi = field_of_view(case.image)
    return case


def read_case_label(dataset: Dataset, ref: CaseRef, shape: tuple[int, ...]) -> np.ndarray:
    """The case's label image as class indices (uint8; IGNORE_INDEX where not scored). Instance
    datasets' labels come from their objects (`read_case_instances`)."""
    path = ref.labels[0]
    if not path.exists():
        raise SeglabError(f"{path}: label file missing for case {ref.case_id!r}")
    raw = read_label(path)
    _check_shape(path, raw.shape, shape)
    return map_label_values(raw, dataset, path)


CITYSCAPES_TO_CLASS = {label: train_id for label, (_, train_id) in CITYSCAPES_CLASSES.items()}


def read_case_instances(ref: CaseRef, shape: tuple[int, ...]) -> Instances:
    """The case's objects, read from the encoding its layout found (`ref.objects`)."""
    if ref.objects == "mask_files":
        masks = []
        for path in ref.labels:
            mask = read_label(path)
            _check_shape(path, mask.shape, shape)
            masks.append(mask)
        return from_mask_files(masks, shape)
    if len(shape) != 2:
        raise SeglabError(f"{ref.images[0]}: {ref.objects} objects need a 2D image")
    path = ref.labels[0]
    try:
        if ref.objects == "coco":
            return coco_file(path).instances(ref.key, shape)
        if ref.objects == "yolo":
            return from_yolo(path.read_text() if path.is_file() else "", *shape)
        if ref.objects in ("voc", "cityscapes"):
            first, second = (read_label(p) for p in ref.labels)
            for file, array in zip(ref.labels, (first, second)):
                _check_shape(file, array.shape, shape)
            if ref.objects == "voc":
                return from_voc(first, second)
            return from_cityscapes(first, second, CITYSCAPES_TO_CLASS, CITYSCAPES_THINGS)
    except SeglabError as error:
        raise SeglabError(f"{path}: {error}") from None
    raise SeglabError(f"{path}: unknown object encoding {ref.objects!r}")


def map_label_values(raw: np.ndarray, dataset: Dataset, path) -> np.ndarray:
    """Raw stored values -> class indices, with every unexpected value reported by name. A
    `label_values` map may be partial: a value it does not name keeps its own index when that is a
    class (`{255: 1}` reads 0 as class 0)."""
    n_classes = len(dataset.classes) if dataset.classes else None
    ignore = raw == dataset.ignore_label if dataset.ignore_label is not None else None
    if dataset.label_values:
        present = {int(v) for v in np.unique(raw)} - ({dataset.ignore_label} - {None})
        lookup = {v: class_of_value(v, dataset.label_values, n_classes) for v in present}
        unknown = sorted(v for v, index in lookup.items() if index is None)
        if unknown:
            raise SeglabError(f"{path}: label values {unknown[:6]} are neither in `label_values` "
                              f"{sorted(dataset.label_values)} nor class indices; add "
                              f"`{unknown[0]}: <class index>` to label_values")
        mapped = np.zeros(raw.shape, dtype=np.uint8)
        for value, index in lookup.items():
            mapped[raw == value] = index
    else:
        valid = raw if ignore is None else raw[~ignore]
        low, high = (int(valid.min()), int(valid.max())) if valid.size else (0, 0)
        if low < 0 or (n_classes is not None and high >= n_classes):
            raise SeglabError(f"{path}: label values {low}..{high} outside the "
                              f"{n_classes} declared classes 0..{(n_classes or 1) - 1}")
        if high >= IGNORE_INDEX:
            raise SeglabError(f"{path}: label value {high} needs a `label_values` mapping")
        mapped = raw.astype(np.uint8)
    if ignore is not None:
        mapped[ignore] = IGNORE_INDEX
    return mapped


def class_of_value(value: int, label_values: dict[int, int], n_classes: int | None) -> int | None:
    """The class a stored label value stands for: the one `label_values` names, else the value
    itself where it is a class index (0 <= value < n_classes, or up to the highest index the
    map names when the classes are not known yet); None when it is neither."""
    if value in label_values:
        return label_values[value]
    limit = n_classes if n_classes is not None else max(label_values.values()) + 1
    return value if 0 <= value < limit else None


def field_of_view(image: np.ndarray) -> np.ndarray:
    """Derives the valid region of an image with a dark surround, such as a fundus photograph.

    Rule: the channel-mean intensity above 10% of its 99th percentile, lightly smoothed; the
    largest connected component with its holes filled; eroded by 2 pixels to drop the rim.
    """
    mean = image.mean(axis=0, dtype=np.float32)  # the same for stored integers as for floats
    smooth = ndimage.uniform_filter(mean, size=5)
    inside = smooth > 0.10 * np.percentile(smooth, 99)
    components, count = ndimage.label(inside)
    if count == 0:
        return np.ones(mean.shape, dtype=bool)
    sizes = ndimage.sum(inside, components, index=range(1, count + 1))
    largest = components == (int(np.argmax(sizes)) + 1)
    filled = ndimage.binary_fill_holes(largest)
    return ndimage.binary_erosion(filled, iterations=2)


def _check_shape(path, found: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if tuple(found) != tuple(expected):
        raise SeglabError(f"{path}: size {tuple(found)} does not match its image {tuple(expected)}")
