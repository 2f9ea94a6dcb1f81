"""Objects from probabilities by seeded watershed: touching objects kept apart by their rims,
classes from the probabilities, thresholds chosen on validation cases."""

from __future__ import annotations

import numpy as np

from seglab.data.instances import Instances, from_id_image
from seglab.instance_split import choose, split_objects
from seglab.metrics.instances import iou_matrix


def _two_touching_discs() -> Instances:
    yy, xx = np.mgrid[:24, :40]
    ids = np.zeros((24, 40), np.int32)
    ids[(yy - 12) ** 2 + (xx - 12) ** 2 < 64] = 1
    ids[(yy - 12) ** 2 + (xx - 26) ** 2 < 64] = 2  # overlaps the first: they touch
    return from_id_image(ids)


def _probabilities(instances: Instances, boundary_class: int, blur: float = 0.0,
                   contact_class: int | None = None) -> np.ndarray:
    """One-hot probabilities of the rim target, softened by `blur` towards uniform."""
    target = instances.with_boundaries(boundary_class, contact_class=contact_class)
    n = boundary_class + 1 + (contact_class is not None)
    one_hot = np.stack([target == k for k in range(n)]).astype(float)
    return (1 - blur) * one_hot + blur / n


def test_the_rim_target_marks_where_objects_touch_and_meet_the_background() -> None:
    instances = _two_touching_discs()
    target = instances.with_boundaries(2)
    assert set(np.unique(target)) == {0, 1, 2}
    assert target[12, 18] == 2 and target[12, 19] == 2  # the seam between the discs
    assert target[12, 12] == 1 and target[12, 26] == 1 and target[0, 0] == 0


def test_a_wider_contact_rim_deepens_the_seam_only_where_objects_touch() -> None:
    instances = _two_touching_discs()
    plain, wide = instances.with_boundaries(2), instances.with_boundaries(2, contact_width=2)
    assert [wide[12, x] for x in range(16, 22)] == [1, 2, 2, 2, 2, 1]  # 2 deep on each side
    assert [plain[12, x] for x in range(16, 22)] == [1, 1, 2, 2, 1, 1]
    assert wide[12, 5] == plain[12, 5] == 2 and wide[12, 6] == plain[12, 6] == 1  # background side


def test_a_contact_class_takes_the_seam_and_leaves_the_rest_of_the_rim() -> None:
    instances = _two_touching_discs()
    target = instances.with_boundaries(2, contact_class=3)
    assert [target[12, x] for x in range(16, 22)] == [1, 1, 3, 3, 1, 1]
    assert target[12, 5] == 2 and target[12, 6] == 1  # the background side stays rim
    assert ((target == 3) == ((instances.with_boundaries(2) == 2) & (target != 2))).all()


def test_touching_objects_come_back_as_two_with_their_pixels() -> None:
    instances = _two_touching_discs()
    found = split_objects(_probabilities(instances, 2), 2, seed_threshold=0.5,
                          mask_threshold=0.5)
    assert found.count == 2 and found.classes == {1: 1, 2: 1}
    assert (iou_matrix(found.ids, instances.ids).max(axis=1) > 0.95).all()
    merged = split_objects(_probabilities(instances, 2), 2, seed_threshold=0.5,
                           mask_threshold=0.5, min_seed=10_000)
    assert merged.count == 0  # no seed big enough: no object


def test_the_contact_class_keeps_touching_objects_apart_and_goes_to_them() -> None:
    instances = _two_touching_discs()
    found = split_objects(_probabilities(instances, 2, blur=0.2, contact_class=3), 2,
                          seed_threshold=0.5, mask_threshold=0.5)
    assert found.count == 2 and found.classes == {1: 1, 2: 1}
    assert (iou_matrix(found.ids, instances.ids).max(axis=1) > 0.95).all()


def test_each_object_takes_the_class_with_the_most_probability() -> None:
    ids = np.zeros((10, 20), np.int32)
    ids[2:8, 2:8], ids[2:8, 12:18] = 1, 2
    instances = Instances(ids, {1: 1, 2: 2})
    found = split_objects(_probabilities(instances, 3), 3, 0.5, 0.5)
    assert sorted(found.classes.values()) == [1, 2]
    assert found.classes[found.ids[4, 4]] == 1 and found.classes[found.ids[4, 14]] == 2


def test_thresholds_are_chosen_on_validation_cases_with_every_trial_kept() -> None:
    instances = _two_touching_discs()
    chosen = choose([_probabilities(instances, 2, blur=0.3)], [instances], 2)
    assert len(chosen["tried"]) == 30 and chosen["validation_dsb_score"] > 0.5
    assert chosen["validation_dsb_score"] == max(t["validation_dsb_score"]
                                                 for t in chosen["tried"])
