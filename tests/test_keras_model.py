"""Keras files read into Networks: NumPy forward pass vs Keras (batch norm folded), every ModelError."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mnistpack.data import Mnist
from mnistpack.errors import ModelError
from mnistpack.keras_model import load_network
from mnistpack.model import import_keras

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "mnist256.keras"  # the MLP
SHIPPED_CNN = REPO / "models" / "mnist-cnn.keras"  # the default
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
    stack = load_network(path)
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
    stack = load_network(saved(model, tmp_path))
    assert [layer.activation for layer in stack.layers] == ["tanh", "sigmoid", "linear", "softmax"]
    assert not stack.layers[1].bias.any()
    x = images(32, 4)
    # Flatten is row-major: Network's pixel r * 28 + c is Keras' image[r, c].
    expected = model.predict(x.reshape(-1, 28, 28), verbose=0)
    np.testing.assert_allclose(stack.predict(x), expected, rtol=0, atol=ATOL)


def test_tiny_model_fixture(tiny_model: Path, mnist_data: Mnist, keras: Any) -> None:
    stack = load_network(tiny_model)
    assert [layer.weight.shape for layer in stack.layers] == [(16, 784), (10, 16)]
    x = mnist_data.test_images[:500]
    reference = keras.saving.load_model(tiny_model).predict(x, verbose=0)
    np.testing.assert_allclose(stack.predict(x), reference, rtol=0, atol=ATOL)
    accuracy = np.mean(stack.predict(mnist_data.test_images).argmax(axis=1) == mnist_data.test_labels)
    assert accuracy > 0.8


def test_shipped_model_is_what_its_note_says() -> None:
    stack = load_network(SHIPPED)
    assert [(layer.weight.shape, layer.activation) for layer in stack.layers] == [
        ((256, 784), "relu"),
        ((10, 256), "softmax"),
    ]
    note = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert stack.source_sha256 == note["model_sha256"]
    assert note["test_accuracy"] >= 0.982 and note["config"]["hidden"] == 256


def test_shipped_model_scores_its_recorded_accuracy(mnist_data: Mnist) -> None:
    stack = load_network(SHIPPED)
    correct = int(np.sum(stack.predict(mnist_data.test_images).argmax(axis=1) == mnist_data.test_labels))
    note = json.loads(SHIPPED.with_suffix(".json").read_text())
    # The note was measured with Keras; a near-tie digit may flip between summation orders.
    assert abs(correct - note["test_correct"]) <= 2
    assert correct >= 9820


def test_shipped_cnn_is_what_its_note_says(mnist_data: Mnist) -> None:
    if not SHIPPED_CNN.is_file():
        pytest.skip(f"{SHIPPED_CNN} is not in this checkout")
    stack = load_network(SHIPPED_CNN)
    note = json.loads(SHIPPED_CNN.with_suffix(".json").read_text())
    assert stack.source_sha256 == note["model_sha256"]
    assert note["config"]["arch"] == "cnn" and note["config"]["player_copies"] > 0
    assert set(note["calibration"]) == {"temperature", "sure_threshold"}
    correct = int(np.sum(stack.predict(mnist_data.test_images).argmax(axis=1) == mnist_data.test_labels))
    # batch norm folded and summed in another order than Keras: a near tie may flip
    assert abs(correct - note["test_correct"]) <= 2


def _layer_norm(keras: Any) -> Any:
    return keras.Sequential(
        [keras.Input((784,)), dense(keras, 8), keras.layers.LayerNormalization(name="norm"), dense(keras, 10)]
    )


def _image(keras: Any, *layers: Any) -> Any:
    return keras.Sequential([keras.Input((28, 28, 1)), *layers, keras.layers.Flatten(), dense(keras, 10)])


def conv(keras: Any, filters: int, size: int | tuple[int, int] = 3, **options: Any) -> Any:
    return keras.layers.Conv2D(filters, size, kernel_initializer="zeros", **options)


def _norm_after_relu(keras: Any) -> Any:
    return _image(keras, conv(keras, 2, activation="relu"), keras.layers.BatchNormalization(name="late"))


def _relu6(keras: Any) -> Any:
    return _image(keras, conv(keras, 2), keras.layers.ReLU(max_value=6, name="six"))


def _dilated(keras: Any) -> Any:
    return _image(keras, conv(keras, 2, dilation_rate=2, name="holes"))


def _skip(keras: Any) -> Any:
    inputs = keras.Input((28, 28, 1))
    x = conv(keras, 1, padding="same")(inputs)
    x = keras.layers.Add(name="sum")([x, inputs])
    return keras.Model(inputs, dense(keras, 10)(keras.layers.Flatten()(x)))


def _keepdims(keras: Any) -> Any:
    return _image(keras, conv(keras, 2), keras.layers.GlobalAveragePooling2D(keepdims=True))


def _activation_after_pool(keras: Any) -> Any:
    pool = keras.layers.MaxPooling2D()
    return _image(keras, conv(keras, 2), pool, keras.layers.Activation("relu", name="late_relu"))


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
        (_layer_norm, "Layer 'norm' is a LayerNormalization; mnistpack packs stacks of Dense, Conv2D"),
        (_dense_on_image, r"Dense layer 'early' gets a \[28, 28\] input; put a Flatten before it"),
        (_small_input, r"takes inputs of shape \[100\], expected 784 values"),
        (_gelu, "Layer 'out' uses activation 'gelu'; supported: linear, relu, sigmoid, tanh, softmax"),
        (_two_inputs, "has 2 inputs and 1 outputs, expected one of each"),
        (_only_flatten, "has no layer to ship"),
        (_norm_after_relu, "BatchNormalization layer 'late' can only be folded into a Conv2D or Dense layer"),
        (_relu6, "ReLU layer 'six' has max_value"),
        (_dilated, "Conv2D layer 'holes' uses dilation"),
        (_skip, "Layer 'sum' does not read the output of the layer before it"),
        (_keepdims, "keeps its pooled dimensions"),
        (_activation_after_pool, "Activation layer 'late_relu' must follow a Conv2D or Dense layer"),
    ],
    ids=[
        "layer-norm",
        "dense-before-flatten",
        "input-100",
        "gelu",
        "two-inputs",
        "no-dense",
        "bn-after-relu",
        "relu6",
        "dilation",
        "skip",
        "keepdims",
        "activation-after-pool",
    ],
)
def test_unsupported_models_are_named(keras: Any, tmp_path: Path, build: Any, message: str) -> None:
    path = saved(build(keras), tmp_path)
    with pytest.raises(ModelError, match=message) as info:
        load_network(path)
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
        load_network(saved(model, tmp_path))


def test_bad_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=f"Model file {tmp_path / 'none.keras'} does not exist"):
        load_network(tmp_path / "none.keras")
    with pytest.raises(ModelError, match="is a folder; expected a .keras file"):
        load_network(tmp_path)
    (tmp_path / "weights.txt").write_text("1 2 3")
    with pytest.raises(ModelError, match="weights.txt is not a Keras model file: expected a .keras file"):
        load_network(tmp_path / "weights.txt")
    for name in ("junk.keras", "junk.h5"):
        (tmp_path / name).write_bytes(b"PK\x03\x04 definitely not a model")
        with pytest.raises(ModelError, match=f"{name} is not a Keras model that Keras can load"):
            load_network(tmp_path / name)


# --- convolutional networks ----------------------------------------------------------------


def randomize_batch_norm(model: Any, seed: int) -> None:
    """Kernels as `randomize`, and batch norm statistics far from Keras' identity start."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, variance = weights
            weights = [
                rng.uniform(0.5, 2, gamma.shape),
                rng.normal(0, 0.3, beta.shape),
                rng.normal(0, 0.5, mean.shape),
                rng.uniform(0.1, 3, variance.shape),
            ]
        else:
            weights = [rng.normal(0, 0.3, w.shape) for w in weights]
        layer.set_weights([w.astype(np.float32) for w in weights])


def every_layer_cnn(keras: Any) -> Any:
    """Every Keras layer load_network reads, in the orders it folds them."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.RandomRotation(0.1),
            conv(keras, 6, padding="same", use_bias=False, name="c1"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.SpatialDropout2D(0.2),
            conv(keras, 8, (3, 2), strides=2, name="c2"),
            layers.BatchNormalization(epsilon=0.01),
            layers.Activation("tanh"),
            layers.AveragePooling2D(pool_size=2, strides=1, padding="same"),
            conv(keras, 5, activation="relu", name="c3"),
            layers.GaussianNoise(0.1),
            layers.GlobalAveragePooling2D(),
            dense(keras, 7, name="d1"),
            layers.BatchNormalization(),
            layers.Activation("sigmoid"),
            layers.Dropout(0.3),
            dense(keras, 10, name="d2"),
            layers.Softmax(),
        ]
    )


def test_batch_norm_is_folded_and_the_network_matches_keras(keras: Any, tmp_path: Path) -> None:
    model = every_layer_cnn(keras)
    randomize_batch_norm(model, 5)
    network = load_network(saved(model, tmp_path))
    assert [(layer.kind, getattr(layer, "activation", "")) for layer in network.layers] == [
        ("conv2d", "relu"),
        ("maxpool2d", ""),
        ("conv2d", "tanh"),
        ("avgpool2d", ""),
        ("conv2d", "relu"),
        ("global_avgpool2d", ""),
        ("dense", "sigmoid"),
        ("dense", "softmax"),
    ]
    assert network.input_shape == (28, 28, 1)
    assert network.shapes() == [(28, 28, 6), (14, 14, 6), (6, 7, 8), (6, 7, 8), (4, 5, 5), (5,), (7,), (10,)]
    x = images(64, 6)
    expected = model.predict(x.reshape(-1, 28, 28, 1), verbose=0)
    np.testing.assert_allclose(network.predict(x), expected, rtol=0, atol=ATOL)
    # the folded layers really changed: the kernels are no longer Keras' own
    kernel = model.get_layer("c1").get_weights()[0].transpose(3, 0, 1, 2)
    assert not np.allclose(network.layers[0].weight, kernel)


def test_functional_conv_model_without_batch_norm(keras: Any, tmp_path: Path) -> None:
    inputs = keras.Input((28, 28, 1))
    x = conv(keras, 3, 5, strides=(2, 1), padding="same", activation="relu")(inputs)
    x = keras.layers.AveragePooling2D(3, strides=2)(x)
    x = keras.layers.Flatten()(x)
    outputs = dense(keras, 10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    randomize(model, 8)
    network = load_network(saved(model, tmp_path))
    assert [layer.kind for layer in network.layers] == ["conv2d", "avgpool2d", "flatten", "dense"]
    x = images(32, 9)
    np.testing.assert_allclose(
        network.predict(x), model.predict(x.reshape(-1, 28, 28, 1), verbose=0), rtol=0, atol=ATOL
    )
