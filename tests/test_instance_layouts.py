"""Instance datasets found in their published layouts (COCO JSON, YOLO-seg, one mask file per
object): small folders built here, and the COCO subsets in ../shared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data.inspect import format_fingerprint, inspect_dataset
from seglab.data.layouts import IGNORE_INDEX, find_dataset
from seglab.data.loading import load_case
from seglab.errors import SeglabError
from tests.conftest import SHARED, needs_shared


def _image(path: Path, size=(16, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 90, np.uint8)).save(path)


def _coco(root: Path) -> Path:
    for subset, names in (("train2017", ["a", "b"]), ("val2017", ["c"])):
        for name in names:
            _image(root / subset / f"{name}.jpg")
    square = [[2.0, 2.0, 8.0, 2.0, 8.0, 8.0, 2.0, 8.0]]
    categories = [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}]
    train = {"images": [{"id": 1, "file_name": "a.jpg", "height": 16, "width": 24},
                        {"id": 2, "file_name": "b.jpg", "height": 16, "width": 24}],
             "annotations": [
                 {"id": 10, "image_id": 1, "category_id": 18, "segmentation": square,
                  "iscrowd": 0},
                 {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0,
                  "segmentation": [[12.0, 4.0, 20.0, 4.0, 20.0, 12.0, 12.0, 12.0]]},
                 {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 1,
                  "segmentation": {"size": [16, 24], "counts": [16 * 22, 16 * 2]}}],
             "categories": categories}
    val = {"images": [{"id": 3, "file_name": "c.jpg", "height": 16, "width": 24}],
           "annotations": [], "categories": categories}
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(train))
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(val))
    return root


def test_a_coco_folder_gives_objects_classes_crowds_and_its_val_subset_as_test(
        tmp_path: Path) -> None:
    dataset = find_dataset(_coco(tmp_path))
    assert (dataset.layout, dataset.task) == ("COCO", "instance")
    assert dataset.classes == ["background", "person", "dog"]  # categories in id order
    assert dataset.split == {"test": ["c"]}
    case = load_case(dataset, dataset.cases[0])
    assert case.instances.count == 2 and case.instances.counts_per_class() == {1: 1, 2: 1}
    assert (case.label[:, 22:] == IGNORE_INDEX).all()  # the crowd: the last two columns
    assert case.label[5, 5] == 2 and case.label[8, 16] == 1
    empty = load_case(dataset, dataset.cases[2])
    assert empty.instances.count == 0 and not empty.label.any()
    fingerprint = inspect_dataset(dataset)
    assert fingerprint.classes == dataset.classes and fingerprint.task == "instance"
    objects = dict(fingerprint.objects)
    diameter = objects.pop("diameter")
    assert objects == {"total": 2, "per_class": [0, 1, 1],
                       "per_case": {"min": 0, "median": 0.0, "max": 2}}
    sizes = np.bincount(case.instances.ids.ravel())[1:]  # the two squares' pixels
    assert diameter["median"] == pytest.approx(np.mean(np.sqrt(4 * sizes / np.pi)))
    summary = format_fingerprint(fingerprint)
    assert "objects   2 in all; per case min 0 median 0 max 2" in summary
    assert "per class person 1, dog 1" in summary
    assert f"diameter  {diameter['p10']:.1f} / {diameter['median']:.1f}" in summary


def test_a_coco_file_whose_image_is_missing_is_named(tmp_path: Path) -> None:
    root = _coco(tmp_path)
    (root / "train2017" / "b.jpg").unlink()
    with pytest.raises(SeglabError, match="instances_train2017.json: image .*b.jpg is missing"):
        find_dataset(root)


def test_a_yolo_folder_gives_polygons_as_objects_and_names_from_its_yaml(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "train" / "x.png")
    _image(tmp_path / "images" / "train" / "y.png")  # no label file: no objects
    _image(tmp_path / "images" / "val" / "z.png")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir()
    (tmp_path / "labels" / "train" / "x.txt").write_text(
        "1 0.1 0.1 0.4 0.1 0.4 0.5 0.1 0.5\n0 0.5 0.5 0.9 0.5 0.9 0.9 0.5 0.9\n")
    (tmp_path / "labels" / "val" / "z.txt").write_text("1 0.2 0.2 0.6 0.2 0.6 0.6\n")
    (tmp_path / "data.yaml").write_text("names: {0: cat, 1: bird}\n")
    dataset = find_dataset(tmp_path)
    assert (dataset.layout, dataset.classes) == ("YOLO-seg", ["background", "cat", "bird"])
    assert dataset.split == {"test": ["z"]}
    x, y = (load_case(dataset, ref) for ref in dataset.cases[:2])
    assert x.instances.counts_per_class() == {2: 1, 1: 1} and y.instances.count == 0
    (tmp_path / "data.yaml").unlink()
    assert find_dataset(tmp_path).classes == ["background", "class_0", "class_1"]


def test_one_mask_file_per_object_keeps_the_objects_apart(tmp_path: Path) -> None:
    _image(tmp_path / "cells" / "one" / "images" / "one.png", (12, 12))
    masks = tmp_path / "cells" / "one" / "masks"
    masks.mkdir()
    for k, (rows, cols) in enumerate([((0, 4), (0, 4)), ((4, 8), (0, 4)), ((8, 12), (8, 12))]):
        mask = np.zeros((12, 12), np.uint8)
        mask[rows[0]:rows[1], cols[0]:cols[1]] = 255
        Image.fromarray(mask).save(masks / f"m{k}.png")
    (tmp_path / "seglab.yaml").write_text(
        "images: 'cells/*/images/*.png'\nid: 'cells/(?P<id>[^/]+)/images/'\n"
        "labels: 'cells/{id}/masks/*.png'\nclasses: [background, nucleus]\n")
    dataset = find_dataset(tmp_path)
    case = load_case(dataset, dataset.cases[0])
    assert dataset.task == "instance" and case.instances.count == 3
    assert (case.label > 0).sum() == 48  # touching objects, still one class


def _palette_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array.astype(np.uint8), mode="P")
    image.putpalette([v for k in range(256) for v in (k, 255 - k, (7 * k) % 256)])
    image.save(path)


def test_a_voc_folder_gives_objects_their_class_and_ignores_the_void_border(
        tmp_path: Path) -> None:
    objects, classes = np.zeros((16, 24), np.uint8), np.zeros((16, 24), np.uint8)
    objects[2:6, 2:6], classes[2:6, 2:6] = 1, 15  # a person
    objects[8:12, 10:20], classes[8:12, 10:20] = 2, 7  # a car
    objects[1, :], classes[1, :] = 255, 255
    for name in ("2007_000001", "2007_000002"):
        _image(tmp_path / "JPEGImages" / f"{name}.jpg")
        _palette_png(tmp_path / "SegmentationObject" / f"{name}.png", objects)
        _palette_png(tmp_path / "SegmentationClass" / f"{name}.png", classes)
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000002\n")
    dataset = find_dataset(tmp_path)
    assert (dataset.layout, dataset.task, len(dataset.classes)) == ("Pascal VOC", "instance", 21)
    assert dataset.split == {"test": ["2007_000002"]}
    case = load_case(dataset, dataset.cases[0])
    assert case.instances.classes == {1: 15, 2: 7}
    assert (case.label[1] == IGNORE_INDEX).all() and case.label[3, 3] == 15
    inspect_dataset(dataset)


def test_a_cityscapes_folder_gives_things_as_objects_and_stuff_as_classes(tmp_path: Path) -> None:
    instance_ids = np.full((16, 24), 7, np.int32)  # road
    instance_ids[0:4] = 23  # sky
    instance_ids[6:10, 2:8] = 26000  # a car
    instance_ids[6:10, 10:16] = 26001  # another car
    instance_ids[12:16, 18:24] = 24  # a group of persons without ids
    instance_ids[12:16, 0:4] = 4  # static: no class
    label_ids = np.where(instance_ids >= 1000, instance_ids // 1000, instance_ids)
    for split in ("train", "val"):
        image = tmp_path / "leftImg8bit" / split / "bonn" / f"bonn_{split}_leftImg8bit.png"
        _image(image)
        gt = tmp_path / "gtFine" / split / "bonn"
        gt.mkdir(parents=True)
        Image.fromarray(instance_ids.astype(np.uint16)).save(
            gt / f"bonn_{split}_gtFine_instanceIds.png")
        Image.fromarray(label_ids.astype(np.uint8)).save(gt / f"bonn_{split}_gtFine_labelIds.png")
    _image(tmp_path / "leftImg8bit" / "test" / "bonn" / "bonn_test_leftImg8bit.png")  # unlabelled
    dataset = find_dataset(tmp_path)
    assert (dataset.layout, len(dataset.cases), dataset.split) == (
        "Cityscapes", 2, {"test": ["bonn_val"]})
    assert dataset.classes[0] == "road" and dataset.classes[13] == "car"
    case = load_case(dataset, dataset.cases[0])
    assert case.instances.classes == {1: 13, 2: 13}
    assert case.label[0, 0] == 10 and case.label[5, 0] == 0 and case.label[7, 3] == 13
    assert case.label[13, 20] == IGNORE_INDEX and case.label[13, 1] == IGNORE_INDEX
    (tmp_path / "gtFine" / "val" / "bonn" / "bonn_val_gtFine_labelIds.png").unlink()
    with pytest.raises(SeglabError, match="bonn_val_leftImg8bit.png: its label file .* missing"):
        find_dataset(tmp_path)


@needs_shared("tiny_coco")
def test_tiny_coco_reads_its_two_subsets_and_80_categories() -> None:
    dataset = find_dataset(SHARED / "tiny_coco" / "tiny_coco")
    assert len(dataset.cases) == 100 and len(dataset.split["test"]) == 50
    assert len(dataset.classes) == 81 and dataset.classes[1] == "person"
    case = load_case(dataset, dataset.cases[0])
    assert case.instances.count > 0 and case.label.shape == case.shape


@needs_shared("coco128-seg")
def test_coco128_seg_loads_with_its_929_objects() -> None:
    dataset = find_dataset(SHARED / "coco128-seg")
    assert dataset.layout == "YOLO-seg" and len(dataset.cases) == 128
    objects = sum(load_case(dataset, ref).instances.count for ref in dataset.cases)
    assert objects == 929
