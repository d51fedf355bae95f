"""A trained network reduced to what mnistpack ships: the layers of FORMAT.md section 3.2.

Weights are stored the way FORMAT.md and the Luau runtime read them: a dense weight is
[out, in], one row per output neuron (the Keras kernel transposed), a convolution kernel
[out, kh, kw, in]. `Network.predict` is the NumPy reference forward pass the Luau side
is tested against; `keras_model.load_network` reads a Keras file into a Network.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from mnistpack.constants import ACTIVATIONS, MAX_DIM, MAX_LAYERS, PADDINGS
from mnistpack.data import IMAGE_SIDE
from mnistpack.errors import FormatError, ModelError
from mnistpack.shapes import Geometry, Shape, network_shapes, span

BACKEND_ENV_VAR: Final = "KERAS_BACKEND"
DEFAULT_BACKEND: Final = "jax"
# What `predict` feeds the layers at once: bounds the convolution windows' memory.
PREDICT_CHUNK: Final = 1000
# What a convolutional network reads: an MNIST image, 28x28 of one channel (a dense one
# reads the same 784 values as [28, 28], as format version 1 says).
IMAGE_SHAPE: Final = (IMAGE_SIDE, IMAGE_SIDE, 1)


def ensure_keras_backend() -> None:
    """Pick JAX unless the user chose a backend; must run before the first `import keras`."""
    if not os.environ.get(BACKEND_ENV_VAR):
        os.environ[BACKEND_ENV_VAR] = DEFAULT_BACKEND


def import_keras() -> Any:
    """Import Keras with the backend chosen by ensure_keras_backend (the one place that does)."""
    ensure_keras_backend()
    import keras

    return keras


def _label(name: str) -> str:
    return f"Layer '{name}'" if name else "A layer"


def _check_weights(name: str, weight: np.ndarray, bias: np.ndarray, rank: int, activation: str) -> None:
    label = _label(name)
    if weight.dtype != np.float32 or weight.ndim != rank:
        raise ModelError(
            f"{label} has a {weight.dtype} weight of shape {weight.shape}, expected {rank}-D float32."
        )
    if not all(1 <= dim <= MAX_DIM for dim in weight.shape):
        raise ModelError(f"{label} has a weight of shape {weight.shape}; every size must be 1..{MAX_DIM}.")
    outputs = weight.shape[0]
    if bias.dtype != np.float32 or bias.shape != (outputs,):
        raise ModelError(
            f"{label} has a {bias.dtype} bias of shape {bias.shape}, expected float32 ({outputs},)."
        )
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise ModelError(f"{label} has NaN or infinite weights; retrain or fix the model.")
    if activation not in ACTIVATIONS:
        raise ModelError(f"{label} uses activation '{activation}'; supported: {', '.join(ACTIVATIONS)}.")


def _check_window(name: str, strides: tuple[int, int], padding: str, pool_size: tuple[int, int]) -> None:
    if not all(1 <= value <= MAX_DIM for value in (*strides, *pool_size)):
        raise ModelError(f"{_label(name)} has strides {strides} or window {pool_size} outside 1..{MAX_DIM}.")
    if padding not in PADDINGS:
        raise ModelError(f"{_label(name)} uses padding '{padding}'; supported: {', '.join(PADDINGS)}.")


@dataclass(frozen=True)
class DenseLayer:
    weight: np.ndarray  # float32 [out, in] row-major: Keras kernel TRANSPOSED
    bias: np.ndarray  # float32 [out]
    activation: str  # one of constants.ACTIVATIONS
    name: str = ""  # the Keras layer name, for messages
    kind: str = "dense"

    def __post_init__(self) -> None:
        _check_weights(self.name, self.weight, self.bias, 2, self.activation)

    def geometry(self) -> Geometry:
        return Geometry(self.kind, self.weight.shape)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """What the activation gets: W x + b."""
        logits: np.ndarray = x.reshape(len(x), -1) @ self.weight.T + self.bias
        return logits

    def forward(self, x: np.ndarray) -> np.ndarray:
        return _ACTIVATION_FUNCTIONS[self.activation](self.logits(x))


@dataclass(frozen=True)
class Conv2DLayer:
    kernel: np.ndarray  # float32 [out, kh, kw, in]: Keras kernel [kh, kw, in, out] with out moved first
    bias: np.ndarray  # float32 [out]
    strides: tuple[int, int]
    padding: str  # one of constants.PADDINGS
    activation: str
    name: str = ""
    kind: str = "conv2d"

    def __post_init__(self) -> None:
        _check_weights(self.name, self.kernel, self.bias, 4, self.activation)
        _check_window(self.name, self.strides, self.padding, (1, 1))

    @property
    def weight(self) -> np.ndarray:
        return self.kernel

    def geometry(self) -> Geometry:
        return Geometry(self.kind, self.kernel.shape, strides=self.strides, padding=self.padding)

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, kh, kw, channels = self.kernel.shape
        windows = _windows(x, (kh, kw), self.strides, self.padding, 0.0)  # [N, OH, OW, C, kh, kw]
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(*windows.shape[:3], kh * kw * channels)
        flat_kernel = self.kernel.reshape(out, kh * kw * channels)
        return _ACTIVATION_FUNCTIONS[self.activation](patches @ flat_kernel.T + self.bias)


@dataclass(frozen=True)
class Pool2DLayer:
    kind: str  # "maxpool2d" or "avgpool2d"
    pool_size: tuple[int, int]
    strides: tuple[int, int]
    padding: str
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("maxpool2d", "avgpool2d"):
            raise ModelError(f"{_label(self.name)} is a '{self.kind}', not maxpool2d or avgpool2d.")
        _check_window(self.name, self.strides, self.padding, self.pool_size)

    def geometry(self) -> Geometry:
        return Geometry(self.kind, (), self.pool_size, self.strides, self.padding)

    def forward(self, x: np.ndarray) -> np.ndarray:
        # padding positions never count: -inf loses every max, NaN is left out of the mean
        fill = -np.inf if self.kind == "maxpool2d" else np.nan
        windows = _windows(x, self.pool_size, self.strides, self.padding, fill)
        if self.kind == "maxpool2d":
            result: np.ndarray = windows.max(axis=(4, 5))
        else:
            result = np.nanmean(windows, axis=(4, 5)) if self.padding == "same" else windows.mean(axis=(4, 5))
        return result.astype(np.float32)


@dataclass(frozen=True)
class GlobalAvgPool2DLayer:
    name: str = ""
    kind: str = "global_avgpool2d"

    def geometry(self) -> Geometry:
        return Geometry(self.kind)

    def forward(self, x: np.ndarray) -> np.ndarray:
        result: np.ndarray = x.mean(axis=(1, 2), dtype=np.float32)
        return result


@dataclass(frozen=True)
class FlattenLayer:
    name: str = ""
    kind: str = "flatten"

    def geometry(self) -> Geometry:
        return Geometry(self.kind)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1)


Layer = DenseLayer | Conv2DLayer | Pool2DLayer | GlobalAvgPool2DLayer | FlattenLayer
WeightedLayer = DenseLayer | Conv2DLayer


@dataclass(frozen=True)
class Network:
    layers: tuple[Layer, ...]
    source_sha256: str  # sha256 hex of the model file bytes
    input_shape: Shape = (IMAGE_SIDE, IMAGE_SIDE)  # what the first layer reads (FORMAT.md 3.3)
    # meta.calibration's temperature: a final softmax takes logits / temperature
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= len(self.layers) <= MAX_LAYERS:
            raise ModelError(f"The model has {len(self.layers)} layers to ship, expected 1..{MAX_LAYERS}.")
        if not any(isinstance(layer, DenseLayer | Conv2DLayer) for layer in self.layers):
            raise ModelError("The model has no Dense or Conv2D layer, so nothing to ship.")
        try:
            shapes = self.shapes()
        except FormatError as exc:
            raise ModelError(f"The layers do not fit together: {exc}") from exc
        for layer, shape in zip(self.layers, shapes, strict=True):
            if getattr(layer, "activation", "") == "softmax" and len(shape) != 1:
                raise ModelError(
                    f"{_label(layer.name)} applies softmax to a {list(shape)} output; not supported."
                )
        if len(shapes[-1]) != 1:
            raise ModelError(
                f"The model's output has shape {list(shapes[-1])}; it must be a vector of classes."
            )

    def shapes(self) -> list[Shape]:
        """Each layer's output shape (FORMAT.md section 3.3)."""
        return network_shapes([layer.geometry() for layer in self.layers], self.input_shape)

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)

    @property
    def output_size(self) -> int:
        return self.shapes()[-1][0]

    @property
    def weighted(self) -> list[WeightedLayer]:
        """The layers that have tensors, in order."""
        return [layer for layer in self.layers if isinstance(layer, DenseLayer | Conv2DLayer)]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """NumPy float32 forward pass: images [N, 784] in 0..1 -> outputs [N, out]."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"predict wants [N, {self.input_size}] images, got shape {x.shape}.")
        chunks = [
            self._forward(x[start : start + PREDICT_CHUNK]) for start in range(0, len(x), PREDICT_CHUNK)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.output_size), np.float32)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        x = x.reshape(len(x), *self.input_shape)
        for layer in self.layers[:-1]:
            x = layer.forward(x)
        last = self.layers[-1]
        if isinstance(last, DenseLayer) and last.activation == "softmax" and self.temperature != 1:
            return _softmax(last.logits(x), self.temperature)
        return last.forward(x)


def dense_stack_from_arrays(
    layers: Sequence[tuple[np.ndarray, np.ndarray, str]],
    *,
    source_sha256: str = "0" * 64,
    temperature: float = 1.0,
) -> Network:
    """Build a checked network of dense layers from (weight [out, in], bias [out], activation) triples."""
    built = []
    for index, (weight, bias, activation) in enumerate(layers):
        built.append(
            DenseLayer(
                weight=frozen_float32(weight),
                bias=frozen_float32(bias),
                activation=activation,
                name=f"dense_{index}",
            )
        )
    return Network(layers=tuple(built), source_sha256=source_sha256, temperature=temperature)


def frozen_float32(array: np.ndarray) -> np.ndarray:
    """A read-only C-ordered float32 copy: layers never share or change their arrays."""
    out = np.array(array, dtype=np.float32, order="C", copy=True)
    out.setflags(write=False)
    return out


def _windows(
    x: np.ndarray, size: tuple[int, int], strides: tuple[int, int], padding: str, fill: float
) -> np.ndarray:
    """[N, H, W, C] -> strided view [N, OH, OW, C, kh, kw] of every window, padding filled with `fill`."""
    _, height, width, _ = x.shape
    down = span(height, size[0], strides[0], padding)
    across = span(width, size[1], strides[1], padding)
    assert down is not None and across is not None  # Network checked the shapes
    bottom = (down.outputs - 1) * strides[0] + size[0] - height - down.before
    right = (across.outputs - 1) * strides[1] + size[1] - width - across.before
    padded = np.pad(
        x,
        ((0, 0), (down.before, max(bottom, 0)), (across.before, max(right, 0)), (0, 0)),
        constant_values=fill,
    )
    view = np.lib.stride_tricks.sliding_window_view(padded, size, axis=(1, 2))
    return view[:, :: strides[0], :: strides[1]][:, : down.outputs, : across.outputs]


def _softmax(x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    shifted: np.ndarray = np.exp((x - x.max(axis=-1, keepdims=True)) / np.float32(temperature))
    probabilities: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return probabilities


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-log(1 + e^-x)) never overflows, unlike 1 / (1 + exp(-x)) for very negative x.
    value: np.ndarray = np.exp(-np.logaddexp(np.float32(0), -x))
    return value.astype(np.float32)


_ACTIVATION_FUNCTIONS: Final[dict[str, Callable[[np.ndarray], np.ndarray]]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, np.float32(0)),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softmax": _softmax,
}
