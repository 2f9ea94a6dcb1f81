"""Finding cases in the layouts seglab reads: seglab.yaml, nnU-Net/MSD, images/ + labels/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data.inspect import inspect_dataset
from seglab.data.layouts import IGNORE_INDEX, find_dataset
from seglab.data.loading import field_of_view, load_case
from seglab.errors import SeglabError


def test_image_and_label_folders_pair_by_file_name(png_dataset: Path) -> None:
    dataset = find_dataset(png_dataset)
    assert dataset.layout == "folders"
    assert len(dataset.cases) == 12
    assert all(ref.labels[0].name == ref.images[0].name for ref in dataset.cases)


def test_zero_255_masks_without_declared_classes_read_as_background_foreground(
        png_dataset: Path) -> None:
    dataset = find_dataset(png_dataset)
    fingerprint = inspect_dataset(dataset)
    assert fingerprint.label_values == {0: 0, 255: 1}
    case = load_case(dataset, dataset.cases[0])
    assert set(np.unique(case.label)) == {0, 1}


def test_nnunet_layout_groups_channels_and_reads_label_names(nifti_dataset: Path) -> None:
    dataset = find_dataset(nifti_dataset)
    assert dataset.layout == "nnU-Net/MSD"
    assert [c.case_id for c in dataset.cases][:2] == ["sph_000", "sph_001"]
    assert dataset.classes == ["background", "shell", "core"]
    assert len(dataset.unlabeled) == 1 and dataset.modality == "MRI"
    case = load_case(dataset, dataset.cases[0])
    assert case.image.shape == (1, 20, 18, 10)
    assert case.spacing == pytest.approx((0.9, 0.9, 2.0))


MAPPED_YAML = """
images: raw/*.png
id: 'img_(?P<id>\\d+)\\.png$'
labels: 'gt/mask-{id}.png'
classes: [background, thing]
label_values: {200: 0, 100: 1}
"""


def _yaml_dataset(tmp_path: Path, text: str) -> Path:
    (tmp_path / "raw").mkdir()
    (tmp_path / "gt").mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        Image.fromarray(rng.integers(0, 255, (8, 10), dtype=np.uint8)).save(
            tmp_path / "raw" / f"img_{index}.png")
        label = np.full((8, 10), 200, np.uint8)
        label[:4] = 100
        label[0, 0] = 7
        Image.fromarray(label).save(tmp_path / "gt" / f"mask-{index}.png")
    (tmp_path / "seglab.yaml").write_text(text)
    return tmp_path


def test_a_partial_label_values_map_keeps_the_values_it_does_not_name(tmp_path: Path) -> None:
    root = _yaml_dataset(tmp_path, MAPPED_YAML.replace("{200: 0, 100: 1}", "{200: 1}")
                         + "ignore_label: 7\n")
    for path in (root / "gt").iterdir():  # stored as 0 (background) and 200 (thing)
        label = np.array(Image.open(path))
        Image.fromarray(np.where(label == 100, 0, label).astype(np.uint8)).save(path)
    dataset = find_dataset(root)
    fingerprint = inspect_dataset(dataset)
    assert fingerprint.class_voxels == [4 * 39, 4 * 40]
    label = load_case(dataset, dataset.cases[0]).label
    assert (label[1:4] == 0).all() and (label[4:] == 1).all()
    Image.fromarray(np.full((8, 10), 9, np.uint8)).save(root / "gt" / "mask-1.png")
    with pytest.raises(SeglabError, match=r"mask-1.png: label values \[9\].*add `9: <class index>`"):
        inspect_dataset(find_dataset(root))


def test_yaml_id_regex_template_label_mapping_ignore_and_split(tmp_path: Path) -> None:
    root = _yaml_dataset(tmp_path, MAPPED_YAML + "ignore_label: 7\nsplit: {test: ['3'], val: 'img_2'}\n")
    dataset = find_dataset(root)
    assert [c.case_id for c in dataset.cases] == ["0", "1", "2", "3"]
    assert dataset.split == {"test": ["3"], "val": ["2"]}
    label = load_case(dataset, dataset.cases[0]).label
    assert label[0, 0] == IGNORE_INDEX
    assert (label[1:4] == 1).all() and (label[4:] == 0).all()


def test_yaml_label_value_outside_the_mapping_is_named(tmp_path: Path) -> None:
    root = _yaml_dataset(tmp_path, MAPPED_YAML)
    with pytest.raises(SeglabError, match=r"mask-0\.png: label values \[7\]"):
        inspect_dataset(find_dataset(root))


def test_yaml_duplicate_case_ids_are_refused(tmp_path: Path) -> None:
    root = _yaml_dataset(tmp_path, "images: raw/*.png\nid: '(?P<id>img)_'\nlabels: 'gt/x.png'\n")
    with pytest.raises(SeglabError, match="shared by"):
        find_dataset(root)


def test_instance_masks_merge_into_one_foreground_class(tmp_path: Path) -> None:
    case_dir = tmp_path / "cases" / "a"
    (case_dir / "masks").mkdir(parents=True)
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(case_dir / "image.png")
    for k, rows in enumerate([slice(0, 2), slice(4, 6)]):
        mask = np.zeros((6, 6), np.uint8)
        mask[rows, 1:3] = 255
        Image.fromarray(mask).save(case_dir / "masks" / f"n{k}.png")
    (tmp_path / "seglab.yaml").write_text(
        "images: 'cases/*/image.png'\nid: 'cases/(?P<id>[^/]+)/'\nlabels: 'cases/{id}/masks/*.png'\n"
        "classes: [background, nucleus]\n")
    dataset = find_dataset(tmp_path)
    label = load_case(dataset, dataset.cases[0]).label
    assert label.sum() == 8 and label[0, 1] == 1 and label[2, 1] == 0


def test_field_of_view_finds_the_bright_disc_and_drops_the_dark_surround() -> None:
    yy, xx = np.mgrid[:60, :60]
    disc = (yy - 30) ** 2 + (xx - 30) ** 2 < 25**2
    image = np.stack([np.where(disc, 120.0, 3.0)] * 3)
    fov = field_of_view(image)
    assert fov[30, 30] and not fov[0, 0]
    assert abs(int(fov.sum()) - int(disc.sum())) < 0.1 * disc.sum()


def test_unknown_layout_says_to_write_a_seglab_yaml(tmp_path: Path) -> None:
    with pytest.raises(SeglabError, match="seglab.yaml"):
        find_dataset(tmp_path)


def test_inspect_measures_each_class_width_from_its_skeleton(tmp_path: Path) -> None:
    """Class 1 is a 3-pixel-wide line 40 long, class 2 a 20x20 square: widths about 3 and far
    above it (pixels per skeleton pixel; the square's skeleton is a point or a short line)."""
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    for k in range(2):
        label = np.zeros((48, 64), np.uint8)
        label[10:13, 5:45] = 1
        label[20:40, 30 + k:50 + k] = 2
        Image.fromarray(label).save(tmp_path / "labels" / f"c{k}.png")
        Image.fromarray((label * 80).astype(np.uint8)).save(tmp_path / "images" / f"c{k}.png")
    widths = inspect_dataset(find_dataset(tmp_path)).class_widths
    assert widths[1] == pytest.approx(3.0, abs=0.2)
    assert widths[2] > 20


def test_an_unlabelled_image_with_a_labelled_case_id_gets_its_own_id(tmp_path: Path) -> None:
    """ISBI 2012's layout: train/image/0.png is labelled, test/0.png is not; both stems are 0."""
    for folder in ("train/image", "train/label", "test"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("0", "1"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "train/image" / f"{name}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "train/label" / f"{name}.png")
    for name in ("0", "7"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "test" / f"{name}.png")
    (tmp_path / "seglab.yaml").write_text("images: train/image/*.png\nlabels: train/label/{id}.png\n"
                                          "classes: [a, b]\nunlabeled: test/*.png\n")
    dataset = find_dataset(tmp_path / "seglab.yaml")
    assert [c.case_id for c in dataset.cases] == ["0", "1"]
    assert sorted(r.case_id for r in dataset.unlabeled) == ["7", "unlabeled/0"]
    assert {r.images[0].parent.name for r in dataset.unlabeled} == {"test"}
