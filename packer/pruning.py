"""Zero the first-layer weights of input pixels that MNIST training images (almost) never light.

Those weights never moved far from their random initial values: they cost bytes and,
when a player draws near the edge of the canvas, add noise the network never learned.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from mnistpack.data import PixelCounts

# A pixel keeps its weights when it is lit in at least this share of the training
# images (0.1%: 60 of 60,000). Measured in docs/quantization.md: larger thresholds
# shrink the module further but start to cost accuracy.
DEFAULT_PRUNE_THRESHOLD: Final = 0.001


def dead_inputs(counts: PixelCounts, threshold: float) -> np.ndarray:
    """bool [inputs]: pixels lit in fewer than `threshold` x (images counted) training images."""
    return np.asarray(counts.lit < threshold * counts.images)


def prune_inputs(weight: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """A copy of `weight` [out, in] with the columns of the `dead` inputs set to 0."""
    pruned = np.array(weight, dtype=np.float32, copy=True)
    pruned[:, dead] = 0
    return pruned
