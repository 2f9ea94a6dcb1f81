"""Objects of one image or volume (`Instances`), read from the encodings datasets publish them in.

Every reader returns the same thing: an object-id map (0 = no object), the class of each object,
and the pixels that are neither trained on nor scored (COCO crowd regions, Pascal VOC's void
border, Cityscapes' groups of objects without ids). The class map that semantic training and
scoring use is derived from it (`Instances.semantic`), so an instance dataset trains any
semantic model as it is.

Where objects overlap (COCO polygons may), larger objects are painted first and smaller ones on
top, so that no object disappears under a larger one; the pixels an object loses are counted in
no other object. COCO's polygon and RLE decoding is pycocotools' own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as coco_mask
from scipy import ndimage
from skimage.draw import polygon as fill_polygon
from skimage.segmentation import find_boundaries

from seglab.data.layouts import IGNORE_INDEX
from seglab.errors import SeglabError

VOC_VOID = 255
CITYSCAPES_ID_FACTOR = 1000  # instanceIds.png: label_id * 1000 + instance number


@dataclass
class Instances:
    """ids: int32 array, 0 where there is no object; classes: object id -> class index (>= 1);
    ignore: boolean array of the pixels to leave out, or None; stuff: the class map of the
    pixels that are no object (Cityscapes' road and sky), or None where they are background;
    scores: a predicted object's confidence (object id -> 0..1), None for references."""

    ids: np.ndarray
    classes: dict[int, int]
    ignore: np.ndarray | None = None
    stuff: np.ndarray | None = None
    scores: dict[int, float] | None = None

    @property
    def count(self) -> int:
        return len(self.classes)

    def semantic(self) -> np.ndarray:
        """The class-index map (uint8): each object's class, the stuff class (or 0) elsewhere,
        IGNORE_INDEX where ignored."""
        lookup = np.zeros(int(self.ids.max(initial=0)) + 1, np.uint8)
        for object_id, class_index in self.classes.items():
            lookup[object_id] = class_index
        label = lookup[self.ids]
        if self.stuff is not None:
            label = np.where(self.ids > 0, label, self.stuff).astype(np.uint8)
        if self.ignore is not None:
            label[self.ignore] = IGNORE_INDEX
        return label

    def with_boundaries(self, boundary_class: int, contact_width: int = 1,
                        contact_class: int | None = None) -> np.ndarray:
        """The class map with each object's rim (its pixels next to the background or to another
        object, face-connected) set to `boundary_class`: the target that lets a semantic network
        keep touching objects apart (`seglab.instance_split` turns its output into objects).
        Where two objects touch, each one's rim there is `contact_width` pixels deep, so that
        the gap the network must draw between them is 2 x `contact_width` wide; with a
        `contact_class`, those pixels are that class instead of the rim: a class of its own,
        whose Dice term weighs the seams as much as the objects (the DSB2018 leaders' third
        output, "touching borders")."""
        label = self.semantic()
        inside = self.ids > 0
        rim = find_boundaries(self.ids, connectivity=1, mode="inner") & inside
        contact = _touching(self.ids)
        if contact_width > 1 and contact.any():
            cross = ndimage.generate_binary_structure(self.ids.ndim, 1)
            contact = ndimage.binary_dilation(contact, cross, contact_width - 1) & inside
        label[rim | contact] = boundary_class
        if contact_class is not None:
            label[contact] = contact_class
        return label

    def counts_per_class(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for class_index in self.classes.values():
            counts[class_index] = counts.get(class_index, 0) + 1
        return counts


def _touching(ids: np.ndarray) -> np.ndarray:
    """The object pixels with a face neighbour in another object."""
    touching = np.zeros(ids.shape, bool)
    for axis in range(ids.ndim):
        before = [slice(None)] * ids.ndim
        after = [slice(None)] * ids.ndim
        before[axis], after[axis] = slice(None, -1), slice(1, None)
        a, b = ids[tuple(before)], ids[tuple(after)]
        differ = (a != b) & (a > 0) & (b > 0)
        touching[tuple(before)] |= differ
        touching[tuple(after)] |= differ
    return touching


def paint(masks: Sequence[np.ndarray], classes: Sequence[int], shape: tuple[int, ...],
          ignore: np.ndarray | None = None, scores: Sequence[float] | None = None) -> Instances:
    """Instances from one binary mask per object (ids 1.. in the given order), the larger
    objects painted first; an object left with no pixel is dropped."""
    ids = np.zeros(shape, np.int32)
    order = sorted(range(len(masks)), key=lambda k: -int(np.count_nonzero(masks[k])))
    for k in order:
        ids[masks[k].astype(bool)] = k + 1
    present = set(np.unique(ids)) - {0}
    kept = {k + 1: int(classes[k]) for k in range(len(masks)) if k + 1 in present}
    return renumbered(ids, kept, ignore, None if scores is None else {
        k + 1: float(scores[k]) for k in range(len(masks))})


def renumbered(ids: np.ndarray, classes: dict[int, int], ignore: np.ndarray | None = None,
               scores: dict[int, float] | None = None) -> Instances:
    """The objects of `classes` (old id -> class, and their `scores`) with ids 1..N in order of
    their old ids; other ids of `ids` become 0."""
    old = np.array(sorted(classes), dtype=np.int64)
    lookup = np.zeros(int(ids.max(initial=0)) + 1, np.int32)
    lookup[old] = np.arange(1, len(old) + 1)
    return Instances(lookup[ids], {k + 1: classes[int(o)] for k, o in enumerate(old)}, ignore,
                     scores=None if scores is None else {
                         k + 1: scores[int(o)] for k, o in enumerate(old)})


def from_id_image(ids: np.ndarray, semantic: np.ndarray | None = None) -> Instances:
    """An instance-id image (each non-zero value one object). With a class map beside it, each
    object takes the (non-background) class most of its pixels have; without, every object is
    class 1."""
    ids = np.asarray(ids)
    if ids.dtype.kind == "f" or (ids < 0).any():
        raise SeglabError("instance ids must be non-negative integers")
    object_ids = [int(v) for v in np.unique(ids) if v != 0]
    if semantic is None:
        classes = dict.fromkeys(object_ids, 1)
    else:
        classes = _majority_class(ids, semantic, object_ids)
    return renumbered(ids.astype(np.int64), classes, None)


def _majority_class(ids: np.ndarray, semantic: np.ndarray, object_ids: list[int]
                    ) -> dict[int, int]:
    """For each object, the most frequent non-background value of `semantic` over its pixels
    (ties: the lower); an object with none under it is an error."""
    inside = ids > 0
    values = semantic[inside].astype(np.int64)
    n_values = int(values.max(initial=0)) + 1
    counts = np.bincount(ids[inside].astype(np.int64) * n_values + values,
                         minlength=(int(ids.max()) + 1) * n_values).reshape(-1, n_values)
    counts[:, 0] = 0
    unclassed = [k for k in object_ids if not counts[k].any()]
    if unclassed:
        raise SeglabError(f"objects {unclassed[:5]} lie on background only in the class map")
    return {k: int(np.argmax(counts[k])) for k in object_ids}


def from_mask_files(masks: Sequence[np.ndarray], shape: tuple[int, ...],
                    class_index: int = 1) -> Instances:
    """One mask file per object (the 2018 Data Science Bowl layout), all of one class."""
    for k, mask in enumerate(masks):
        if mask.shape != tuple(shape):
            raise SeglabError(f"object mask {k + 1}: size {mask.shape} differs from the image's "
                              f"{tuple(shape)}")
    return paint([m > 0 for m in masks], [class_index] * len(masks), shape)


def from_coco(annotations: Sequence[dict], height: int, width: int,
              category_to_class: dict[int, int]) -> Instances:
    """The COCO instance annotations of one image: polygons, RLE (compressed or not); crowd
    annotations (`iscrowd`: 1) become ignored regions, as COCO's evaluation treats them."""
    masks, classes = [], []
    ignore = np.zeros((height, width), bool)
    for annotation in annotations:
        mask = decode_coco_segmentation(annotation["segmentation"], height, width)
        if annotation.get("iscrowd", 0):
            ignore |= mask
            continue
        category = annotation["category_id"]
        if category not in category_to_class:
            raise SeglabError(f"annotation {annotation.get('id')}: category {category} is not "
                              "in the file's categories")
        masks.append(mask)
        classes.append(category_to_class[category])
    return paint(masks, classes, (height, width), ignore if ignore.any() else None)


def decode_coco_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO `segmentation` (list of polygons, or an RLE dict with list or string counts) as a
    boolean mask, through pycocotools."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), bool)
        rle = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = coco_mask.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"],
               "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise SeglabError(f"unknown COCO segmentation of type {type(segmentation).__name__}")
    return coco_mask.decode(rle).astype(bool)


def from_yolo(text: str, height: int, width: int) -> Instances:
    """A YOLO-seg label file: one object per line, `class x1 y1 x2 y2 ...` with coordinates
    normalised to the image's width and height; YOLO's class k is class index k + 1 here (0 is
    the background)."""
    masks, classes = [], []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 7 or len(fields) % 2 == 0:
            raise SeglabError(f"line {number}: expected a class and at least 3 x y pairs, got "
                              f"{len(fields)} fields")
        try:
            category = int(fields[0])
            xy = np.array(fields[1:], float).reshape(-1, 2)
        except ValueError:
            raise SeglabError(f"line {number}: not numbers: {line[:60]!r}")
        rows, cols = fill_polygon(xy[:, 1] * height, xy[:, 0] * width, (height, width))
        mask = np.zeros((height, width), bool)
        mask[rows, cols] = True
        masks.append(mask)
        classes.append(category + 1)
    return paint(masks, classes, (height, width))


def from_voc(objects: np.ndarray, classes: np.ndarray) -> Instances:
    """Pascal VOC's SegmentationObject (object numbers) and SegmentationClass (class indices)
    palette PNGs of one image; 255 in either is the void border, ignored."""
    void = (objects == VOC_VOID) | (classes == VOC_VOID)
    ids = np.where(void, 0, objects).astype(np.int64)
    instances = from_id_image(ids, np.where(void, 0, classes))
    instances.ignore = void if void.any() else None
    return instances


def from_cityscapes(instance_ids: np.ndarray, label_ids: np.ndarray,
                    label_to_class: dict[int, int], thing_labels: set[int]) -> Instances:
    """Cityscapes gtFine `*_instanceIds.png` and `*_labelIds.png` of one image: instance values of
    1000 and above are objects (label id = value // 1000); pixels of a thing label below 1000
    are groups without ids (a crowd of cars), ignored as Cityscapes' instance evaluation ignores
    them, and so are objects whose label has no class (caravan, trailer); the other pixels take
    their label's class as stuff (labels without a class: ignored). `label_to_class` maps label
    ids to class indices."""
    values = np.asarray(instance_ids).astype(np.int64)
    labels = np.where(values >= CITYSCAPES_ID_FACTOR, values // CITYSCAPES_ID_FACTOR, -1)
    is_object = np.isin(labels, list(label_to_class))
    ignore = (labels >= 0) & ~is_object
    ignore |= (values < CITYSCAPES_ID_FACTOR) & np.isin(values, list(thing_labels))
    classes = {int(v): label_to_class[int(v) // CITYSCAPES_ID_FACTOR]
               for v in np.unique(values[is_object])}
    lookup = np.full(max(256, int(np.max(label_ids, initial=0)) + 1), IGNORE_INDEX, np.uint8)
    for label_id, class_index in label_to_class.items():
        lookup[label_id] = class_index
    instances = renumbered(np.where(is_object, values, 0), classes,
                            ignore if ignore.any() else None)
    instances.stuff = lookup[np.asarray(label_ids).astype(np.int64)]
    return instances
