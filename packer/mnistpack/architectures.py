"""The networks `mnistpack train` builds: the 784-hidden-10 MLP and a small convolutional net.

Both take the 784 pixels of an MNIST image as a vector, so training, evaluation and the
shipped runtime feed them alike; the CNN reshapes them to a 28x28 image of one channel
first. Every kernel starts from zeros in Keras and is filled with Glorot-uniform values
drawn in NumPy (`glorot_init`): on JAX, Keras compiles its random initializer once per
kernel shape, seconds each on 2 cores, and a saved model re-runs its initializers when
loaded. docs/cnn.md records the architectures tried and why `CNN` is the one shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from mnistpack.data import IMAGE_SIDE, INPUT_SIZE, NUM_CLASSES

ARCHITECTURES: Final = ("mlp", "cnn")
# What `mnistpack train` trains when given no --arch: the CNN reads player drawings best
# (docs/cnn.md), and it is the model mnistpack ships as its default.
DEFAULT_ARCH: Final = "cnn"


@dataclass(frozen=True)
class CnnSpec:
    """3x3 valid convolutions (batch norm, relu), the first `pools` of them followed by a 2x2
    max pool, then a flatten or a global average, an optional hidden dense layer and the
    softmax. 28x28 -> 26 -> 13 -> 11 -> 5 -> 3: two pools, at most three convolutions."""

    channels: tuple[int, ...] = (8, 16, 48)
    pools: int = 2
    head: str = "flatten"  # or "average": global average pooling of the last convolution
    hidden: int = 0  # units of a dense layer (batch norm, relu) before the softmax; 0: none

    def __post_init__(self) -> None:
        if not self.channels or min(self.channels) < 1 or self.head not in ("flatten", "average"):
            raise ValueError(f"a CNN needs channels >= 1 and head flatten or average, got {self}.")
        if not 0 <= self.pools <= len(self.channels) or self.hidden < 0:
            raise ValueError(f"pools must be 0 to {len(self.channels)} and hidden >= 0, got {self}.")

    def describe(self) -> str:
        convolutions = "-".join(
            f"c{channels}" + ("p" if number < self.pools else "")
            for number, channels in enumerate(self.channels)
        )
        hidden = f"-d{self.hidden}" if self.hidden else ""
        return f"{convolutions}-{'flat' if self.head == 'flatten' else 'gap'}{hidden}-{NUM_CLASSES}"


# The shipped architecture: docs/cnn.md compares it with the others tried.
CNN: Final = CnnSpec()


def mlp(keras: Any, hidden: int, *, dropout: float) -> Any:
    """784-hidden-10: relu, then (training only) Dropout, then softmax."""
    layers = [keras.Input(shape=(INPUT_SIZE,), name="pixels")]
    layers.append(keras.layers.Dense(hidden, activation="relu", kernel_initializer="zeros", name="hidden"))
    if dropout > 0:
        layers.append(keras.layers.Dropout(dropout, name="dropout"))
    layers.append(
        keras.layers.Dense(NUM_CLASSES, activation="softmax", kernel_initializer="zeros", name="digits")
    )
    return keras.Sequential(layers, name=f"mnist{hidden}")


def cnn(keras: Any, spec: CnnSpec) -> Any:
    """`spec` as a Keras model on the 784 pixels. Batch norm follows each convolution before its
    relu, so the packer folds it into the convolution (mnistpack.keras_model)."""
    layers = keras.layers
    stack = [keras.Input(shape=(INPUT_SIZE,), name="pixels"), layers.Reshape((IMAGE_SIDE, IMAGE_SIDE, 1))]
    for number, channels in enumerate(spec.channels, start=1):
        stack += [
            layers.Conv2D(channels, 3, use_bias=False, kernel_initializer="zeros", name=f"conv{number}"),
            layers.BatchNormalization(name=f"norm{number}"),
            layers.ReLU(name=f"relu{number}"),
        ]
        if number <= spec.pools:
            stack.append(layers.MaxPooling2D(2, name=f"pool{number}"))
    stack.append(
        layers.Flatten(name="flatten") if spec.head == "flatten" else layers.GlobalAveragePooling2D()
    )
    if spec.hidden:
        stack += [
            layers.Dense(spec.hidden, use_bias=False, kernel_initializer="zeros", name="hidden"),
            layers.BatchNormalization(name="hidden_norm"),
            layers.ReLU(name="hidden_relu"),
        ]
    stack.append(layers.Dense(NUM_CLASSES, activation="softmax", kernel_initializer="zeros", name="digits"))
    return keras.Sequential(stack, name=f"mnist-cnn-{spec.describe()}")


def glorot_init(keras: Any, model: Any, seed: int) -> None:
    """Keras' default start for Dense and Conv2D kernels (Glorot-uniform), drawn in NumPy;
    biases and batch norm keep their constant starts."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense | keras.layers.Conv2D):
            weights = layer.get_weights()
            kernel = weights[0]
            receptive = int(np.prod(kernel.shape[:-2]))  # 1 for a dense kernel
            fan_in, fan_out = receptive * kernel.shape[-2], receptive * kernel.shape[-1]
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            weights[0] = rng.uniform(-limit, limit, kernel.shape).astype(np.float32)
            layer.set_weights(weights)
