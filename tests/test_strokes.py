"""Preprocessing.fromStrokes (Luau) and its NumPy twin mnistpack.strokes.from_strokes.

The two must agree on every drawing (the port is operation for operation, so in practice
bit for bit; the stated tolerance is 1e-9): random drawings from hypothesis, and the odd
ones a player or a bug can produce. The NumPy side is also checked on its own promises:
the pen's width does not depend on the drawing's size, the ink's box is the 20x20 box,
the centre of mass lands within half a cell of (14, 14).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mnistpack import strokes as S
from mnistpack.luau_runtime import luau_from_strokes
from mnistpack.strokes import Strokes, from_strokes

from tests.luau_host import LuauHost

TOLERANCE = 1e-9  # the issue asks for 1e-6; the port is meant to be exact


@pytest.fixture(scope="module")
def host() -> LuauHost:
    return LuauHost()


def both(host: LuauHost, drawings: Sequence[Strokes]) -> tuple[np.ndarray, np.ndarray]:
    luau = luau_from_strokes(host, drawings)
    numpy = np.array([from_strokes(d) for d in drawings]).reshape(len(drawings), S.GRID * S.GRID)
    return luau, numpy


def assert_same(host: LuauHost, drawings: Sequence[Strokes]) -> np.ndarray:
    luau, numpy = both(host, drawings)
    assert np.abs(luau - numpy).max(initial=0) <= TOLERANCE
    return numpy


def test_constants_agree_with_the_client(host: LuauHost) -> None:
    names = ("GRID", "FIT", "CENTRE", "STROKE_BOX", "PEN_RADIUS", "PEN_SOFTNESS", "MIN_EXTENT", "MAX_COORD")
    names += ("MAX_SLANT",)
    table = host.run("return require(root.client.Constants)")[0]
    for name in names:
        assert table.get(name) == getattr(S, name), name


coordinate = st.floats(min_value=-4, max_value=32, allow_nan=False)
point = st.tuples(coordinate, coordinate)
drawing = st.lists(st.lists(point, min_size=1, max_size=12), min_size=0, max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawings=st.lists(drawing, min_size=1, max_size=8))
def test_luau_and_numpy_agree_on_random_drawings(host: LuauHost, drawings: list[Strokes]) -> None:
    assert_same(host, drawings)


def digit_like(rng: np.random.Generator) -> Strokes:
    """A few smooth curves somewhere on the canvas, at any size, sampled like mouse events."""
    size = rng.uniform(5, 28)
    x0, y0 = rng.uniform(0, 28 - size, size=2)
    found = []
    for _ in range(rng.integers(1, 4)):
        t = np.linspace(0, 1, rng.integers(2, 40))
        a, b, c = rng.uniform(0, 1, size=(3, 2))
        curve = (1 - t)[:, None] ** 2 * a + 2 * ((1 - t) * t)[:, None] * b + (t**2)[:, None] * c
        found.append([(x0 + size * x, y0 + size * y) for x, y in curve])
    return found


def test_luau_and_numpy_agree_on_digit_like_drawings(host: LuauHost) -> None:
    rng = np.random.default_rng(9)
    out = assert_same(host, [digit_like(rng) for _ in range(300)])
    assert (out.max(axis=1) == 1.0).all()


ODD: dict[str, Strokes] = {
    "empty": [],
    "an empty stroke": [[]],
    "a single point": [[(14.0, 14.0)]],
    "a dot of identical points": [[(3.0, 7.0)] * 9],
    "a tap smaller than MIN_EXTENT": [[(10.0, 10.0), (10.4, 10.5)]],
    "wholly outside": [[(-5.0, -5.0), (-1.0, -9.0)], [(30.0, 2.0), (40.0, 20.0)]],
    "partly outside": [[(-10.0, 14.0), (14.0, 14.0), (14.0, 50.0)]],
    "huge values": [[(1e300, -1e300), (5.0, 5.0), (20.0, 20.0), (-1e308, 3.0)]],
    "infinities": [[(math.inf, 1.0), (5.0, 5.0), (5.0, 22.0), (-math.inf, -math.inf)]],
    "NaN": [[(math.nan, 3.0), (4.0, 4.0), (20.0, 6.0), (math.nan, math.nan), (4.0, 22.0)]],
    "all NaN": [[(math.nan, math.nan)] * 3],
    "on the edge": [[(0.0, 0.0), (28.0, 28.0)]],
    "a vertical line": [[(14.0, 3.0), (14.0, 25.0)]],
    "a horizontal line": [[(2.0, 9.0), (26.0, 9.0)]],
}


def test_luau_and_numpy_agree_on_odd_drawings(host: LuauHost) -> None:
    assert_same(host, list(ODD.values()))


@pytest.mark.parametrize(
    "name",
    [
        "empty",
        "an empty stroke",
        "a single point",
        "a dot of identical points",
        "a tap smaller than MIN_EXTENT",
    ]
    + ["wholly outside", "all NaN"],
)
def test_nothing_to_read_gives_the_empty_input(name: str) -> None:
    assert not from_strokes(ODD[name]).any()


@pytest.mark.parametrize("name", ["partly outside", "huge values", "infinities", "NaN", "on the edge"])
def test_odd_points_still_leave_a_readable_drawing(name: str) -> None:
    out = from_strokes(ODD[name])
    assert out.max() == 1.0 and out.min() == 0.0


def test_luau_never_raises_on_garbage(host: LuauHost) -> None:
    (count,) = host.run(
        """
        local P = require(root.client.Preprocessing)
        local inputs = { nil, 5, "x", {}, { 1, 2 }, { { 1 } }, { { { x = "a", y = 2 } } },
            { { { x = 1 } } }, { { { x = 0 / 0, y = 1 }, { x = 3, y = 9 } } } }
        local zeros = 0
        for i = 1, 9 do
            local out = P.fromStrokes(inputs[i])
            local sum = 0
            for _, v in out do sum += v end
            if #out == 784 and sum == 0 then zeros += 1 end
        end
        return zeros
        """
    )
    assert count == 9


def test_pen_width_does_not_depend_on_drawing_size() -> None:
    # a "+" (no slant to take out), drawn tiny and huge, anywhere
    widths = []
    for size, corner in ((3.0, (2.0, 2.0)), (9.0, (15.0, 4.0)), (27.0, (0.5, 0.5))):
        x, y = corner
        drawing = [
            [(x + size / 2, y), (x + size / 2, y + size)],
            [(x, y + size / 2), (x + size, y + size / 2)],
        ]
        image = from_strokes(drawing).reshape(28, 28)
        # ink across the vertical stroke, in a row above the crossing
        widths.append(image[8].sum())
    assert widths[0] > 2 and max(widths) - min(widths) < 1e-9


def test_box_is_fit_cells_and_centre_of_mass_is_centred() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        image = from_strokes(digit_like(rng)).reshape(28, 28)
        rows, cols = np.nonzero(image > 0)
        assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 in (S.FIT, S.FIT + 1)
        mass = image.sum()
        r = (image.sum(axis=1) * np.arange(28)).sum() / mass
        c = (image.sum(axis=0) * np.arange(28)).sum() / mass
        assert abs(r - S.CENTRE) <= 0.5 + 1e-9 and abs(c - S.CENTRE) <= 0.5 + 1e-9


def test_where_and_how_big_the_player_drew_does_not_matter() -> None:
    # the same shape moved and scaled by powers of two (exact in floating point) gives the same input
    shape = [[(0.0, 0.0), (4.0, 0.0), (1.0, 8.0)], [(1.0, 4.0), (3.5, 4.0)]]
    images = [
        from_strokes([[(dx + k * x, dy + k * y) for x, y in stroke] for stroke in shape])
        for k, dx, dy in ((0.5, 1.0, 1.0), (1.0, 20.0, 3.0), (2.0, 6.0, 8.0), (3.0, 4.0, 2.0))
    ]
    for image in images[1:]:
        assert np.abs(image - images[0]).max() < 1e-9


def sheared(drawing: Strokes, lean: float) -> Strokes:
    return [[(x + lean * (y - 14.0), y) for x, y in stroke] for stroke in drawing]


def test_a_slant_is_taken_out() -> None:
    # a "4" written upright and the same "4" leaning either way read (nearly) the same: the
    # slant is measured along the strokes, whose lengths a shear changes a little
    four = [[(16.0, 5.0), (8.0, 17.0), (20.0, 17.0)], [(16.0, 5.0), (16.0, 24.0)]]
    upright = from_strokes(four)
    for lean in (-0.4, 0.3):
        segments = S.canvas_segments(sheared(four, lean))
        assert abs(S.slant(S.deslanted(segments))) < 0.05 * abs(S.slant(segments))
        difference = np.abs(from_strokes(sheared(four, lean)) - upright)
        assert difference.max() < 0.1 and difference.mean() < 0.01


def test_an_extreme_slant_is_corrected_only_up_to_max_slant() -> None:
    line = [[(2.0, 14.0), (26.0, 16.0)]]  # nearly flat: its "slant" is 12
    assert S.slant(S.canvas_segments(line)) == S.MAX_SLANT


def test_runtime_reads_drawings_as_the_client_does(tiny_model: Path, tmp_path: Path) -> None:
    from mnistpack.build import build
    from mnistpack.luau_runtime import LuauRuntime

    report = build(model=tiny_model, precision="int8", out_dir=tmp_path, compression="zstd", data_dir=None)
    runtime = LuauRuntime({str(p.relative_to(tmp_path)): p.read_text(encoding="utf-8") for p in report.files})
    rng = np.random.default_rng(3)
    drawings = [digit_like(rng) for _ in range(30)] + [ODD["empty"], ODD["NaN"]]
    done: list[int] = []
    via_strokes = runtime.predict_strokes(drawings, progress=done.append)
    via_inputs = runtime.predict_inputs(np.array([from_strokes(d) for d in drawings]))
    assert done == [len(drawings)]
    assert np.array_equal(via_strokes.digits, via_inputs.digits)
    assert np.abs(via_strokes.probabilities - via_inputs.probabilities).max() < 1e-9
    assert runtime.sure_threshold is None  # the tiny model was never calibrated
