"""mnistpack.augment: seeded, shaped right, labels kept, and drawn through the client's rendering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mnistpack.augment import AugmentConfig, augmented, player_redraws, player_strokes, warped
from mnistpack.data import Mnist
from mnistpack.strokes import GRID, from_strokes
from mnistpack.trace import image_strokes

SMALL = AugmentConfig(player_copies=2, warp_copies=1, seed=5)


@pytest.fixture(scope="module")
def digits(mnist_data: Mnist) -> tuple[np.ndarray, np.ndarray]:
    return mnist_data.train_images[:40], mnist_data.train_labels[:40]


def test_originals_come_first_then_their_copies(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    out_images, out_labels = augmented(images, labels, SMALL, log=lambda line: None)
    assert out_images.shape == (40 * 4, 784) and out_images.dtype == np.float32
    assert np.array_equal(out_images[:40], images)
    assert np.array_equal(out_labels, np.concatenate([labels, np.repeat(labels, 3)]))
    assert 0 <= out_images.min() and out_images.max() <= 1
    # every copy has ink, and is not its original
    copies = out_images[40:].reshape(40, 3, 784)
    assert (copies.max(axis=2) > 0.5).all()
    assert not np.isclose(copies, images[:, None, :], atol=1e-3).all(axis=2).any()


def test_same_seed_same_digits_other_seed_other_digits(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    first, _ = augmented(images, labels, SMALL, log=lambda line: None)
    again, _ = augmented(images, labels, SMALL, log=lambda line: None)
    other, _ = augmented(images, labels, AugmentConfig(seed=6), log=lambda line: None)
    assert np.array_equal(first, again)
    assert not np.array_equal(first[40:], other[40:])


def test_no_copies_is_the_identity(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    out_images, out_labels = augmented(images, labels, AugmentConfig(0, 0), log=lambda line: None)
    assert out_images is images and out_labels is labels


def test_cache_gives_back_the_same_arrays(digits: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    images, labels = digits
    lines: list[str] = []
    fresh = augmented(images, labels, SMALL, log=lines.append, cache=tmp_path)
    cached = augmented(images, labels, SMALL, log=lines.append, cache=tmp_path)
    assert any("from the cache" in line for line in lines)
    assert np.array_equal(fresh[0], cached[0]) and np.array_equal(fresh[1], cached[1])
    assert len(list(tmp_path.iterdir())) == 1


def test_player_redraws_are_what_the_client_would_render(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = digits
    config = AugmentConfig(pen_spread=0.0, seed=3)
    rng = np.random.default_rng(config.seed)
    image = images[0].reshape(GRID, GRID).astype(np.float64)
    strokes = player_strokes(image_strokes(image), rng, config)
    # pointer positions on the canvas, at the drawing size the style asked for
    points = np.array([p for stroke in strokes for p in stroke])
    assert points.min() >= -0.5 and points.max() <= GRID + 0.5
    rng = np.random.default_rng(config.seed)
    strokes_again = player_strokes(image_strokes(image), rng, config)
    assert np.array_equal(
        player_redraws(images[:1], config)[0], from_strokes(strokes_again).astype(np.float32)
    )


def test_warps_keep_ink_centred(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = digits
    rng = np.random.default_rng(0)
    for image in images[:10]:
        out = warped(image.reshape(GRID, GRID).astype(np.float64), rng, SMALL)
        mass = out.sum()
        row = (out.sum(axis=1) * np.arange(GRID)).sum() / mass
        col = (out.sum(axis=0) * np.arange(GRID)).sum() / mass
        assert abs(row - 14) <= 0.5 + 1e-9 and abs(col - 14) <= 0.5 + 1e-9
