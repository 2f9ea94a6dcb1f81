"""Predictive entropy and mutual information on probabilities whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from seglab.uncertainty import Passes, entropy


def test_entropy_is_zero_when_certain_and_one_when_every_class_is_equally_likely() -> None:
    probs = np.array([[1.0, 1 / 3, 0.5], [0.0, 1 / 3, 0.5], [0.0, 1 / 3, 0.0]])  # (K=3, 3 pixels)
    assert entropy(probs) == pytest.approx([0.0, 1.0, np.log(2) / np.log(3)], abs=1e-6)
    assert entropy(np.array([[0.5], [0.5]])) == pytest.approx([1.0])


def test_mutual_information_is_the_disagreement_between_passes() -> None:
    agree, disagree = Passes(), Passes()
    for probs in ([[0.9], [0.1]], [[0.9], [0.1]]):
        agree.add(np.array(probs))
    for probs in ([[1.0], [0.0]], [[0.0], [1.0]]):  # each certain, of opposite classes
        disagree.add(np.array(probs))
    assert agree.maps()["mutual_information"] == pytest.approx([0.0], abs=1e-6)
    maps = disagree.maps()
    assert disagree.mean().ravel() == pytest.approx([0.5, 0.5])
    assert maps["entropy"] == pytest.approx([1.0]) and maps["mutual_information"] == \
        pytest.approx([1.0])


def test_one_pass_has_no_mutual_information() -> None:
    single = Passes()
    single.add(np.array([[0.7, 0.2], [0.3, 0.8]]))
    assert set(single.maps()) == {"entropy"}
