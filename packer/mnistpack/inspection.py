"""`mnistpack inspect`: read a weights module as Roblox would, decode it in Python and describe it."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from mnistpack.compression import decompress
from mnistpack.constants import INT4_BLOCK_BYTES, INT4_SCALE_BYTES
from mnistpack.container import Container, LayerSpec, stored_crc, unpack
from mnistpack.module_reader import read_module
from mnistpack.quantize import QuantizedTensor, payload_length
from mnistpack.shapes import count, network_shapes

# How much of a long meta list, map or string inspect prints.
SHOWN_ITEMS: Final = 16
SHOWN_META_KEYS: Final = 64
SHOWN_CHARS: Final = 120


def inspect_module(path: Path) -> list[str]:
    """Lines describing the module at `path`; a FormatError names the stage that failed."""
    compression, blob = read_module(path)
    raw = decompress(blob, compression)
    # unpack accepts only a version it reads and a CRC that matches, so both are known here
    container = unpack(raw)
    return [
        f"module: {path}",
        f"format: mnistpack version {container.version()}, compression {compression}",
        f"sizes: {len(blob):,} bytes stored, container {len(raw):,} bytes, "
        f"payload {sum(len(t.data) for t in container.tensors):,} bytes",
        f"crc32: {stored_crc(raw):08x} (verified)",
        f"precision: {container.meta.get('precision')}",
        *_layer_lines(container),
        "tensors:",
        *(f"  {_tensor_line(tensor)}" for tensor in container.tensors),
        "meta:",
        *_meta_lines(container.meta),
    ]


def _meta_lines(meta: Mapping[str, Any]) -> list[str]:
    items = sorted(meta.items())
    lines = [f"  {_clean(key)}: {_plain(value)}" for key, value in items[:SHOWN_META_KEYS]]
    if len(items) > SHOWN_META_KEYS:
        lines.append(f"  ... ({len(items) - SHOWN_META_KEYS:,} more keys)")
    return lines


def _layer_lines(container: Container) -> list[str]:
    tensor_shapes = {tensor.name: tensor.shape for tensor in container.tensors}
    geometries = [layer.geometry(tensor_shapes) for layer in container.layers]
    shape = tuple(container.meta["input"]["shape"])
    # unpack checked that the shapes chain, so this cannot fail
    outputs = network_shapes(geometries, shape)
    lines = [f"layers: {len(container.layers)}"]
    for number, (layer, output) in enumerate(zip(container.layers, outputs, strict=True), start=1):
        inputs = _dims(shape) if layer.kind != "dense" else str(count(shape))
        activation = f", {layer.activation}" if layer.activation else ""
        lines.append(f"  {number}. {_kind(layer, tensor_shapes)} {inputs} -> {_dims(output)}{activation}")
        shape = output
    return lines


def _kind(layer: LayerSpec, tensor_shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The kind and its window: "conv2d 3x3 stride 1x1 valid", "maxpool2d 2x2 stride 2x2 same"."""
    if layer.strides is None:
        return layer.kind
    window = layer.pool_size or tensor_shapes[layer.weight][1:3]
    return f"{layer.kind} {_dims(window)} stride {_dims(layer.strides)} {layer.padding}"


def _dims(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def _tensor_line(tensor: QuantizedTensor) -> str:
    size = payload_length(tensor.precision, tensor.shape)
    shape = f"{tensor.precision} {list(tensor.shape)}"
    return f"{_clean(tensor.name)}: {shape}, {size:,} bytes{_scale_summary(tensor)}"


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
    """A meta value on one line, long lists, maps and strings cut short: a header may hold
    up to MAX_HEADER_VALUES values, nested up to MAX_HEADER_DEPTH levels (the decoder
    checked both), and inspect prints a summary, not all of them."""
    if isinstance(value, Mapping):
        items = sorted(value.items())
        shown = [f"{_clean(key)}: {_plain(item)}" for key, item in items[:SHOWN_ITEMS]]
        return "{" + ", ".join(shown + _more(len(items))) + "}"
    if isinstance(value, list):
        shown = [_plain(item) for item in value[:SHOWN_ITEMS]]
        return "[" + ", ".join(shown + _more(len(value))) + "]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return _clean(str(value))


def _clean(text: str) -> str:
    """One printable line: control characters (a newline, a terminal escape) become '?'."""
    short = text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."
    return "".join("?" if unicodedata.category(char) == "Cc" else char for char in short)


def _more(count: int) -> list[str]:
    return [f"... ({count - SHOWN_ITEMS:,} more)"] if count > SHOWN_ITEMS else []
