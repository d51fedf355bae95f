"""Strokes -> the network's 784 inputs, as `Preprocessing.fromStrokes` makes them in the client.

This is the NumPy twin of `luau/client/Preprocessing.luau`'s `fromStrokes`, step for step
and operation for operation, so the two agree to the last bit on the same strokes (a test
checks them on many random drawings). Training renders digits through it, so the network
learns from exactly what the client will show it.

The recipe is MNIST's own (LeCun et al.): fit the drawing's bounding box into the 20x20 box
keeping its aspect ratio, then move its centre of mass to (14, 14) by a whole number of
cells; before that, the strokes are sheared upright by their measured slant, which the
network then never has to learn. What differs is where the pen comes in: MNIST scanned
ink and scaled the pixels, so a small digit came out with fat strokes; here the strokes
are scaled first and drawn afterwards with one anti-aliased pen, so the stroke width in
the box never depends on how big the player drew.

Points are in canvas cells (what `Canvas.toCells` returns): x to the right, y down, the
canvas spanning 0..28 on both axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np

GRID: Final = 28
FIT: Final = 20
CENTRE: Final = 14
# The pen, in cells of the 28x28 input: a cell whose middle lies within PEN_RADIUS of a
# stroke gets ink, full ink up to PEN_RADIUS - PEN_SOFTNESS, fading linearly beyond. Chosen
# so that MNIST training digits, traced and redrawn with it, carry the same ink per unit of
# stroke length as the originals (docs/strokes.md has the measurement).
PEN_RADIUS: Final = 1.8
PEN_SOFTNESS: Final = 1.0
# The strokes' bounding box is scaled so its longer side is STROKE_BOX cells: with the
# pen's reach on both sides, the ink's box is FIT cells, as in MNIST.
STROKE_BOX: Final = 17.0
# A drawing whose box is smaller than this on the canvas (in canvas cells) is a tap or a
# slip, not a digit: it gives the empty input, like an empty canvas.
MIN_EXTENT: Final = 1.0
# The strokes are sheared upright first, by their measured slant (x per unit of y) up to this.
MAX_SLANT: Final = 1.0
# Coordinates beyond this many cells are not positions a pointer can report; such a point
# is dropped, and breaks its stroke in two, as would any NaN or infinite one.
MAX_COORD: Final = 1e6

Point = tuple[float, float]
Strokes = Sequence[Sequence[Point]]


def from_strokes(
    strokes: Strokes, *, pen_radius: float = PEN_RADIUS, pen_softness: float = PEN_SOFTNESS
) -> np.ndarray:
    """float64 [784], row-major 28x28 in 0..1: the input the client predicts from.

    Empty, all-invalid, off-canvas or smaller-than-MIN_EXTENT drawings give all zeros.
    The pen options exist for training (stroke-width variety); the client uses the defaults.
    """
    pieces = canvas_segments(strokes)
    out = np.zeros(GRID * GRID)
    if len(pieces) == 0:
        return out
    pieces = deslanted(pieces)
    xs = np.concatenate([pieces[:, 0], pieces[:, 2]])
    ys = np.concatenate([pieces[:, 1], pieces[:, 3]])
    min_x, max_x, min_y, max_y = xs.min(), xs.max(), ys.min(), ys.max()
    extent = max(max_x - min_x, max_y - min_y)
    if extent < MIN_EXTENT:
        return out
    scale = STROKE_BOX / extent
    mid_x, mid_y = (min_x + max_x) / 2, (min_y + max_y) / 2
    field = np.empty_like(pieces)
    field[:, 0::2] = (pieces[:, 0::2] - mid_x) * scale + GRID / 2
    field[:, 1::2] = (pieces[:, 1::2] - mid_y) * scale + GRID / 2
    image = render(field, pen_radius, pen_softness)
    return centred(image).ravel()


def slant(segments: np.ndarray) -> float:
    """How far x leans per unit of y along the strokes: their second moments, weighted by length."""
    x0, y0, x1, y1 = (segments[:, k] for k in range(4))
    length = np.sqrt((x1 - x0) * (x1 - x0) + (y1 - y0) * (y1 - y0))
    total = np.cumsum(length)[-1]
    if not total > 0:
        return 0.0
    mean_x = np.cumsum(length * (x0 + x1) / 2)[-1] / total
    mean_y = np.cumsum(length * (y0 + y1) / 2)[-1] / total
    yy = np.cumsum(length * (y0 * y0 + y0 * y1 + y1 * y1) / 3)[-1] / total - mean_y * mean_y
    xy = np.cumsum(length * (2 * x0 * y0 + x0 * y1 + x1 * y0 + 2 * x1 * y1) / 6)[-1] / total - mean_x * mean_y
    if not yy > 0:
        return 0.0
    return float(min(max(xy / yy, -MAX_SLANT), MAX_SLANT))


def deslanted(segments: np.ndarray) -> np.ndarray:
    """The segments sheared upright about the middle of their height: a slant is the
    writer's habit, not part of the digit (MNIST readers have long deslanted their input)."""
    lean = slant(segments)
    out = segments.copy()
    ys = segments[:, 1::2]
    mean = (ys.min() + ys.max()) / 2
    out[:, 0::2] = segments[:, 0::2] - lean * (ys - mean)
    return out


def canvas_segments(strokes: Strokes) -> np.ndarray:
    """float64 [S, 4] of (x0, y0, x1, y1): every stroke's segments, clipped to the canvas.

    A stroke of one point is one segment of length 0 (a dot). Invalid points (not finite,
    or beyond MAX_COORD) are dropped and split their stroke.
    """
    found: list[tuple[float, float, float, float]] = []
    for stroke in strokes:
        previous: Point | None = None
        started = False  # whether the current piece has been emitted at least once
        for point in stroke:
            x, y = float(point[0]), float(point[1])
            if not (abs(x) <= MAX_COORD and abs(y) <= MAX_COORD):  # also False for NaN
                if previous is not None and not started:
                    _add(found, previous, previous)
                previous, started = None, False
                continue
            if previous is not None:
                _add(found, previous, (x, y))
                started = True
            previous = (x, y)
        if previous is not None and not started:
            _add(found, previous, previous)
    return np.array(found, dtype=np.float64).reshape(len(found), 4)


def _add(found: list[tuple[float, float, float, float]], a: Point, b: Point) -> None:
    clipped = clip(a[0], a[1], b[0], b[1])
    if clipped is not None:
        found.append(clipped)


def clip(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float] | None:
    """The part of segment (x0, y0)-(x1, y1) inside the canvas [0, GRID]^2 (Liang-Barsky), or None."""
    dx, dy = x1 - x0, y1 - y0
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, x0), (dx, GRID - x0), (-dy, y0), (dy, GRID - y0)):
        if p == 0:
            if q < 0:
                return None
        else:
            r = q / p
            if p < 0:
                if r > t1:
                    return None
                if r > t0:
                    t0 = r
            else:
                if r < t0:
                    return None
                if r < t1:
                    t1 = r
    # the ends that were not cut stay exactly as given
    sx, sy = (x0 + t0 * dx, y0 + t0 * dy) if t0 > 0 else (x0, y0)
    ex, ey = (x0 + t1 * dx, y0 + t1 * dy) if t1 < 1 else (x1, y1)
    return sx, sy, ex, ey


def render(segments: np.ndarray, radius: float, softness: float) -> np.ndarray:
    """float64 [28, 28]: the pen drawn along `segments` (field coordinates, cell (r, c) centred
    at (c + 0.5, r + 0.5)); each cell takes the ink of the nearest segment."""
    rows, cols = np.mgrid[0:GRID, 0:GRID]
    px = (cols + 0.5).ravel()[None, :]
    py = (rows + 0.5).ravel()[None, :]
    x0, y0, x1, y1 = (segments[:, k : k + 1] for k in range(4))
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    safe = np.where(length2 > 0, length2, 1.0)
    t = np.where(length2 > 0, ((px - x0) * dx + (py - y0) * dy) / safe, 0.0)
    t = np.minimum(np.maximum(t, 0.0), 1.0)
    qx = px - (x0 + t * dx)
    qy = py - (y0 + t * dy)
    nearest = np.sqrt(qx * qx + qy * qy).min(axis=0)
    ink: np.ndarray = np.minimum(np.maximum((radius - nearest) / softness, 0.0), 1.0)
    return ink.reshape(GRID, GRID)


def centred(image: np.ndarray) -> np.ndarray:
    """`image` moved by whole cells so its centre of mass is nearest (CENTRE, CENTRE), as in
    MNIST; the shift stops where ink would leave the field."""
    flat = image.ravel()
    rows, cols = np.divmod(np.arange(GRID * GRID), GRID)
    # running sums in row-major order: exactly the additions the Luau loop makes
    total = np.cumsum(flat)[-1]
    if not total > 0:
        return np.zeros_like(image)
    row_centre = np.cumsum(flat * rows)[-1] / total
    col_centre = np.cumsum(flat * cols)[-1] / total
    inked_rows = np.nonzero(image.max(axis=1) > 0)[0]
    inked_cols = np.nonzero(image.max(axis=0) > 0)[0]
    down = _shift(row_centre, int(inked_rows[0]), int(inked_rows[-1]))
    right = _shift(col_centre, int(inked_cols[0]), int(inked_cols[-1]))
    out = np.zeros_like(image)
    out[
        inked_rows[0] + down : inked_rows[-1] + 1 + down, inked_cols[0] + right : inked_cols[-1] + 1 + right
    ] = image[inked_rows[0] : inked_rows[-1] + 1, inked_cols[0] : inked_cols[-1] + 1]
    return out


def _shift(centre: float, first: int, last: int) -> int:
    offset = math.floor(CENTRE - centre + 0.5)
    return min(max(offset, -first), GRID - 1 - last)
