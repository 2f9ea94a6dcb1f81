"""Objects measured in physical units on arrays whose sizes, centroids and boxes are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seglab.measure import csv_text, object_rows


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
