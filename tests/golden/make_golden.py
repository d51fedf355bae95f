"""The golden weights modules, pinned byte for byte: a hand-made 4-3-2 dense network (format
version 1) and a small convolutional network with every layer kind (version 2), each at every
precision.

Regenerate (only after a deliberate format or packer change, and say so in the commit):

    .venv/bin/python -m tests.golden.make_golden

tests/test_container.py checks that the packer still produces exactly these bytes, and
that decoding them gives exactly the values in expected.json; the Luau decoder tests
decode the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from mnistpack.build import INT8_PER_ROW
from mnistpack.compression import compress
from mnistpack.container import Container, LayerSpec, pack
from mnistpack.luau_emit import emit_module
from mnistpack.quantize import dequantize, quantize

GOLDEN_DIR = Path(__file__).resolve().parent
# zstd output may change with the library: the .luau (zstd) files are pinned for this one
ZSTD_VERSION = (1, 5, 7)

# Row 1 of W1 is all zeros; columns are fewer than an int4 block, so blocks are padded.
W1 = [[0.5, -0.25, 0.125, 1.0], [0.0, 0.0, 0.0, 0.0], [-0.75, 0.3, -0.1, 0.05]]
B1 = [0.1, -0.2, 0.0]
W2 = [[1.5, -2.0, 0.25], [-0.5, 0.75, 3.0]]
B2 = [0.01, -0.01]

# variant name -> (weight precision, int8 per-row scales)
VARIANTS = {
    "float32": ("float32", False),
    "float16": ("float16", False),
    "int8": ("int8", False),
    "int8_per_row": ("int8", True),
    "int4": ("int4", False),
}
# The convolutional network, as the packer quantizes it (int8: per row for kernels).
CNN_VARIANTS = {f"cnn_{precision}": precision for precision in ("float32", "float16", "int8", "int4")}

# Every layer kind in one chain: [6, 6, 2] -> conv 3x3 same relu [6, 6, 4] -> maxpool 2x2
# [3, 3, 4] -> conv 2x2 stride 2 same [2, 2, 3] -> avgpool 2x2 stride 1 same (windows cut by
# the edge) [2, 2, 3] -> global_avgpool2d [3] -> flatten (of a vector: no change) [3] -> dense
# tanh [5] -> dense softmax [2].
CNN_INPUT = [6, 6, 2]


def _grid(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Hand-checkable weights: multiples of 1/16 between -1 and 1, one exact zero row first."""
    rng = np.random.default_rng(seed)
    values = rng.integers(-16, 17, shape).astype(np.float32) / 16
    values[0] = 0
    return values


CNN_TENSORS = {
    "conv1": (_grid((4, 3, 3, 2), 1), np.array([0.1, -0.2, 0.0, 0.3], np.float32)),
    "conv2": (_grid((3, 2, 2, 4), 2), np.array([0.05, 0.0, -0.1], np.float32)),
    "dense1": (_grid((5, 3), 3), np.array([0.0, 0.1, -0.1, 0.2, 0.0], np.float32)),
    "dense2": (_grid((2, 5), 4), np.array([0.01, -0.01], np.float32)),
}
CNN_LAYERS = (
    LayerSpec("conv2d", "relu", "conv1.weight", "conv1.bias", strides=(1, 1), padding="same"),
    LayerSpec("maxpool2d", pool_size=(2, 2), strides=(2, 2), padding="valid"),
    LayerSpec("conv2d", "linear", "conv2.weight", "conv2.bias", strides=(2, 2), padding="same"),
    LayerSpec("avgpool2d", pool_size=(2, 2), strides=(1, 1), padding="same"),
    LayerSpec("global_avgpool2d"),
    LayerSpec("flatten"),
    LayerSpec("dense", "tanh", "dense1.weight", "dense1.bias"),
    LayerSpec("dense", "softmax", "dense2.weight", "dense2.bias"),
)


def golden_cnn_container(variant: str) -> Container:
    precision = CNN_VARIANTS[variant]
    tensors = []
    for name, (weight, bias) in CNN_TENSORS.items():
        per_row = INT8_PER_ROW["conv2d" if weight.ndim == 4 else "dense"]
        tensors.append(quantize(f"{name}.weight", weight, precision, per_row=per_row))
        tensors.append(quantize(f"{name}.bias", bias, "float32"))
    meta = {
        "input": {"shape": CNN_INPUT, "layout": "row-major", "range": [0.0, 1.0]},
        "labels": ["a", "b"],
        "precision": precision,
        "source_sha256": "0" * 64,
        "packer_version": "golden",
    }
    return Container(tuple(tensors), CNN_LAYERS, meta)


def golden_container(variant: str) -> Container:
    if variant in CNN_VARIANTS:
        return golden_cnn_container(variant)
    precision, per_row = VARIANTS[variant]
    tensors = (
        quantize("dense1.weight", np.array(W1, np.float32), precision, per_row=per_row),
        quantize("dense1.bias", np.array(B1, np.float32), "float32"),
        quantize("dense2.weight", np.array(W2, np.float32), precision, per_row=per_row),
        quantize("dense2.bias", np.array(B2, np.float32), "float32"),
    )
    layers = (
        LayerSpec("dense", "relu", "dense1.weight", "dense1.bias"),
        LayerSpec("dense", "softmax", "dense2.weight", "dense2.bias"),
    )
    meta = {
        "input": {"shape": [2, 2], "layout": "row-major", "range": [0.0, 1.0]},
        "labels": ["0", "1"],
        "precision": precision,
        "source_sha256": "0" * 64,
        "packer_version": "golden",
        "pruning": {"threshold": 0.0, "inputs_zeroed": 0},
        "accuracy": {"correct": 1, "total": 2},
    }
    return Container(tensors, layers, meta)


def expected_values(variant: str) -> list[dict[str, Any]]:
    """What every decoder must return, per layer: W (rows: a kernel's row is one output
    channel), b and activation as exact floats; version 2 layers also name their kind and
    window (strides, padding, pool_size)."""
    container = golden_container(variant)
    by_name = {tensor.name: tensor for tensor in container.tensors}
    layers = []
    for layer in container.layers:
        entry: dict[str, Any] = {}
        if layer.weight:
            weight = dequantize(by_name[layer.weight])
            entry["W"] = weight.reshape(len(weight), -1).astype(np.float64).tolist()
            entry["b"] = dequantize(by_name[layer.bias]).astype(np.float64).tolist()
        if variant in CNN_VARIANTS:
            entry.update(layer.to_map())
            entry.pop("weight", None)
            entry.pop("bias", None)
        else:
            entry["activation"] = layer.activation
        layers.append(entry)
    return layers


def golden_files() -> dict[str, bytes]:
    """File name -> bytes of every golden file."""
    files: dict[str, bytes] = {}
    expected = {}
    for variant in [*VARIANTS, *CNN_VARIANTS]:
        container = golden_container(variant)
        raw = pack(container)
        files[f"{variant}.mnpk"] = raw
        for compression, suffix in (("zstd", ".luau"), ("none", ".none.luau")):
            comments = [f"golden test module {variant} ({compression}); see tests/golden/make_golden.py"]
            blob = compress(raw, compression)
            (source,) = emit_module(
                blob, compression, version=container.version(), comment_lines=comments
            ).values()
            files[variant + suffix] = source.encode()
        expected[variant] = expected_values(variant)
    lines = [
        f"  {json.dumps(name)}: {json.dumps(values, sort_keys=True)}" for name, values in expected.items()
    ]
    files["expected.json"] = ("{\n" + ",\n".join(lines) + "\n}\n").encode()
    return files


def main() -> None:
    for name, data in golden_files().items():
        (GOLDEN_DIR / name).write_bytes(data)
        print(f"wrote tests/golden/{name} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
