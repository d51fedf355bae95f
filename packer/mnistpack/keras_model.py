"""Read a Keras model file into a Network: the layers mnistpack ships, as they compute at inference.

BatchNormalization is folded into the Conv2D or Dense layer before it, a separate
Activation (or ReLU, Softmax) layer into the layer it follows, a Reshape or Flatten
before any other layer into the input's shape, and layers that do nothing at inference
(Dropout, noise, random augmentation) are dropped. Anything else is refused with one
sentence naming the layer.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from mnistpack.data import INPUT_SIZE
from mnistpack.errors import ModelError
from mnistpack.model import (
    IMAGE_SHAPE,
    Conv2DLayer,
    DenseLayer,
    FlattenLayer,
    GlobalAvgPool2DLayer,
    Layer,
    Network,
    Pool2DLayer,
    frozen_float32,
    import_keras,
)
from mnistpack.shapes import Shape

MODEL_SUFFIXES: Final = (".keras", ".h5", ".hdf5")
FLOAT64_WARNING: Final = "Explicitly requested dtype float64"
SUPPORTED_LAYERS: Final = (
    "mnistpack packs stacks of Dense, Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D "
    "and Flatten layers (BatchNormalization and activation layers are folded in, Dropout and other "
    "training-only layers dropped)"
)
# Layers that are the identity at inference: Keras only applies them in training.
INFERENCE_NO_OPS: Final = (
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
    "RandomFlip",
    "RandomRotation",
    "RandomTranslation",
    "RandomZoom",
    "RandomContrast",
    "RandomBrightness",
)
POOLING: Final = {"MaxPooling2D": "maxpool2d", "AveragePooling2D": "avgpool2d"}


def load_network(path: Path) -> Network:
    """Load a Keras model file and reduce it to a Network, or say in one sentence why not."""
    if path.is_dir():
        raise ModelError(f"Model path {path} is a folder; expected a .keras file.")
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(f"Model file {path} does not exist.") from exc
    except OSError as exc:
        raise ModelError(f"Cannot read model file {path}: {exc.strerror or exc}.") from exc
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelError(f"{path} is not a Keras model file: expected a .keras file (or a legacy .h5).")
    model = _load_keras_model(path)
    try:
        return network_from_keras(model, source_sha256=hashlib.sha256(raw).hexdigest())
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc


def network_from_keras(model: Any, *, source_sha256: str) -> Network:
    """The Network a loaded Keras model computes at inference."""
    keras = import_keras()
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError) as exc:
        raise ModelError("The model was never built, so its input size is unknown.") from exc
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"The model has {len(inputs)} inputs and {len(outputs)} outputs, expected one of each."
        )
    shape: Shape = tuple(inputs[0].shape[1:])
    if None in shape:
        raise ModelError(f"The model takes inputs of shape {list(shape)}, expected a fixed 28x28 image.")
    layers: list[Layer] = []
    previous = inputs[0]
    # a Sequential model is a plain stack by construction (and Keras gives its layers one
    # node per build, so `layer.input` may name an older build's tensor)
    sequential = isinstance(model, keras.Sequential)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if not sequential:
            _check_chain(layer, previous)
            previous = layer.output
        if type(layer) is keras.layers.Reshape and not layers:
            # before any other layer, a reshape only says how the input is laid out
            shape = tuple(layer.output.shape[1:])
            continue
        _translate(keras, layer, layers)
    if not layers:
        raise ModelError(f"The model has no layer to ship; {SUPPORTED_LAYERS}.")
    if math.prod(shape) != INPUT_SIZE:
        raise ModelError(
            f"The model takes inputs of shape {list(shape)}, expected {INPUT_SIZE} values (28x28 pixels)."
        )
    if isinstance(layers[0], DenseLayer):
        # a dense first layer reads the 784 values whatever their shape: [28, 28], as in version 1
        shape = IMAGE_SHAPE[:2]
    elif shape != IMAGE_SHAPE:
        raise ModelError(
            f"The model's first layer is a {layers[0].kind}, which reads a 28x28 image of one channel: "
            f"its input must have shape {list(IMAGE_SHAPE)}, not {list(shape)}."
        )
    return Network(layers=tuple(layers), source_sha256=source_sha256, input_shape=shape)


def _load_keras_model(path: Path) -> Any:
    keras = import_keras()
    try:
        with warnings.catch_warnings():
            # JAX holds float64 weights as float32 and warns once per array; mnistpack packs
            # float32 at most, so the model loses nothing it would have kept
            warnings.filterwarnings("ignore", FLOAT64_WARNING, UserWarning)
            model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises bare ValueError/OSError/TypeError for bad files.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path} is not a Keras model that Keras can load ({reason}).") from exc
    if not isinstance(model, keras.Model):
        raise ModelError(f"{path} holds a {type(model).__name__}, not a Keras model.")
    return model


def _check_chain(layer: Any, previous: Any) -> None:
    """Only a plain stack is supported: each layer reads the output of the one before."""
    try:
        source = layer.input
    except (AttributeError, ValueError) as exc:  # a layer called more than once has no single input
        raise ModelError(f"Layer '{layer.name}' is used more than once; {SUPPORTED_LAYERS}.") from exc
    if source is not previous:
        raise ModelError(
            f"Layer '{layer.name}' does not read the output of the layer before it; only plain "
            "stacks of layers (no branches or skip connections) are supported."
        )


def _translate(keras: Any, layer: Any, layers: list[Layer]) -> None:
    """Append what `layer` computes at inference to `layers`, folding it in where it belongs."""
    kind = type(layer).__name__
    if kind in INFERENCE_NO_OPS and type(layer) is getattr(keras.layers, kind, None):
        return
    if type(layer) is keras.layers.Dense and not getattr(layer, "quantization_mode", None):
        if len(layer.input.shape) != 2:
            shape = list(layer.input.shape[1:])
            raise ModelError(f"Dense layer '{layer.name}' gets a {shape} input; put a Flatten before it.")
        layers.append(_dense_layer(keras, layer))
    elif type(layer) is keras.layers.Conv2D:
        layers.append(_conv_layer(keras, layer))
    elif type(layer) is keras.layers.BatchNormalization:
        layers[-1:] = [_fold_batch_norm(keras, layer, layers[-1] if layers else None)]
    elif type(layer) in (keras.layers.Activation, keras.layers.ReLU, keras.layers.Softmax):
        activation = _activation_of(keras, layer)
        if activation != "linear":
            layers[-1:] = [_with_activation(layer, layers[-1] if layers else None, activation)]
    elif kind in POOLING and type(layer) is getattr(keras.layers, kind):
        _channels_last(layer)
        layers.append(
            Pool2DLayer(
                kind=POOLING[kind],
                pool_size=_pair(layer.pool_size),
                strides=_pair(layer.strides if layer.strides is not None else layer.pool_size),
                padding=layer.padding,
                name=layer.name,
            )
        )
    elif type(layer) is keras.layers.GlobalAveragePooling2D:
        _channels_last(layer)
        if layer.keepdims:
            raise ModelError(
                f"Layer '{layer.name}' keeps its pooled dimensions (keepdims=True); not supported."
            )
        layers.append(GlobalAvgPool2DLayer(name=layer.name))
    elif type(layer) is keras.layers.Flatten:
        # before any other layer it changes nothing: the first dense layer reads the image as it is
        if layers:
            layers.append(FlattenLayer(name=layer.name))
    else:
        raise ModelError(f"Layer '{layer.name}' is a {kind}; {SUPPORTED_LAYERS}.")


def _dense_layer(keras: Any, layer: Any) -> DenseLayer:
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    return DenseLayer(
        weight=frozen_float32(np.asarray(kernel).T),
        bias=_bias(keras, layer, layer.units),
        activation=_function_name(layer.activation),
        name=layer.name,
    )


def _conv_layer(keras: Any, layer: Any) -> Conv2DLayer:
    _channels_last(layer)
    if tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1:
        raise ModelError(
            f"Conv2D layer '{layer.name}' uses dilation {tuple(layer.dilation_rate)} or {layer.groups} "
            "groups; only plain convolutions (dilation 1, one group) are supported."
        )
    kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel))  # [kh, kw, in, out]
    return Conv2DLayer(
        kernel=frozen_float32(kernel.transpose(3, 0, 1, 2)),
        bias=_bias(keras, layer, layer.filters),
        strides=_pair(layer.strides),
        padding=layer.padding,
        activation=_function_name(layer.activation),
        name=layer.name,
    )


def _bias(keras: Any, layer: Any, outputs: int) -> np.ndarray:
    if not layer.use_bias:
        return frozen_float32(np.zeros(outputs))
    return frozen_float32(keras.ops.convert_to_numpy(layer.bias))


def _fold_batch_norm(keras: Any, layer: Any, target: Layer | None) -> Layer:
    """BatchNormalization after a linear Conv2D or Dense is an affine map per output: fold it in.

    y = gamma * (z - mean) / sqrt(var + eps) + beta with z = W x + b becomes W' x + b',
    W' = W * g and b' = (b - mean) * g + beta for g = gamma / sqrt(var + eps), computed
    in float64 and rounded once to float32.
    """
    if not isinstance(target, DenseLayer | Conv2DLayer) or target.activation != "linear":
        raise ModelError(
            f"BatchNormalization layer '{layer.name}' can only be folded into a Conv2D or Dense layer "
            "right before it, with no activation between them."
        )
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    rank = len(layer.input.shape)
    if axis % rank != rank - 1:
        raise ModelError(
            f"BatchNormalization layer '{layer.name}' normalizes axis {axis}; only the last (channel) axis "
            "can be folded."
        )

    def weight(name: str, default: float) -> np.ndarray:
        value = getattr(layer, name, None)
        if value is None:
            return np.full(target.bias.shape, default)
        return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)

    gain = weight("gamma", 1.0) / np.sqrt(weight("moving_variance", 1.0) + float(layer.epsilon))
    bias = (target.bias.astype(np.float64) - weight("moving_mean", 0.0)) * gain + weight("beta", 0.0)
    scaled = target.weight.astype(np.float64) * gain.reshape(-1, *([1] * (target.weight.ndim - 1)))
    if isinstance(target, DenseLayer):
        return replace(target, weight=frozen_float32(scaled), bias=frozen_float32(bias))
    return replace(target, kernel=frozen_float32(scaled), bias=frozen_float32(bias))


def _activation_of(keras: Any, layer: Any) -> str:
    if type(layer) is keras.layers.ReLU:
        plain = layer.max_value is None and not layer.negative_slope and not layer.threshold
        if not plain:
            raise ModelError(
                f"ReLU layer '{layer.name}' has max_value, negative_slope or threshold set; only plain relu "
                "is supported."
            )
        return "relu"
    if type(layer) is keras.layers.Softmax:
        if layer.axis not in (-1, [-1]):
            raise ModelError(
                f"Softmax layer '{layer.name}' works on axis {layer.axis}; only -1 is supported."
            )
        return "softmax"
    return _function_name(layer.activation)


def _with_activation(layer: Any, target: Layer | None, activation: str) -> Layer:
    if not isinstance(target, DenseLayer | Conv2DLayer) or target.activation != "linear":
        raise ModelError(
            f"Activation layer '{layer.name}' must follow a Conv2D or Dense layer without an activation "
            "(or a BatchNormalization after one)."
        )
    return replace(target, activation=activation)


def _function_name(function: Any) -> str:
    return str(getattr(function, "__name__", repr(function)))


def _channels_last(layer: Any) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ModelError(
            f"Layer '{layer.name}' uses data_format={layer.data_format!r}; only channels_last is supported."
        )


def _pair(value: Any) -> tuple[int, int]:
    first, second = (value, value) if isinstance(value, int) else tuple(value)
    return int(first), int(second)
