"""An image of a digit -> the strokes a pen would have made: skeletonize, then walk the skeleton.

The skeleton (scikit-image's `skeletonize`, Zhang's thinning) is read as a graph of
8-connected pixels; a diagonal link is dropped where an orthogonal two-step path joins the
same pixels, so corners do not form little triangles. Every run of pixels between two
ends or junctions becomes one stroke; a loop with no junction (an "0") becomes one closed
stroke; a lone pixel a dot. Stubs shorter than SPUR_PIXELS that hang off a junction are
thinning noise and are dropped. The pixel staircase is then smoothed a little, as a hand
moving a pen would draw it.

Points are (x, y) in the image's cell units, x to the right, y down, pixel (r, c) centred
at (c + 0.5, r + 0.5): the coordinates `strokes.from_strokes` takes.
"""

from __future__ import annotations

from typing import Final

import numpy as np

THRESHOLD: Final = 0.5  # ink above this (0..1) is pen; MNIST's anti-aliased rim is not
SPUR_PIXELS: Final = 3  # a branch this short, from a junction to a free end, is a thinning artefact
SMOOTHING_PASSES: Final = 2  # [1, 2, 1] / 4 averages along each stroke, ends kept
BLOB_RADIUS: Final = 2.9  # cells from the background: MNIST's strokes are 2-3 cells wide
BLOB_EXTENT: Final = 7  # cells: a deep patch longer than this is a bold stroke, not a blob
OUTLINE_DEPTH: Final = 1.5  # cells inside a blob's edge, where its loop is drawn

Pixel = tuple[int, int]
_NEIGHBOURS: Final = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def image_strokes(image: np.ndarray, threshold: float = THRESHOLD) -> list[np.ndarray]:
    """The strokes of a 2-D image (values 0..1) as float64 [k, 2] arrays of (x, y) points."""
    from skimage.morphology import skeletonize

    ink = np.asarray(image) > threshold
    blobs = blob_regions(ink)
    outlines = blob_outlines(ink, blobs)
    skeleton = skeletonize(ink & ~blobs)  # type: ignore[no-untyped-call]
    paths = [np.array([(c + 0.5, r + 0.5) for r, c in path], np.float64) for path in skeleton_paths(skeleton)]
    return [smooth(path) for path in paths] + outlines


def blob_regions(ink: np.ndarray) -> np.ndarray:
    """Where the ink is a filled blob rather than a stroke: bool, same shape as `ink`.

    A pen loop drawn small and fat (the head of a "9", a loop of an "8") fills in on the
    scan; its skeleton is a line, and a loop read as a line makes a "9" a "7". A blob is
    ink farther than BLOB_RADIUS from any background pixel, in a compact patch (at most
    BLOB_EXTENT across: a long one is a bold stroke, whose skeleton is right), grown back to
    the ink around it.
    """
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(ink)
    labelled, count = ndimage.label(depth >= BLOB_RADIUS)
    cores = np.zeros_like(ink)
    for index, found in enumerate(ndimage.find_objects(labelled), start=1):
        if found is not None and max(s.stop - s.start for s in found) <= BLOB_EXTENT:
            cores |= labelled == index
    if not cores.any():
        return cores
    near: np.ndarray = ink & (ndimage.distance_transform_edt(~cores) <= BLOB_RADIUS + 1)
    return near


def blob_outlines(ink: np.ndarray, blobs: np.ndarray) -> list[np.ndarray]:
    """Each blob as the loop a pen would have drawn: the line OUTLINE_DEPTH inside its edge."""
    if not blobs.any():
        return []
    from scipy import ndimage
    from skimage.measure import find_contours

    depth = np.where(ndimage.binary_dilation(blobs), ndimage.distance_transform_edt(ink), 0.0)
    loops = find_contours(np.pad(depth, 1), OUTLINE_DEPTH)  # type: ignore[no-untyped-call]
    # contours come as (row, column) of pixel centres, padded by one: to (x, y) cell units
    return [np.stack([loop[:, 1] - 0.5, loop[:, 0] - 0.5], axis=1) for loop in loops if len(loop) >= 4]


def skeleton_paths(skeleton: np.ndarray) -> list[list[Pixel]]:
    """The skeleton's strokes as lists of (row, column) pixels, in a fixed order."""
    pixels = {(int(r), int(c)) for r, c in zip(*np.nonzero(skeleton), strict=True)}
    links = {pixel: _linked(pixel, pixels) for pixel in sorted(pixels)}
    walked: set[frozenset[Pixel]] = set()
    paths: list[list[Pixel]] = []
    nodes = [pixel for pixel, near in links.items() if len(near) != 2]
    for node in nodes:
        if not links[node]:
            paths.append([node])
        for step in links[node]:
            if frozenset((node, step)) not in walked:
                paths.append(_walk(node, step, links, walked))
    # what is left are loops through pixels with two links each
    for pixel in links:
        for step in links[pixel]:
            if frozenset((pixel, step)) not in walked:
                paths.append(_walk(pixel, step, links, walked))
    return _without_spurs(paths, links)


def _linked(pixel: Pixel, pixels: set[Pixel]) -> list[Pixel]:
    r, c = pixel
    near = []
    for dr, dc in _NEIGHBOURS:
        other = (r + dr, c + dc)
        if other not in pixels:
            continue
        # a diagonal step that an orthogonal pair of steps also makes is redundant
        if dr and dc and ((r + dr, c) in pixels or (r, c + dc) in pixels):
            continue
        near.append(other)
    return near


def _walk(
    start: Pixel, step: Pixel, links: dict[Pixel, list[Pixel]], walked: set[frozenset[Pixel]]
) -> list[Pixel]:
    path = [start, step]
    walked.add(frozenset((start, step)))
    while len(links[path[-1]]) == 2:
        here = path[-1]
        ahead = [p for p in links[here] if frozenset((here, p)) not in walked]
        if not ahead:
            break  # back at the start of a loop
        walked.add(frozenset((here, ahead[0])))
        path.append(ahead[0])
    return path


def _without_spurs(paths: list[list[Pixel]], links: dict[Pixel, list[Pixel]]) -> list[list[Pixel]]:
    if len(paths) < 2:
        return paths

    def spur(path: list[Pixel]) -> bool:
        ends = sorted((len(links[path[0]]), len(links[path[-1]])))
        return len(path) <= SPUR_PIXELS and ends[0] == 1 and ends[1] >= 3

    kept = [path for path in paths if not spur(path)]
    return kept or paths


def smooth(points: np.ndarray, passes: int = SMOOTHING_PASSES) -> np.ndarray:
    """[1, 2, 1] / 4 moving averages along a stroke; its ends stay put (a loop's too)."""
    out = points.copy()
    for _ in range(passes):
        if len(out) < 3:
            break
        out[1:-1] = (out[:-2] + 2 * out[1:-1] + out[2:]) / 4
    return out
