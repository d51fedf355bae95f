"""luau/Model.luau against the NumPy forward pass: edge cases on small stacks, every one of
the 10,000 MNIST test digits for each precision of the shipped model, and a deeper stack
trained here, packed, decoded in Luau and run by Model."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from mnistpack.build import dequantize_network, quantize_network
from mnistpack.compression import compress
from mnistpack.constants import PRECISIONS
from mnistpack.container import pack
from mnistpack.data import DATA_ENV_VAR, INPUT_SIZE, PixelCounts, load_test_set
from mnistpack.keras_model import load_network
from mnistpack.luau_emit import emit_module
from mnistpack.luau_runtime import LuauRuntime, to_pixels
from mnistpack.model import Network, dense_stack_from_arrays

from tests.luau_host import LuauHost

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = ROOT / "models" / "mnist256.keras"
FLOAT32_PROBABILITY_TOLERANCE = 1e-5
QUANTIZED_AGREEMENT = 0.999
# No pixel is pruned: the tests compare Luau with the dequantized weights, whatever they are.
NO_PRUNING = PixelCounts(lit=np.ones(INPUT_SIZE, np.int64), images=1)

Layers = Sequence[tuple[np.ndarray, np.ndarray, str]]

# Turns float64 bytes into the table Decoder.decode returns: {layers = {{W, b, activation}}}.
WEIGHTS_CHUNK = r"""
local blob, shapes, activations = ...
local data = buffer.fromstring(blob)
local at = 0
local function take(count)
	local values = table.create(count, 0)
	for k = 1, count do
		values[k] = buffer.readf64(data, at)
		at += 8
	end
	return values
end
local layers = {}
for index, activation in activations do
	local rows, cols = shapes[2 * index - 1], shapes[2 * index]
	local W = table.create(rows)
	for o = 1, rows do
		W[o] = take(cols)
	end
	layers[index] = { W = W, b = take(rows), activation = activation }
end
return { layers = layers, meta = { labels = {} } }
"""

# Builds a Model and runs it on each image of a float64 [N, inputs] blob.
PREDICT_CHUNK = r"""
local Model = require(root.Model)
local weights, images, count = ...
local model = Model.new(weights)
local data = buffer.fromstring(images)
local digits, outputs = {}, {}
for n = 0, count - 1 do
	local pixels = table.create(model.inputs, 0)
	for i = 1, model.inputs do
		pixels[i] = buffer.readf64(data, (n * model.inputs + i - 1) * 8)
	end
	local digit, probabilities = model:predict(pixels)
	digits[n + 1] = digit
	for _, p in probabilities do
		table.insert(outputs, p)
	end
end
return digits, outputs, model.outputs, model:memoryBytes()
"""


def luau_weights(host: LuauHost, layers: Layers) -> object:
    blob = b"".join(
        np.ascontiguousarray(array, "<f8").tobytes() for weight, bias, _ in layers for array in (weight, bias)
    )
    shapes = host.lua.create_table()
    activations = host.lua.create_table()
    for weight, _, activation in layers:
        shapes.push(int(weight.shape[0]))
        shapes.push(int(weight.shape[1]))
        activations.push(activation)
    return host.run(WEIGHTS_CHUNK, host.lua.create_string(blob), shapes, activations)[0]


def luau_predict(host: LuauHost, layers: Layers, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    weights = luau_weights(host, layers)
    blob = host.lua.create_string(np.ascontiguousarray(images, "<f8").tobytes())
    digits, outputs, width, memory = host.run(PREDICT_CHUNK, weights, blob, len(images))
    probabilities = np.array([outputs.get(k + 1) for k in range(len(outputs))]).reshape(len(images), width)
    return np.array([digits.get(k + 1) for k in range(len(images))]), probabilities, int(memory)


def numpy_outputs(layers: Layers, images: np.ndarray) -> np.ndarray:
    """The same stack in float64, so small stacks compare to rounding noise only."""
    x = images.astype(np.float64)
    for weight, bias, activation in layers:
        x = x @ weight.astype(np.float64).T + bias.astype(np.float64)
        if activation == "relu":
            x = np.maximum(x, 0)
        elif activation == "sigmoid":
            x = 1 / (1 + np.exp(-x))
        elif activation == "tanh":
            x = np.tanh(x)
        elif activation == "softmax":
            e = np.exp(x - x.max(axis=1, keepdims=True))
            x = e / e.sum(axis=1, keepdims=True)
    return x


def random_layers(sizes: Sequence[int], activations: Sequence[str], seed: int = 0) -> Layers:
    rng = np.random.default_rng(seed)
    return [
        (
            rng.normal(0, 0.3, (sizes[k + 1], sizes[k])).astype(np.float32),
            rng.normal(0, 0.2, sizes[k + 1]).astype(np.float32),
            activations[k],
        )
        for k in range(len(sizes) - 1)
    ]


def sparse_images(count: int, width: int, seed: int = 1) -> np.ndarray:
    """Images like drawn digits: mostly zeros, lit pixels in 0..1."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (count, width))
    images[rng.uniform(0, 1, (count, width)) < 0.7] = 0.0
    return images


@pytest.fixture(scope="module")
def host() -> LuauHost:
    return LuauHost()


# --- Model on small stacks ------------------------------------------------------------------


@pytest.mark.parametrize(
    "activations",
    [
        ("relu", "softmax"),
        ("sigmoid", "linear"),
        ("tanh", "sigmoid"),
        ("linear", "tanh"),
        ("softmax", "relu"),
    ],
)
def test_every_activation_matches_numpy(host: LuauHost, activations: tuple[str, str]) -> None:
    layers = random_layers((23, 9, 6), activations)
    # 23 inputs with about 7 lit: exercises the groups of four and the leftover columns
    images = sparse_images(40, 23)
    digits, probabilities, _ = luau_predict(host, layers, images)
    expected = numpy_outputs(layers, images)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-12)
    assert (digits == expected.argmax(axis=1)).all()


def test_all_zero_input_gives_the_activated_biases(host: LuauHost) -> None:
    layers = random_layers((30, 12, 5), ("relu", "softmax"), seed=3)
    _, probabilities, _ = luau_predict(host, layers, np.zeros((1, 30)))
    hidden = np.maximum(layers[0][1].astype(np.float64), 0)
    logits = layers[1][0].astype(np.float64) @ hidden + layers[1][1]
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(probabilities[0], softmax, rtol=0, atol=1e-15)
    assert probabilities[0].sum() == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("biases", [(1000.0, 999.0, -5.0), (-1000.0, -1001.0, -2000.0)])
def test_softmax_survives_huge_logits(host: LuauHost, biases: tuple[float, ...]) -> None:
    # without the max subtraction, exp(1000) is inf and exp(-1000) is 0: NaN either way
    layers = [(np.zeros((3, 4), np.float32), np.array(biases, np.float32), "softmax")]
    digits, probabilities, _ = luau_predict(host, layers, np.zeros((1, 4)))
    assert digits[0] == 0
    np.testing.assert_allclose(probabilities[0], numpy_outputs(layers, np.zeros((1, 4)))[0], atol=1e-15)


def test_ties_go_to_the_lower_index_as_in_numpy(host: LuauHost) -> None:
    layers = [(np.zeros((4, 5), np.float32), np.array([0.0, 2.0, 2.0, 1.0], np.float32), "linear")]
    digits, _, _ = luau_predict(host, layers, np.zeros((1, 5)))
    assert digits[0] == 1


def test_returned_probabilities_belong_to_the_caller(host: LuauHost) -> None:
    layers = random_layers((6, 4, 3), ("relu", "softmax"))
    weights = luau_weights(host, layers)
    first, second = host.run(
        """
        local model = require(root.Model).new(...)
        local _, a = model:predict({ 1, 0, 0.5, 0, 0, 0.25 })
        local kept = a[1]
        local _, b = model:predict({ 0, 1, 0, 0, 0.75, 0 })
        return kept == a[1] and a ~= b, #b
        """,
        weights,
    )
    assert first is True and second == 3


def test_memory_estimate_covers_every_weight(host: LuauHost) -> None:
    layers = random_layers((50, 20, 10), ("relu", "softmax"))
    _, _, memory = luau_predict(host, layers, np.zeros((1, 50)))
    # 16-byte slots: at least the weights and biases, at most twice that plus table headers
    slots = 50 * 20 + 20 + 20 * 10 + 10
    assert 16 * slots <= memory <= 2 * 16 * slots + 64 * (50 + 20 + 10)


@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        ("return Model.new({ layers = {} })", "nonempty `layers` list"),
        ("return Model.new(nil)", "nonempty `layers` list"),
        (
            "return Model.new({ layers = { { W = { { 1, 2 }, { 3 } }, b = { 0, 0 },"
            " activation = 'relu' } } })",
            "layer 1 row 2 should hold 2 weights (one per input), found 1 weights",
        ),
        (
            "return Model.new({ layers = { { W = { { 1, 2 } }, b = { 0, 0 }, activation = 'relu' } } })",
            "layer 1 has 1 weight rows and 2 biases",
        ),
        (
            "return Model.new({ layers = { { W = { { 1, 2 } }, b = { 0 }, activation = 'gelu' } } })",
            'layer 1 uses activation "gelu", expected one of linear, relu, sigmoid, tanh, softmax',
        ),
        (
            "return Model.new({ layers = { { W = { { 1, 2 } }, b = { 0 }, activation = 'relu' },"
            " { W = { { 1, 2 } }, b = { 0 }, activation = 'relu' } } })",
            "layer 2 row 1 should hold 1 weights (one per input), found 2 weights",
        ),
        (
            "return Model.new({ layers = { { W = { { 1, 2 } }, b = { 0 }, activation = 'relu' } } })"
            ":predict({ 1, 2, 3 })",
            "predict expected 2 pixels, found 3",
        ),
    ],
)
def test_bad_weights_and_inputs_are_named(host: LuauHost, chunk: str, message: str) -> None:
    with pytest.raises(RuntimeError) as raised:
        host.run("local Model = require(root.Model)\n" + chunk)
    text = str(raised.value)
    assert "mnistpack: model: " in text and message in text, text


def test_model_runs_what_the_decoder_returns(host: LuauHost) -> None:
    layers = random_layers((INPUT_SIZE, 16, 10), ("relu", "softmax"), seed=5)
    stack = dense_stack_from_arrays(layers)
    images = sparse_images(200, INPUT_SIZE).astype(np.float32)
    for precision in PRECISIONS:
        container = quantize_network(stack, precision, prune_threshold=0.0, pixel_counts=NO_PRUNING)
        files = emit_module(
            compress(pack(container), "zstd"), "zstd", version=container.version(), comment_lines=["test"]
        )
        luau = LuauRuntime(files).predict(to_pixels(images))
        expected = dequantize_network(container).predict(to_pixels(images).astype(np.float32) / 255)
        assert (luau.digits == expected.argmax(axis=1)).all(), precision
        np.testing.assert_allclose(luau.probabilities, expected, rtol=0, atol=1e-5)


# --- the whole MNIST test set --------------------------------------------------------------


def mnist_dir() -> Path | None:
    env = os.environ.get(DATA_ENV_VAR, "").strip()
    candidate = Path(env) if env else ROOT.parent / "shared" / "mnist"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="module")
def test_set() -> tuple[np.ndarray, np.ndarray]:
    data_dir = mnist_dir()
    loaded = load_test_set(data_dir) if data_dir is not None else None
    if loaded is None:
        pytest.skip(f"no MNIST test set: set {DATA_ENV_VAR} to a folder with the IDX files")
    return loaded


@pytest.fixture(scope="module")
def shipped() -> Network:
    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"{SHIPPED_MODEL} is not in this checkout")
    return load_network(SHIPPED_MODEL)


def luau_and_python(stack: Network, precision: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities from Luau and from the Python dequantized model, for the same module."""
    container = quantize_network(stack, precision, prune_threshold=0.0, pixel_counts=NO_PRUNING)
    files = emit_module(
        compress(pack(container), "zstd"), "zstd", version=container.version(), comment_lines=["test"]
    )
    pixels = to_pixels(images)
    luau = LuauRuntime(files).predict(pixels).probabilities
    return luau, dequantize_network(container).predict(pixels.astype(np.float32) / 255)


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_luau_agrees_with_python_on_every_test_digit(
    shipped: Network, test_set: tuple[np.ndarray, np.ndarray], precision: str
) -> None:
    images, _ = test_set
    luau, python = luau_and_python(shipped, precision, images)
    same = luau.argmax(axis=1) == python.argmax(axis=1)
    if precision == "float32":
        # same weights, only the summation order differs: every digit, tight probabilities
        assert same.all(), f"digits differ at {np.flatnonzero(~same)[:10]}"
        assert np.abs(luau - python).max() <= FLOAT32_PROBABILITY_TOLERANCE
    else:
        assert same.mean() >= QUANTIZED_AGREEMENT, f"{precision}: {int((~same).sum())} digits differ"


# --- a deeper stack, trained here ----------------------------------------------------------


@pytest.mark.slow
def test_deeper_trained_stack_predicts_the_same_in_luau(tmp_path: Path) -> None:
    from mnistpack.model import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    data_dir = mnist_dir()
    loaded = load_test_set(data_dir) if data_dir is not None else None
    rng = np.random.default_rng(0)
    if loaded is not None:
        # Luau is checked against Python here, not scored: any 3,000 digits will do
        images, labels = loaded[0][:3000], loaded[1][:3000]
    else:
        # no MNIST here: learn a rule on random sparse images, still a trained deeper stack
        images = sparse_images(3000, INPUT_SIZE).astype(np.float32)
        labels = (images[:, :392].sum(axis=1) > images[:, 392:].sum(axis=1)).astype(np.uint8)
    model = keras.Sequential(
        [
            keras.Input((INPUT_SIZE,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images, labels, batch_size=32, epochs=3, verbose=0)  # about 280 steps
    path = tmp_path / "deep.keras"
    model.save(path)
    stack = load_network(path)
    assert [layer.weight.shape for layer in stack.layers] == [(64, INPUT_SIZE), (32, 64), (10, 32)]
    sample = images[rng.permutation(len(images))[:1000]]
    for precision in ("float32", "int8"):
        luau, python = luau_and_python(stack, precision, sample)
        assert (luau.argmax(axis=1) == python.argmax(axis=1)).all(), precision
        np.testing.assert_allclose(luau, python, rtol=0, atol=FLOAT32_PROBABILITY_TOLERANCE)
