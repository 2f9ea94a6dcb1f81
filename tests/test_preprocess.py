"""The preprocessed cache: written once per plan, read back memory-mapped and equal, a new cache
for a plan that prepares differently, and nothing half-written left in view."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from seglab.preprocess import Prepared, PreparedCache
from tests.conftest import small_plan


def _case(case_id: str = "scans/a b") -> Prepared:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 6, 7)).astype(np.float32)
    label = (image[0] > 0).astype(np.uint8)
    return Prepared(case_id, image, label, None, (12, 14))


def test_a_case_is_prepared_once_then_read_back_memory_mapped_and_equal(tmp_path: Path) -> None:
    cache = PreparedCache(tmp_path, small_plan((4, 4)))
    calls = []

    def prepare() -> Prepared:
        calls.append(1)
        return _case()

    first, second = cache.get("scans/a b", prepare), cache.get("scans/a b", prepare)
    assert len(calls) == 1
    original = _case()
    for got in (first, second):
        assert isinstance(got.image, np.memmap) and got.image.dtype == np.float32
        assert np.array_equal(got.image, original.image)
        assert np.array_equal(got.label, original.label) and got.label.dtype == np.uint8
        assert got.roi is None and got.original_shape == (12, 14) and got.case_id == "scans/a b"
    second.image[0, 0, 0] = 99  # copy-on-write: the cached file is not changed
    assert cache.get("scans/a b", prepare).image[0, 0, 0] == original.image[0, 0, 0]


def test_a_plan_that_prepares_differently_gets_its_own_cache(tmp_path: Path) -> None:
    plan = small_plan((4, 4))
    other_patch = dataclasses.replace(plan, patch_size=[8, 8])
    other_spacing = dataclasses.replace(plan, target_spacing=[1.0, 2.0])
    assert PreparedCache(tmp_path, plan).folder == PreparedCache(tmp_path, other_patch).folder
    assert PreparedCache(tmp_path, plan).folder != PreparedCache(tmp_path, other_spacing).folder


def test_a_failed_preparation_leaves_nothing_in_the_cache(tmp_path: Path) -> None:
    cache = PreparedCache(tmp_path, small_plan((4, 4)))

    def broken() -> Prepared:
        raise ValueError("unreadable")

    try:
        cache.get("x", broken)
    except ValueError:
        pass
    assert not cache.folder.exists() or not any(cache.folder.iterdir())
