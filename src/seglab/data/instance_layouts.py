"""Instance datasets found in the layouts they are published in (called by `find_dataset`):

- COCO: `annotations/instances_<subset>.json` with the images of each subset in `<subset>/` or
  `images/<subset>/` (COCO 2017's own layout). Classes are the file's categories in id order
  (class index k + 1 for the k-th); a subset named val* or test* is the test split.
- YOLO-seg: `images/<subset>/*` beside `labels/<subset>/*.txt` (Ultralytics' layout); an image
  without a label file has no objects, as YOLO reads it. Class names come from the `names` of a
  dataset yaml beside the folder (or one level up); without one, class_k.

- Pascal VOC: `JPEGImages/`, `SegmentationClass/` and, for objects, `SegmentationObject/`
  palette PNGs (255: the void border, ignored); `ImageSets/Segmentation/val.txt` is the test
  split. Without SegmentationObject it is a semantic dataset.
- Cityscapes: `leftImg8bit/<split>/<city>/*_leftImg8bit.png` with `gtFine/<split>/<city>/
  *_gtFine_instanceIds.png` and `*_labelIds.png`; the 19 classes of the benchmark (train ids,
  road = class 0), the other labels ignored; `val` is the test split, `test` (no public labels)
  is left out.

The annotation files are parsed once per process (`coco_file`, cached on path and mtime).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import yaml

from seglab.data.instances import Instances, from_coco
from seglab.data.layouts import IGNORE_INDEX, CaseRef, Dataset, file_stem, is_image_file
from seglab.errors import SeglabError

TEST_SUBSETS = ("val", "test")
VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
# Cityscapes label id -> (name, train id) of the 19 benchmark classes (cityscapesScripts'
# labels.py); the thing labels have object ids, caravan (29) and trailer (30) included.
CITYSCAPES_CLASSES = {
    7: ("road", 0), 8: ("sidewalk", 1), 11: ("building", 2), 12: ("wall", 3), 13: ("fence", 4),
    17: ("pole", 5), 19: ("traffic light", 6), 20: ("traffic sign", 7), 21: ("vegetation", 8),
    22: ("terrain", 9), 23: ("sky", 10), 24: ("person", 11), 25: ("rider", 12), 26: ("car", 13),
    27: ("truck", 14), 28: ("bus", 15), 31: ("train", 16), 32: ("motorcycle", 17),
    33: ("bicycle", 18)}
CITYSCAPES_THINGS = {24, 25, 26, 27, 28, 29, 30, 31, 32, 33}


@dataclass
class CocoFile:
    """One COCO instances file: its images, annotations per image and categories (by id)."""

    images: list[dict[str, Any]]
    annotations: dict[int, list[dict[str, Any]]]
    categories: list[dict[str, Any]]

    @cached_property
    def category_to_class(self) -> dict[int, int]:
        return {c["id"]: k + 1 for k, c in enumerate(self.categories)}

    def instances(self, image_id: int, shape: tuple[int, ...]) -> Instances:
        return from_coco(self.annotations.get(image_id, []), shape[0], shape[1],
                         self.category_to_class)


def coco_file(path: Path) -> CocoFile:
    return _parsed(Path(path).resolve(), Path(path).stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _parsed(path: Path, mtime: int) -> CocoFile:
    try:
        data = json.loads(path.read_text())
        images, annotations = data["images"], data["annotations"]
        categories = sorted(data["categories"], key=lambda c: c["id"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SeglabError(f"{path}: not a COCO instances file ({type(error).__name__}: {error})")
    by_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in annotations:
        if "segmentation" not in annotation:
            raise SeglabError(f"{path}: annotation {annotation.get('id')} has no segmentation "
                              "(a detection-only file?)")
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    return CocoFile(images, by_image, categories)


def find_coco(root: Path) -> Dataset | None:
    files = sorted((root / "annotations").glob("instances_*.json"))
    if not files:
        return None
    cases, test, categories = [], [], None
    for path in files:
        subset = path.stem.removeprefix("instances_")
        parsed = coco_file(path)
        if categories is not None and parsed.categories != categories:
            raise SeglabError(f"{path}: its categories differ from those of {files[0]}")
        categories = parsed.categories
        folder = next((f for f in (root / subset, root / "images" / subset) if f.is_dir()), None)
        if folder is None:
            raise SeglabError(f"{path}: no image folder {root / subset} for its subset")
        for image in parsed.images:
            file = folder / image["file_name"]
            if not file.is_file():
                raise SeglabError(f"{path}: image {file} is missing")
            case_id = file_stem(file)
            cases.append(CaseRef(case_id, [file], [path], relpath=file.relative_to(root).as_posix(),
                                 objects="coco", key=image["id"]))
            if subset.startswith(TEST_SUBSETS):
                test.append(case_id)
    return Dataset(root.name, root.resolve(), "COCO", cases,
                   classes=["background"] + [c["name"] for c in categories or []],
                   ignore_label=IGNORE_INDEX, split=_test_split(test, cases),
                   source=str(root.resolve()), task="instance")


def find_yolo(root: Path) -> Dataset | None:
    images_dir, labels_dir = root / "images", root / "labels"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        return None
    label_files = list(labels_dir.rglob("*.txt"))
    if not label_files or any(is_image_file(p) for p in labels_dir.rglob("*") if p.is_file()):
        return None  # label images: the images/ + labels/ folder layout
    cases, test = [], []
    for image in sorted(p for p in images_dir.rglob("*") if p.is_file() and is_image_file(p)):
        relative = image.relative_to(images_dir)
        label = (labels_dir / relative).with_suffix(".txt")
        cases.append(CaseRef(file_stem(image), [image], [label],
                             relpath=image.relative_to(root).as_posix(), objects="yolo"))
        if relative.parts[0].startswith(TEST_SUBSETS) and len(relative.parts) > 1:
            test.append(cases[-1].case_id)
    return Dataset(root.name, root.resolve(), "YOLO-seg", cases,
                   classes=["background"] + _yolo_names(root, label_files),
                   ignore_label=IGNORE_INDEX, split=_test_split(test, cases),
                   source=str(root.resolve()), task="instance")


def _yolo_names(root: Path, label_files: list[Path]) -> list[str]:
    """The `names` of a dataset yaml in the folder or its parent, else class_0.. up to the
    highest class in the label files."""
    for candidate in sorted(root.glob("*.yaml")) + sorted(root.parent.glob("*.yaml")):
        try:
            spec = yaml.safe_load(candidate.read_text())
        except (OSError, yaml.YAMLError):
            continue
        names = spec.get("names") if isinstance(spec, dict) else None
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names)]
        if isinstance(names, list):
            return [str(n) for n in names]
    top = -1
    for path in label_files:
        column = [line.split(maxsplit=1)[0] for line in path.read_text().splitlines()
                  if line.strip()]
        try:
            top = max([top, *(int(c) for c in column)])
        except ValueError:
            raise SeglabError(f"{path}: class ids are not all integers")
    return [f"class_{k}" for k in range(top + 1)]


def _test_split(test: list[str], cases: list[CaseRef]) -> dict[str, list[str]] | None:
    """The published test (or val) subset as the test split, when it is not everything."""
    return {"test": test} if test and len(test) < len(cases) else None


def find_voc(root: Path) -> Dataset | None:
    images, classes_dir = root / "JPEGImages", root / "SegmentationClass"
    if not images.is_dir() or not classes_dir.is_dir():
        return None
    objects_dir = root / "SegmentationObject"
    instance = objects_dir.is_dir()
    cases = []
    for label in sorted(classes_dir.glob("*.png")):
        image = images / f"{label.stem}.jpg"
        if not image.is_file():
            raise SeglabError(f"{label}: no image {image}")
        labels = [objects_dir / label.name, label] if instance else [label]
        cases.append(CaseRef(label.stem, [image], labels,
                             relpath=image.relative_to(root).as_posix(),
                             objects="voc" if instance else None))
    val = root / "ImageSets" / "Segmentation" / "val.txt"
    listed = set(val.read_text().split()) if val.is_file() else set()
    test = [c.case_id for c in cases if c.case_id in listed]
    return Dataset(root.name, root.resolve(), "Pascal VOC", cases, classes=list(VOC_CLASSES),
                   ignore_label=IGNORE_INDEX, split=_test_split(test, cases),
                   source=str(root.resolve()), task="instance" if instance else "semantic")


def find_cityscapes(root: Path) -> Dataset | None:
    images, labels = root / "leftImg8bit", root / "gtFine"
    if not images.is_dir() or not labels.is_dir():
        return None
    cases, test = [], []
    for image in sorted(images.glob("*/*/*_leftImg8bit.png")):
        split, city = image.parts[-3], image.parts[-2]
        if split == "test":
            continue
        prefix = image.name.removesuffix("_leftImg8bit.png")
        folder = labels / split / city
        files = [folder / f"{prefix}_gtFine_{kind}.png" for kind in ("instanceIds", "labelIds")]
        for file in files:
            if not file.is_file():
                raise SeglabError(f"{image}: its label file {file} is missing")
        cases.append(CaseRef(prefix, [image], files, relpath=image.relative_to(root).as_posix(),
                             objects="cityscapes"))
        if split == "val":
            test.append(prefix)
    names = [name for name, _ in sorted(CITYSCAPES_CLASSES.values(), key=lambda c: c[1])]
    return Dataset(root.name, root.resolve(), "Cityscapes", cases, classes=names,
                   ignore_label=IGNORE_INDEX, split=_test_split(test, cases),
                   source=str(root.resolve()), task="instance")
