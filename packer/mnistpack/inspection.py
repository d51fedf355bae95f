"""`mnistpack inspect`: read a weights module as Roblox would, decode it in Python and describe it."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from mnistpack.compression import decompress
from mnistpack.constants import FORMAT_VERSION, INT4_BLOCK_BYTES, INT4_SCALE_BYTES
from mnistpack.container import Container, stored_crc, unpack
from mnistpack.module_reader import read_module
from mnistpack.quantize import QuantizedTensor, payload_length

# How much of a long meta list, map or string inspect prints.
SHOWN_ITEMS: Final = 16
SHOWN_META_KEYS: Final = 64
SHOWN_CHARS: Final = 120


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
        *_meta_lines(container.meta),
    ]


def _meta_lines(meta: Mapping[str, Any]) -> list[str]:
    items = sorted(meta.items())
    lines = [f"  {_clean(key)}: {_plain(value)}" for key, value in items[:SHOWN_META_KEYS]]
    if len(items) > SHOWN_META_KEYS:
        lines.append(f"  ... ({len(items) - SHOWN_META_KEYS:,} more keys)")
    return lines


def _layer_lines(container: Container) -> list[str]:
    shapes = {tensor.name: list(tensor.shape) for tensor in container.tensors}
    lines = [f"layers: {len(container.layers)}"]
    for number, layer in enumerate(container.layers, start=1):
        out, inputs = shapes[layer.weight]
        lines.append(f"  {number}. {layer.kind} {inputs} -> {out}, {layer.activation}")
    return lines


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
