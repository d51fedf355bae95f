"""mnistpack.trace: images of strokes back to strokes, on shapes whose strokes are known."""

from __future__ import annotations

import numpy as np
from mnistpack.data import Mnist
from mnistpack.strokes import PEN_RADIUS, PEN_SOFTNESS, canvas_segments, render
from mnistpack.trace import image_strokes, skeleton_paths, smooth


def test_nothing_gives_no_strokes() -> None:
    assert image_strokes(np.zeros((28, 28))) == []


def test_a_bar_is_one_stroke_from_end_to_end() -> None:
    image = np.zeros((28, 28))
    image[12:15, 4:24] = 1.0
    (stroke,) = image_strokes(image)
    xs = sorted((stroke[0, 0], stroke[-1, 0]))
    assert xs[0] < 7 and xs[1] > 21
    assert np.allclose(stroke[:, 1], 13.5, atol=1.01)  # thinning may hook an end by a pixel


def test_a_ring_is_one_closed_stroke() -> None:
    rows, cols = np.mgrid[0:28, 0:28]
    distance = np.hypot(rows - 13.5, cols - 13.5)
    image = ((distance > 6) & (distance < 8.5)).astype(float)
    (stroke,) = image_strokes(image)
    assert np.array_equal(stroke[0], stroke[-1])
    radii = np.hypot(stroke[:, 0] - 14, stroke[:, 1] - 14)
    assert len(stroke) > 30 and np.allclose(radii, 7.3, atol=1.2)


def test_a_cross_is_four_arms_from_the_junction() -> None:
    skeleton = np.zeros((9, 9), dtype=bool)
    skeleton[4, :] = True
    skeleton[:, 4] = True
    paths = skeleton_paths(skeleton)
    assert len(paths) == 4
    assert all((4, 4) in (path[0], path[-1]) for path in paths)
    assert sorted(len(path) for path in paths) == [5, 5, 5, 5]


def test_a_lone_pixel_is_a_dot_and_short_spurs_go() -> None:
    skeleton = np.zeros((12, 12), dtype=bool)
    skeleton[2, 2] = True
    assert skeleton_paths(skeleton) == [[(2, 2)]]
    # a long bar with a 1-pixel stub off its middle: the stub is thinning noise
    skeleton[:] = False
    skeleton[6, 1:11] = True
    skeleton[5, 5] = True
    paths = skeleton_paths(skeleton)
    assert all((5, 5) not in path for path in paths)
    assert sum(len(path) for path in paths) == 10 + 1  # the junction pixel ends two paths


def test_smoothing_keeps_the_ends_and_straight_lines() -> None:
    line = np.array([[x, 2 * x] for x in range(6)], dtype=float)
    assert np.array_equal(smooth(line), line)
    zigzag = np.array([[0, 0], [1, 1], [2, 0], [3, 1], [4, 0]], dtype=float)
    smoothed = smooth(zigzag)
    assert np.array_equal(smoothed[[0, -1]], zigzag[[0, -1]])
    assert np.ptp(smoothed[1:-1, 1]) < np.ptp(zigzag[1:-1, 1])


def test_mnist_digits_redrawn_from_their_strokes_look_like_themselves(mnist_data: Mnist) -> None:
    images = mnist_data.train_images[:200]
    overlaps = []
    for image in images:
        # drawn where they were traced (no fitting, no deslanting), with the client's pen
        strokes = [[tuple(p) for p in stroke] for stroke in image_strokes(image.reshape(28, 28))]
        redrawn = render(canvas_segments(strokes), PEN_RADIUS, PEN_SOFTNESS)
        ink, again = image.reshape(28, 28) > 0.5, redrawn > 0.5
        overlaps.append((ink & again).sum() / (ink | again).sum())
    # same digit, same place, another pen: most of the ink is where it was
    assert np.median(overlaps) > 0.6


def test_a_filled_blob_becomes_the_loop_a_pen_would_draw() -> None:
    # the head of a "9" filled in: a disc, with a tail going down
    rows, cols = np.mgrid[0:28, 0:28]
    image = (np.hypot(rows - 9, cols - 14) <= 4.5).astype(float)
    image[9:24, 17:20] = 1.0
    strokes = image_strokes(image)
    loops = [s for s in strokes if np.allclose(s[0], s[-1]) and len(s) > 8]
    assert len(loops) == 1
    radii = np.hypot(loops[0][:, 0] - 14.5, loops[0][:, 1] - 9.5)
    assert 1.5 < radii.mean() < 4.5
    tails = [s for s in strokes if s[:, 1].max() > 20]
    assert tails, "the tail is still a stroke"


def test_a_bold_bar_is_a_stroke_not_a_blob() -> None:
    image = np.zeros((28, 28))
    image[4:25, 11:18] = 1.0  # 7 cells wide, 21 long: bold, not filled
    strokes = image_strokes(image)
    assert not any(np.allclose(s[0], s[-1]) and len(s) > 8 for s in strokes)
    assert max(np.ptp(s[:, 1]) for s in strokes) > 12
