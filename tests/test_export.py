"""ONNX export: the exported file alone predicts what PyTorch predicts, the plan travels in its
metadata, and bad inputs are one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import onnx
import pytest

import seglab
from seglab import api
from seglab.cli import main
from seglab.data.io import read_label
from seglab.export import open_onnx
from tests.test_train import TINY_2D, TINY_3D

RUNS = {"2d": ("png_dataset", TINY_2D, "images"), "3d": ("nifti_dataset", TINY_3D, "imagesTr")}
# Trained past their random start: an untrained network's masks sit on the decision boundary, where
# any rounding flips them (TINY_3D's int8 masks agree with its fp32 ones at 0.65-0.88 Dice).
CONFIDENT = {"2d": {**TINY_2D, "epochs": 4, "iterations_per_epoch": 8},
             "3d": {**TINY_3D, "epochs": 6, "iterations_per_epoch": 15}}


def dice_per_class(a: np.ndarray, b: np.ndarray) -> float:
    """The lowest Dice over the values present in either mask (1.0 where both lack one)."""
    scores = [2 * ((a == v) & (b == v)).sum() / ((a == v).sum() + (b == v).sum())
              for v in np.union1d(np.unique(a), np.unique(b))]
    return float(min(scores))


def probabilities(path: Path) -> np.ndarray:
    if path.name.endswith(".nii.gz"):
        return np.asarray(nib.load(path).dataobj)
    return np.load(path)["probabilities"]


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_the_exported_file_alone_predicts_what_pytorch_predicts(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    fixture, overrides, folder = RUNS[kind]
    data = request.getfixturevalue(fixture)
    run = api.train(data, tmp_path / "run", overrides, progress=False, evaluate=False)
    assert main(["export", str(run.path)]) == 0
    torch_files = api.predict(run.path, [data / folder], tmp_path / "torch", probabilities=True,
                              device="cpu", precision="fp32")
    alone = tmp_path / "elsewhere" / "model.onnx"
    alone.parent.mkdir()
    shutil.copy(run.path / "export" / "model.onnx", alone)
    shutil.rmtree(run.path)
    assert main(["predict", str(alone), str(data / folder), "--out", str(tmp_path / "onnx"),
                 "--backend", "onnx", "--probabilities"]) == 0
    masks = [p for p in torch_files if "_probs" not in p.name]
    assert len(masks) == len(list((data / folder).iterdir()))
    for path in torch_files:
        twin = tmp_path / "onnx" / path.name
        if path in masks:
            assert dice_per_class(read_label(path), read_label(twin)) >= 0.999, path.name
        else:
            assert np.abs(probabilities(path) - probabilities(twin)).max() < 1e-4, path.name


def test_the_metadata_round_trips_the_plan_and_a_run_folder_finds_its_export(
        png_dataset: Path, tmp_path: Path) -> None:
    run = api.train(png_dataset, tmp_path / "run", TINY_2D, progress=False, evaluate=False)
    exported = api.export(run.path)
    assert exported.path == run.path / "export" / "model.onnx"
    assert exported.max_abs_diff < 1e-4
    metadata = {p.key: p.value for p in onnx.load(exported.path).metadata_props}
    assert json.loads(metadata["seglab.plan"]) == json.loads(run.plan_path.read_text())
    assert metadata["seglab.version"] == seglab.__version__
    assert open_onnx(exported.path, "cpu")[1] == run.plan()
    written = api.predict(run.path, [png_dataset / "images" / "case00.png"], tmp_path / "pred",
                          backend="onnx")
    assert [p.name for p in written] == ["case00.png"]


def _error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("seglab: error: ") and err.count("\n") == 1
    return err


def test_exporting_a_folder_that_is_not_a_run_is_a_one_line_error(
        capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert "not a seglab run" in _error(capsys, "export", str(tmp_path))
    assert not (tmp_path / "export").exists()


def test_a_corrupt_or_foreign_onnx_file_is_a_one_line_error(
        capsys: pytest.CaptureFixture, png_dataset: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage, not a protobuf" * 8)
    foreign = tmp_path / "foreign.onnx"
    tensor = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [tensor], [onnx.helper.make_tensor_value_info(
                                       "y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph, ir_version=9,
                                     opset_imports=[onnx.helper.make_opsetid("", 18)]),
              foreign)
    for model, message in ((corrupt, "not a readable ONNX model"),
                           (foreign, "an ONNX model without a seglab plan in its metadata")):
        out = tmp_path / f"pred-{model.stem}"
        err = _error(capsys, "predict", str(model), str(png_dataset / "images"), "--out",
                     str(out), "--backend", "onnx")
        assert f"{model}: {message}" in err
        assert not out.exists()


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_the_int8_copy_carries_the_plan_and_its_cost_and_predicts_like_the_fp32_model(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    fixture, _, folder = RUNS[kind]
    data = request.getfixturevalue(fixture)
    run = api.train(data, tmp_path / "run", CONFIDENT[kind], progress=False, evaluate=False)
    assert main(["export", str(run.path), "--quantize", "int8"]) == 0
    int8 = run.path / "export" / "model.int8.onnx"
    assert f"wrote {int8}: on " in capsys.readouterr().out
    metadata = {p.key: p.value for p in onnx.load(int8).metadata_props}
    assert json.loads(metadata["seglab.plan"]) == json.loads(run.plan_path.read_text())
    assert metadata["seglab.version"] == seglab.__version__
    report = json.loads(metadata["seglab.quantization"])
    assert report["split"] == "val" and report["cases"] == len(
        json.loads((run.path / "split.json").read_text())["val"])
    for key in ("dice_fp32", "dice_int8", "dice_int8_vs_fp32"):
        assert 0 <= report[key] <= 1, key
    assert report["images_per_second_fp32"] > 0 and report["images_per_second_int8"] > 0
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(int8).graph.node)
    for model in ("model.onnx", "model.int8.onnx"):
        assert main(["predict", str(run.path / "export" / model), str(data / folder), "--out",
                     str(tmp_path / model), "--backend", "onnx"]) == 0
    for path in sorted((tmp_path / "model.onnx").iterdir()):
        twin = tmp_path / "model.int8.onnx" / path.name
        assert dice_per_class(read_label(path), read_label(twin)) >= 0.9, path.name


def test_the_int8_copy_goes_next_to_out_and_the_api_returns_its_report(
        png_dataset: Path, tmp_path: Path) -> None:
    run = api.train(png_dataset, tmp_path / "run", TINY_2D, progress=False, evaluate=False)
    exported = api.export(run.path, tmp_path / "out" / "seg.onnx", quantize="int8")
    assert exported.path == tmp_path / "out" / "seg.onnx"
    assert exported.int8_path == tmp_path / "out" / "seg.int8.onnx"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["seg.int8.onnx", "seg.onnx"]
    metadata = {p.key: p.value for p in onnx.load(exported.int8_path).metadata_props}
    assert json.loads(metadata["seglab.quantization"]) == exported.quantization.to_dict()
    assert exported.quantization.calibration_patches == 32
    again = api.export(run.path, tmp_path / "out" / "seg.onnx")  # the int8 copy is now stale
    assert again.quantization is None and again.int8_path is None
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["seg.onnx"]


def test_a_bad_quantize_value_is_a_one_line_error_naming_the_allowed_ones(
        capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    err = _error(capsys, "export", str(tmp_path), "--quantize", "int4")
    assert "--quantize int4" in err and "int8" in err
    assert not (tmp_path / "export").exists()


def test_a_failing_quantisation_leaves_no_int8_file(
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, png_dataset: Path,
        tmp_path: Path) -> None:
    import onnxruntime.quantization

    def fail(*args, **kwargs) -> None:
        raise RuntimeError("no kernel for this\nsecond line")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", fail)
    run = api.train(png_dataset, tmp_path / "run", TINY_2D, progress=False, evaluate=False)
    (run.path / "export").mkdir()
    (run.path / "export" / "model.int8.onnx").write_bytes(b"an earlier export's int8 copy")
    err = _error(capsys, "export", str(run.path), "--quantize", "int8")
    assert "int8 quantisation failed (RuntimeError: no kernel for this)" in err
    assert [p.name for p in (run.path / "export").iterdir()] == ["model.onnx"]
    png_dataset.rename(tmp_path / "moved")  # nothing to calibrate on: an error before any export
    (run.path / "export" / "model.onnx").unlink()
    err = _error(capsys, "export", str(run.path), "--quantize", "int8")
    assert "--quantize calibrates and measures on the run's dataset" in err
    assert not any((run.path / "export").iterdir())
