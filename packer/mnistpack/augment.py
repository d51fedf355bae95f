"""Training digits in the styles players draw them: MNIST training images and transformations of them.

Nothing here sees anything but the images it is given (the training split), so the test
sets stay clean. Two kinds of copies are added to the originals:

- **player redraws**: each digit's skeleton is traced into strokes (mnistpack.trace), warped
  by a random affine map (rotation, slant, aspect, a little of everything), drawn at a
  random size on the 28-cell canvas, sampled the way pointer events arrive (uneven
  spacing, hand jitter, screen pixels), and rendered by `strokes.from_strokes`, the very
  function the client runs, with a pen a little wider or narrower than the client's;
- **image warps**: the original image under a random affine map about its centre of mass,
  with its strokes thickened or thinned (grey dilation or erosion), then re-centred.

Everything is drawn from one seeded generator, so the same seed gives the same arrays.
The result is plain arrays (images in, images out): any Keras model trains on it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import numpy as np

from mnistpack.strokes import GRID, PEN_RADIUS, Strokes, centred, from_strokes
from mnistpack.trace import image_strokes

Log = Callable[[str], None]

PROGRESS_EVERY: Final = 10_000  # images between progress lines
CACHE_VERSION: Final = 3  # bump when the recipe changes what a cached file holds
_CROSS: Final = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


@dataclass(frozen=True)
class AugmentConfig:
    """How many copies of each digit, and how far their styles range (uniform draws)."""

    player_copies: int = 2  # player redraws of every training digit
    warp_copies: int = 1  # image warps of every training digit
    seed: int = 0
    rotation_degrees: float = 18.0  # +-
    slant: float = 0.4  # +- horizontal shear per unit of height
    aspect: tuple[float, float] = (0.7, 1.4)  # width factor, log-uniform
    size_cells: tuple[float, float] = (3.0, 27.0)  # longer side on the canvas
    event_spacing_cells: tuple[float, float] = (0.1, 2.5)  # mean pointer step, per stroke
    jitter_cells: tuple[float, float] = (0.0, 0.15)  # hand tremor, standard deviation
    screen_pixels_per_cell: tuple[float, float] = (8.0, 25.0)  # a 220 to 700 pixel canvas
    pen_spread: float = 0.15  # pen radius = client's x U(1 - s, 1 + s)
    warp_scale: tuple[float, float] = (0.85, 1.1)
    thicken_probability: float = 0.5  # of a warp; otherwise thinned or left alone

    def __post_init__(self) -> None:
        if self.player_copies < 0 or self.warp_copies < 0:
            raise ValueError(f"copies must be >= 0, got {self.player_copies} and {self.warp_copies}.")


def augmented(
    images: np.ndarray, labels: np.ndarray, config: AugmentConfig, log: Log, cache: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The originals followed by their copies: float32 [N * (1 + copies), 784] and labels."""
    copies = config.player_copies + config.warp_copies
    if copies == 0:
        return images, labels
    cached = _cache_file(cache, images, labels, config)
    if cached is not None and cached.is_file():
        with np.load(cached) as saved:
            log(f"augmented digits from the cache {cached}")
            return saved["images"], saved["labels"]
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    extra = np.zeros((len(images) * copies, images.shape[1]), dtype=np.float32)
    for n, image in enumerate(images):
        square = image.reshape(GRID, GRID).astype(np.float64)
        traced = image_strokes(square) if config.player_copies else []
        for k in range(config.player_copies):
            extra[n * copies + k] = player_redraw(traced, rng, config)
        for k in range(config.player_copies, copies):
            extra[n * copies + k] = warped(square, rng, config).ravel()
        if (n + 1) % PROGRESS_EVERY == 0:
            log(f"augmenting: {n + 1:,}/{len(images):,} digits, {time.perf_counter() - started:.0f} s")
    out_images = np.concatenate([images.astype(np.float32), extra])
    out_labels = np.concatenate([labels, np.repeat(labels, copies)])
    log(f"augmented {len(images):,} digits to {len(out_images):,} in {time.perf_counter() - started:.0f} s")
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial.npz")
        np.savez(partial, images=out_images, labels=out_labels)
        partial.replace(cached)
    return out_images, out_labels


def player_redraws(images: np.ndarray, config: AugmentConfig) -> np.ndarray:
    """One player redraw of every image (float32 [N, 784]): held-out data for calibration."""
    rng = np.random.default_rng(config.seed)
    out = np.zeros((len(images), GRID * GRID), dtype=np.float32)
    for n, image in enumerate(images):
        out[n] = player_redraw(image_strokes(image.reshape(GRID, GRID).astype(np.float64)), rng, config)
    return out


def player_redraw(traced: list[np.ndarray], rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Traced strokes drawn again as a player might, through `from_strokes`: float64 [784]."""
    drawing = player_strokes(traced, rng, config)
    radius = PEN_RADIUS * rng.uniform(1 - config.pen_spread, 1 + config.pen_spread)
    return from_strokes(drawing, pen_radius=radius)


def player_strokes(traced: list[np.ndarray], rng: np.random.Generator, config: AugmentConfig) -> Strokes:
    """Strokes in image cells -> pointer positions on the canvas, in one player's style."""
    if not traced:
        return []
    every = np.concatenate(traced)
    centre = (every.min(axis=0) + every.max(axis=0)) / 2
    matrix = _random_affine(rng, config)
    shaped = [(stroke - centre) @ matrix.T for stroke in traced]
    every = np.concatenate(shaped)
    low, high = every.min(axis=0), every.max(axis=0)
    scale = rng.uniform(*config.size_cells) / max(float((high - low).max()), 1e-9)
    room = GRID - (high - low) * scale
    corner = rng.uniform(0.0, 1.0, size=2) * room
    spacing = rng.uniform(*config.event_spacing_cells)
    jitter = rng.uniform(*config.jitter_cells)
    pixels = rng.uniform(*config.screen_pixels_per_cell)
    drawing = []
    for stroke in shaped:
        path = (stroke - low) * scale + corner
        events = _resampled(path, spacing * rng.uniform(0.6, 1.4), rng)
        events = np.round((events + rng.normal(0.0, jitter, events.shape)) * pixels) / pixels
        drawing.append([(float(x), float(y)) for x, y in events])
    return drawing


def _random_affine(rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    angle = np.radians(rng.uniform(-config.rotation_degrees, config.rotation_degrees))
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shear = np.array([[1.0, rng.uniform(-config.slant, config.slant)], [0.0, 1.0]])
    aspect = np.diag([np.exp(rng.uniform(*np.log(config.aspect))), 1.0])
    wobble = np.eye(2) + rng.normal(0.0, 0.04, (2, 2))  # a little of everything else
    matrix: np.ndarray = wobble @ aspect @ shear @ rotate
    return matrix


def _resampled(path: np.ndarray, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Points about `spacing` apart along `path`, unevenly; both ends kept."""
    along = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(path, axis=0).T))])
    total = float(along[-1])
    if total <= 0:
        return path[:1].copy()
    steps = spacing * rng.uniform(0.5, 1.5, size=int(total / (0.5 * spacing)) + 2)
    marks = np.concatenate([[0.0], np.cumsum(steps)])
    marks = np.append(marks[marks < total], total)
    return np.stack([np.interp(marks, along, path[:, 0]), np.interp(marks, along, path[:, 1])], axis=1)


def warped(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """A 28x28 image under a random affine map about its centre of mass, thickened or thinned."""
    from scipy import ndimage

    matrix = _random_affine(rng, config) * rng.uniform(*config.warp_scale)
    mass = image.sum()
    if mass <= 0:
        return image
    grid = np.arange(GRID)
    centre = np.array([(image.sum(axis=1) * grid).sum(), (image.sum(axis=0) * grid).sum()]) / mass
    # affine_transform maps output (row, col) to input: the inverse of the (x, y) map, axes swapped
    inverse = np.linalg.inv(matrix)[::-1, ::-1]
    out = ndimage.affine_transform(image, inverse, offset=centre - inverse @ centre, order=1)
    # half of a one-cell dilation or erosion: MNIST's strokes vary about that much in width
    roll = rng.uniform()
    if roll < config.thicken_probability:
        out = 0.5 * (out + ndimage.grey_dilation(out, footprint=_CROSS))
    elif roll < (1 + config.thicken_probability) / 2:
        out = 0.5 * (out + ndimage.grey_erosion(out, footprint=_CROSS))
    return centred(np.clip(out, 0.0, 1.0))


def _cache_file(
    cache: Path | None, images: np.ndarray, labels: np.ndarray, config: AugmentConfig
) -> Path | None:
    if cache is None:
        return None
    digest = hashlib.sha256()
    digest.update(repr((CACHE_VERSION, sorted(asdict(config).items()))).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return cache / f"augmented-{digest.hexdigest()[:16]}.npz"
