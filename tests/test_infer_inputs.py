"""Inputs streamed to prediction: read ahead by a thread, in order, a bad input failing in its
place with its own line, and neighbouring frames shared between the cases that stack them."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.errors import SeglabError
from seglab.infer_inputs import read_ahead, stream_inputs
from seglab.plan_temporal import TEMPORAL_DEFAULTS
from tests.conftest import small_plan


def test_reading_ahead_keeps_the_order_and_runs_on_another_thread() -> None:
    threads = set()

    def read(k: int) -> int:
        threads.add(threading.get_ident())
        return k * k

    assert list(read_ahead(range(7), read, ahead=2)) == [k * k for k in range(7)]
    assert threading.get_ident() not in threads


def test_a_failed_read_is_raised_in_its_place_after_the_items_before_it() -> None:
    def read(k: int) -> int:
        if k == 3:
            raise SeglabError("item 3: broken")
        return k

    got = []
    with pytest.raises(SeglabError, match="item 3: broken"):
        for value in read_ahead(range(6), read, ahead=2):
            got.append(value)
    assert got == [0, 1, 2]


def test_a_stream_checks_each_input_against_the_plan_in_order(tmp_path: Path) -> None:
    for k in range(3):
        Image.fromarray(np.full((9, 8), 40 * k, np.uint8)).save(tmp_path / f"a{k}.png")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(tmp_path / "a3.png")
    plan = small_plan((8, 8))
    plan.temporal = dict(TEMPORAL_DEFAULTS)
    names = []
    with pytest.raises(SeglabError, match=r"a3\.png: 2D with 3 channel\(s\), but the run was"):
        for case in stream_inputs([tmp_path], plan):
            names.append(Path(case.meta["path"]).name)
            assert case.image.max() == 40 * len(names) - 40
    assert names == ["a0.png", "a1.png", "a2.png"]
    with pytest.raises(SeglabError, match="nowhere: no such file or folder"):
        stream_inputs([tmp_path / "nowhere"], plan)


def test_a_streamed_sequence_stacks_each_frame_with_its_neighbours(tmp_path: Path) -> None:
    for k in range(5):
        Image.fromarray(np.full((6, 6), 10 * k, np.uint8)).save(tmp_path / f"clip_{k:03d}.png")
    plan = small_plan((4, 4))
    plan.in_channels = 3
    plan.temporal = {**TEMPORAL_DEFAULTS, "context": 1}
    firsts = [tuple(case.image[:, 0, 0]) for case in stream_inputs([tmp_path], plan)]
    assert firsts == [(0, 0, 10), (10, 0, 20), (20, 10, 30), (30, 20, 40), (40, 30, 40)]
