"""The shape arithmetic of FORMAT.md sections 3.3 and 3.4: what each layer kind makes of its input.

One implementation for everything that needs it: the header checks of the decoder and
the packer, the NumPy forward pass, and `inspect`. Errors are ShapeErrors that say
which layer and what did not fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mnistpack.constants import MAX_ACTIVATION_VALUES, MAX_MULTIPLY_ADDS
from mnistpack.errors import ShapeError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Geometry:
    """What a layer's output shape depends on, whatever holds the layer (a header map or arrays)."""

    kind: str
    weight_shape: Shape = ()  # dense [out, in], conv2d [out, kh, kw, in]
    pool_size: tuple[int, int] = (1, 1)  # maxpool2d, avgpool2d
    strides: tuple[int, int] = (1, 1)  # conv2d and the two windowed pools
    padding: str = "valid"

    @property
    def window(self) -> tuple[int, int]:
        """The window's rows and columns: the kernel's for conv2d, pool_size for the pools."""
        if self.kind == "conv2d":
            return self.weight_shape[1], self.weight_shape[2]
        return self.pool_size


@dataclass(frozen=True)
class Span:
    """One axis of a window sliding over an input: FORMAT.md section 3.4."""

    outputs: int  # output rows (or columns)
    before: int  # padding rows added above (or columns on the left)


def span(length: int, size: int, stride: int, padding: str) -> Span | None:
    """The outputs and leading padding along one axis, or None if a `valid` window does not fit."""
    if padding == "valid":
        if length < size:
            return None
        return Span((length - size) // stride + 1, 0)
    outputs = -(-length // stride)
    return Span(outputs, max((outputs - 1) * stride + size - length, 0) // 2)


def count(shape: Shape) -> int:
    """The values `shape` holds, or, once that passes MAX_ACTIVATION_VALUES, the first partial
    product above it: such a shape is refused anyway, and an input shape of thousands of
    dimensions (version 1 allows them) never becomes a thousands-digit integer."""
    product = 1
    for dim in shape:
        product *= dim
        if product > MAX_ACTIVATION_VALUES:
            return product
    return product


def output_shape(geometry: Geometry, shape: Shape, *, first: bool, where: str) -> Shape:
    """The output shape of a layer given its input shape, or a ShapeError naming `where`."""
    kind = geometry.kind
    if kind == "dense":
        out, inputs = geometry.weight_shape
        if len(shape) != 1 and not first:
            raise ShapeError(
                f"{where}: a dense layer needs a 1-D input, found {list(shape)}; flatten it first."
            )
        if count(shape) != inputs:
            raise ShapeError(f"{where}: the weight takes {inputs} inputs, the layer gets {list(shape)}.")
        return (out,)
    if kind == "flatten":
        return (count(shape),)
    if len(shape) != 3:
        raise ShapeError(f"{where}: a {kind} layer needs a 3-D [H, W, C] input, found {list(shape)}.")
    height, width, channels = shape
    if kind == "global_avgpool2d":
        return (channels,)
    if kind == "conv2d" and geometry.weight_shape[3] != channels:
        raise ShapeError(
            f"{where}: the kernel {list(geometry.weight_shape)} takes {geometry.weight_shape[3]} channels, "
            f"the input {list(shape)} has {channels}."
        )
    rows, cols = geometry.window
    down = span(height, rows, geometry.strides[0], geometry.padding)
    across = span(width, cols, geometry.strides[1], geometry.padding)
    if down is None or across is None:
        raise ShapeError(
            f"{where}: a {rows}x{cols} window with valid padding does not fit the {height}x{width} input."
        )
    return down.outputs, across.outputs, (geometry.weight_shape[0] if kind == "conv2d" else channels)


def multiply_adds(geometry: Geometry, output: Shape) -> int:
    """Multiply-adds a layer takes per input (FORMAT.md section 3.3); 0 for layers without weights."""
    if geometry.kind in ("dense", "conv2d"):
        return math.prod(output) * math.prod(geometry.weight_shape[1:])
    return 0


def network_shapes(geometries: Sequence[Geometry], input_shape: Shape) -> list[Shape]:
    """Every layer's output shape, checked against the network-wide limits of section 3.3."""
    shapes = []
    values = count(input_shape)
    work = 0
    shape = input_shape
    for index, geometry in enumerate(geometries):
        where = f"layer {index} ({geometry.kind})"
        shape = output_shape(geometry, shape, first=index == 0, where=where)
        values += count(shape)
        work += multiply_adds(geometry, shape)
        if values > MAX_ACTIVATION_VALUES:
            raise ShapeError(
                f"{where}: the input and the outputs up to here hold {values:,} values, "
                f"more than {MAX_ACTIVATION_VALUES:,}."
            )
        if work > MAX_MULTIPLY_ADDS:
            raise ShapeError(
                f"{where}: the layers up to here take {work:,} multiply-adds per input, "
                f"more than {MAX_MULTIPLY_ADDS:,}."
            )
        shapes.append(shape)
    return shapes
