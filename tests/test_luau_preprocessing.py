"""luau/client/Preprocessing.luau against an independent NumPy implementation of MNIST's
preparation, on hand-made canvases and seeded random drawings.

Conventions (as in Preprocessing.luau): canvases are 28x28 row-major, values 0..1; a
cell's mass counts at its 0-based (row, column) index, and the centre of mass goes to
cell (14, 14), where MNIST's own digits have it.

The reference resamples by supersampling, not by overlap weights: each crop cell is
repeated `out` times along each axis and blocks of `in` fine cells are averaged, which is
exactly area-averaging and shares no code or method with the Luau version.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from mnistpack.data import load_test_set

from tests.luau_host import LuauHost

GRID = 28
Prepare = Callable[[np.ndarray], np.ndarray]
Constants = dict[str, float]
HALF = 0.5 + 1e-9  # a whole-cell shift puts the mass within half a cell of the centre

PREPARE = r"""
local P = require(root.client.Preprocessing)
return function(values: string)
	local canvas = table.create(784, 0)
	local source = buffer.fromstring(values)
	for i = 1, 784 do
		canvas[i] = buffer.readf64(source, (i - 1) * 8)
	end
	local out = P.prepare(canvas)
	local result = buffer.create(784 * 8)
	for i = 1, 784 do
		buffer.writef64(result, (i - 1) * 8, out[i])
	end
	return buffer.tostring(result)
end
"""


@pytest.fixture(scope="module")
def host() -> LuauHost:
    return LuauHost()


@pytest.fixture(scope="module")
def constants(host: LuauHost) -> Constants:
    names = ("GRID", "FIT", "CENTRE")
    values = host.run("local C = require(root.client.Constants); return C.GRID, C.FIT, C.CENTRE")
    return dict(zip(names, values, strict=True))


@pytest.fixture(scope="module")
def prepare(host: LuauHost) -> Prepare:
    fn = host.run(PREPARE)[0]

    def run(canvas: np.ndarray) -> np.ndarray:
        assert canvas.shape == (GRID, GRID)
        raw = fn(host.bytes_arg(canvas.astype("<f8").tobytes()))[0]
        return np.frombuffer(raw.as_bytes(), dtype="<f8").reshape(GRID, GRID)

    return run


def reference(canvas: np.ndarray, fit: int, centre: float) -> np.ndarray:
    out = np.zeros((GRID, GRID))
    rows, cols = np.nonzero(canvas > 0)
    if rows.size == 0:
        return out
    crop = canvas[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = fit / max(h, w)
    oh, ow = max(1, math.floor(h * scale + 0.5)), max(1, math.floor(w * scale + 0.5))
    fine = np.repeat(np.repeat(crop, oh, axis=0), ow, axis=1)
    small = fine.reshape(oh, h, ow, w).mean(axis=(1, 3))
    mass = small.sum()
    com_r = (small.sum(axis=1) * np.arange(oh)).sum() / mass
    com_c = (small.sum(axis=0) * np.arange(ow)).sum() / mass
    top = min(max(math.floor(centre - com_r + 0.5), 0), GRID - oh)
    left = min(max(math.floor(centre - com_c + 0.5), 0), GRID - ow)
    out[top : top + oh, left : left + ow] = small
    return out


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    mass = image.sum()
    r = (image.sum(axis=1) * np.arange(GRID)).sum() / mass
    c = (image.sum(axis=0) * np.arange(GRID)).sum() / mass
    return float(r), float(c)


def ink_box(image: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(image > 0)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_empty_canvas_gives_all_zeros(prepare: Prepare) -> None:
    assert not prepare(np.zeros((GRID, GRID))).any()


def test_single_dot_fills_the_20x20_box_centred(prepare: Prepare, constants: Constants) -> None:
    canvas = np.zeros((GRID, GRID))
    canvas[5, 9] = 1.0
    out = prepare(canvas)
    expected = np.zeros((GRID, GRID))
    # 20x20, centre of mass (9.5, 9.5): 14 - 9.5 is a tie, rounded up to a shift of 5
    expected[5:25, 5:25] = 1.0
    assert np.array_equal(out, expected)
    assert np.array_equal(out, reference(canvas, constants["FIT"], constants["CENTRE"]))


def test_gray_values_are_kept_not_renormalised(prepare: Prepare) -> None:
    canvas = np.zeros((GRID, GRID))
    canvas[20, 3] = 0.5
    out = prepare(canvas)
    assert out.max() == 0.5 and out.sum() == 0.5 * 400


def test_thin_vertical_line_becomes_a_20_cell_line_in_the_middle(
    prepare: Prepare, constants: Constants
) -> None:
    canvas = np.zeros((GRID, GRID))
    canvas[2:26, 3] = 1.0  # 24 cells long, 1 wide, far left
    out = prepare(canvas)
    expected = np.zeros((GRID, GRID))
    # scaled by 20/24: 20 x round(0.83) = 20 x 1; mass centre (9.5, 0) -> rows 5..24, column 14
    expected[5:25, 14] = 1.0
    assert np.allclose(out, expected, atol=1e-12)
    assert np.allclose(out, reference(canvas, constants["FIT"], constants["CENTRE"]), atol=1e-12)
    r, c = centre_of_mass(out)
    # 14 - 9.5 is a tie, rounded up: the line's mass lands half a cell below 14
    assert abs(r - 14) <= HALF and abs(c - 14) <= HALF


def corner_seven() -> np.ndarray:
    """A small, soft-edged "7" squeezed into the top-left corner."""
    canvas = np.zeros((GRID, GRID))
    canvas[0, 0:7] = 1.0
    canvas[1, 0:7] = 0.6
    for k, r in enumerate(range(1, 11)):
        c = 6 - k * 0.45
        canvas[r, int(c)] = 1.0
        canvas[r, int(c) + 1] = max(canvas[r, int(c) + 1], 0.35)
    return canvas


def test_digit_in_a_corner_is_moved_to_the_centre(prepare: Prepare, constants: Constants) -> None:
    canvas = corner_seven()
    out = prepare(canvas)
    assert np.allclose(out, reference(canvas, constants["FIT"], constants["CENTRE"]), atol=1e-12)
    r, c = centre_of_mass(out)
    assert abs(r - 14) <= HALF and abs(c - 14) <= HALF, (r, c)
    height, width = ink_box(out)
    assert max(height, width) == 20 and min(height, width) <= 20
    assert 0 <= out.min() and out.max() <= 1


def test_preparing_twice_changes_nothing(prepare: Prepare) -> None:
    # the ink box is already 20 cells long and centred: a second pass is the identity (to
    # rounding), so nothing in the pipeline normalises or shifts twice
    once = prepare(corner_seven())
    assert np.allclose(prepare(once), once, rtol=0, atol=1e-12)


def random_drawing(rng: np.random.Generator) -> np.ndarray:
    """A few soft random strokes somewhere on the canvas, at a random size."""
    canvas = np.zeros((GRID, GRID))
    size = rng.integers(2, 27)
    top, left = rng.integers(0, GRID - size + 1, size=2)
    yy, xx = np.mgrid[0:GRID, 0:GRID] + 0.5
    for _ in range(rng.integers(1, 4)):
        (y0, x0), (y1, x1) = rng.uniform(0, size, size=(2, 2)) + (top, left)
        for t in np.linspace(0, 1, 40):
            y, x = y0 + (y1 - y0) * t, x0 + (x1 - x0) * t
            d = np.hypot(yy - y, xx - x)
            canvas = np.maximum(canvas, np.clip((1.6 - d) / 1.0, 0, 1))
    crop = np.zeros((GRID, GRID))
    crop[top : top + size, left : left + size] = canvas[top : top + size, left : left + size]
    return crop


@pytest.mark.parametrize("seed", range(25))
def test_random_drawings_match_the_reference(prepare: Prepare, constants: Constants, seed: int) -> None:
    canvas = random_drawing(np.random.default_rng(seed))
    out = prepare(canvas)
    expected = reference(canvas, constants["FIT"], constants["CENTRE"])
    assert np.allclose(out, expected, atol=1e-12)
    assert out.max() <= 1
    height, width = ink_box(out)
    assert max(height, width) == 20


def test_ink_is_never_pushed_out_of_the_field(prepare: Prepare, constants: Constants) -> None:
    # nearly all the mass at one end: centring it exactly would push the tail off the
    # field, so the shift stops at the edge and the whole digit stays in view
    canvas = np.zeros((GRID, GRID))
    canvas[3:6, 3:25] = 1.0
    canvas[6:25, 3] = 0.05
    out = prepare(canvas)
    assert np.allclose(out, reference(canvas, constants["FIT"], constants["CENTRE"]), atol=1e-12)
    assert ink_box(out) == (20, 20)
    assert out[GRID - 1].any(), "the box is stopped at the bottom edge, not cut off"
    assert centre_of_mass(out)[0] < 13.5, "exact centring would have needed a larger shift"


def test_mnist_digits_are_already_prepared(prepare: Prepare, mnist_dir: Path) -> None:
    # MNIST was made by this very recipe, so its digits must come out untouched: same
    # 20-cell box, same centre of mass cell. This pins the coordinate convention.
    test_set = load_test_set(mnist_dir)
    assert test_set is not None
    images = test_set[0][:300].astype(np.float64)
    for index, image in enumerate(images):
        canvas = image.reshape(GRID, GRID)
        assert np.allclose(prepare(canvas), canvas, rtol=0, atol=1e-12), f"test digit {index} moved"


def test_wrong_canvas_size_is_a_sentence(host: LuauHost) -> None:
    with pytest.raises(
        RuntimeError, match=r"mnistpack: preprocessing: expected a canvas of 784 numbers, found 10"
    ):
        host.run("require(root.client.Preprocessing).prepare(table.create(10, 0))")
