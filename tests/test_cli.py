"""Every user error is one line naming the file and the problem, exit code 2, nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from seglab.cli import main


def _error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("seglab: error: ")
    return err


def test_missing_path(capsys, tmp_path: Path) -> None:
    err = _error(capsys, "inspect", str(tmp_path / "nowhere"))
    assert f"{tmp_path / 'nowhere'}: no such file or folder" in err
    assert err.count("\n") == 1


def test_corrupt_image_and_wrong_size_mask_are_both_named_at_once(
        capsys, png_dataset: Path) -> None:
    (png_dataset / "images" / "case03.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(png_dataset / "labels" / "case07.png")
    err = _error(capsys, "inspect", str(png_dataset))
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert "images/case03.png: cannot read image" in lines[0]
    assert "labels/case07.png: size (10, 10) does not match its image (40, 48)" in lines[1]


def test_non_integer_labels(capsys, nifti_dataset: Path) -> None:
    path = nifti_dataset / "labelsTr" / "sph_002.nii.gz"
    label = nib.load(path)
    data = np.asanyarray(label.dataobj).astype(np.float32)
    data[5, 5, 5] = 0.5
    nib.save(nib.Nifti1Image(data, label.affine), path)
    err = _error(capsys, "inspect", str(nifti_dataset))
    assert "sph_002.nii.gz: label values are not integers" in err


def test_labels_outside_the_declared_classes(capsys, nifti_dataset: Path) -> None:
    path = nifti_dataset / "labelsTr" / "sph_004.nii.gz"
    label = nib.load(path)
    data = np.asanyarray(label.dataobj).copy()
    data[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(data, label.affine), path)
    err = _error(capsys, "inspect", str(nifti_dataset))
    assert "sph_004.nii.gz: label values [3] are neither class indices (3 classes)" in err
    assert "add `3: <class index>` under label_values" in err


def test_nan_or_infinite_voxels_are_refused_by_name(capsys, nifti_dataset: Path) -> None:
    path = nifti_dataset / "imagesTr" / "sph_005_0000.nii.gz"
    image = nib.load(path)
    data = np.asanyarray(image.dataobj).copy()
    data[1, 2, 3], data[4, 5, 6] = np.nan, np.inf
    nib.save(nib.Nifti1Image(data, image.affine), path)
    err = _error(capsys, "inspect", str(nifti_dataset))
    assert "sph_005_0000.nii.gz: 2 of 3600 values are NaN or infinite" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("text, message", [
    ("images: images/*.png\nid: '(?P<id>[0-9+'\n", "the `id` regex '(?P<id>[0-9+' is not a valid"),
    ("images: images/*.png\nsplit: {test: '(case'}\n", "split `test` '(case' is not a valid"),
    ("images: images/*.png\nlabel: labels/{id}.png\n", "unknown key `label` (the keys are"),
])
def test_a_broken_seglab_yaml_gets_one_line(capsys, png_dataset: Path, text: str,
                                           message: str) -> None:
    (png_dataset / "seglab.yaml").write_text(text)
    err = _error(capsys, "inspect", str(png_dataset))
    assert message in err and err.count("\n") == 1


def test_an_output_folder_that_is_a_file_or_cannot_be_made_gets_one_line(
        capsys, png_dataset: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    err = _error(capsys, "train", str(png_dataset), "--out", str(a_file))
    assert "taken: is a file, not a folder" in err
    err = _error(capsys, "train", str(png_dataset), "--out", str(a_file / "sub" / "run"))
    assert "taken/sub: cannot create the output folder (Not a directory)" in err
    err = _error(capsys, "predict", "--method", "otsu", str(png_dataset / "images"), "--out",
                 str(a_file))
    assert "taken: is a file, not a folder" in err
    assert a_file.read_text() == "not a folder" and not list(tmp_path.glob(".*"))  # nothing left


def test_a_reference_without_its_prediction_is_an_error_unless_allowed(
        capsys, png_dataset: Path, tmp_path: Path) -> None:
    predictions = tmp_path / "pred"
    shutil.copytree(png_dataset / "labels", predictions)
    (predictions / "case03.png").unlink()
    err = _error(capsys, "evaluate", str(predictions), str(png_dataset / "labels"))
    assert "1 of 12 reference files have no prediction of the same name (first: " in err
    assert "case03.png); predict them, or pass --allow-missing" in err
    assert not (predictions / "evaluation").exists()
    assert main(["evaluate", str(predictions), str(png_dataset / "labels"),
                 "--allow-missing"]) == 0
    assert "warning: 1 of 12 reference files" in capsys.readouterr().err
    summary = json.loads((predictions / "evaluation" / "metrics.json").read_text())["summary"]
    assert next(iter(summary["classes"].values()))["dice"]["n"] == 11


def test_empty_dataset(capsys, tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    err = _error(capsys, "inspect", str(tmp_path))
    assert "no labelled cases found (empty dataset)" in err


def test_mixed_2d_and_3d(capsys, png_dataset: Path, nifti_dataset: Path) -> None:
    shutil.copy(nifti_dataset / "imagesTr" / "sph_000_0000.nii.gz", png_dataset / "images" / "vol.nii.gz")
    shutil.copy(nifti_dataset / "labelsTr" / "sph_000.nii.gz", png_dataset / "labels" / "vol.nii.gz")
    err = _error(capsys, "inspect", str(png_dataset))
    assert "mixed 2D and 3D images: 2D e.g." in err and "vol.nii.gz" in err


def test_folder_that_is_not_a_run(capsys, tmp_path: Path, png_dataset: Path) -> None:
    err = _error(capsys, "predict", str(tmp_path), str(png_dataset / "images"), "--out",
                 str(tmp_path / "pred"))
    assert f"{tmp_path}: not a seglab run" in err
    err = _error(capsys, "train", "--out", str(tmp_path), "--resume")
    assert "not a seglab run" in err
    assert not (tmp_path / "pred").exists()


def test_failed_training_leaves_no_run_folder(capsys, png_dataset: Path, tmp_path: Path) -> None:
    (png_dataset / "labels" / "case01.png").write_bytes(b"not a png")
    _error(capsys, "train", str(png_dataset), "--out", str(tmp_path / "run"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pngs"]


def test_bad_plan_override(capsys, png_dataset: Path, tmp_path: Path) -> None:
    err = _error(capsys, "train", str(png_dataset), "--out", str(tmp_path / "run"),
                 "--set", "epoch=3")
    assert "plan override 'epoch': no such field" in err
    assert not (tmp_path / "run").exists()


def test_evaluate_folders_scores_masks_against_references(capsys, tmp_path: Path) -> None:
    for folder in ("pred", "ref"):
        (tmp_path / folder).mkdir()
    ref = np.zeros((10, 10), np.uint8)
    ref[2:6, 2:6] = 255
    pred = np.zeros((10, 10), np.uint8)
    pred[2:6, 2:4] = 255
    Image.fromarray(ref).save(tmp_path / "ref" / "a.png")
    Image.fromarray(pred).save(tmp_path / "pred" / "a.png")
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref")]) == 0
    summary = json.loads((tmp_path / "pred" / "evaluation" / "metrics.json").read_text())["summary"]
    assert summary["classes"]["class_1"]["dice"]["mean"] == pytest.approx(2 * 8 / (8 + 16))


def test_implausible_spacing_is_named(capsys, nifti_dataset: Path) -> None:
    path = nifti_dataset / "imagesTr" / "sph_003_0000.nii.gz"
    broken = nib.Nifti1Image(np.asanyarray(nib.load(path).dataobj), None)
    broken.header.set_zooms((0.9, 1e6, 2.0))  # a metre-sized voxel: a broken header
    nib.save(broken, path)
    err = _error(capsys, "inspect", str(nifti_dataset))
    assert "sph_003_0000.nii.gz: implausible voxel spacing" in err


@pytest.mark.parametrize("declared", [False, True])
def test_evaluate_against_a_dataset_uses_its_label_mapping(
        capsys, png_dataset: Path, tmp_path: Path, declared: bool) -> None:
    if declared:
        (png_dataset / "seglab.yaml").write_text(
            "images: images/*.png\nlabels: labels/{id}.png\nclasses: [background, disc]\n"
            "label_values: {0: 0, 255: 1}\n")
    predictions = tmp_path / "pred"
    shutil.copytree(png_dataset / "labels", predictions)
    empty = np.zeros((40, 48), np.uint8)
    Image.fromarray(empty).save(predictions / "case05.png")
    assert main(["evaluate", str(predictions), str(png_dataset)]) == 0
    summary = json.loads((predictions / "evaluation" / "metrics.json").read_text())["summary"]
    dice = next(iter(summary["classes"].values()))["dice"]
    assert dice["n"] == 12 and dice["mean"] == pytest.approx(11 / 12)
