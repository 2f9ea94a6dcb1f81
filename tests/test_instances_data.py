"""Objects read from each published encoding: COCO (polygons, RLE, crowds), YOLO-seg, Pascal VOC,
Cityscapes, one mask file per object and instance-id images, on small arrays with known objects."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from seglab.data.instances import (from_cityscapes, from_coco, from_id_image, from_mask_files,
                                   from_voc, from_yolo, paint)
from seglab.data.layouts import IGNORE_INDEX
from seglab.errors import SeglabError


def _box(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


def test_overlapping_objects_keep_the_smaller_on_top_and_ids_run_from_one() -> None:
    big, small = _box((10, 10), (0, 8), (0, 8)), _box((10, 10), (2, 4), (2, 4))
    instances = paint([small, big], [2, 1], (10, 10))
    assert instances.count == 2 and set(np.unique(instances.ids)) == {0, 1, 2}
    assert (instances.ids[2:4, 2:4] == 1).all() and instances.classes == {1: 2, 2: 1}
    assert np.count_nonzero(instances.ids == 2) == 64 - 4
    hidden = paint([big, big.copy()], [1, 1], (10, 10))  # the second covers the first entirely
    assert hidden.count == 1


def test_coco_polygons_and_both_rles_decode_and_crowds_are_ignored() -> None:
    height, width = 20, 30
    square = [[2.0, 2.0, 10.0, 2.0, 10.0, 10.0, 2.0, 10.0]]  # x, y pairs
    blob = np.asfortranarray(_box((height, width), (12, 18), (20, 28)).astype(np.uint8))
    compressed = coco_mask.encode(blob)
    compressed["counts"] = compressed["counts"].decode()  # as it is stored in JSON
    uncompressed = {"size": [height, width], "counts": _uncompressed_counts(
        _box((height, width), (0, 5), (24, 30)))}
    crowd = coco_mask.encode(np.asfortranarray(_box((height, width), (14, 20), (0, 10)).astype(
        np.uint8)))
    annotations = [
        {"id": 1, "category_id": 18, "segmentation": square, "iscrowd": 0},
        {"id": 2, "category_id": 1, "segmentation": compressed, "iscrowd": 0},
        {"id": 3, "category_id": 1, "segmentation": uncompressed, "iscrowd": 0},
        {"id": 4, "category_id": 1, "segmentation": crowd, "iscrowd": 1}]
    instances = from_coco(annotations, height, width, {1: 1, 18: 2})
    assert instances.count == 3 and instances.counts_per_class() == {1: 2, 2: 1}
    sizes = sorted(np.bincount(instances.ids.ravel())[1:])
    assert sizes[0] == 30 and sizes[1] == 48 and 64 <= sizes[2] <= 81  # polygon: 8 px wide
    assert instances.ignore.sum() == 60
    semantic = instances.semantic()
    assert (semantic[instances.ignore] == IGNORE_INDEX).all() and semantic[5, 5] == 2
    with pytest.raises(SeglabError, match="category 7 is not in the file's categories"):
        from_coco([{"id": 9, "category_id": 7, "segmentation": square}], height, width, {1: 1})


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths in column-major order, starting with zeros."""
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


def test_yolo_polygons_fill_their_normalised_outline_with_class_plus_one() -> None:
    text = "0 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5\n\n3 0.6 0.6 0.9 0.6 0.9 0.9\n"
    instances = from_yolo(text, 20, 40)
    assert instances.classes == {1: 1, 2: 4} or instances.classes == {1: 4, 2: 1}
    first = instances.ids == [k for k, c in instances.classes.items() if c == 1][0]
    rows, cols = np.nonzero(first)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 10, 4, 20)  # outline included
    with pytest.raises(SeglabError, match="line 2: expected a class and at least 3 x y pairs"):
        from_yolo("0 0.1 0.1 0.5 0.1 0.5 0.5\n1 0.2 0.2\n", 20, 40)


def test_voc_objects_take_their_class_and_the_void_border_is_ignored() -> None:
    objects = np.zeros((8, 8), np.uint8)
    classes = np.zeros((8, 8), np.uint8)
    objects[1:4, 1:4], classes[1:4, 1:4] = 1, 15  # a person
    objects[5:7, 5:7], classes[5:7, 5:7] = 2, 7  # a car
    objects[0, :], classes[0, :] = 255, 255
    instances = from_voc(objects, classes)
    assert instances.classes == {1: 15, 2: 7}
    assert instances.ignore[0].all() and instances.ignore.sum() == 8
    assert instances.semantic()[0, 0] == IGNORE_INDEX


def test_cityscapes_ids_split_into_objects_groups_and_stuff() -> None:
    values = np.full((6, 6), 7, np.int32)  # road: stuff
    values[0:2, 0:2] = 26000  # car number 0
    values[0:2, 3:5] = 26001  # car number 1
    values[4:6, 0:3] = 24  # a group of persons without ids
    values[4:6, 4:6] = 24002  # person number 2
    values[2, 5] = 3  # out of roi: a label without a class
    label_ids = np.where(values >= 1000, values // 1000, values)
    classes = {7: 0, 24: 11, 26: 13}
    instances = from_cityscapes(values, label_ids, classes, {24, 26})
    assert instances.counts_per_class() == {13: 2, 11: 1}
    assert instances.ignore.sum() == 6 and (instances.ids[2:4] == 0).all()
    semantic = instances.semantic()
    assert semantic[3, 0] == 0 and semantic[0, 0] == 13 and semantic[5, 5] == 11
    assert semantic[2, 5] == IGNORE_INDEX and (semantic[4:6, 0:3] == IGNORE_INDEX).all()
    caravan = from_cityscapes(np.full((2, 2), 29001), np.full((2, 2), 29), classes, {24, 29})
    assert caravan.count == 0 and caravan.ignore.all()  # an object of a label without a class


def test_mask_files_and_id_images_give_one_object_each() -> None:
    masks = [_box((6, 6), (0, 3), (0, 3)).astype(np.uint8) * 255,
             _box((6, 6), (3, 6), (3, 6)).astype(np.uint8)]
    assert from_mask_files(masks, (6, 6)).count == 2
    with pytest.raises(SeglabError, match=r"object mask 2: size \(5, 6\) differs"):
        from_mask_files([masks[0], masks[1][:5]], (6, 6))
    ids = np.zeros((6, 6), np.int32)
    ids[0:2, 0:2], ids[3:6, 3:6] = 40, 7
    semantic = np.zeros((6, 6), np.uint8)
    semantic[3:6, 3:6] = 2
    semantic[3, 3] = 1  # the majority decides
    semantic[0, 0] = 3  # one pixel of class 3, the rest of the object on background: class 3
    instances = from_id_image(ids, semantic)
    assert instances.classes == {1: 2, 2: 3}  # renumbered in the order of the old ids: 7, 40
    assert (instances.ids[3:6, 3:6] == 1).all()
    assert from_id_image(ids).classes == {1: 1, 2: 1}
    semantic[0, 0] = 0
    with pytest.raises(SeglabError, match=r"objects \[40\] lie on background only"):
        from_id_image(ids, semantic)
