"""Finding the cases of a dataset as it lies on disk.

Three layouts are recognised, in this order:
  1. a `seglab.yaml` description (the folder holds one, or DATA is the yaml file itself);
  2. the nnU-Net v2 / Medical Segmentation Decathlon raw layout (`dataset.json`, `imagesTr/`,
     `labelsTr/`, `imagesTs/`), read with no extra description;
  3. an `images/` folder beside a `labels/` (or `masks/`, `annotations/`, `gt/`) folder, paired by
     file name.

A `seglab.yaml` has these fields (all paths relative to `root`, itself relative to the yaml file):
    root: ../data/my_set          # default: the yaml's folder
    images: train/*.png           # glob, or a list of globs (`**` allowed)
    id: 'train/(?P<id>\\d+)\\.png'  # regex searched in each image's relative path; group `id`
                                  # names the case, other named groups can be used in templates
    labels: 'masks/{id}.png'      # template; a `*` in it means one file per instance (merged)
    channels: ['t1c/{id}.nii.gz'] # further input channels of the same case (optional)
    roi: auto | 'fov/{id}.png'    # region of interest (field of view): derived or read
    classes: [background, vessel] # class names, in class-index order
    label_values: {255: 1}        # raw value -> class index; an unnamed value that is a class
                                  # index keeps it (0 -> 0 here), any other value is an error
    ignore_label: 11              # raw value that is not scored and not trained on
    modality: CT                  # CT gets CT normalisation; anything else per-image z-score
    spacing: [0.0046, 0.0046]     # for formats that carry none
    unlabeled: test/*.png         # images without labels (predicted, not trained on)
    sequence: '(?P<sequence>.+)_f(?P<frame>[0-9]+)$'  # frames of a sequence, from the case id
                                  # (default: a frame number ending the id after a non-digit)
    split: {test: [ids...], val: 'regex on relative path'}   # or a JSON file with those keys
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from seglab.data.io import IMAGE_SUFFIXES, suffix_of
from seglab.data.sequences import compiled
from seglab.errors import SeglabError

IGNORE_INDEX = 255
LABEL_FOLDER_NAMES = ("labels", "masks", "annotations", "gt", "label", "mask")
DEFAULT_ID_PATTERN = r"(?P<id>[^/]+?)(\.nii\.gz|\.[^./]+)$"
YAML_KEYS = ("name", "root", "images", "id", "labels", "channels", "roi", "classes", "label_values",
             "ignore_label", "modality", "spacing", "unlabeled", "split", "sequence")


@dataclass
class CaseRef:
    """Where one case's files are: input channels, label file(s), and an optional ROI file.
    `objects` says how the label files encode objects, for instance datasets (see
    `seglab.data.instances`): "mask_files" (one file per object), "coco" (`key` is the image's
    id in the annotation file), "yolo"; None for a class-index label image."""

    case_id: str
    images: list[Path]
    labels: list[Path] = field(default_factory=list)
    roi: Path | None = None
    relpath: str = ""
    objects: str | None = None
    key: int | None = None


@dataclass
class Dataset:
    """A dataset's cases and the rules to read their labels, as found by `find_dataset`."""

    name: str
    root: Path
    layout: str
    cases: list[CaseRef]
    unlabeled: list[CaseRef] = field(default_factory=list)
    classes: list[str] | None = None
    label_values: dict[int, int] | None = None
    ignore_label: int | None = None
    roi_rule: str | None = None
    modality: str = "unknown"
    spacing: tuple[float, ...] | None = None
    split: dict[str, list[str]] | None = None
    source: str = ""
    task: str = "semantic"  # "instance" where the labels give objects
    sequence: str | None = None  # the `sequence:` regex (seglab.data.sequences), where declared

    def __post_init__(self) -> None:
        """Case ids name one case across labelled and unlabelled images (the split, the
        preprocessed cache and semi-supervised training read them together): an unlabelled
        image whose id a labelled case has (ISBI 2012's test/0.png beside train/image/0.png)
        becomes "unlabeled/<id>"."""
        taken = {ref.case_id for ref in self.cases}
        for ref in self.unlabeled:
            if ref.case_id in taken:
                ref.case_id = f"unlabeled/{ref.case_id}"


def find_dataset(path: str | Path) -> Dataset:
    """Finds the layout of the dataset at `path` (a folder or a seglab.yaml) and lists its cases."""
    path = Path(path)
    if not path.exists():
        raise SeglabError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix not in (".yaml", ".yml"):
            raise SeglabError(f"{path}: expected a dataset folder or a seglab.yaml file")
        return _from_yaml(path)
    if (path / "seglab.yaml").is_file():
        return _from_yaml(path / "seglab.yaml")
    if (path / "dataset.json").is_file() or (path / "imagesTr").is_dir():
        return _from_msd(path)
    # imported here: the instance layouts build on this module's CaseRef and Dataset
    from seglab.data.instance_layouts import find_cityscapes, find_coco, find_voc, find_yolo

    found = find_coco(path) or find_yolo(path) or find_voc(path) or find_cityscapes(path)
    if found is not None:
        return found
    images_dir = path / "images"
    label_dirs = [path / name for name in LABEL_FOLDER_NAMES if (path / name).is_dir()]
    if images_dir.is_dir() and label_dirs:
        return _from_folders(path, images_dir, label_dirs[0])
    raise SeglabError(
        f"{path}: cannot tell the dataset layout (no seglab.yaml, no dataset.json/imagesTr, "
        "no images/ + labels/ folders); describe it with a seglab.yaml (see examples/)"
    )


def _list_images(root: Path, patterns: list[str]) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in root.glob(pattern) if is_image_file(p))
    return sorted(found)


def is_image_file(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    if path.is_dir():
        return any(p.suffix.lower() == ".dcm" for p in path.iterdir())
    return suffix_of(path) in IMAGE_SUFFIXES


def _fill(template: str, groups: dict[str, str], root: Path, yaml_path: Path) -> list[Path]:
    try:
        relative = template.format(**groups)
    except KeyError as missing:
        raise SeglabError(f"{yaml_path}: template {template!r} uses {missing}, not a group of `id`")
    if "*" in relative:
        return sorted(p for p in root.glob(relative) if is_image_file(p))
    return [root / relative]


def _from_yaml(yaml_path: Path) -> Dataset:
    try:
        spec = yaml.safe_load(yaml_path.read_text())
    except yaml.YAMLError as error:
        raise SeglabError(f"{yaml_path}: not valid YAML ({str(error).splitlines()[0]})")
    if not isinstance(spec, dict) or "images" not in spec:
        raise SeglabError(f"{yaml_path}: needs at least an `images:` glob")
    unknown = sorted(set(spec) - set(YAML_KEYS))
    if unknown:
        raise SeglabError(f"{yaml_path}: unknown key `{unknown[0]}` (the keys are "
                          f"{', '.join(YAML_KEYS)})")
    root = (yaml_path.parent / spec.get("root", ".")).resolve()
    if not root.is_dir():
        raise SeglabError(f"{yaml_path}: root {root} is not a folder")
    id_pattern = _regex(spec.get("id", DEFAULT_ID_PATTERN), yaml_path, "the `id` regex")
    if "id" not in id_pattern.groupindex:
        raise SeglabError(f"{yaml_path}: the `id` regex needs a named group (?P<id>...)")

    def refs(patterns, with_labels: bool) -> list[CaseRef]:
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        result = []
        for image in _list_images(root, patterns):
            relpath = image.relative_to(root).as_posix()
            match = id_pattern.search(relpath)
            if match is None:
                raise SeglabError(f"{image}: the `id` regex {id_pattern.pattern!r} does not match")
            groups = {k: v for k, v in match.groupdict().items() if v is not None}
            extra = [p for t in spec.get("channels", []) for p in _fill(t, groups, root, yaml_path)]
            roi_template = spec.get("roi")
            roi = None
            if roi_template and roi_template != "auto":
                roi = _fill(roi_template, groups, root, yaml_path)[0]
            labels = _fill(spec["labels"], groups, root, yaml_path) if with_labels else []
            objects = "mask_files" if with_labels and "*" in spec["labels"] else None
            result.append(CaseRef(groups["id"], [image, *extra], labels, roi, relpath, objects))
        return result

    cases = refs(spec["images"], with_labels="labels" in spec)
    _check_unique_ids(cases, yaml_path)
    task = "instance" if any(c.objects for c in cases) else "semantic"
    classes = spec.get("classes")
    if isinstance(classes, int):
        classes = [f"class_{k}" for k in range(classes)]
    values = spec.get("label_values")
    split = spec.get("split")
    if isinstance(split, str):
        split = _read_split_file(yaml_path.parent / split)
    spacing = spec.get("spacing")
    return Dataset(
        name=spec.get("name", root.name),
        root=root,
        layout="seglab.yaml",
        cases=cases,
        unlabeled=refs(spec["unlabeled"], with_labels=False) if "unlabeled" in spec else [],
        classes=list(classes) if classes else None,
        label_values={int(k): int(v) for k, v in values.items()} if values else None,
        ignore_label=spec.get("ignore_label"),
        roi_rule="auto" if spec.get("roi") == "auto" else ("file" if spec.get("roi") else None),
        modality=str(spec.get("modality", "unknown")),
        spacing=tuple(float(s) for s in spacing) if spacing else None,
        split=_resolve_split(split, cases, yaml_path) if split else None,
        source=str(yaml_path.resolve()),
        task=task,
        sequence=_sequence_pattern(spec, yaml_path),
    )


def _sequence_pattern(spec: dict, yaml_path: Path) -> str | None:
    if "sequence" not in spec:
        return None
    try:
        return compiled(str(spec["sequence"])).pattern
    except SeglabError as error:
        raise SeglabError(f"{yaml_path}: `sequence`: {error}") from None


def _read_split_file(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SeglabError(f"{path}: cannot read the split file ({error})")


def _regex(pattern: str, where: Path, what: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as error:
        raise SeglabError(f"{where}: {what} {pattern!r} is not a valid regular expression "
                          f"({error})")


def _resolve_split(split: dict, cases: list[CaseRef], where: Path) -> dict[str, list[str]]:
    """Turns {subset: [ids] | 'regex on relative path'} into {subset: [ids]}; checks the ids."""
    known = {c.case_id for c in cases}
    resolved = {}
    for subset, members in split.items():
        if isinstance(members, str):
            pattern = _regex(members, where, f"split `{subset}`")
            members = [c.case_id for c in cases if pattern.search(c.relpath)]
        members = [str(m) for m in members]
        unknown = [m for m in members if m not in known]
        if unknown:
            raise SeglabError(f"{where}: split `{subset}` names unknown cases {unknown[:5]}")
        resolved[subset] = members
    return resolved


def _check_unique_ids(cases: list[CaseRef], where: Path) -> None:
    seen: dict[str, Path] = {}
    for case in cases:
        if case.case_id in seen:
            raise SeglabError(
                f"{where}: case id {case.case_id!r} is shared by {seen[case.case_id]} and "
                f"{case.images[0]}; make the `id` regex capture a unique part of the path"
            )
        seen[case.case_id] = case.images[0]


def _from_folders(root: Path, images_dir: Path, labels_dir: Path) -> Dataset:
    labels = {file_stem(p): p for p in labels_dir.iterdir() if is_image_file(p)}
    cases, unlabeled = [], []
    for image in sorted(p for p in images_dir.iterdir() if is_image_file(p)):
        stem = file_stem(image)
        ref = CaseRef(stem, [image], relpath=image.relative_to(root).as_posix())
        label = labels.get(stem) or labels.get(f"{stem}_mask") or labels.get(f"{stem}_label")
        if label is None:
            unlabeled.append(ref)
        else:
            ref.labels = [label]
            cases.append(ref)
    return Dataset(root.name, root.resolve(), "folders", cases, unlabeled, source=str(root.resolve()))


def file_stem(path: Path) -> str:
    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _from_msd(root: Path) -> Dataset:
    """nnU-Net v2 raw layout (channel suffixes _0000...) or the original MSD one (4D NIfTI)."""
    info_path = root / "dataset.json"
    info = _read_split_file(info_path) if info_path.is_file() else {}
    channel_names = info.get("channel_names") or info.get("modality") or {"0": "unknown"}
    modality = str(next(iter(channel_names.values())))
    labels = info.get("labels")
    classes = None
    if labels:
        if all(str(v).lstrip("-").isdigit() for v in labels.values()):  # nnU-Net v2: name -> value
            by_value = {int(v): k for k, v in labels.items()}
        else:  # MSD: "value" -> name
            by_value = {int(k): v for k, v in labels.items()}
        classes = [by_value.get(k, f"class_{k}") for k in range(max(by_value) + 1)]
    ending = info.get("file_ending")

    def scan(folder: Path, with_labels: bool) -> list[CaseRef]:
        if not folder.is_dir():
            return []
        groups: dict[str, list[Path]] = {}
        for image in sorted(p for p in folder.iterdir() if is_image_file(p)):
            stem = file_stem(image)
            match = re.fullmatch(r"(.+)_(\d{4})", stem)
            case_id = match.group(1) if match else stem
            groups.setdefault(case_id, []).append(image)
        refs = []
        for case_id, images in groups.items():
            ref = CaseRef(case_id, images, relpath=images[0].relative_to(root).as_posix())
            if with_labels:
                suffix = ending or suffix_of(images[0])
                ref.labels = [root / "labelsTr" / f"{case_id}{suffix}"]
            refs.append(ref)
        return refs

    return Dataset(
        name=info.get("name", root.name),
        root=root.resolve(),
        layout="nnU-Net/MSD",
        cases=scan(root / "imagesTr", with_labels=True),
        unlabeled=scan(root / "imagesTs", with_labels=False),
        classes=classes,
        modality=modality,
        source=str(root.resolve()),
    )
