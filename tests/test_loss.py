"""The plan's segmentation losses, each with an ignore label: values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from seglab.data.layouts import IGNORE_INDEX
from seglab.errors import SeglabError
from seglab.train.loss import LOSS_DEFAULTS, ClDiceLoss, DiceCELoss, create_loss


def test_confident_correct_logits_give_a_loss_near_zero_and_wrong_ones_a_large_loss() -> None:
    labels = torch.randint(0, 3, (2, 8, 8))
    logits = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float() * 50
    assert DiceCELoss()(logits, labels) < 1e-3
    assert DiceCELoss()(-logits, labels) > 1.0


def test_ignored_pixels_do_not_change_the_loss() -> None:
    labels = torch.randint(0, 2, (1, 6, 6))
    logits = torch.randn(1, 2, 6, 6)
    ignored = labels.clone()
    ignored[0, 0, :] = IGNORE_INDEX
    changed = logits.clone()
    changed[0, :, 0, :] = torch.randn(2, 6) * 10
    assert torch.isclose(DiceCELoss()(logits, ignored), DiceCELoss()(changed, ignored))


def test_deep_supervision_weighs_the_heads_one_half_one_quarter_normalised() -> None:
    plain = DiceCELoss()
    loss = create_loss({"name": "dice_ce"})
    labels = torch.randint(0, 3, (2, 8, 8))
    heads = torch.randn(2, 3, 3, 8, 8)
    expected = sum(w * plain(heads[:, k], labels) for k, w in enumerate([1, 0.5, 0.25])) / 1.75
    assert torch.allclose(loss(heads, labels), expected)
    assert torch.allclose(loss(heads[:, 0], labels), plain(heads[:, 0], labels))



def _confident(labels: torch.Tensor, classes: int = 2) -> torch.Tensor:
    """Logits of +-30: a prediction of the labels whose softmax saturates to 0 / 1 in fp32."""
    return (torch.nn.functional.one_hot(labels, classes).movedim(-1, 1).float() * 2 - 1) * 30


# A 2x2 image, two classes, class-1 logit ln 3, 0, 0, -ln 3 against 0: softmax .75, .5, .5, .25.
LN3 = math.log(3)
TINY_LOGITS = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]], [[LN3, 0.0], [0.0, -LN3]]]])
TINY_LABELS = torch.tensor([[[1, 1], [1, 0]]])  # so p_t = .75 .5 .5 .75
TINY_CE = -(2 * math.log(0.75) + 2 * math.log(0.5)) / 4
# Foreground: TP = .75 + .5 + .5 = 1.75, sum(p) = 2, |G| = 3, so FP = .25 and FN = 1.25.
TINY_DICE = 2 * 1.75 / (2 + 3)  # 0.7
TINY_TVERSKY = 1.75 / (1.75 + 0.3 * 0.25 + 0.7 * 1.25)  # 1.75 / 2.7


@pytest.mark.parametrize(("spec", "expected"), [
    ({"name": "dice_ce"}, TINY_CE + (1 - TINY_DICE)),
    ({"name": "focal"},  # -(1 - p_t)^2 log p_t, mean over the 4 pixels
     -(2 * 0.25**2 * math.log(0.75) + 2 * 0.5**2 * math.log(0.5)) / 4 + (1 - TINY_DICE)),
    ({"name": "focal", "alpha": [0.25, 0.75], "dice_weight": 0.0},  # alpha_t = .75 .75 .75 .25
     -(0.75 * 0.25**2 * math.log(0.75) + 2 * 0.75 * 0.5**2 * math.log(0.5)
       + 0.25 * 0.25**2 * math.log(0.75)) / 4),
    ({"name": "tversky"}, (1 - TINY_TVERSKY) + TINY_CE),
    ({"name": "tversky", "ce_weight": 0.0, "alpha": 0.7, "beta": 0.3},
     1 - 1.75 / (1.75 + 0.7 * 0.25 + 0.3 * 1.25)),
    ({"name": "focal_tversky"}, (1 - TINY_TVERSKY) ** 0.75 + TINY_CE),
], ids=["dice_ce", "focal", "focal_alpha_no_dice", "tversky", "tversky_swapped", "focal_tversky"])
def test_each_loss_matches_its_hand_computed_value_on_a_2x2_image(spec: dict,
                                                                   expected: float) -> None:
    assert create_loss(spec)(TINY_LOGITS, TINY_LABELS).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("name", list(LOSS_DEFAULTS))
def test_each_loss_runs_in_3d_and_gives_a_finite_nonzero_gradient(name: str) -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, 6, requires_grad=True)
    labels = torch.randint(0, 3, (2, 5, 6, 6))
    labels[0, 0] = IGNORE_INDEX
    loss = create_loss({"name": name})(logits, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(LOSS_DEFAULTS))
def test_each_loss_of_a_saturated_perfect_prediction_is_near_zero_with_a_finite_gradient(
        name: str) -> None:
    torch.manual_seed(6)
    labels = torch.randint(0, 3, (2, 4, 6, 6))
    logits = _confident(labels, 3).requires_grad_()  # softmax exactly 0 / 1 in fp32
    loss = create_loss({"name": name})(logits, labels)
    loss.backward()
    assert loss.item() < 1e-4 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", list(LOSS_DEFAULTS))
@pytest.mark.parametrize("spatial", [(8, 8), (4, 8, 8)], ids=["2d", "3d"])
def test_ignored_pixels_do_not_change_any_loss(name: str, spatial: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    loss = create_loss({"name": name, **({"alpha": [0.2, 0.3, 0.5]} if name == "focal" else {})})
    labels = torch.randint(0, 3, (2, *spatial))
    logits = torch.randn(2, 3, *spatial)
    changed = logits.clone()
    changed[..., :2, :] = torch.randn_like(changed[..., :2, :]) * 10
    assert not torch.isclose(loss(logits, labels), loss(changed, labels))  # the change matters...
    labels[..., :2, :] = IGNORE_INDEX
    assert torch.isclose(loss(logits, labels), loss(changed, labels))  # ...unless ignored


def test_focal_with_gamma_zero_and_no_dice_term_is_cross_entropy() -> None:
    torch.manual_seed(2)
    logits, labels = torch.randn(2, 4, 6, 6), torch.randint(0, 4, (2, 6, 6))
    labels[1, :3] = IGNORE_INDEX
    focal = create_loss({"name": "focal", "gamma": 0.0, "dice_weight": 0.0})
    expected = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    assert torch.allclose(focal(logits, labels), expected, atol=1e-6)


def test_tversky_with_equal_half_weights_is_soft_dice() -> None:
    torch.manual_seed(3)
    logits, labels = torch.randn(2, 3, 4, 6, 6), torch.randint(0, 3, (2, 4, 6, 6))
    tversky = create_loss({"name": "tversky", "alpha": 0.5, "beta": 0.5})
    dice = create_loss({"name": "dice_ce"})
    assert torch.allclose(tversky(logits, labels), dice(logits, labels), atol=1e-5)


def test_cldice_of_a_perfectly_predicted_thin_line_is_near_zero() -> None:
    labels = torch.zeros(1, 7, 9, dtype=torch.long)
    labels[0, 3, :] = 1  # a one-pixel-wide line: its own soft skeleton
    loss = ClDiceLoss(dice_weight=0.0, ce_weight=0.0, cldice_weight=1.0)
    assert loss(_confident(labels), labels) < 1e-5
    broken = labels.clone()
    broken[0, 3, 4] = 0  # skeleton recall 8/9 -> clDice 2 * 8/9 / (1 + 8/9) = 16/17
    assert loss(_confident(broken), labels).item() == pytest.approx(1 / 17, abs=1e-5)


def test_cldice_penalises_cutting_a_tube_but_not_thinning_or_thickening_it() -> None:
    labels = torch.zeros(1, 7, 9, dtype=torch.long)
    labels[0, 2:5, :] = 1  # a 3-pixel-thick tube along the rows; its soft skeleton is row 3
    cut, thinned = labels.clone(), labels.clone()
    cut[0, 2:5, 4] = 0  # a gap across the tube: 3 pixels lost, the centre line broken
    thinned[0, 2, 3:6] = 0  # 3 pixels shaved off one side: the centre line kept
    thickened = labels.clone()
    thickened[0, 1:6, :] = 1  # 2 rows too many: its soft skeleton, row 3, still inside the tube
    dice_ce, cldice = DiceCELoss(), ClDiceLoss(cldice_weight=0.5)
    assert dice_ce(_confident(cut), labels).item() == pytest.approx(
        dice_ce(_confident(thinned), labels).item())
    # cut: skeleton recall 8/9, precision 1 -> clDice 16/17; thinned: its skeleton lies inside the
    # tube and the tube's skeleton inside it -> clDice 1.
    assert cldice(_confident(thinned), labels).item() == pytest.approx(
        dice_ce(_confident(thinned), labels).item(), abs=1e-5)
    assert cldice(_confident(cut), labels).item() == pytest.approx(
        dice_ce(_confident(cut), labels).item() + 0.5 / 17, abs=1e-5)
    assert cldice(_confident(thickened), labels).item() == pytest.approx(
        dice_ce(_confident(thickened), labels).item(), abs=1e-5)  # skeletons compared, not masks


def test_losses_compute_in_fp32_from_bfloat16_logits() -> None:
    torch.manual_seed(4)
    logits, labels = torch.randn(1, 3, 6, 6).bfloat16(), torch.randint(0, 3, (1, 6, 6))
    for name in LOSS_DEFAULTS:
        loss = create_loss({"name": name})
        assert loss(logits, labels).dtype == torch.float32
        assert torch.allclose(loss(logits, labels), loss(logits.float(), labels))


def test_create_loss_fills_missing_parameters_from_the_defaults() -> None:
    torch.manual_seed(5)
    logits, labels = torch.randn(1, 3, 6, 6), torch.randint(0, 3, (1, 6, 6))
    for name, defaults in LOSS_DEFAULTS.items():
        full = create_loss({"name": name, **defaults})(logits, labels)
        assert torch.equal(create_loss({"name": name})(logits, labels), full)
    partial = create_loss({"name": "tversky", "beta": 0.9})(logits, labels)
    full = {"name": "tversky", "alpha": 0.3, "beta": 0.9, "ce_weight": 1.0}
    assert torch.equal(partial, create_loss(full)(logits, labels))
    assert not torch.equal(partial, create_loss({"name": "tversky"})(logits, labels))


def test_an_unknown_loss_name_raises_a_seglab_error_listing_the_known_ones() -> None:
    known = "dice_ce, focal, tversky, focal_tversky, cldice"
    with pytest.raises(SeglabError, match=f"'dice' is not known.*{known}"):
        create_loss({"name": "dice"})


def test_an_unknown_loss_parameter_raises_a_seglab_error_listing_its_parameters() -> None:
    params = "alpha, beta, gamma, ce_weight"
    with pytest.raises(SeglabError, match=f"'focal_tversky' has no parameter gama.*{params}"):
        create_loss({"name": "focal_tversky", "gama": 1.0})
    with pytest.raises(SeglabError, match="'dice_ce' has no parameter iterations"):
        create_loss({"name": "dice_ce", "iterations": 3})


def test_a_focal_alpha_without_one_weight_per_class_raises_a_seglab_error() -> None:
    with pytest.raises(SeglabError, match="loss.alpha has 2 values but the model has 3 classes"):
        create_loss({"name": "focal", "alpha": [0.5, 0.5]})(torch.randn(1, 3, 4, 4),
                                                             torch.zeros(1, 4, 4).long())
