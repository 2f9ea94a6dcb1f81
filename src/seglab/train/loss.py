"""The segmentation losses that a plan's `loss` section names, e.g. {"name": "dice_ce", ...}.

- dice_ce: soft Dice + cross-entropy, the nnU-Net default.
- focal: focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017) + soft Dice.
- tversky: Tversky loss (Salehi et al., "Tversky loss function for image segmentation using 3D
  fully convolutional deep networks", MLMI 2017) + cross-entropy.
- focal_tversky: focal Tversky loss (Abraham & Khan, "A Novel Focal Tversky Loss Function with
  Improved Attention U-Net for Lesion Segmentation", ISBI 2019) + cross-entropy.
- cldice: dice_ce + soft clDice (Shit et al., "clDice - a Novel Topology-Preserving Loss Function
  for Tubular Structure Segmentation", CVPR 2021).

Hand-written rather than MONAI's DiceCELoss, FocalLoss, TverskyLoss and SoftclDiceLoss because
MONAI's losses cannot leave an ignore label (IGNORE_INDEX, e.g. CamVid's void) out: here ignored
pixels are left out of every term. All take logits (B, K, H, W) or (B, K, D, H, W) and integer
labels (B, *spatial), and compute in fp32 whatever the autocast precision. Dice-like terms are
per foreground class (1..K-1), summed over the batch and space ("batch Dice"), then averaged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses.cldice import soft_skel

from seglab.data.layouts import IGNORE_INDEX
from seglab.errors import SeglabError
from seglab.plan_check import LOSS_DEFAULTS


_EPS = 1e-12  # floor under 1 - p before a power: no inf gradient where p is exactly 1


def masked_probs_and_targets(logits: torch.Tensor,
                             labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (fp32) and one-hot labels, (B, K, *spatial), zero at ignored pixels."""
    valid = (labels != IGNORE_INDEX).unsqueeze(1)
    target = labels.masked_fill(~valid.squeeze(1), 0)
    probs = torch.softmax(logits.float(), dim=1) * valid
    one_hot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).float() * valid
    return probs, one_hot


def _class_sums(x: torch.Tensor) -> torch.Tensor:
    """(B, K, *spatial) -> (K,): summed over the batch and space."""
    return x.sum((0, *range(2, x.dim())))


def soft_dice(probs: torch.Tensor, one_hot: torch.Tensor, smooth: float) -> torch.Tensor:
    """Per-class batch soft Dice, (2 |P.G| + s) / (|P| + |G| + s)."""
    intersection = _class_sums(probs * one_hot)
    return (2 * intersection + smooth) / (_class_sums(probs) + _class_sums(one_hot) + smooth)


def tversky_index(probs: torch.Tensor, one_hot: torch.Tensor, alpha: float, beta: float,
                  smooth: float) -> torch.Tensor:
    """Per-class batch Tversky index (TP + s) / (TP + alpha FP + beta FN + s) (Salehi et al. 2017);
    alpha = beta = 1/2 is soft Dice."""
    tp = _class_sums(probs * one_hot)
    fp = _class_sums(probs) - tp
    fn = _class_sums(one_hot) - tp
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the pixels that are not ignored, in fp32."""
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)


class DiceCELoss(torch.nn.Module):
    """Soft Dice over the batch (foreground classes) plus cross-entropy."""

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, smooth: float = 1e-5):
        super().__init__()
        self.dice_weight, self.ce_weight, self.smooth = dice_weight, ce_weight, smooth

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        probs, one_hot = masked_probs_and_targets(logits, labels)
        dice = soft_dice(probs, one_hot, self.smooth)[1:].mean()
        return self.ce_weight * cross_entropy(logits, labels) + self.dice_weight * (1 - dice)


class FocalLoss(torch.nn.Module):
    """Focal loss (Lin et al., ICCV 2017), -alpha_t (1 - p_t)^gamma log p_t averaged over the
    pixels that are not ignored, times focal_weight, plus dice_weight * (1 - soft Dice).
    alpha: one weight per class, or None for 1; gamma = 0 without alpha is cross-entropy."""

    def __init__(self, gamma: float = 2.0, alpha: Sequence[float] | None = None,
                 focal_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1e-5):
        super().__init__()
        self.gamma, self.alpha = gamma, None if alpha is None else tuple(alpha)
        self.focal_weight, self.dice_weight, self.smooth = focal_weight, dice_weight, smooth

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        valid = labels != IGNORE_INDEX
        target = labels.masked_fill(~valid, 0)
        log_pt = torch.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        weight = (1 - log_pt.exp()).clamp_min(_EPS) ** self.gamma
        if self.alpha is not None:
            if len(self.alpha) != logits.shape[1]:
                raise SeglabError(f"plan: loss.alpha has {len(self.alpha)} values but the model "
                                  f"has {logits.shape[1]} classes")
            alpha = torch.tensor(self.alpha, dtype=torch.float32, device=logits.device)
            weight = weight * alpha[target]
        focal = -(weight * log_pt * valid).sum() / valid.sum().clamp_min(1)
        probs, one_hot = masked_probs_and_targets(logits, labels)
        dice = soft_dice(probs, one_hot, self.smooth)[1:].mean()
        return self.focal_weight * focal + self.dice_weight * (1 - dice)


class TverskyLoss(torch.nn.Module):
    """Tversky loss (Salehi et al., MLMI 2017): mean over foreground classes of (1 - TI)^gamma,
    plus ce_weight * cross-entropy. alpha weighs false positives, beta false negatives.

    gamma = 1 is the Tversky loss; gamma < 1 the focal Tversky loss (Abraham & Khan, ISBI 2019),
    whose paper writes the exponent as 1/gamma with gamma = 4/3 best, i.e. 0.75 here."""

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, ce_weight: float = 1.0,
                 gamma: float = 1.0, smooth: float = 1e-5):
        super().__init__()
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.ce_weight, self.smooth = ce_weight, smooth

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        probs, one_hot = masked_probs_and_targets(logits, labels)
        ti = tversky_index(probs, one_hot, self.alpha, self.beta, self.smooth)[1:]
        tversky = ((1 - ti).clamp_min(_EPS) ** self.gamma).mean()
        return tversky + self.ce_weight * cross_entropy(logits, labels)


class ClDiceLoss(DiceCELoss):
    """dice_ce plus cldice_weight * (1 - soft clDice) (Shit et al., CVPR 2021), per foreground
    class, batch-summed, averaged over the classes.

    clDice = 2 Tprec Tsens / (Tprec + Tsens), Tprec = |S(P).G| / |S(P)|, Tsens = |S(G).P| / |S(G)|,
    with S the soft skeleton: MONAI's soft_skel (iterated min/max pooling, 2D and 3D), taken of
    the probabilities and one-hot labels with ignored pixels zeroed (so their logits count for
    nothing; like background, they erode the structures next to them)."""

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, cldice_weight: float = 0.5,
                 iterations: int = 3, smooth: float = 1e-5):
        super().__init__(dice_weight, ce_weight, smooth)
        self.cldice_weight, self.iterations = cldice_weight, int(iterations)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        probs, one_hot = masked_probs_and_targets(logits, labels)
        probs, one_hot = probs[:, 1:], one_hot[:, 1:]
        skel_pred = soft_skel(probs, self.iterations)
        skel_true = soft_skel(one_hot, self.iterations)
        s = self.smooth
        precision = (_class_sums(skel_pred * one_hot) + s) / (_class_sums(skel_pred) + s)
        sensitivity = (_class_sums(skel_true * probs) + s) / (_class_sums(skel_true) + s)
        cldice = (2 * precision * sensitivity / (precision + sensitivity)).mean()
        return super().forward(logits, labels) + self.cldice_weight * (1 - cldice)


class DeepSupervisionLoss(torch.nn.Module):
    """nnU-Net's deep supervision: the loss of each decoder head (the model stacks them along
    dim 1, each at full resolution), weighted 1, 1/2, 1/4, ... and normalised to sum to 1."""

    def __init__(self, loss: torch.nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not is_deeply_supervised(logits, labels):
            return self.loss(logits, labels)
        weights = [0.5**head for head in range(logits.shape[1])]
        total = sum(w * self.loss(logits[:, head], labels) for head, w in enumerate(weights))
        return total / sum(weights)


def is_deeply_supervised(logits: torch.Tensor, labels: torch.Tensor) -> bool:
    return logits.dim() == labels.dim() + 2


def main_output(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The full-resolution head's logits, whether or not the model is deeply supervised."""
    return logits[:, 0] if is_deeply_supervised(logits, labels) else logits


_LOSSES: dict[str, type[torch.nn.Module]] = {
    "dice_ce": DiceCELoss, "focal": FocalLoss, "tversky": TverskyLoss,
    "focal_tversky": TverskyLoss, "cldice": ClDiceLoss,
}


def create_loss(spec: dict) -> torch.nn.Module:
    """The plan's loss section as a (deep-supervision-aware) module; parameters that the section
    leaves out are taken from LOSS_DEFAULTS."""
    name = spec.get("name")
    if name not in LOSS_DEFAULTS:
        raise SeglabError(f"plan: loss {name!r} is not known (known: {', '.join(LOSS_DEFAULTS)})")
    params = {key: value for key, value in spec.items() if key != "name"}
    unknown = sorted(set(params) - set(LOSS_DEFAULTS[name]))
    if unknown:
        raise SeglabError(f"plan: loss {name!r} has no parameter {', '.join(unknown)} "
                          f"(its parameters: {', '.join(LOSS_DEFAULTS[name])})")
    return DeepSupervisionLoss(_LOSSES[name](**{**LOSS_DEFAULTS[name], **params}))
