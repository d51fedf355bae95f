"""Shared by the Luau decoder tests: small models packed by the Python packer, and a Luau
helper that decodes a module and hands every weight back as exact float64 bytes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from mnistpack.compression import compress
from mnistpack.constants import ERROR_STAGES, FORMAT_NAME, FORMAT_VERSION
from mnistpack.container import Container, LayerSpec, pack, unpack
from mnistpack.luau_emit import base64_lines, emit_module
from mnistpack.quantize import QuantizedTensor, dequantize, quantize
from mnistpack.shapes import Shape, network_shapes

from tests.luau_host import LuauHost

# Decodes a module table (or string) and flattens the weights: every W row by row, then
# b, layer after layer, as little-endian float64; doubles are compared exactly, so -0.0
# and every low bit count. Returns ok, then (flat bytes, shapes, activations) or the error.
# A dense layer's shape is "rowsxcols"; other kinds add what they are (`layer_token`).
DECODE_CHUNK = r"""
local Decoder = require(root.Decoder)
local module, maxBytes = ...
local ok, result = pcall(Decoder.decode, module, { maxBytes = maxBytes })
if not ok then
	return false, tostring(result)
end
local count = 0
for _, layer in result.layers do
	for _, row in layer.W do
		count += #row
	end
	count += #layer.b
end
local out = buffer.create(count * 8)
local o = 0
local shapes, activations = {}, {}
for _, layer in result.layers do
	for _, row in layer.W do
		for _, v in row do
			buffer.writef64(out, o, v)
			o += 8
		end
	end
	for _, v in layer.b do
		buffer.writef64(out, o, v)
		o += 8
	end
	local size = if #layer.W > 0 then string.format("%dx%d", #layer.W, #layer.W[1]) else ""
	if layer.kind == "dense" then
		table.insert(shapes, size)
	else
		local window = string.format("%dx%d/", layer.window[1], layer.window[2])
			.. string.format("%dx%d", layer.strides[1], layer.strides[2])
		local dims = table.concat(layer.inputShape, "x") .. ">" .. table.concat(layer.outputShape, "x")
		table.insert(shapes, string.format("%s %s %s %s %s", size, layer.kind, window, layer.padding, dims))
	end
	table.insert(activations, layer.activation)
end
return true, buffer.tostring(out), table.concat(shapes, ","), table.concat(activations, ",")
"""


@dataclass(frozen=True)
class Packed:
    """A container packed by the Python packer, and what every decoder must return for it."""

    container: bytes
    flat: bytes  # float64 little-endian, in DECODE_CHUNK's order
    shapes: str
    activations: str


def small_meta(input_shape: Sequence[int], outputs: int, precision: str) -> dict[str, object]:
    return {
        "input": {"shape": list(input_shape), "layout": "row-major", "range": [0.0, 1.0]},
        "labels": [str(i) for i in range(outputs)],
        "precision": precision,
        "source_sha256": "0" * 64,
        "packer_version": "test",
        "pruning": {"threshold": 0.0, "inputs_zeroed": 0},
    }


def pack_layers(
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    precision: str,
    activations: Sequence[str],
    input_shape: Sequence[int] | None = None,
    bias_precision: str = "float32",
    per_row: bool = True,
) -> Packed:
    """Quantize and pack a Dense stack with the Python packer; W[k] has shape [out, in]."""
    tensors: list[QuantizedTensor] = []
    layers: list[LayerSpec] = []
    for k, (w, b, activation) in enumerate(zip(weights, biases, activations, strict=True)):
        tensors.append(quantize(f"dense_{k}/kernel", w, precision, per_row=per_row))
        tensors.append(quantize(f"dense_{k}/bias", b, bias_precision))
        layers.append(LayerSpec("dense", activation, f"dense_{k}/kernel", f"dense_{k}/bias"))
    shape = list(input_shape) if input_shape is not None else [weights[0].shape[1]]
    meta = small_meta(shape, weights[-1].shape[0], precision)
    container = pack(Container(tuple(tensors), tuple(layers), meta))
    flat = b"".join(dequantize(t).astype(np.float64).astype("<f8").tobytes() for t in tensors)
    shapes = ",".join(f"{w.shape[0]}x{w.shape[1]}" for w in weights)
    return Packed(container, flat, shapes, ",".join(activations))


def layer_token(layer: LayerSpec, weight: tuple[int, ...], shapes: tuple[Shape, Shape]) -> str:
    """DECODE_CHUNK's description of a layer: "rowsxcols" for dense, more for other kinds."""
    size = f"{weight[0]}x{math.prod(weight[1:])}" if weight else ""
    if layer.kind == "dense":
        return size
    window = layer.pool_size or (weight[1:3] if weight else (1, 1))
    strides = layer.strides or (1, 1)
    dims = ">".join("x".join(map(str, shape)) for shape in shapes)
    padding = layer.padding or "valid"
    return f"{size} {layer.kind} {window[0]}x{window[1]}/{strides[0]}x{strides[1]} {padding} {dims}"


def python_flat(container: bytes) -> tuple[bytes, str, str]:
    """What Python's own decoder makes of a container (raises FormatError if it refuses it):
    flat float64 bytes, shapes and activations, in DECODE_CHUNK's order."""
    unpacked = unpack(container)
    by_name = {tensor.name: tensor for tensor in unpacked.tensors}
    tensor_shapes = {tensor.name: tensor.shape for tensor in unpacked.tensors}
    inputs: Shape = tuple(unpacked.meta["input"]["shape"])
    outputs = network_shapes([layer.geometry(tensor_shapes) for layer in unpacked.layers], inputs)
    parts = []
    tokens = []
    for layer, output in zip(unpacked.layers, outputs, strict=True):
        if layer.weight:
            with np.errstate(invalid="ignore"):  # a damaged float tensor may hold signalling NaNs
                parts.append(dequantize(by_name[layer.weight]).astype("<f8").tobytes())
                parts.append(dequantize(by_name[layer.bias]).astype("<f8").tobytes())
        tokens.append(layer_token(layer, tensor_shapes.get(layer.weight, ()), (inputs, output)))
        inputs = output
    activations = ",".join(layer.activation or "linear" for layer in unpacked.layers)
    return b"".join(parts), ",".join(tokens), activations


def small_stack(precision: str, seed: int = 0, sizes: Sequence[int] = (20, 8, 3)) -> Packed:
    """A tiny Dense stack (20-8-3 by default): fast enough to decode thousands of times."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 0.5, (sizes[k + 1], sizes[k])).astype(np.float32) for k in range(len(sizes) - 1)]
    biases = [rng.normal(0, 0.1, sizes[k + 1]).astype(np.float32) for k in range(len(sizes) - 1)]
    activations = ["relu"] * (len(sizes) - 2) + ["softmax"]
    return pack_layers(
        weights, biases, precision, activations, input_shape=[4, 5] if sizes[0] == 20 else None
    )


def pack_layer_specs(
    arrays: Sequence[tuple[np.ndarray, np.ndarray]],
    layers: Sequence[LayerSpec],
    precision: str,
    input_shape: Sequence[int],
    outputs: int,
) -> Packed:
    """Quantize and pack any network with the Python packer (int8: per row, as it does for
    kernels); `arrays` gives (weight, bias) of the layers that have tensors, in order."""
    tensors: list[QuantizedTensor] = []
    weighted = iter(arrays)
    for layer in layers:
        if layer.weight:
            weight, bias = next(weighted)
            tensors.append(quantize(layer.weight, weight, precision, per_row=True))
            tensors.append(quantize(layer.bias, bias, "float32"))
    meta = small_meta(input_shape, outputs, precision)
    del meta["pruning"]
    container = pack(Container(tuple(tensors), tuple(layers), meta))
    flat, shapes, activations = python_flat(container)
    return Packed(container, flat, shapes, activations)


def small_cnn(precision: str, seed: int = 0) -> Packed:
    """A tiny network with every layer kind on a [7, 6, 2] input: conv 3x3 same, maxpool,
    conv 2x2 stride 2 valid, avgpool same, global average, flatten, dense."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.5, shape).astype(np.float32)

    arrays = [(normal(3, 3, 3, 2), normal(3)), (normal(4, 2, 2, 3), normal(4)), (normal(3, 4), normal(3))]
    layers = [
        LayerSpec("conv2d", "relu", "c1/kernel", "c1/bias", strides=(1, 1), padding="same"),
        LayerSpec("maxpool2d", pool_size=(2, 2), strides=(1, 2), padding="valid"),
        LayerSpec("conv2d", "tanh", "c2/kernel", "c2/bias", strides=(2, 2), padding="valid"),
        LayerSpec("avgpool2d", pool_size=(2, 2), strides=(1, 1), padding="same"),
        LayerSpec("global_avgpool2d"),
        LayerSpec("flatten"),
        LayerSpec("dense", "softmax", "d/kernel", "d/bias"),
    ]
    return pack_layer_specs(arrays, layers, precision, [7, 6, 2], 3)


def module_text(container: bytes, compression: str) -> str:
    """The `data` text of a module: the (compressed) container as base64 lines."""
    return "".join(base64_lines(compress(container, compression)))


def module_source(container: bytes, compression: str) -> str:
    """A single-file weights module as the packer writes it."""
    files = emit_module(
        compress(container, compression), compression, version=1, comment_lines=["test module"]
    )
    assert list(files) == ["MnistWeights.luau"], list(files)
    return files["MnistWeights.luau"]


def module_table(host: LuauHost, text: str | bytes, compression: str) -> object:
    """The table a weights module returns, built directly (no source to compile)."""
    table = host.lua.create_table()
    table.set("format", FORMAT_NAME)
    table.set("version", FORMAT_VERSION)
    table.set("compression", compression)
    table.set("data", host.lua.create_string(text.encode() if isinstance(text, str) else text))
    return table


def decode(host: LuauHost, module: object, max_bytes: int | None = None) -> tuple[bool, bytes, str, str]:
    """(ok, flat float64 bytes or the error message, shapes, activations)."""
    result = host.run(DECODE_CHUNK, module, max_bytes)
    if not result[0]:
        return False, result[1].as_bytes(), "", ""
    return True, result[1].as_bytes(), result[2].as_bytes().decode(), result[3].as_bytes().decode()


def error_stage(message: bytes) -> str | None:
    """The stage of a `mnistpack: <stage>: ...` message, or None for any other message."""
    text = message.decode("utf-8", "replace")
    prefix = "mnistpack: "
    if not text.startswith(prefix):
        return None
    stage = text[len(prefix) :].split(":", 1)[0]
    return stage if stage in ERROR_STAGES else None
