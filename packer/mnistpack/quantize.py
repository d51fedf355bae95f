"""Quantizers: float arrays to FORMAT.md section 4 payload bytes and back, bit-exactly.

Each precision is a small encode/decode pair; `dequantize` gives exactly the float32
values every decoder must produce, so the NumPy accuracy measured here is the
accuracy the Luau model sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mnistpack.constants import (
    INT4_BLOCK_BYTES,
    INT4_BLOCK_SIZE,
    INT4_SCALE_BYTES,
    INT4_ZERO_CODE,
    INT8_MAX,
    INT8_SCALE_ZERO_BITS,
    MAX_TENSOR_RANK,
    PRECISIONS,
)
from mnistpack.errors import QuantizationError, ShapeError

FloatArray = np.ndarray
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class QuantizedTensor:
    """One tensor as it sits in the container: payload bytes plus what decodes them."""

    name: str
    precision: str
    shape: tuple[int, ...]
    data: bytes  # payload bytes exactly as FORMAT.md section 4
    scales: tuple[float, ...] = ()  # int8 only (float32 values)


def rows_and_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    """FORMAT.md section 3.1: a tensor is stored as shape[0] rows of the other dimensions'
    product, and a 1-D tensor as one row (a convolution kernel has a row per output channel)."""
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


def payload_length(precision: str, shape: tuple[int, ...]) -> int:
    """Byte length FORMAT.md section 4 gives a tensor of this precision and shape."""
    n = math.prod(shape)
    if precision == "float32":
        return 4 * n
    if precision == "float16":
        return 2 * n
    if precision == "int8":
        return n
    if precision == "int4":
        rows, cols = rows_and_cols(shape)
        return rows * _int4_blocks(cols) * (INT4_SCALE_BYTES + INT4_BLOCK_BYTES)
    raise QuantizationError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")


def quantize(name: str, values: np.ndarray, precision: str, *, per_row: bool = False) -> QuantizedTensor:
    """Encode `values` (1 to 4 dimensions, row-major) at `precision`.

    `per_row` gives int8 one scale per row (per output, or output channel of a
    convolution kernel) instead of one per tensor. Per tensor is the default for dense
    weights: on the shipped MLP it compresses much better (docs/quantization.md) at the
    same accuracy, because the codes stay small instead of every row reaching 127.
    """
    w = np.asarray(values)
    if precision not in PRECISIONS:
        raise QuantizationError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    lowest = 2 if precision in ("int8", "int4") else 1
    if not lowest <= w.ndim <= MAX_TENSOR_RANK:
        raise QuantizationError(
            f"{precision} tensor {name!r} must have {lowest} to {MAX_TENSOR_RANK} dimensions, "
            f"not shape {w.shape}."
        )
    if w.size == 0:
        raise QuantizationError(f"tensor {name!r} is empty (shape {w.shape}).")
    w = w.astype(np.float32)
    if not np.isfinite(w).all():
        bad = np.argwhere(~np.isfinite(w))[0]
        raise QuantizationError(
            f"tensor {name!r} holds {w[tuple(bad)]} at index {tuple(int(i) for i in bad)}; "
            "weights must be finite numbers."
        )
    shape = tuple(int(d) for d in w.shape)
    if precision == "float32":
        return QuantizedTensor(name, precision, shape, w.astype("<f4").tobytes())
    if precision == "float16":
        return QuantizedTensor(name, precision, shape, _encode_float16(name, w))
    matrix = w.reshape(rows_and_cols(shape))
    if precision == "int8":
        data, scales = _encode_int8(matrix, per_row)
        return QuantizedTensor(name, precision, shape, data, scales)
    return QuantizedTensor(name, precision, shape, _encode_int4(name, matrix))


def dequantize(tensor: QuantizedTensor) -> np.ndarray:
    """The float32 values FORMAT.md section 4 gives this tensor, shaped as `tensor.shape`."""
    expected = payload_length(tensor.precision, tensor.shape)
    if len(tensor.data) != expected:
        raise ShapeError(
            f"tensor {tensor.name!r} ({tensor.precision}, shape {list(tensor.shape)}) needs "
            f"{expected} payload bytes, found {len(tensor.data)}."
        )
    if tensor.precision == "float32":
        return np.frombuffer(tensor.data, "<f4").astype(np.float32).reshape(tensor.shape)
    if tensor.precision == "float16":
        return _decode_float16(tensor.data).reshape(tensor.shape)
    matrix = rows_and_cols(tensor.shape)
    if tensor.precision == "int8":
        return _decode_int8(tensor.data, matrix, tensor.scales).reshape(tensor.shape)
    return _decode_int4(tensor.data, matrix).reshape(tensor.shape)


# --- float16: byte-planar IEEE half --------------------------------------------------


def _encode_float16(name: str, w: FloatArray) -> bytes:
    with np.errstate(over="ignore"):  # overflow becomes inf, rejected just below
        half = w.astype(np.float16)  # round to nearest even, as IEEE 754 says
    if not np.isfinite(half).all():
        raise QuantizationError(
            f"tensor {name!r} holds values up to {float(np.abs(w).max()):g}, beyond float16's "
            f"largest finite value {FLOAT16_MAX:.0f}; use float32."
        )
    bits = half.reshape(-1).view("<u2")
    return (bits >> 8).astype(np.uint8).tobytes() + (bits & 0xFF).astype(np.uint8).tobytes()


def _decode_float16(data: bytes) -> FloatArray:
    planes = np.frombuffer(data, np.uint8).reshape(2, -1).astype(np.uint16)
    values: FloatArray = ((planes[0] << 8) | planes[1]).view(np.float16).astype(np.float32)
    return values


# --- int8: symmetric, zero point 0 ---------------------------------------------------


def int8_scale(max_abs: float) -> float:
    """The smallest valid scale >= max_abs / 127: float32 with 8 low mantissa bits zero.

    Rounding up (never down) keeps every |w / scale| <= 127, so no weight is clamped
    and the error bound scale / 2 holds for all of them.
    """
    if max_abs == 0.0:
        return 1.0  # an all-zero row: any positive scale gives q = 0
    exact = max_abs / INT8_MAX
    f = np.float32(exact)
    if float(f) < exact:
        f = np.nextafter(f, np.float32(np.inf))
    bits = int(f.view(np.uint32))
    low = (1 << INT8_SCALE_ZERO_BITS) - 1
    if bits & low:
        bits = (bits | low) + 1  # a carry into the exponent is still the right value
    return float(np.uint32(bits).view(np.float32))


def _encode_int8(w: FloatArray, per_row: bool) -> tuple[bytes, tuple[float, ...]]:
    max_abs = np.abs(w).max(axis=1) if per_row else np.array([np.abs(w).max()])
    scales = tuple(int8_scale(float(m)) for m in max_abs)
    # float64 division: w / scale is then within 2**-53 of exact, so rint rounds correctly
    divisor = np.array(scales, np.float64).reshape(-1, 1)
    q = np.clip(np.rint(w.astype(np.float64) / divisor), -INT8_MAX, INT8_MAX)
    return q.astype(np.int8).tobytes(), scales


def _decode_int8(data: bytes, shape: tuple[int, ...], scales: tuple[float, ...]) -> FloatArray:
    rows = shape[0]
    if len(scales) not in (1, rows):
        raise ShapeError(f"an int8 tensor with {rows} rows needs 1 or {rows} scales, found {len(scales)}.")
    q = np.frombuffer(data, np.int8).reshape(shape).astype(np.float32)
    return q * np.array(scales, np.float32).reshape(-1, 1)


# --- int4: GGUF Q4_0 blocks of 32 ----------------------------------------------------


def _int4_blocks(cols: int) -> int:
    return -(-cols // INT4_BLOCK_SIZE)


def _encode_int4(name: str, w: FloatArray) -> bytes:
    rows, cols = w.shape
    blocks = np.zeros((rows, _int4_blocks(cols) * INT4_BLOCK_SIZE), np.float32)
    blocks[:, :cols] = w
    blocks = blocks.reshape(-1, INT4_BLOCK_SIZE)
    # Q4_0: the signed value of largest magnitude maps to code 0 (-8 * d), so d = it / -8
    signed_max = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(axis=1)]
    with np.errstate(over="ignore"):  # overflow becomes inf, rejected just below
        d = (signed_max / -8).astype(np.float16) + np.float16(0)  # "+ 0" turns -0.0 into 0.0
    if not np.isfinite(d).all():
        raise QuantizationError(
            f"tensor {name!r} holds values up to {float(np.abs(w).max()):g}; int4 block scales "
            f"are float16, so weights must stay within +-{8 * FLOAT16_MAX:,.0f}; use float32."
        )
    # float64 division, as for int8: w / d is then within 2**-53 of exact before rint
    d64 = d.astype(np.float64).reshape(-1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        codes = np.where(d64 == 0, 0, np.rint(blocks / d64)) + INT4_ZERO_CODE
    # padding holds 0, so it gets code 8 (value 0) whatever d is, as FORMAT.md requires
    codes = np.clip(codes, 0, 15).astype(np.uint8)
    nibbles = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return bytes(d.astype("<f2").tobytes()) + bytes(nibbles.tobytes())


def _decode_int4(data: bytes, shape: tuple[int, ...]) -> FloatArray:
    rows, cols = shape
    n_blocks = rows * _int4_blocks(cols)
    d = np.frombuffer(data, "<f2", count=n_blocks).astype(np.float32).reshape(-1, 1)
    nibbles = np.frombuffer(data, np.uint8, offset=n_blocks * INT4_SCALE_BYTES).reshape(n_blocks, -1)
    codes = np.empty((n_blocks, INT4_BLOCK_SIZE), np.float32)
    codes[:, 0::2] = nibbles & 0x0F
    codes[:, 1::2] = nibbles >> 4
    values = (codes - INT4_ZERO_CODE) * d
    return values.reshape(rows, -1)[:, :cols].copy()
