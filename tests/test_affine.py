"""affine.jitter and jittered_batches: exact where the transform is exact, seeded, bounded."""

from __future__ import annotations

import numpy as np
import pytest
from mnistpack.affine import Jitter, _resample, jitter, jittered_batches
from mnistpack.data import Mnist
from mnistpack.model import import_keras


def digits(mnist_data: Mnist, count: int = 64) -> np.ndarray:
    return mnist_data.train_images[:count]


def test_no_jitter_is_the_identity(mnist_data: Mnist) -> None:
    images = digits(mnist_data)
    out = jitter(images, Jitter(degrees=0, scale=0, shift=0), np.random.default_rng(0))
    np.testing.assert_array_equal(out, images)


def test_whole_pixel_shifts_move_the_image_exactly(mnist_data: Mnist) -> None:
    images = digits(mnist_data, 5)
    moved = _resample(images, np.zeros(5), np.ones(5), np.tile([2.0, -3.0], (5, 1)))
    expected = np.zeros((5, 28, 28), np.float32)
    expected[:, 2:, :-3] = images.reshape(5, 28, 28)[:, :-2, 3:]
    np.testing.assert_array_equal(moved, expected.reshape(5, 784))


def test_a_quarter_turn_rotates_the_grid(mnist_data: Mnist) -> None:
    images = digits(mnist_data, 3)
    turned = _resample(images, np.full(3, np.pi / 2), np.ones(3), np.zeros((3, 2)))
    # about the middle of the field, a quarter turn maps the grid onto itself
    expected = np.rot90(images.reshape(3, 28, 28), k=-1, axes=(1, 2)).reshape(3, 784)
    np.testing.assert_allclose(turned, expected, atol=1e-5)


def test_jitter_is_seeded_and_keeps_the_ink(mnist_data: Mnist) -> None:
    images = digits(mnist_data)
    first = jitter(images, Jitter(), np.random.default_rng(7))
    again = jitter(images, Jitter(), np.random.default_rng(7))
    other = jitter(images, Jitter(), np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.dtype == np.float32 and first.min() >= 0 and first.max() <= 1 + 1e-6
    # a 10% scale changes the ink by at most about 21%; the shift and turn keep it inside
    ratio = first.sum(axis=1) / images.sum(axis=1)
    assert ratio.min() > 0.75 and ratio.max() < 1.25


def test_bounds_are_checked() -> None:
    for bad in ({"degrees": -1.0}, {"scale": 1.0}, {"shift": 29.0}):
        with pytest.raises(ValueError, match="jitter bounds"):
            Jitter(**bad)


def test_batches_cover_every_image_each_epoch_and_change_between_epochs(mnist_data: Mnist) -> None:
    keras = import_keras()
    images, labels = digits(mnist_data, 50), mnist_data.train_labels[:50]
    batches = jittered_batches(keras, images, labels, 16, Jitter(), seed=3)
    assert len(batches) == 4
    first = [batches[i] for i in range(len(batches))]
    assert sorted(np.concatenate([y for _, y in first]).tolist()) == sorted(labels.tolist())
    assert sum(len(x) for x, _ in first) == 50
    batches.on_epoch_end()
    second = np.concatenate([batches[i][0] for i in range(len(batches))])
    assert not np.array_equal(np.concatenate([x for x, _ in first]), second)
    same_seed = jittered_batches(keras, images, labels, 16, Jitter(), seed=3)
    np.testing.assert_array_equal(same_seed[0][0], first[0][0])
