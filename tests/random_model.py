"""An untrained Keras model file with fixed random weights: build tests need no MNIST data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mnistpack.model import import_keras


def random_arrays(hidden: int, seed: int = 3) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(weight [out, in], bias, activation) of a 784-hidden-10 network with trained-looking scales."""
    rng = np.random.default_rng(seed)
    return [
        (
            rng.normal(0, 0.05, (hidden, 784)).astype(np.float32),
            rng.normal(0, 0.05, hidden).astype(np.float32),
            "relu",
        ),
        (
            rng.normal(0, 0.3, (10, hidden)).astype(np.float32),
            rng.normal(0, 0.1, 10).astype(np.float32),
            "softmax",
        ),
    ]


def save_random_model(path: Path, hidden: int) -> Path:
    """Save `random_arrays(hidden)` as a Keras 784-hidden-10 model at `path`."""
    keras = import_keras()
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.set_weights([array for weight, bias, _ in random_arrays(hidden) for array in (weight.T, bias)])
    model.save(path)
    return path
