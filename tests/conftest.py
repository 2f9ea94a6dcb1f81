"""Small datasets made on the fly, and the location of the real ones in ../shared."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from seglab.plan import Plan

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


NO_AUGMENTATION = {
    "flip_axes": [], "rotate_degrees": 0.0, "rotate_in_plane_only": False,
    "rotate_probability": 0.0, "scale_range": [1.0, 1.0], "scale_probability": 0.0,
    "noise_probability": 0.0, "brightness_probability": 0.0, "contrast_probability": 0.0,
    "gamma_probability": 0.0,
}


def small_plan(patch, oversampling=0.0, augmentation=None) -> Plan:
    """A 2-class plan with the given patch, no augmentation unless asked, for unit tests."""
    return Plan(dims=len(patch), in_channels=1, classes=["bg", "fg"], label_values=None,
                ignore_label=None, roi_rule=None, normalization={"scheme": "zscore"},
                target_spacing=None, patch_size=list(patch), batch_size=6, model={}, loss={},
                optimizer={}, epochs=1, iterations_per_epoch=1, time_budget_minutes=None,
                foreground_oversampling=oversampling,
                augmentation=augmentation or dict(NO_AUGMENTATION), inference={}, split={})


def needs_gpu(test):
    """Marks a test `gpu` and skips it where PyTorch sees no CUDA GPU."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
    return pytest.mark.gpu(skip(test))


def needs_shared(name: str):
    """Skips a test when ../shared/datasets/NAME is absent (a user's clone); CI has it."""
    return pytest.mark.skipif(not (SHARED / name).is_dir(),
                              reason=f"../shared/datasets/{name} is not here")


def disc_image(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc on a noisy background, and its 0/1 mask."""
    yy, xx = np.mgrid[: size[0], : size[1]]
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 < (min(size) / 4) ** 2
    image = 60 + 120 * mask + rng.normal(0, 10, size)
    return np.clip(image, 0, 255).astype(np.uint8), mask.astype(np.uint8)


def write_disc_dataset(root: Path, seed: int, specks: float = 0.0) -> Path:
    """images/ + labels/ folders of 12 grey 40x48 PNG discs with 0/255 masks; `specks`: the
    share of background pixels set bright (single-pixel noise a threshold keeps)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(seed)
    for index in range(12):
        image, mask = disc_image(rng, (40, 48))
        if specks:
            image[(rng.random(mask.shape) < specks) & (mask == 0)] = 230
        Image.fromarray(image).save(root / "images" / f"case{index:02d}.png")
        Image.fromarray(mask * 255).save(root / "labels" / f"case{index:02d}.png")
    return root


@pytest.fixture
def png_dataset(tmp_path: Path) -> Path:
    """images/ + labels/ folders of 12 grey 40x48 PNGs with 0/255 masks."""
    return write_disc_dataset(tmp_path / "pngs", seed=1)


def nifti_affine() -> np.ndarray:
    affine = np.diag([0.9, 0.9, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 4.0, 7.5]
    return affine


@pytest.fixture
def nifti_dataset(tmp_path: Path) -> Path:
    """An nnU-Net v2 raw folder: 8 volumes of 20x18x10 voxels, 2 labels, a non-trivial affine."""
    root = tmp_path / "Dataset001_Spheres"
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(2)
    zz, yy, xx = np.mgrid[:20, :18, :10]
    for index in range(8):
        centre = rng.uniform([7, 6, 4], [13, 12, 6])
        distance = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + ((xx - centre[2]) * 2) ** 2)
        label = np.where(distance < 3, 2, np.where(distance < 6, 1, 0)).astype(np.uint8)
        image = (100 + 50 * label + rng.normal(0, 8, label.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, nifti_affine()), root / "imagesTr" / f"sph_{index:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, nifti_affine()), root / "labelsTr" / f"sph_{index:03d}.nii.gz")
    nib.save(nib.Nifti1Image(image[:, :, :9], nifti_affine()), root / "imagesTs" / "sph_100_0000.nii.gz")
    (root / "dataset.json").write_text(
        '{"channel_names": {"0": "MRI"}, "labels": {"background": 0, "shell": 1, "core": 2},'
        ' "numTraining": 8, "file_ending": ".nii.gz"}')
    return root
