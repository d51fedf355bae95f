"""Network: built from arrays, checked, and its NumPy forward pass for every layer kind."""

from __future__ import annotations

import numpy as np
import pytest
from mnistpack.errors import ModelError
from mnistpack.model import (
    Conv2DLayer,
    DenseLayer,
    FlattenLayer,
    GlobalAvgPool2DLayer,
    Network,
    Pool2DLayer,
    dense_stack_from_arrays,
    frozen_float32,
)


def _layers(*sizes: int, activation: str = "relu") -> list[tuple[np.ndarray, np.ndarray, str]]:
    rng = np.random.default_rng(0)
    return [
        (rng.normal(size=(out, inp)), rng.normal(size=out), activation)
        for inp, out in zip(sizes, sizes[1:], strict=False)
    ]


def test_from_arrays_copies_and_freezes() -> None:
    layers = _layers(784, 5, 10)
    stack = dense_stack_from_arrays(layers)
    assert isinstance(stack, Network) and (stack.input_size, stack.output_size) == (784, 10)
    assert stack.layers[0].weight.dtype == np.float32
    layers[0][0][:] = 0
    assert stack.layers[0].weight.any()
    with pytest.raises(ValueError, match="read-only"):
        stack.layers[0].weight[0, 0] = 1


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (_layers(100, 10), r"layer 0 \(dense\): the weight takes 100 inputs, the layer gets \[28, 28\]"),
        (
            _layers(784, 5) + _layers(4, 10),
            r"layer 1 \(dense\): the weight takes 4 inputs, the layer gets \[5\]",
        ),
        ([(np.ones((10, 784)), np.ones(9), "relu")], r"bias of shape \(9,\), expected float32 \(10,\)"),
        ([(np.ones(784), np.ones(1), "relu")], r"weight of shape \(784,\), expected 2-D float32"),
        (_layers(784, 10, activation="swish"), "uses activation 'swish'"),
        ([], "The model has 0 layers to ship"),
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


# --- convolutional layers: the NumPy forward pass against loops written from FORMAT.md ---


def _kernel(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return frozen_float32(np.random.default_rng(seed).normal(0, 0.5, shape))


def _naive_conv(x: np.ndarray, layer: Conv2DLayer, top: int, left: int, out_h: int, out_w: int) -> np.ndarray:
    """FORMAT.md section 3.4 word for word: every output, every tap, padding reads 0."""
    out, kh, kw, channels = layer.kernel.shape
    n, height, width, _ = x.shape
    y = np.zeros((n, out_h, out_w, out), np.float64)
    for oy in range(out_h):
        for ox in range(out_w):
            for dy in range(kh):
                for dx in range(kw):
                    iy, ix = oy * layer.strides[0] - top + dy, ox * layer.strides[1] - left + dx
                    if 0 <= iy < height and 0 <= ix < width:
                        y[:, oy, ox, :] += x[:, iy, ix, :].astype(np.float64) @ layer.kernel[:, dy, dx, :].T
    return y + layer.bias


@pytest.mark.parametrize(
    ("kernel", "strides", "padding", "expected"),
    [
        ((3, 3), (1, 1), "valid", (5, 6, 0, 0)),
        ((3, 3), (1, 1), "same", (7, 8, 1, 1)),
        ((2, 3), (2, 2), "same", (4, 4, 0, 0)),
        ((4, 4), (3, 2), "same", (3, 4, 1, 1)),
        ((1, 5), (2, 1), "valid", (4, 4, 0, 0)),
    ],
)
def test_conv2d_follows_format_md(
    kernel: tuple[int, int], strides: tuple[int, int], padding: str, expected: tuple[int, int, int, int]
) -> None:
    out_h, out_w, top, left = expected
    layer = Conv2DLayer(_kernel((4, *kernel, 3), 1), _kernel((4,), 2), strides, padding, "linear")
    x = np.random.default_rng(3).random((2, 7, 8, 3), dtype=np.float32)
    got = layer.forward(x)
    assert got.shape == (2, out_h, out_w, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, _naive_conv(x, layer, top, left, out_h, out_w), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d"])
def test_pools_ignore_padding(kind: str) -> None:
    x = -np.arange(1, 2 * 5 * 5 + 1, dtype=np.float32).reshape(1, 5, 5, 2)  # all negative: 0 would win a max
    layer = Pool2DLayer(kind, (2, 2), (2, 2), "same")
    got = layer.forward(x)
    assert got.shape == (1, 3, 3, 2)
    pick = np.max if kind == "maxpool2d" else np.mean
    # the last row and column of windows hold 2 or 1 input positions, and only those count
    assert got[0, 2, 2, 0] == x[0, 4, 4, 0]
    assert got[0, 0, 2, 1] == pick(x[0, 0:2, 4, 1])
    assert got[0, 1, 1, 0] == pick(x[0, 2:4, 2:4, 0])
    valid = Pool2DLayer(kind, (2, 2), (2, 2), "valid").forward(x)
    assert valid.shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(valid, got[:, :2, :2])


def test_global_average_and_flatten() -> None:
    x = np.random.default_rng(4).random((3, 4, 5, 6), dtype=np.float32)
    np.testing.assert_allclose(GlobalAvgPool2DLayer().forward(x), x.mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_array_equal(FlattenLayer().forward(x), x.reshape(3, 120))  # stored order


def _cnn(*layers: object, input_shape: tuple[int, ...] = (28, 28, 1)) -> Network:
    return Network(layers=tuple(layers), source_sha256="0" * 64, input_shape=input_shape)  # type: ignore[arg-type]


def _conv(out: int, channels: int, activation: str = "relu", padding: str = "valid") -> Conv2DLayer:
    return Conv2DLayer(_kernel((out, 3, 3, channels), out), _kernel((out,), 9), (1, 1), padding, activation)


def _dense(out: int, inputs: int, activation: str = "softmax") -> DenseLayer:
    return DenseLayer(_kernel((out, inputs), out + inputs), _kernel((out,), 7), activation)


def test_a_small_cnn_predicts_probabilities() -> None:
    network = _cnn(
        _conv(4, 1),
        Pool2DLayer("maxpool2d", (2, 2), (2, 2), "valid"),
        FlattenLayer(),
        _dense(10, 13 * 13 * 4),
    )
    assert network.shapes() == [(26, 26, 4), (13, 13, 4), (676,), (10,)]
    assert (network.input_size, network.output_size) == (784, 10)
    assert [layer.kind for layer in network.weighted] == ["conv2d", "dense"]
    out = network.predict(np.random.default_rng(0).random((1500, 784), dtype=np.float32))
    assert out.shape == (1500, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize(
    ("layers", "input_shape", "message"),
    [
        ((_conv(4, 1), _dense(10, 2704)), (28, 28, 1), "dense layer needs a 1-D input"),
        ((_conv(4, 2), FlattenLayer(), _dense(10, 2704)), (28, 28, 1), "takes 2 channels"),
        ((_conv(4, 1), FlattenLayer(), _dense(10, 2704)), (28, 28), r"needs a 3-D \[H, W, C\] input"),
        ((_conv(4, 1, "softmax"), FlattenLayer(), _dense(10, 2704)), (28, 28, 1), "softmax to a"),
        ((_conv(4, 1),), (28, 28, 1), "must be a vector"),
        ((FlattenLayer(),), (28, 28, 1), "no Dense or Conv2D layer"),
        (
            (Pool2DLayer("maxpool2d", (29, 2), (1, 1), "valid"), FlattenLayer(), _dense(10, 27)),
            (28, 28, 1),
            "does not fit",
        ),
    ],
    ids=["dense-on-image", "channels", "2-d-input", "softmax-image", "image-out", "no-weights", "window"],
)
def test_networks_that_do_not_fit_together(
    layers: tuple[object, ...], input_shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        _cnn(*layers, input_shape=input_shape)


def test_windows_need_sane_strides_and_padding() -> None:
    with pytest.raises(ModelError, match="strides"):
        Pool2DLayer("maxpool2d", (2, 2), (0, 2), "valid")
    with pytest.raises(ModelError, match="padding 'full'"):
        Conv2DLayer(_kernel((2, 3, 3, 1), 0), _kernel((2,), 0), (1, 1), "full", "relu")
    with pytest.raises(ModelError, match="expected 4-D float32"):
        Conv2DLayer(_kernel((2, 9), 0), _kernel((2,), 0), (1, 1), "same", "relu")
