"""Mask R-CNN for instance plans whose objects are few and large enough to box (photographs).

He, Gkioxari, Dollár, Girshick, "Mask R-CNN", ICCV 2017; torchvision's implementation
(`torchvision.models.detection.MaskRCNN`: region proposals, RoIAlign, box and mask heads), on a
timm encoder with a feature pyramid (Lin et al., "Feature Pyramid Networks for Object Detection",
CVPR 2017) instead of torchvision's ResNet-50, so that ImageNet weights install offline from the
package registry (EfficientNet-Lite0, `seglab.models.pretrained`) and a CPU trains it.

Deviations from the paper, for seglab's data and hardware:
- the images arrive normalised by the plan (`seglab.preprocess`), so torchvision's own
  normalisation is the identity, and they are not resized (torchvision scales every image to 800
  pixels): training crops and whole test images keep the same scale, which the anchors fit;
- anchor sizes come from the plan (the objects' sizes in the training cases), one per pyramid
  level, and the pyramid is `fpn_width` channels (128 by default, not 256) for CPU speed;
- `detections` bounds the objects returned per image (crowded images exceed torchvision's 100);
- a pretrained encoder's batch norms are frozen (as torchvision freezes its ResNet's: batches of
  two crops give no usable statistics), and the pyramid and the mask head use group norm (as
  torchvision's v2 weights use norms there): without them the first steps' mask and box losses
  ran to 20 and then NaN on DSB2018;
- under bf16 autocast only the encoder and the pyramid compute in bf16; the proposal and RoI
  heads run in fp32 (`FullPrecision`), since box coordinates need more than bf16's 8 bits of
  mantissa (proposals collapsed to zero width and the box loss turned NaN).
"""

from __future__ import annotations

from collections import OrderedDict

import timm
import torch
from torch import nn
from timm.utils.model import freeze_batch_norm_2d
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from seglab.data.instances import Instances, paint
from seglab.models.pretrained import timm_weights

FEATURE_LEVELS = (1, 2, 3, 4)  # timm's strides 4, 8, 16 and 32
BOX_FEATURES = 1024  # torchvision's box head (TwoMLPHead) representation size
# RoIs sampled per training image for the box and mask heads: torchvision's 512 made the fp32
# box head most of a CPU step; 256 is what smaller-data setups use (e.g. Matterport's 200).
BOX_SAMPLES = 256


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels)


class EncoderPyramid(nn.Module):
    """A timm encoder's stride-4 to stride-32 features through a feature pyramid, plus the max-pooled
    top level: the five maps, of `out_channels` each, that torchvision's detection heads expect."""

    def __init__(self, encoder: str, encoder_weights: str | None, in_channels: int,
                 fpn_width: int):
        super().__init__()
        self.encoder = timm.create_model(encoder, features_only=True, out_indices=FEATURE_LEVELS,
                                         in_chans=in_channels,
                                         **timm_weights("mask_rcnn", encoder, encoder_weights))
        if encoder_weights is not None:
            self.encoder = freeze_batch_norm_2d(self.encoder)
        self.fpn = FeaturePyramidNetwork(self.encoder.feature_info.channels(), fpn_width,
                                         extra_blocks=LastLevelMaxPool(), norm_layer=group_norm)
        self.out_channels = fpn_width

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.encoder(x)
        pyramid = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))
        return OrderedDict((k, v.float()) for k, v in pyramid.items())


class FullPrecision(nn.Module):
    """Runs `module` with autocast off, whatever the caller's policy."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        device = next(self.module.parameters()).device.type
        with torch.autocast(device_type=device, enabled=False):
            return self.module(*args, **kwargs)


class BatchOnly(GeneralizedRCNNTransform):
    """torchvision's transform without its resizing: images are only padded into a batch."""

    def resize(self, image: torch.Tensor, target: dict | None = None):
        return image, target


def build_mask_rcnn(in_channels: int, classes: int, encoder: str = "tf_efficientnet_lite0",
                    encoder_weights: str | None = "imagenet",
                    anchor_sizes: list[int] | None = None, fpn_width: int = 128,
                    detections: int = 100) -> MaskRCNN:
    """`classes` counts the background (class 0) as the plan's classes do; `anchor_sizes` has one
    size per pyramid level (strides 4 to 64)."""
    backbone = EncoderPyramid(encoder, encoder_weights, in_channels, fpn_width)
    sizes = anchor_sizes or [32, 64, 128, 256, 512]
    anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes))
    model = MaskRCNN(backbone, rpn_anchor_generator=anchors,
                     box_predictor=FastRCNNPredictor(BOX_FEATURES, classes),
                     mask_head=MaskRCNNHeads(fpn_width, [fpn_width] * 4, 1, norm_layer=group_norm),
                     mask_predictor=MaskRCNNPredictor(fpn_width, fpn_width, classes),
                     box_detections_per_img=detections,
                     box_batch_size_per_image=BOX_SAMPLES)
    model.transform = BatchOnly(1, 1, [0.0] * in_channels, [1.0] * in_channels,
                                size_divisible=32)
    model.rpn, model.roi_heads = FullPrecision(model.rpn), FullPrecision(model.roi_heads)
    return model


def objects_from_detections(detections: dict[str, torch.Tensor], score_threshold: float,
                            mask_threshold: float) -> Instances:
    """torchvision's output for one image (boxes, labels, scores, per-box mask probabilities
    pasted into the image) as objects: those scoring at least `score_threshold`, each the pixels
    where its mask reaches `mask_threshold` (the larger painted first, as `paint` does)."""
    keep = detections["scores"] >= score_threshold
    masks = (detections["masks"][keep, 0] >= mask_threshold).cpu().numpy()
    classes = detections["labels"][keep].cpu().tolist()
    return paint(list(masks), classes, tuple(detections["masks"].shape[2:]),
                 scores=detections["scores"][keep].float().cpu().tolist())
