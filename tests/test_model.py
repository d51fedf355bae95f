"""Dense-stack extraction from Keras files: NumPy forward pass vs Keras, and every ModelError."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mnistpack.data import Mnist
from mnistpack.errors import ModelError
from mnistpack.model import DenseStack, dense_stack_from_arrays, import_keras, load_dense_stack

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "mnist256.keras"
# float32 matmuls in NumPy and XLA sum in different orders; outputs are probabilities <= 1.
ATOL = 1e-5


@pytest.fixture(scope="module")
def keras() -> Any:
    return import_keras()


def dense(keras: Any, units: int, **options: Any) -> Any:
    # Zero init: Keras on JAX compiles its random initializer per kernel shape, seconds each.
    return keras.layers.Dense(units, kernel_initializer="zeros", **options)


def randomize(model: Any, seed: int) -> None:
    """Random kernels and (unlike Keras' zero init) random biases, so bias handling is tested."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([rng.normal(0, 0.2, w.shape).astype(np.float32) for w in layer.get_weights()])


def saved(model: Any, folder: Path, name: str = "m.keras") -> Path:
    path = folder / name
    model.save(path)
    return path


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 784), dtype=np.float32)


def test_kernels_are_transposed_and_predictions_match_keras(keras: Any, tmp_path: Path) -> None:
    model = keras.Sequential(
        [
            keras.Input((784,)),
            dense(keras, 32, activation="relu", name="hidden"),
            dense(keras, 10, activation="softmax", name="digits"),
        ]
    )
    randomize(model, 1)
    path = saved(model, tmp_path)
    stack = load_dense_stack(path)
    assert [layer.name for layer in stack.layers] == ["hidden", "digits"]
    assert [layer.activation for layer in stack.layers] == ["relu", "softmax"]
    for layer, keras_layer in zip(stack.layers, model.layers, strict=True):
        kernel, bias = keras_layer.get_weights()
        assert layer.weight.shape == kernel.T.shape and layer.weight.flags.c_contiguous
        np.testing.assert_array_equal(layer.weight, kernel.T)
        np.testing.assert_array_equal(layer.bias, bias)
        assert not layer.weight.flags.writeable
    assert stack.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    x = images(64, 2)
    np.testing.assert_allclose(stack.predict(x), model.predict(x, verbose=0), rtol=0, atol=ATOL)


def test_flatten_input_no_bias_and_every_activation(keras: Any, tmp_path: Path) -> None:
    inputs = keras.Input((28, 28))
    x = keras.layers.Flatten()(inputs)
    x = dense(keras, 12, activation="tanh")(x)
    x = dense(keras, 8, activation="sigmoid", use_bias=False)(x)
    x = dense(keras, 6)(x)
    outputs = dense(keras, 10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    randomize(model, 3)
    stack = load_dense_stack(saved(model, tmp_path))
    assert [layer.activation for layer in stack.layers] == ["tanh", "sigmoid", "linear", "softmax"]
    assert not stack.layers[1].bias.any()
    x = images(32, 4)
    # Flatten is row-major: DenseStack's pixel r * 28 + c is Keras' image[r, c].
    expected = model.predict(x.reshape(-1, 28, 28), verbose=0)
    np.testing.assert_allclose(stack.predict(x), expected, rtol=0, atol=ATOL)


def test_tiny_model_fixture(tiny_model: Path, mnist_data: Mnist, keras: Any) -> None:
    stack = load_dense_stack(tiny_model)
    assert [layer.weight.shape for layer in stack.layers] == [(16, 784), (10, 16)]
    x = mnist_data.test_images[:500]
    reference = keras.saving.load_model(tiny_model).predict(x, verbose=0)
    np.testing.assert_allclose(stack.predict(x), reference, rtol=0, atol=ATOL)
    accuracy = np.mean(stack.predict(mnist_data.test_images).argmax(axis=1) == mnist_data.test_labels)
    assert accuracy > 0.8


def test_shipped_model_is_what_its_note_says() -> None:
    stack = load_dense_stack(SHIPPED)
    assert [(layer.weight.shape, layer.activation) for layer in stack.layers] == [
        ((256, 784), "relu"),
        ((10, 256), "softmax"),
    ]
    note = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert stack.source_sha256 == note["model_sha256"]
    assert note["test_accuracy"] >= 0.982 and note["config"]["hidden"] == 256


def test_shipped_model_scores_its_recorded_accuracy(mnist_data: Mnist) -> None:
    stack = load_dense_stack(SHIPPED)
    correct = int(np.sum(stack.predict(mnist_data.test_images).argmax(axis=1) == mnist_data.test_labels))
    note = json.loads(SHIPPED.with_suffix(".json").read_text())
    # The note was measured with Keras; a near-tie digit may flip between summation orders.
    assert abs(correct - note["test_correct"]) <= 2
    assert correct >= 9820


def _conv(keras: Any) -> Any:
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(2, 3, kernel_initializer="zeros", name="conv"),
            keras.layers.Flatten(),
            dense(keras, 10),
        ]
    )


def _dropout(keras: Any) -> Any:
    return keras.Sequential(
        [
            keras.Input((784,)),
            dense(keras, 8),
            keras.layers.Dropout(0.5, name="drop"),
            dense(keras, 10),
        ]
    )


def _dense_on_image(keras: Any) -> Any:
    return keras.Sequential([keras.Input((28, 28)), dense(keras, 10, name="early")])


def _small_input(keras: Any) -> Any:
    return keras.Sequential([keras.Input((100,)), dense(keras, 10)])


def _gelu(keras: Any) -> Any:
    return keras.Sequential([keras.Input((784,)), dense(keras, 10, activation="gelu", name="out")])


def _two_inputs(keras: Any) -> Any:
    left, right = keras.Input((392,)), keras.Input((392,))
    merged = keras.layers.Concatenate()([left, right])
    return keras.Model([left, right], dense(keras, 10)(merged))


def _only_flatten(keras: Any) -> Any:
    return keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten()])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_conv, "Layer 'conv' is a Conv2D; only stacks of Dense layers"),
        (_dropout, "Layer 'drop' is a Dropout; only stacks of Dense layers"),
        (_dense_on_image, r"Dense layer 'early' gets a \(28, 28\) input; put a Flatten before it"),
        (_small_input, r"takes inputs of shape \(100,\), expected 784 values"),
        (_gelu, "Layer 'out' uses activation 'gelu'; supported: linear, relu, sigmoid, tanh, softmax"),
        (_two_inputs, "has 2 inputs and 1 outputs, expected one of each"),
        (_only_flatten, "has no Dense layer"),
    ],
    ids=["conv", "dropout", "dense-before-flatten", "input-100", "gelu", "two-inputs", "no-dense"],
)
def test_unsupported_models_are_named(keras: Any, tmp_path: Path, build: Any, message: str) -> None:
    path = saved(build(keras), tmp_path)
    with pytest.raises(ModelError, match=message) as info:
        load_dense_stack(path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize(("index", "value"), [(0, np.nan), (1, np.inf)], ids=["nan-kernel", "inf-bias"])
def test_non_finite_weights_name_the_layer(keras: Any, tmp_path: Path, index: int, value: float) -> None:
    model = keras.Sequential(
        [keras.Input((784,)), dense(keras, 4, name="hidden"), dense(keras, 10, name="digits")]
    )
    weights = model.layers[1].get_weights()
    weights[index].flat[3] = value
    model.layers[1].set_weights(weights)
    with pytest.raises(ModelError, match="Layer 'digits' has NaN or infinite weights"):
        load_dense_stack(saved(model, tmp_path))


def test_bad_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=f"Model file {tmp_path / 'none.keras'} does not exist"):
        load_dense_stack(tmp_path / "none.keras")
    with pytest.raises(ModelError, match="is a folder; expected a .keras file"):
        load_dense_stack(tmp_path)
    (tmp_path / "weights.txt").write_text("1 2 3")
    with pytest.raises(ModelError, match="weights.txt is not a Keras model file: expected a .keras file"):
        load_dense_stack(tmp_path / "weights.txt")
    for name in ("junk.keras", "junk.h5"):
        (tmp_path / name).write_bytes(b"PK\x03\x04 definitely not a model")
        with pytest.raises(ModelError, match=f"{name} is not a Keras model that Keras can load"):
            load_dense_stack(tmp_path / name)


def _layers(*sizes: int, activation: str = "relu") -> list[tuple[np.ndarray, np.ndarray, str]]:
    rng = np.random.default_rng(0)
    return [
        (rng.normal(size=(out, inp)), rng.normal(size=out), activation)
        for inp, out in zip(sizes, sizes[1:], strict=False)
    ]


def test_from_arrays_copies_and_freezes() -> None:
    layers = _layers(784, 5, 10)
    stack = dense_stack_from_arrays(layers)
    assert isinstance(stack, DenseStack) and (stack.input_size, stack.output_size) == (784, 10)
    assert stack.layers[0].weight.dtype == np.float32
    layers[0][0][:] = 0
    assert stack.layers[0].weight.any()
    with pytest.raises(ValueError, match="read-only"):
        stack.layers[0].weight[0, 0] = 1


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (_layers(100, 10), "The model takes 100 inputs, expected 784"),
        (_layers(784, 5) + _layers(4, 10), "Layer 'dense_1' takes 4 inputs but the layer before it gives 5"),
        ([(np.ones((10, 784)), np.ones(9), "relu")], r"bias of shape \(9,\), expected float32 \(10,\)"),
        ([(np.ones(784), np.ones(1), "relu")], r"weight of shape \(784,\), expected 2-D float32"),
        (_layers(784, 10, activation="swish"), "uses activation 'swish'"),
        ([], "The model has 0 Dense layers"),
    ],
    ids=["input-100", "chain", "bias", "weight-1d", "activation", "empty"],
)
def test_from_arrays_rejects(layers: list[tuple[np.ndarray, np.ndarray, str]], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        dense_stack_from_arrays(layers)


def test_predict_is_stable_and_checks_its_input() -> None:
    weight = np.zeros((10, 784), np.float32)
    weight[:, 0] = np.linspace(-2000, 2000, 10)
    sigmoid = dense_stack_from_arrays([(weight, np.zeros(10), "sigmoid")])
    softmax = dense_stack_from_arrays([(weight, np.zeros(10), "softmax")])
    x = np.ones((3, 784), np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        out = sigmoid.predict(x)
        probabilities = softmax.predict(x)
    assert out.dtype == np.float32 and out[0, 0] == 0 and out[0, -1] == 1
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-6)
    with pytest.raises(ValueError, match=r"predict wants \[N, 784\] images"):
        softmax.predict(np.ones((3, 783)))
