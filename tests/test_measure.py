"""Objects measured in physical units on arrays whose sizes, centroids and boxes are known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from seglab.cli import main
from seglab.measure import (class_sizes, class_summary, component_rows, csv_text,
                            index_to_world, largest_diameter, object_rows)


def test_2d_objects_get_their_area_in_mm2_centroid_and_box() -> None:
    ids = np.zeros((10, 20), np.int32)
    ids[2:4, 3:7] = 5  # 2 x 4 pixels
    ids[6:10, 10:20] = 9
    rows = object_rows(ids, {5: 1, 9: 2}, ["background", "cell", "crystal"], (0.5, 0.25))
    first = rows[0]
    assert (first["object"], first["class"], first["voxels"]) == (5, "cell", 8)
    assert first["area_mm2"] == pytest.approx(8 * 0.125)
    assert first["equivalent_diameter_mm"] == pytest.approx(2 * math.sqrt(1.0 / math.pi), 1e-3)
    assert first["centroid_index"] == [2.5, 4.5]
    assert first["centroid_world"] == pytest.approx([1.25, 1.125])
    assert (first["bbox_start"], first["bbox_stop"]) == ([2, 3], [4, 7])
    assert csv_text(rows[:1], "c1")[0] == "c1,5,cell,8,1.0,1.1284,2.5 4.5,1.25 1.125,2 3,4 7"


def test_3d_objects_get_their_volume_in_ml_and_world_centroid_through_the_affine() -> None:
    ids = np.zeros((10, 10, 10), np.int32)
    ids[0:10, 0:10, 0:5] = 1  # 500 voxels of 2 x 2 x 2 mm = 4 mL
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, 0, 5]
    rows = object_rows(ids, {1: 1}, ["background", "tumour"], (2.0, 2.0, 2.0), affine)
    assert rows[0]["volume_ml"] == pytest.approx(4.0)
    assert rows[0]["equivalent_diameter_mm"] == pytest.approx((6 * 4000 / math.pi) ** (1 / 3),
                                                              1e-3)
    assert rows[0]["centroid_world"] == pytest.approx([-10 + 2 * 4.5, 2 * 4.5, 5 + 2 * 2.0])
    assert object_rows(np.zeros((3, 3), np.int32), {}, ["background"], (1.0, 1.0)) == []


def test_the_largest_diameter_spans_the_farthest_points_even_when_they_are_collinear() -> None:
    corners = np.array([[0, 0], [3, 0], [0, 4], [3, 4], [1, 1]], float)
    assert largest_diameter(corners) == pytest.approx(5.0)
    assert largest_diameter(np.array([[0, 0], [1, 0], [7, 0]], float)) == pytest.approx(7.0)
    assert largest_diameter(np.array([[2.0, 2.0]])) == 0.0


def test_components_of_each_class_are_measured_with_anisotropic_spacing() -> None:
    mask = np.zeros((12, 12), np.uint8)
    mask[1, 2:7] = 1  # 5 pixels along axis 1 (0.5 mm): 2 mm end to end
    mask[5:8, 9] = 1  # 3 pixels along axis 0 (2 mm): 4 mm
    mask[10:12, 0:2] = 2
    mask[11, 11] = 2  # touches no other pixel of class 2
    rows = component_rows(mask, {1: "vessel", 2: "blob"}, (2.0, 0.5))
    vessels = [r for r in rows if r["class"] == "vessel"]
    assert [r["largest_diameter_mm"] for r in vessels] == pytest.approx([2.0, 4.0])
    assert [r["area_mm2"] for r in vessels] == pytest.approx([5.0, 3.0])
    summary = class_summary(rows, {1: "vessel", 2: "blob", 3: "absent"}, 2)
    assert summary["vessel"] == {"components": 2, "area_mm2": 8.0}
    assert summary["blob"] == {"components": 2, "area_mm2": 5.0}
    assert summary["absent"] == {"components": 0, "area_mm2": 0.0}
    diagonal = np.eye(4, dtype=np.uint8)  # corner-connected: one component
    assert len(component_rows(diagonal, {1: "line"}, (1.0, 1.0))) == 1


def test_a_cube_is_one_millilitre_and_its_diagonal_the_largest_diameter() -> None:
    mask = np.zeros((12, 12, 12), np.uint8)
    mask[1:11, 1:11, 1:11] = 1
    rows = component_rows(mask, {1: "cube"}, (1.0, 1.0, 1.0))
    assert rows[0]["volume_ml"] == pytest.approx(1.0)
    assert rows[0]["largest_diameter_mm"] == pytest.approx(9 * math.sqrt(3), abs=1e-4)
    assert class_summary(rows, {1: "cube"}, 3)["cube"]["volume_ml"] == pytest.approx(1.0)


def test_itk_geometry_maps_array_indices_to_world_points_as_simpleitk_does() -> None:
    image = sitk.Image(4, 5, 6, sitk.sitkUInt8)  # x, y, z sizes: the array is (6, 5, 4)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((-10.0, 4.0, 30.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    meta = {"origin": image.GetOrigin(), "direction": image.GetDirection(),
            "sitk_spacing": image.GetSpacing()}
    affine = index_to_world(meta, 3)
    z, y, x = 5, 2, 3
    expected = image.TransformIndexToPhysicalPoint((x, y, z))
    assert (affine @ [z, y, x, 1])[:3] == pytest.approx(expected)


def test_seglab_measure_writes_both_tables_and_refuses_a_bad_spacing(tmp_path: Path) -> None:
    mask = np.zeros((8, 8, 4), np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [100.0, 0.0, -5.0]
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "m.nii.gz")
    assert main(["measure", str(tmp_path / "m.nii.gz"), "--out", str(tmp_path / "out"),
                 "--classes", "1=lesion"]) == 0
    report = json.loads((tmp_path / "out" / "measurements.json").read_text())
    lesion = report[str(tmp_path / "m.nii.gz")]
    assert lesion["classes"]["lesion"] == {"components": 1, "volume_mm3": 96.0,
                                           "volume_ml": 0.096}
    assert lesion["components"][0]["centroid_world"] == pytest.approx([103.0, 3.0, -0.5])
    lines = (tmp_path / "out" / "measurements.csv").read_text().splitlines()
    assert lines[0].startswith("mask,class,component,voxels,volume_mm3") and len(lines) == 2
    assert main(["measure", str(tmp_path / "m.nii.gz"), "--out", str(tmp_path / "o2"),
                 "--spacing", "1,1"]) == 2
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("spacing", [(0.5, 0.8), (1.0, 1.0), (2.0, 0.3)])
def test_a_disc_measures_its_area_and_diameter_within_one_percent(spacing) -> None:
    radius = 30.0  # mm: an ellipse in index space when the spacing is anisotropic
    shape = [int(2 * radius / s) + 10 for s in spacing]
    grid = np.meshgrid(*[(np.arange(n) - n / 2) * s for n, s in zip(shape, spacing)],
                       indexing="ij")
    mask = (np.sqrt(sum(g ** 2 for g in grid)) <= radius).astype(np.uint8)
    row = component_rows(mask, {1: "disc"}, spacing)[0]
    assert row["area_mm2"] == pytest.approx(math.pi * radius ** 2, rel=0.01)
    assert row["largest_diameter_mm"] == pytest.approx(2 * radius, rel=0.01)


def test_a_sphere_and_a_box_measure_their_volumes_within_one_percent() -> None:
    spacing, radius = (2.5, 0.7, 0.9), 20.0
    shape = [int(2 * radius / s) + 6 for s in spacing]
    grid = np.meshgrid(*[(np.arange(n) - n / 2) * s for n, s in zip(shape, spacing)],
                       indexing="ij")
    mask = (np.sqrt(sum(g ** 2 for g in grid)) <= radius).astype(np.uint8)
    box = np.zeros((20, 30, 40), np.uint8)
    box[2:12, 5:25, 10:40] = 2  # 10 x 20 x 30 voxels
    sphere = component_rows(mask, {1: "sphere"}, spacing)[0]
    assert sphere["volume_ml"] == pytest.approx(4 / 3 * math.pi * radius ** 3 / 1000, rel=0.01)
    cuboid = component_rows(box, {2: "box"}, spacing)[0]
    assert cuboid["volume_mm3"] == pytest.approx(10 * 20 * 30 * np.prod(spacing), rel=1e-9)
    extent = np.array([9, 19, 29]) * spacing  # between the corner voxels' centres
    assert cuboid["largest_diameter_mm"] == pytest.approx(np.linalg.norm(extent), abs=1e-3)


def test_class_sizes_compare_prediction_and_reference_where_the_metrics_count() -> None:
    reference = np.zeros((10, 10), np.uint8)
    reference[0:4, 0:5] = 1
    prediction = np.zeros_like(reference)
    prediction[0:4, 0:4] = 1
    prediction[8, 8] = 1  # a second piece
    counted = np.ones((10, 10), bool)
    counted[:, 0] = False  # one column left out
    sizes = class_sizes(prediction, reference, {1: "lesion"}, (0.5, 2.0), counted)
    assert sizes == {"lesion": {"predicted_mm2": 13.0, "reference_mm2": 16.0, "components": 2}}
    volume = class_sizes(np.ones((10, 10, 10), np.uint8), np.ones((10, 10, 10), np.uint8),
                         {1: "organ"}, (1.0, 1.0, 1.0))
    assert volume["organ"]["predicted_ml"] == pytest.approx(1.0)
