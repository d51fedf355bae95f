"""Small random affine jitter of MNIST images (rotate, scale, shift) for training.

Each image gets its own rotation, scale and shift, drawn uniformly within the given
bounds, and is resampled bilinearly with zeros outside the field, all in NumPy:
Keras' RandomRotation/RandomZoom/RandomTranslation layers do the same on JAX at ten
times the cost of a whole epoch of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from mnistpack.data import IMAGE_SIDE

# Rotations and scales turn about the middle of the field, between pixels 13 and 14.
CENTRE: Final = (IMAGE_SIDE - 1) / 2
# Images resampled per NumPy pass: bounds the temporary arrays to a few tens of MB.
CHUNK: Final = 8192


@dataclass(frozen=True)
class Jitter:
    """Bounds of the random transform; every draw is uniform in [-bound, +bound]."""

    degrees: float = 10.0  # rotation
    scale: float = 0.1  # relative size change: 0.1 draws sizes from 90% to 110%
    shift: float = 2.0  # pixels, along each axis

    def __post_init__(self) -> None:
        if not (0 <= self.degrees <= 180 and 0 <= self.scale < 1 and 0 <= self.shift <= IMAGE_SIDE):
            raise ValueError(f"jitter bounds out of range: {self}.")


def jitter(images: np.ndarray, bounds: Jitter, rng: np.random.Generator) -> np.ndarray:
    """float32 [N, 784] images in 0..1 -> the same images, each moved by its own random transform."""
    flat = np.asarray(images, dtype=np.float32).reshape(len(images), IMAGE_SIDE * IMAGE_SIDE)
    n = len(flat)
    angle = np.deg2rad(rng.uniform(-bounds.degrees, bounds.degrees, n))
    size = 1 + rng.uniform(-bounds.scale, bounds.scale, n)
    shift = rng.uniform(-bounds.shift, bounds.shift, (n, 2))
    out = np.empty_like(flat)
    for start in range(0, n, CHUNK):
        part = slice(start, start + CHUNK)
        out[part] = _resample(flat[part], angle[part], size[part], shift[part])
    return out


def _resample(images: np.ndarray, angle: np.ndarray, size: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Where each output pixel comes from: the inverse transform of its position, then bilinear."""
    side = IMAGE_SIDE
    rows, cols = np.divmod(np.arange(side * side, dtype=np.float32), side)
    # output position relative to the centre, minus the shift, rotated back and unscaled
    y = rows[None, :] - CENTRE - shift[:, :1]
    x = cols[None, :] - CENTRE - shift[:, 1:]
    cos = (np.cos(angle) / size)[:, None]
    sin = (np.sin(angle) / size)[:, None]
    source_y = cos * y - sin * x + CENTRE
    source_x = sin * y + cos * x + CENTRE
    top = np.floor(source_y)
    left = np.floor(source_x)
    dy = (source_y - top).astype(np.float32)
    dx = (source_x - left).astype(np.float32)
    top = top.astype(np.int64)
    left = left.astype(np.int64)
    result = np.zeros(images.shape, np.float32)
    for oy, wy in ((0, 1 - dy), (1, dy)):
        for ox, wx in ((0, 1 - dx), (1, dx)):
            r, c = top + oy, left + ox
            inside = (r >= 0) & (r < side) & (c >= 0) & (c < side)
            index = np.where(inside, r * side + c, 0)
            result += np.where(inside, np.take_along_axis(images, index, axis=1), 0) * wy * wx
    return result


def jittered_batches(
    keras: Any, images: np.ndarray, labels: np.ndarray, batch_size: int, bounds: Jitter, seed: int
) -> Any:
    """A Keras dataset of shuffled batches of `images` moved by `jitter`, drawn anew each epoch
    from a generator seeded by (seed, epoch): the same seed gives the same batches."""

    class Batches(keras.utils.PyDataset):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.epoch = 0
            self._draw()

        def _draw(self) -> None:
            rng = np.random.default_rng([seed, self.epoch])
            order = rng.permutation(len(images))
            self.x = jitter(images[order], bounds, rng)
            self.y = labels[order]

        def __len__(self) -> int:
            return -(-len(images) // batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            part = slice(index * batch_size, (index + 1) * batch_size)
            return self.x[part], self.y[part]

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self._draw()

    return Batches()
