"""`mnistpack inspect`: decode a weights module in Python and describe every field of it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mnistpack.compression import decompress
from mnistpack.constants import FORMAT_VERSION, INT4_BLOCK_BYTES, INT4_SCALE_BYTES
from mnistpack.container import Container, stored_crc, unpack
from mnistpack.luau_emit import read_module
from mnistpack.quantize import QuantizedTensor, payload_length


def inspect_module(path: Path) -> list[str]:
    """Lines describing the module at `path`; a FormatError names the stage that failed."""
    compression, blob = read_module(path)
    raw = decompress(blob, compression)
    # unpack accepts only FORMAT_VERSION and a CRC that matches, so both are known here
    container = unpack(raw)
    return [
        f"module: {path}",
        f"format: mnistpack version {FORMAT_VERSION}, compression {compression}",
        f"sizes: {len(blob):,} bytes stored, container {len(raw):,} bytes, "
        f"payload {sum(len(t.data) for t in container.tensors):,} bytes",
        f"crc32: {stored_crc(raw):08x} (verified)",
        f"precision: {container.meta.get('precision')}",
        *_layer_lines(container),
        "tensors:",
        *(f"  {_tensor_line(tensor)}" for tensor in container.tensors),
        "meta:",
        *(f"  {key}: {_plain(value)}" for key, value in sorted(container.meta.items())),
    ]


def _layer_lines(container: Container) -> list[str]:
    shapes = {tensor.name: list(tensor.shape) for tensor in container.tensors}
    lines = [f"layers: {len(container.layers)}"]
    for number, layer in enumerate(container.layers, start=1):
        out, inputs = shapes[layer.weight]
        lines.append(f"  {number}. {layer.kind} {inputs} -> {out}, {layer.activation}")
    return lines


def _tensor_line(tensor: QuantizedTensor) -> str:
    size = payload_length(tensor.precision, tensor.shape)
    return f"{tensor.name}: {tensor.precision} {list(tensor.shape)}, {size:,} bytes{_scale_summary(tensor)}"


def _scale_summary(tensor: QuantizedTensor) -> str:
    if tensor.precision == "int8":
        scales = np.array(tensor.scales)
        kind = "per tensor" if len(scales) == 1 else "per row"
        return f"; {len(scales)} scale{'s' if len(scales) > 1 else ''} {kind}, {_span(scales)}"
    if tensor.precision == "int4":
        count = payload_length("int4", tensor.shape) // (INT4_SCALE_BYTES + INT4_BLOCK_BYTES)
        d = np.abs(np.frombuffer(tensor.data, "<f2", count=count).astype(np.float64))
        return f"; {count:,} float16 block scales, |d| {_span(d)}, {int((d == 0).sum()):,} zero"
    return ""


def _span(values: np.ndarray) -> str:
    low, high = float(values.min()), float(values.max())
    return f"{low:.6g}" if low == high else f"{low:.6g} to {high:.6g}"


def _plain(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key}: {_plain(item)}" for key, item in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_plain(item) for item in value) + "]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
