"""Patch sampling and augmentation."""

from __future__ import annotations

import numpy as np
import torch

from seglab.preprocess import Prepared
from seglab.train.sampling import (PatchSampler, augment_intensity, elastic_displacement,
                                   spatial_matrix)
from tests.conftest import NO_AUGMENTATION, small_plan

def _case(shape, foreground_at) -> Prepared:
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(1, *shape)
    label = np.zeros(shape, np.uint8)
    label[foreground_at] = 1
    return Prepared("c", image, label, None, shape)


def test_without_augmentation_a_patch_is_an_exact_crop_of_the_image() -> None:
    case = _case((30, 40), (5, 5))
    sampler = PatchSampler([case], small_plan((8, 12)), np.random.default_rng(0))
    images, labels = sampler.batch()
    for patch in images[:, 0].numpy():
        row, col = np.unravel_index(int(round(float(patch[0, 0]))), (30, 40))
        assert np.allclose(patch, case.image[0, row:row + 8, col:col + 12], atol=1e-3)


def test_full_foreground_oversampling_puts_foreground_in_every_patch() -> None:
    case = _case((64, 64, 64), (50, 10, 40))
    sampler = PatchSampler([case], small_plan((8, 8, 8), oversampling=1.0), np.random.default_rng(0))
    _, labels = sampler.batch()
    assert all(label.sum() >= 1 for label in labels)


def test_patches_larger_than_the_image_are_padded() -> None:
    case = _case((5, 6), (2, 2))
    sampler = PatchSampler([case], small_plan((16, 16)), np.random.default_rng(0))
    images, labels = sampler.batch()
    assert images.shape == (6, 1, 16, 16) and (images[:, 0] == 0).sum() > 0
    assert set(torch.unique(labels).tolist()) <= {0, 1}


def test_spatial_matrix_with_only_flips_is_a_signed_identity() -> None:
    augmentation = dict(NO_AUGMENTATION, flip_axes=[0, 1, 2])
    matrix = spatial_matrix(augmentation, 3, np.random.default_rng(3))
    assert np.allclose(np.abs(matrix), np.eye(3))


def test_rotation_matrix_is_orthonormal_and_scaling_divides_it() -> None:
    augmentation = dict(NO_AUGMENTATION, rotate_probability=1.0, rotate_degrees=30.0,
                        scale_probability=1.0, scale_range=[2.0, 2.0])
    matrix = spatial_matrix(augmentation, 3, np.random.default_rng(1))
    assert np.allclose(matrix @ matrix.T, np.eye(3) / 4, atol=1e-6)


def test_elastic_displacement_is_smooth_bounded_and_zero_at_zero_magnitude() -> None:
    augmentation = dict(NO_AUGMENTATION, elastic_spacing=16, elastic_magnitude=3.0)
    field = elastic_displacement(augmentation, [64, 48], np.random.default_rng(0))
    assert field.shape == (64 * 48, 2)
    grid = field.reshape(64, 48, 2)
    assert 1.0 < float(grid.std()) < 6.0  # displaced by about the magnitude
    assert float((grid[1:] - grid[:-1]).abs().max()) < 1.0  # neighbours move together
    still = elastic_displacement(dict(augmentation, elastic_magnitude=0.0), [8, 8, 8],
                                 np.random.default_rng(0))
    assert still.shape == (512, 3) and float(still.abs().max()) == 0.0


def test_elastic_deformation_moves_labels_with_their_image() -> None:
    image = np.zeros((1, 48, 48), np.float32)
    image[0, 20:28, 10:40] = 1.0
    case = Prepared("c", image, (image[0] > 0).astype(np.uint8), None, (48, 48))
    plan = small_plan((48, 48))
    plan.augmentation = dict(NO_AUGMENTATION, elastic_probability=1.0, elastic_spacing=16,
                             elastic_magnitude=4.0)
    images, labels = PatchSampler([case], plan, np.random.default_rng(0)).batch()
    assert not torch.equal(labels[0], torch.from_numpy(case.label).long())
    assert float(((images[:, 0] > 0.5) == (labels > 0)).float().mean()) > 0.97


def test_intensity_augmentation_with_zero_probabilities_changes_nothing() -> None:
    images = torch.randn(4, 2, 8, 8)
    assert torch.equal(augment_intensity(images, NO_AUGMENTATION, np.random.default_rng(0)), images)
    noisy = augment_intensity(images, dict(NO_AUGMENTATION, noise_probability=1.0),
                              np.random.default_rng(0))
    assert not torch.equal(noisy, images)


def test_colour_augmentation_shuffles_greys_and_inverts_whole_samples() -> None:
    images = torch.arange(3.0).view(1, 3, 1, 1).expand(6, 3, 4, 4).contiguous()
    rng = np.random.default_rng(0)
    shuffled = augment_intensity(images, dict(NO_AUGMENTATION, channel_shuffle_probability=1.0),
                                 rng)
    orders = {tuple(int(v) for v in sample[:, 0, 0]) for sample in shuffled}
    assert all(sorted(order) == [0, 1, 2] for order in orders) and len(orders) > 1
    assert torch.equal(shuffled, shuffled[:, :, :1, :1].expand_as(shuffled))  # whole channels move
    grey = augment_intensity(images, dict(NO_AUGMENTATION, grayscale_probability=1.0), rng)
    assert torch.equal(grey, torch.ones_like(images))  # the mean of 0, 1, 2 in every channel
    inverted = augment_intensity(images, dict(NO_AUGMENTATION, invert_probability=1.0), rng)
    assert torch.equal(inverted, -images)
    one_channel = torch.randn(4, 1, 8, 8)
    kept = augment_intensity(one_channel, dict(NO_AUGMENTATION, channel_shuffle_probability=1.0,
                                               grayscale_probability=1.0), rng)
    assert torch.equal(kept, one_channel)
