"""Makes docs/report-2d.png and docs/report-3d.png: a short demo-data run and a short run on
synthetic NIfTI volumes (a shell around a core), their reports, and a headless Chromium
screenshot of each. About 4 minutes on 2 CPU cores:

    uv run python docs/report_screenshots.py [WORK_FOLDER]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from seglab import api
from seglab.data.demo import generate_demo_dataset

DOCS = Path(__file__).resolve().parent
# Short epochs, so that a minute and a half on a busy CPU still draws a few points per curve.
SHORT = {"epochs": 8, "iterations_per_epoch": 5, "time_budget_minutes": 1.5}
SMALL_3D = {"model.widths": [8, 16, 32], "model.strides": [[2, 2, 1], [2, 2, 2]],
            "model.kernels": [[3, 3, 3]] * 3, "patch_size": [32, 32, 16], "batch_size": 2}


def volumes(root: Path, count: int = 16) -> Path:
    """An nnU-Net folder of 40x40x20 volumes, 2x thicker slices, a shell and a core class."""
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:40, :40, :20]
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        centre, radii = rng.uniform([15, 15, 8], [25, 25, 12]), rng.uniform([8, 6, 3], [12, 10, 5])
        distance = np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip((zz, yy, xx), centre, radii)))
        label = np.where(distance < 0.5, 2, np.where(distance < 1, 1, 0)).astype(np.uint8)
        image = 100 + 40 * label + rng.normal(0, 15, label.shape)
        for folder, array, name in (("imagesTr", image.astype(np.float32), f"vol_{index:03d}_0000"),
                                    ("labelsTr", label, f"vol_{index:03d}")):
            nib.save(nib.Nifti1Image(array, affine), root / folder / f"{name}.nii.gz")
    (root / "dataset.json").write_text(
        '{"channel_names": {"0": "MRI"}, "labels": {"background": 0, "shell": 1, "core": 2},'
        f' "numTraining": {count}, "file_ending": ".nii.gz"}}')
    return root


def screenshot(page: Path, out: Path) -> None:
    subprocess.run([shutil.which("chromium") or "chromium", "--headless", "--disable-gpu",
                    "--no-sandbox", "--hide-scrollbars", "--window-size=1280,4600",
                    f"--screenshot={out}", page.resolve().as_uri()], check=True,
                   capture_output=True)


def main(work: Path) -> None:
    demo = generate_demo_dataset(work / "demo-data")
    run_2d = api.train(demo, work / "run-2d", {**api.DEMO_OVERRIDES, **SHORT}, progress=False)
    screenshot(run_2d.path / "report.html", DOCS / "report-2d.png")
    run_3d = api.train(volumes(work / "Dataset003_Shells"), work / "run-3d",
                       {**SHORT, **SMALL_3D}, progress=False)
    screenshot(run_3d.path / "report.html", DOCS / "report-3d.png")
    print(f"runs in {work}; wrote {DOCS / 'report-2d.png'} and {DOCS / 'report-3d.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="seglab-docs-")))
