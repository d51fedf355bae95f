"""A trained Keras model, reduced to what mnistpack ships: a stack of Dense layers.

Weights are stored the way FORMAT.md and the Luau runtime read them: [out, in],
one row per output neuron (the Keras kernel transposed). `DenseStack.predict` is
the NumPy reference forward pass the Luau side is tested against.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from mnistpack.constants import ACTIVATIONS, MAX_DIM, MAX_LAYERS
from mnistpack.data import INPUT_SIZE
from mnistpack.errors import ModelError

BACKEND_ENV_VAR: Final = "KERAS_BACKEND"
DEFAULT_BACKEND: Final = "jax"
MODEL_SUFFIXES: Final = (".keras", ".h5", ".hdf5")
FLOAT64_WARNING: Final = "Explicitly requested dtype float64"
SUPPORTED_LAYERS: Final = "only stacks of Dense layers (optionally after an Input or Flatten) are supported"


def ensure_keras_backend() -> None:
    """Pick JAX unless the user chose a backend; must run before the first `import keras`."""
    if not os.environ.get(BACKEND_ENV_VAR):
        os.environ[BACKEND_ENV_VAR] = DEFAULT_BACKEND


def import_keras() -> Any:
    """Import Keras with the backend chosen by ensure_keras_backend (the one place that does)."""
    ensure_keras_backend()
    import keras

    return keras


@dataclass(frozen=True)
class DenseLayer:
    weight: np.ndarray  # float32 [out, in] row-major: Keras kernel TRANSPOSED
    bias: np.ndarray  # float32 [out]
    activation: str  # one of constants.ACTIVATIONS
    name: str = ""  # the Keras layer name, for messages

    def __post_init__(self) -> None:
        label = f"Layer '{self.name}'" if self.name else "A layer"
        if self.weight.dtype != np.float32 or self.weight.ndim != 2:
            raise ModelError(
                f"{label} has a {self.weight.dtype} weight of shape {self.weight.shape}, "
                "expected 2-D float32."
            )
        rows, cols = self.weight.shape
        if not (1 <= rows <= MAX_DIM and 1 <= cols <= MAX_DIM):
            raise ModelError(f"{label} maps {cols} inputs to {rows} outputs; sizes must be 1..{MAX_DIM}.")
        if self.bias.dtype != np.float32 or self.bias.shape != (rows,):
            raise ModelError(
                f"{label} has a {self.bias.dtype} bias of shape {self.bias.shape}, "
                f"expected float32 ({rows},)."
            )
        if not (np.isfinite(self.weight).all() and np.isfinite(self.bias).all()):
            raise ModelError(f"{label} has NaN or infinite weights; retrain or fix the model.")
        if self.activation not in ACTIVATIONS:
            raise ModelError(
                f"{label} uses activation '{self.activation}'; supported: {', '.join(ACTIVATIONS)}."
            )


@dataclass(frozen=True)
class DenseStack:
    layers: tuple[DenseLayer, ...]
    source_sha256: str  # sha256 hex of the model file bytes
    # meta.calibration's temperature: a final softmax takes logits / temperature
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= len(self.layers) <= MAX_LAYERS:
            raise ModelError(f"The model has {len(self.layers)} Dense layers, expected 1..{MAX_LAYERS}.")
        if self.input_size != INPUT_SIZE:
            raise ModelError(
                f"The model takes {self.input_size} inputs, expected {INPUT_SIZE} (28x28 MNIST pixels)."
            )
        for before, after in zip(self.layers, self.layers[1:], strict=False):
            if after.weight.shape[1] != before.weight.shape[0]:
                raise ModelError(
                    f"Layer '{after.name}' takes {after.weight.shape[1]} inputs but the layer before it "
                    f"gives {before.weight.shape[0]}."
                )

    @property
    def input_size(self) -> int:
        return int(self.layers[0].weight.shape[1])

    @property
    def output_size(self) -> int:
        return int(self.layers[-1].weight.shape[0])

    def predict(self, images: np.ndarray) -> np.ndarray:
        """NumPy float32 forward pass: images [N, 784] in 0..1 -> outputs [N, out]."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"predict wants [N, {self.input_size}] images, got shape {x.shape}.")
        for index, layer in enumerate(self.layers):
            z = x @ layer.weight.T + layer.bias
            if index == len(self.layers) - 1 and layer.activation == "softmax" and self.temperature != 1:
                x = _softmax(z, self.temperature)
            else:
                x = _ACTIVATION_FUNCTIONS[layer.activation](z)
        return x


def dense_stack_from_arrays(
    layers: Sequence[tuple[np.ndarray, np.ndarray, str]],
    *,
    source_sha256: str = "0" * 64,
    temperature: float = 1.0,
) -> DenseStack:
    """Build a checked DenseStack from (weight [out, in], bias [out], activation) triples."""
    built = []
    for index, (weight, bias, activation) in enumerate(layers):
        built.append(
            DenseLayer(
                weight=_frozen_float32(weight),
                bias=_frozen_float32(bias),
                activation=activation,
                name=f"dense_{index}",
            )
        )
    return DenseStack(layers=tuple(built), source_sha256=source_sha256, temperature=temperature)


def load_dense_stack(path: Path) -> DenseStack:
    """Load a Keras model file and extract its Dense layers, or say in one sentence why not."""
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
        return DenseStack(layers=_dense_layers(model), source_sha256=hashlib.sha256(raw).hexdigest())
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc


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


def _dense_layers(model: Any) -> tuple[DenseLayer, ...]:
    keras = import_keras()
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError) as exc:
        raise ModelError("The model was never built, so its input size is unknown.") from exc
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"The model has {len(inputs)} inputs and {len(outputs)} outputs, expected one of each."
        )
    shape = tuple(inputs[0].shape[1:])
    if None in shape or int(np.prod(shape)) != INPUT_SIZE:
        raise ModelError(
            f"The model takes inputs of shape {shape}, expected {INPUT_SIZE} values (28x28 pixels)."
        )
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if type(layer) is keras.layers.Flatten:
            shape = (int(np.prod(shape)),)
            continue
        if type(layer) is not keras.layers.Dense or getattr(layer, "quantization_mode", None):
            raise ModelError(f"Layer '{layer.name}' is a {type(layer).__name__}; {SUPPORTED_LAYERS}.")
        if len(shape) != 1:
            raise ModelError(f"Dense layer '{layer.name}' gets a {shape} input; put a Flatten before it.")
        layers.append(_dense_layer(keras, layer))
        shape = (layer.units,)
    if not layers:
        raise ModelError(f"The model has no Dense layer; {SUPPORTED_LAYERS}.")
    return tuple(layers)


def _dense_layer(keras: Any, layer: Any) -> DenseLayer:
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    bias = keras.ops.convert_to_numpy(layer.bias) if layer.use_bias else np.zeros(layer.units, np.float32)
    activation = getattr(layer.activation, "__name__", repr(layer.activation))
    return DenseLayer(
        weight=_frozen_float32(np.asarray(kernel).T),
        bias=_frozen_float32(bias),
        activation=activation,
        name=layer.name,
    )


def _frozen_float32(array: np.ndarray) -> np.ndarray:
    out = np.array(array, dtype=np.float32, order="C", copy=True)
    out.setflags(write=False)
    return out


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
