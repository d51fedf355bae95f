"""The golden weights modules: a hand-made 4-3-2 network at every precision, pinned byte for byte.

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


def golden_container(variant: str) -> Container:
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
    """What every decoder must return: per layer W (rows), b and activation, as exact floats."""
    container = golden_container(variant)
    by_name = {tensor.name: tensor for tensor in container.tensors}
    return [
        {
            "W": dequantize(by_name[layer.weight]).astype(np.float64).tolist(),
            "b": dequantize(by_name[layer.bias]).astype(np.float64).tolist(),
            "activation": layer.activation,
        }
        for layer in container.layers
    ]


def golden_files() -> dict[str, bytes]:
    """File name -> bytes of every golden file."""
    files: dict[str, bytes] = {}
    expected = {}
    for variant in VARIANTS:
        raw = pack(golden_container(variant))
        files[f"{variant}.mnpk"] = raw
        for compression, suffix in (("zstd", ".luau"), ("none", ".none.luau")):
            comments = [f"golden test module {variant} ({compression}); see tests/golden/make_golden.py"]
            (source,) = emit_module(compress(raw, compression), compression, comment_lines=comments).values()
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
