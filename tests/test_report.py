"""`seglab report`: the run's HTML page, written after training and evaluation, checked for its
content and rendered in headless Chromium (installed with apt when missing and possible)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from seglab import api
from seglab.cli import main
from seglab.data.demo import generate_demo_dataset
from seglab.evaluate import evaluate_run
from seglab.report.run_figures import error_centre
from seglab.run import Run
from tests.conftest import nifti_affine
from tests.test_train import TINY_2D, TINY_3D


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The demo data (15 images of 64x64, 3 classes; 3 test cases), trained for seconds."""
    root = tmp_path_factory.mktemp("report2d")
    data = generate_demo_dataset(root / "data", n_images=15, size=64)
    return api.train(data, root / "run", TINY_2D, progress=False)


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """12 NIfTI volumes of 20x18x10 voxels with a shell and a core (2 test cases)."""
    root = tmp_path_factory.mktemp("report3d")
    data = root / "Dataset002_Shells"
    for folder in ("imagesTr", "labelsTr"):
        (data / folder).mkdir(parents=True)
    rng = np.random.default_rng(3)
    zz, yy, xx = np.mgrid[:20, :18, :10]
    for index in range(12):
        centre = rng.uniform([7, 6, 4], [13, 12, 6])
        offset = (zz - centre[0], yy - centre[1], 2 * (xx - centre[2]))
        distance = np.sqrt(sum(o ** 2 for o in offset))
        label = np.where(distance < 3, 2, np.where(distance < 6, 1, 0)).astype(np.uint8)
        image = (100 + 50 * label + rng.normal(0, 8, label.shape)).astype(np.float32)
        for folder, array, name in (("imagesTr", image, f"sh_{index:03d}_0000"),
                                    ("labelsTr", label, f"sh_{index:03d}")):
            nib.save(nib.Nifti1Image(array, nifti_affine()), data / folder / f"{name}.nii.gz")
    (data / "dataset.json").write_text(
        '{"channel_names": {"0": "MRI"}, "labels": {"background": 0, "shell": 1, "core": 2},'
        ' "numTraining": 12, "file_ending": ".nii.gz"}')
    return api.train(data, root / "run", TINY_3D, progress=False)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when absent and this runs as root."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed, and installing it needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, encoding="utf-8",
                              errors="replace", timeout=900)
        if command[1] == "install" and done.returncode == 0:
            break
    found = shutil.which("chromium")
    if not found:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"chromium could not be installed with apt-get: {last}")
    return found


def _browse(chromium: str, page: Path, *options: str) -> str:
    """The DOM after the page's scripts ran, from headless Chromium."""
    done = subprocess.run(
        [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--allow-file-access-from-files",
         "--virtual-time-budget=5000", *options, "--dump-dom", page.resolve().as_uri()],
        capture_output=True, encoding="utf-8", errors="replace", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _table_rows(page: str, table_id: str) -> list[str]:
    """The first cell of each body row of the table `table_id`."""
    body = page.split(f'id="{table_id}"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [html.unescape(m) for m in re.findall(r"<tr><td>([^<]*)</td>", body)]


def _images(page: str) -> list[str]:
    return re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', page)


def test_training_writes_a_report_with_data_plan_curves_tables_boxes_and_three_overlays(
        run_2d: Run) -> None:
    page = (run_2d.path / "report.html").read_text(encoding="utf-8")
    test_ids = run_2d.read_json("split.json")["test"]
    assert len(test_ids) == 3
    assert sorted(_table_rows(page, "per-case")) == sorted(test_ids)
    for text in ("Dataset", "The full plan (plan.json)", "<details>",
                 "Metrics per class", "cell", "crystal", "hd95", "pixel_accuracy", "sortTable"):
        assert text in page, text
    alts = _images(page)
    assert alts[:3] == ["learning curves", "box plots of the per-case metrics",
                        "error rate against predictive entropy"]
    shown = [a for a in alts[3:] if not a.startswith("Grad-CAM of ")]
    assert [a.split(":")[0] for a in shown] == ["best", "median", "worst"]
    assert len(alts) == 3 + 2 * 3  # each case's overlay and its Grad-CAM
    assert "As a detector of the misclassified pixels its ROC AUC is" in page
    sizes = run_2d.read_json("evaluation/metrics.json")["per_case"][0]["sizes"]
    assert set(sizes) == {"cell", "crystal"} and "predicted_mm2" in sizes["cell"]
    assert 'id="sizes"' in page and "reference mm2" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page


def test_per_case_rows_rank_cases_by_their_mean_foreground_dice(run_2d: Run) -> None:
    per_case = run_2d.read_json("evaluation/metrics.json")["per_case"]
    means = {c["case"]: np.mean([m["dice"] for m in c["classes"].values()]) for c in per_case}
    page = (run_2d.path / "report.html").read_text(encoding="utf-8")
    best = re.search(r'<img alt="best: ([^ ]+) \(mean Dice ([0-9.]+)\)', page)
    assert best and best[1] == max(means, key=means.get)
    assert float(best[2]) == pytest.approx(max(means.values()), abs=1e-4)


def test_3d_report_shows_orthogonal_slices_through_the_largest_error(run_3d: Run) -> None:
    page = (run_3d.path / "report.html").read_text(encoding="utf-8")
    test_ids = run_3d.read_json("split.json")["test"]
    assert sorted(_table_rows(page, "per-case")) == sorted(test_ids)
    assert "shell dice" in page and "core dice" in page  # several classes: columns per class
    alts = _images(page)  # curves, boxes, uncertainty; per case its slices and its Grad-CAM
    assert len(alts) == 3 + 2 * len(test_ids)
    assert sum(a.startswith("Grad-CAM of ") for a in alts) == len(test_ids)
    slices = page.count("slices through the largest error") + page.count("no errors; slices")
    assert slices == len(test_ids)


def test_error_centre_is_a_voxel_of_the_largest_error_component() -> None:
    errors = np.zeros((20, 20, 20), bool)
    errors[2:4, 2:4, 2:4] = True  # 8 voxels
    errors[10:15, 5:8, 12:18] = True  # 90 voxels, the largest
    centre, size = error_centre(errors)
    assert size == 90 and errors[centre]
    assert centre == (12, 6, 14) or centre == (12, 6, 15)
    assert error_centre(np.zeros((4, 4, 4), bool)) is None


def test_report_without_evaluation_says_so_and_shows_the_training(run_2d: Run,
                                                                  tmp_path: Path) -> None:
    copy = Path(shutil.copytree(run_2d.path, tmp_path / "run", ignore=shutil.ignore_patterns(
        "evaluation", "predictions", "report.html")))
    out = api.report(copy)
    page = out.read_text(encoding="utf-8")
    assert out == copy / "report.html"
    assert "No evaluation yet: the test split has not been scored yet" in page
    assert _images(page) == ["learning curves"]
    assert "Per-case metrics" not in page


def test_metrics_added_to_the_evaluation_appear_without_a_change_in_the_report(
        run_2d: Run, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(run_2d.path, tmp_path / "run"))
    metrics = json.loads((copy / "evaluation" / "metrics.json").read_text(encoding="utf-8"))
    for case in metrics["per_case"]:
        case["classes"]["cell"]["surface_dice"] = 0.5
        case["balanced_accuracy"] = 0.75
    summary = metrics["summary"]
    stats = {"mean": 0.5, "std": 0.0, "n": 3, "undefined": 0}
    summary["classes"]["cell"]["surface_dice"] = stats
    summary["micro"] = {"dice": stats}
    summary["confusion_matrix"] = [[10, 1], [2, 30]]
    (copy / "evaluation" / "metrics.json").write_text(json.dumps(metrics))
    page = api.report(copy, tmp_path / "elsewhere.html").read_text(encoding="utf-8")
    assert "cell surface_dice" in page and "balanced_accuracy" in page
    assert "<tr><td>micro</td>" in page
    assert "confusion_matrix" in page and "Other entries of the summary" in page


def test_cli_report_writes_the_page_where_asked_and_names_a_folder_that_is_no_run(
        run_2d: Run, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(run_2d.path), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text(encoding="utf-8").startswith("<!doctype html>")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"seglab: error: {tmp_path}: not a seglab run (no plan.json/run.json; create " \
                  "one with `seglab train DATA --out RUN`)\n"


def test_scoring_writes_no_report_but_seglab_evaluate_run_rewrites_it(run_3d: Run) -> None:
    (run_3d.path / "report.html").unlink()
    evaluate_run(run_3d)
    assert not (run_3d.path / "report.html").exists()
    assert main(["evaluate", str(run_3d.path)]) == 0
    assert (run_3d.path / "report.html").is_file()


@pytest.mark.parametrize("which", ["run_2d", "run_3d"])
def test_report_renders_in_chromium_without_script_errors_with_tables_and_images(
        which: str, chromium: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    run: Run = request.getfixturevalue(which)
    dom = _browse(chromium, run.path / "report.html")
    assert 'data-report-ready="1"' in dom
    assert "data-js-errors" not in dom
    assert dom.count("<table") >= 4 and len(_images(dom)) >= 4
    shot = tmp_path / "shot.png"
    _browse(chromium, run.path / "report.html", f"--screenshot={shot}", "--window-size=1280,1600")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1600, 1280) and pixels.std() > 10  # not a blank page


def test_clicking_a_header_twice_in_chromium_sorts_the_cases_by_it_descending(
        run_2d: Run, chromium: str, tmp_path: Path) -> None:
    per_case = run_2d.read_json("evaluation/metrics.json")["per_case"]
    accuracy = {c["case"]: c["pixel_accuracy"] for c in per_case}
    page = (run_2d.path / "report.html").read_text(encoding="utf-8")
    headers = re.findall(r"<th>([^<]*)</th>", page.split('id="per-case"', 1)[1].split("</tr>")[0])
    column = headers.index("pixel_accuracy")
    click = (f"<script>var h = document.querySelectorAll('#per-case th')[{column}]; h.click(); "
             "h.click();</script></body>")  # twice: descending
    clicked = tmp_path / "clicked.html"
    clicked.write_text(page.replace("</body>", click), encoding="utf-8")
    order = _table_rows(_browse(chromium, clicked), "per-case")
    assert order == sorted(accuracy, key=accuracy.get, reverse=True)
    assert 'data-order="desc"' in _browse(chromium, clicked)


def test_the_worst_matched_objects_come_first_with_their_best_iou() -> None:
    from seglab.report.run_data import Shown, worst_matched

    reference = np.zeros((10, 10), np.int64)
    reference[1:4, 1:4], reference[6:9, 6:9] = 1, 2
    prediction = np.zeros_like(reference)
    prediction[1:4, 1:4] = 7  # object 1 found exactly; object 2 missed
    case = Shown("c", np.zeros((1, 10, 10)), reference, prediction, np.ones((10, 10), bool),
                 (1.0, 1.0), {1: 1, 2: 1})
    rows = worst_matched(case, ["background", "cell"])
    assert [(r["object"], r["best_iou"], r["matched_by"]) for r in rows] == [(2, 0.0, None),
                                                                              (1, 1.0, 7)]
    assert rows[0]["class"] == "cell" and rows[0]["pixels"] == 9
