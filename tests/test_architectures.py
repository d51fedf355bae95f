"""The networks `train` builds: layer by layer, and what the packer reads from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mnistpack.architectures import CNN, CnnSpec, cnn, glorot_init, mlp
from mnistpack.keras_model import load_network
from mnistpack.model import import_keras


@pytest.fixture(scope="module")
def keras() -> Any:
    return import_keras()


def test_the_shipped_cnn_and_what_the_packer_makes_of_it(keras: Any, tmp_path: Path) -> None:
    model = cnn(keras, CNN)
    glorot_init(keras, model, seed=0)
    assert model.input_shape == (None, 784) and model.output_shape == (None, 10)
    assert CNN.describe() == "c8p-c16p-c48-flat-10"
    path = tmp_path / "cnn.keras"
    model.save(path)
    network = load_network(path)
    # the leading reshape becomes the input shape, batch norm and relu fold into the convolutions
    assert network.input_shape == (28, 28, 1)
    assert [(layer.kind, getattr(layer, "activation", "")) for layer in network.layers] == [
        ("conv2d", "relu"),
        ("maxpool2d", ""),
        ("conv2d", "relu"),
        ("maxpool2d", ""),
        ("conv2d", "relu"),
        ("flatten", ""),
        ("dense", "softmax"),
    ]
    assert network.shapes()[-3:] == [(3, 3, 48), (432,), (10,)]
    x = np.random.default_rng(1).random((16, 784), dtype=np.float32)
    np.testing.assert_allclose(network.predict(x), model.predict(x, verbose=0), rtol=0, atol=1e-5)


def test_average_head_and_hidden_layer(keras: Any) -> None:
    spec = CnnSpec(channels=(4, 6), pools=1, head="average", hidden=12)
    model = cnn(keras, spec)
    assert spec.describe() == "c4p-c6-gap-d12-10"
    names = [type(layer).__name__ for layer in model.layers]
    assert names.count("Conv2D") == 2 and names.count("MaxPooling2D") == 1
    assert "GlobalAveragePooling2D" in names and names.count("Dense") == 2
    assert model.count_params() == (9 * 4 + 4 * 4) + (9 * 4 * 6 + 4 * 6) + (6 * 12 + 4 * 12) + (12 * 10 + 10)


def test_glorot_start_is_seeded_and_scaled_by_fan(keras: Any) -> None:
    first, second = cnn(keras, CNN), cnn(keras, CNN)
    glorot_init(keras, first, seed=4)
    glorot_init(keras, second, seed=4)
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    kernel = first.get_layer("conv2").get_weights()[0]  # 3x3, 8 in, 16 out
    assert np.abs(kernel).max() <= np.sqrt(6 / (9 * 8 + 9 * 16))
    assert np.abs(kernel).max() > 0.9 * np.sqrt(6 / (9 * 8 + 9 * 16))
    dense = mlp(keras, 16, dropout=0.0)
    glorot_init(keras, dense, seed=4)
    hidden, bias = dense.get_layer("hidden").get_weights()
    assert np.abs(hidden).max() <= np.sqrt(6 / (784 + 16)) and not bias.any()


def test_specs_are_checked() -> None:
    for bad in ({"channels": ()}, {"channels": (0,)}, {"head": "max"}, {"hidden": -1}, {"pools": 4}):
        with pytest.raises(ValueError):
            CnnSpec(**bad)
