"""Every real dataset in ../shared/datasets loads with its example seglab.yaml, with the right counts.

Skipped where ../shared is absent (a user's clone); CI has it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from seglab.data.inspect import inspect_dataset
from seglab.data.layouts import find_dataset
from tests.conftest import needs_shared

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# yaml, shared folder, labelled cases, unlabelled, dims, channels, classes, foreground share range
EXPECTED = [
    ("isbi2012", "ISBI2012_membrane", 30, 30, 2, 1, 2, (0.20, 0.24)),
    ("chasedb1", "CHASEDB1", 28, 0, 2, 3, 2, (0.065, 0.075)),
    ("camvid", "CamVid", 285, 0, 2, 3, 11, (0.80, 0.90)),
    ("dsb2018", "DSB2018_nuclei", 120, 0, 2, 3, 2, (0.10, 0.16)),
    ("msd_hippocampus", "MSD_Task04_Hippocampus", 208, 0, 3, 1, 3, (0.04, 0.07)),
    ("brats2015", "BraTS2015_DeepMedic_subset", 6, 0, 3, 2, 5, (0.01, 0.02)),
    ("sstem_vnc", "ssTEM_Drosophila_VNC", 20, 0, 2, 1, 5, (0.25, 0.27)),
]


@pytest.mark.shared
@pytest.mark.parametrize("name,folder,cases,unlabeled,dims,channels,classes,share", [
    pytest.param(*expected, id=expected[0], marks=needs_shared(expected[1])) for expected in EXPECTED])
def test_example_yaml_loads_the_shared_dataset_with_the_right_counts(
        name, folder, cases, unlabeled, dims, channels, classes, share) -> None:
    fingerprint = inspect_dataset(find_dataset(EXAMPLES / f"{name}.yaml"))
    assert fingerprint.n_cases == cases
    assert fingerprint.n_unlabeled == unlabeled
    assert (fingerprint.dims, fingerprint.channels, len(fingerprint.classes)) == (dims, channels, classes)
    foreground = 1 - fingerprint.class_voxels[0] / sum(fingerprint.class_voxels)
    assert share[0] <= foreground <= share[1]


@pytest.mark.shared
@needs_shared("CHASEDB1")
def test_chasedb1_field_of_view_covers_the_fundus_disc_only() -> None:
    from seglab.data.loading import load_case

    dataset = find_dataset(EXAMPLES / "chasedb1.yaml")
    case = load_case(dataset, dataset.cases[0])
    fraction = case.roi.mean()
    assert 0.55 < fraction < 0.85
    assert not case.roi[0, 0] and case.roi[480, 500]
    assert case.label[case.roi].sum() > 0.97 * case.label.sum()
