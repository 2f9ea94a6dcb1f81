"""Post-processing operations on masks with known answers, and the validation choice that keeps
an operation only when it raises Dice."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from seglab import postprocess
from seglab.errors import SeglabError


def _blobs() -> np.ndarray:
    mask = np.zeros((20, 20), np.uint8)
    mask[2:10, 2:10] = 1  # 64 pixels
    mask[15:17, 15:17] = 1  # 4 pixels
    mask[12, 2] = 2
    return mask


def test_largest_component_keeps_only_the_biggest_object_of_its_class() -> None:
    out = postprocess.apply(_blobs(), [{"op": "largest_component", "class": 1}])
    assert (out == 1).sum() == 64 and out[16, 16] == 0 and out[12, 2] == 2


def test_remove_small_drops_objects_under_the_size_only() -> None:
    out = postprocess.apply(_blobs(), [{"op": "remove_small", "class": 1, "min_size": 5}])
    assert (out == 1).sum() == 64
    kept = postprocess.apply(_blobs(), [{"op": "remove_small", "class": 1, "min_size": 4}])
    assert (kept == 1).sum() == 68


def test_fill_holes_fills_enclosed_background_but_not_other_classes() -> None:
    mask = np.zeros((9, 9), np.uint8)
    mask[1:8, 1:8] = 1
    mask[3:6, 3:6] = 0
    mask[4, 4] = 2
    out = postprocess.apply(mask, [{"op": "fill_holes", "class": 1}])
    assert (out == 1).sum() == 49 - 1 and out[4, 4] == 2


def _loop_with_a_pinhole() -> np.ndarray:
    """A vessel-like loop enclosing 100 background pixels, its wall pierced by a 1-pixel hole."""
    mask = np.zeros((16, 16), np.uint8)
    mask[1:15, 1:15] = 1
    mask[4:12, 4:12] = 0  # the loop's inside: 64 pixels
    mask[2, 7] = 0  # a pinhole in the wall
    return mask


def test_fill_holes_with_a_size_fills_only_the_smaller_holes() -> None:
    loop = _loop_with_a_pinhole()
    out = postprocess.apply(loop, [{"op": "fill_holes", "class": 1, "max_size": 10}])
    assert out[2, 7] == 1 and (out[4:12, 4:12] == 0).all()
    filled = postprocess.apply(loop, [{"op": "fill_holes", "class": 1}])
    assert filled[2, 7] == 1 and filled[4:12, 4:12].all()


def test_candidates_fill_only_holes_smaller_than_the_references_own() -> None:
    reference = np.zeros((16, 16), np.uint8)
    reference[1:15, 1:15] = 1
    reference[4:12, 4:12] = 0  # the references enclose 64-pixel regions
    steps = postprocess.candidates([reference], 2)
    assert {"op": "fill_holes", "class": 1, "max_size": 32} in steps
    disc = np.zeros((16, 16), np.uint8)
    disc[4:12, 4:12] = 1
    assert {"op": "fill_holes", "class": 1} in postprocess.candidates([disc], 2)


def test_split_touching_separates_two_overlapping_discs_in_3d_and_2d() -> None:
    for shape in ((40, 60), (20, 40, 60)):
        grid = np.indices(shape)
        centre = np.array(shape) // 2
        first, second = centre.copy(), centre.copy()
        first[-1], second[-1] = shape[-1] // 2 - 8, shape[-1] // 2 + 8
        discs = [((grid - c.reshape(-1, *[1] * len(shape))) ** 2).sum(0) < 10 ** 2
                 for c in (first, second)]
        mask = (discs[0] | discs[1]).astype(np.uint8)
        assert ndimage.label(mask)[1] == 1
        out = postprocess.apply(mask, [{"op": "split_touching", "class": 1}])
        assert ndimage.label(out == 1)[1] == 2
        assert (mask.astype(bool) & (out == 0)).sum() < 0.05 * mask.sum()


def test_unknown_operation_is_a_one_line_error_listing_the_choices() -> None:
    with pytest.raises(SeglabError, match="expected one of largest_component, remove_small"):
        postprocess.apply(_blobs(), [{"op": "erode", "class": 1}])


def test_choose_keeps_largest_component_when_predictions_have_spurious_specks() -> None:
    references, predictions = [], []
    for case in range(3):
        ref = np.zeros((32, 32), np.uint8)
        ref[8:24, 8:24] = 1
        pred = ref.copy()
        pred[1, 1 + case::4] = 1  # specks in the first row, away from the square
        references.append(ref)
        predictions.append(pred)
    report = postprocess.choose(predictions, references, [None] * 3, 2)
    assert report["steps"][0] == {"op": "largest_component", "class": 1}
    assert report["validation_dice_with"] == 1.0 > report["validation_dice_without"]


def test_choose_keeps_nothing_when_every_operation_would_hurt() -> None:
    ref = np.zeros((32, 32), np.uint8)
    ref[2:6, 2:6] = 1
    ref[20:30, 20:30] = 1  # two true objects: keeping the largest would lose one
    report = postprocess.choose([ref.copy()], [ref], [None], 2)
    assert report["steps"] == []
    assert report["validation_dice_with"] == report["validation_dice_without"] == 1.0
    assert {t["op"] for t in report["tried"]} == set(postprocess.OPERATIONS) - {"largest_component"}


def test_largest_component_is_not_tried_where_the_references_are_several_objects() -> None:
    single, pieces, speck = (np.zeros((32, 32), np.uint8) for _ in range(3))
    single[8:24, 8:24] = 1
    pieces[2:12, 2:12] = pieces[20:30, 20:30] = 1  # two objects of 100 pixels each
    speck[4:28, 4:28] = 1
    speck[0, 0] = 1  # 1 of 577 pixels apart: still one object
    assert postprocess.is_one_object([single, speck]) and not postprocess.is_one_object([pieces])
    ops = [[s["op"] for s in postprocess.candidates(refs, 2)]
           for refs in ([single] * 9 + [pieces], [single, pieces])]
    assert "largest_component" in ops[0] and "largest_component" not in ops[1]


def test_component_sizes_counted_in_blocks_equal_one_count(monkeypatch) -> None:
    labels = np.random.default_rng(5).integers(0, 7, size=(30, 41)).astype(np.int32)
    monkeypatch.setattr(postprocess, "_BLOCK", 100)  # 13 blocks, the last a short one
    np.testing.assert_array_equal(postprocess._label_sizes(labels, 6),
                                  np.bincount(labels.ravel(), minlength=7))
