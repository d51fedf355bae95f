"""Quantizers against an independent, slow, pure-Python reference of FORMAT.md section 4."""

from __future__ import annotations

import math
import struct

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mnistpack.constants import PRECISIONS
from mnistpack.errors import QuantizationError, ShapeError
from mnistpack.quantize import QuantizedTensor, dequantize, int8_scale, payload_length, quantize

# --- the reference: one element at a time, Python floats and struct only ------------


def ref_f16_bits(x: float) -> int:
    (bits,) = struct.unpack("<H", struct.pack("<e", x))
    return int(bits)


def ref_f16_value(bits: int) -> float:
    (value,) = struct.unpack("<e", struct.pack("<H", bits))
    return float(value)


def ref_float16(rows: list[list[float]]) -> bytes:
    bits = [ref_f16_bits(x) for row in rows for x in row]
    return bytes(b >> 8 for b in bits) + bytes(b & 0xFF for b in bits)


def ref_int8_scale(max_abs: float) -> float:
    """16 significant bits, rounded up: ceil(m * 2**16) * 2**(e - 16) for max_abs / 127 = m * 2**e."""
    if max_abs == 0:
        return 1.0
    mantissa, exponent = math.frexp(max_abs / 127)
    return math.ceil(mantissa * 2**16) * 2.0 ** (exponent - 16)


def ref_int8(rows: list[list[float]], per_row: bool) -> tuple[bytes, list[float]]:
    if per_row:
        scales = [ref_int8_scale(max(abs(x) for x in row)) for row in rows]
    else:
        scales = [ref_int8_scale(max(abs(x) for row in rows for x in row))]
    out = bytearray()
    for r, row in enumerate(rows):
        scale = scales[r if per_row else 0]
        for x in row:
            out += struct.pack("<b", max(-127, min(127, round(x / scale))))
    return bytes(out), scales


def ref_int4(rows: list[list[float]]) -> bytes:
    scales = bytearray()
    nibbles = bytearray()
    for row in rows:
        padded = row + [0.0] * (-len(row) % 32)
        for start in range(0, len(padded), 32):
            block = padded[start : start + 32]
            signed_max = block[0]
            for x in block:
                if abs(x) > abs(signed_max):
                    signed_max = x
            d = ref_f16_value(ref_f16_bits(signed_max / -8)) + 0.0
            scales += struct.pack("<e", d)
            codes = [8 if d == 0 else max(0, min(15, round(x / d) + 8)) for x in block]
            nibbles += bytes(codes[e] | codes[e + 1] << 4 for e in range(0, 32, 2))
    return bytes(scales) + bytes(nibbles)


def ref_dequantize_int4(data: bytes, rows: int, cols: int) -> list[list[float]]:
    blocks = -(-cols // 32)
    out = []
    for r in range(rows):
        row = []
        for j in range(blocks):
            (d,) = struct.unpack_from("<e", data, 2 * (r * blocks + j))
            block = data[rows * blocks * 2 + 16 * (r * blocks + j) :][:16]
            for e in range(32):
                code = block[e // 2] >> 4 if e % 2 else block[e // 2] & 0x0F
                row.append((code - 8) * d)
        out.append(row[:cols])
    return out


def float32_rows(values: np.ndarray) -> list[list[float]]:
    return [[float(x) for x in row] for row in np.asarray(values, np.float32)]


def assert_bit_exact(actual: np.ndarray, expected: list[list[float]]) -> None:
    assert actual.dtype == np.float32
    want = np.array(expected, np.float64).astype(np.float32)
    assert np.array_equal(actual.view(np.uint32), want.view(np.uint32))


# --- cases: typical, all-zero rows, a huge outlier, odd column counts ---------------

rng = np.random.default_rng(7)
CASES = {
    "gaussian": rng.normal(0, 0.05, (5, 70)).astype(np.float32),
    "zero_rows": np.vstack([np.zeros((2, 33)), rng.normal(0, 1, (1, 33)), np.zeros((1, 33))]).astype(
        np.float32
    ),
    "outlier": np.where(np.arange(40 * 3).reshape(3, 40) == 47, 1000.0, rng.normal(0, 0.01, (3, 40))).astype(
        np.float32
    ),
    "mnist_width": rng.normal(0, 0.05, (2, 784)).astype(np.float32),
    "one_column": rng.normal(0, 1, (4, 1)).astype(np.float32),
    "ties": np.array([[0.5, -0.5, 0.25, -0.25] * 9], np.float32),
}


@pytest.mark.parametrize("case", CASES)
def test_float32_is_raw_little_endian(case: str) -> None:
    w = CASES[case]
    t = quantize("w", w, "float32")
    assert t.data == b"".join(struct.pack("<f", x) for row in float32_rows(w) for x in row)
    assert np.array_equal(dequantize(t), w)


@pytest.mark.parametrize("case", CASES)
def test_float16_matches_reference(case: str) -> None:
    w = CASES[case]
    t = quantize("w", w, "float16")
    assert t.data == ref_float16(float32_rows(w))
    expected = [[ref_f16_value(ref_f16_bits(x)) for x in row] for row in float32_rows(w)]
    assert_bit_exact(dequantize(t), expected)


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_int8_matches_reference(case: str, per_row: bool) -> None:
    w = CASES[case]
    t = quantize("w", w, "int8", per_row=per_row)
    data, scales = ref_int8(float32_rows(w), per_row)
    assert t.data == data
    assert list(t.scales) == scales
    q = struct.unpack(f"<{len(data)}b", data)
    cols = w.shape[1]
    expected = [
        [q[r * cols + c] * scales[r if per_row else 0] for c in range(cols)] for r in range(w.shape[0])
    ]
    assert_bit_exact(dequantize(t), expected)


@pytest.mark.parametrize("case", CASES)
def test_int4_matches_reference(case: str) -> None:
    w = CASES[case]
    t = quantize("w", w, "int4")
    assert t.data == ref_int4(float32_rows(w))
    assert_bit_exact(dequantize(t), ref_dequantize_int4(t.data, *w.shape))


def test_all_zero_rows_decode_to_zero() -> None:
    w = CASES["zero_rows"]
    for precision in ("int8", "int4"):
        out = dequantize(quantize("w", w, precision, per_row=True))
        assert not out[[0, 1, 3]].any()
    assert quantize("w", w, "int8", per_row=True).scales[0] == 1.0
    # a zero block's scale is +0.0, never -0.0: identical bytes for identical meaning
    assert quantize("w", np.zeros((1, 32), np.float32), "int4").data[:2] == b"\x00\x00"


def test_huge_outlier_keeps_its_value() -> None:
    w = CASES["outlier"]
    for precision, tolerance in (("float16", 0.5), ("int8", 1000 / 254), ("int4", 1000 / 16)):
        out = dequantize(quantize("w", w, precision))
        assert abs(out[1, 7] - 1000.0) <= tolerance


def test_int8_scales_have_eight_zero_low_bits_and_cover_the_maximum() -> None:
    for max_abs in (1e-30, 0.0123, 0.5, 1.0, 127.0, 3e38, 1.17e-38, 1e-45):
        scale = int8_scale(max_abs)
        bits = struct.unpack("<I", struct.pack("<f", scale))[0]
        assert bits & 0xFF == 0 and scale > 0
        assert struct.unpack("<f", struct.pack("<f", scale))[0] == scale
        assert max_abs / scale <= 127


@pytest.mark.parametrize("precision", ["float32", "float16", "int8", "int4"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_are_rejected_with_their_place(precision: str, bad: float) -> None:
    w = np.zeros((3, 4), np.float32)
    w[2, 1] = bad
    with pytest.raises(QuantizationError, match=r"'layer1\.weight' holds .* at index \(2, 1\).*finite"):
        quantize("layer1.weight", w, precision)


def test_out_of_range_for_float16_and_int4() -> None:
    with pytest.raises(QuantizationError, match="65504"):
        quantize("w", np.array([[70000.0]], np.float32), "float16")
    with pytest.raises(QuantizationError, match="524,032"):
        quantize("w", np.array([[1e6]], np.float32), "int4")


def test_bad_rank_precision_and_empty() -> None:
    with pytest.raises(QuantizationError, match="2 to 4 dimensions"):
        quantize("b", np.zeros(3, np.float32), "int8")
    with pytest.raises(QuantizationError, match="1 to 4 dimensions"):
        quantize("x", np.zeros((2, 2, 2, 2, 2), np.float32), "float32")
    with pytest.raises(QuantizationError, match="one of float32, float16, int8, int4"):
        quantize("w", np.zeros((2, 2), np.float32), "int3")
    with pytest.raises(QuantizationError, match="empty"):
        quantize("w", np.zeros((0, 3), np.float32), "float32")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_kernel_is_quantized_as_rows_of_output_channels(precision: str) -> None:
    # [out, kh, kw, in] is out rows of kh * kw * in: the same bytes and values as that matrix
    kernel = np.random.default_rng(5).normal(0, 0.3, (6, 3, 3, 5)).astype(np.float32)
    as_kernel = quantize("k", kernel, precision, per_row=True)
    as_matrix = quantize("k", kernel.reshape(6, 45), precision, per_row=True)
    assert as_kernel.data == as_matrix.data and as_kernel.scales == as_matrix.scales
    assert as_kernel.shape == (6, 3, 3, 5)
    assert payload_length(precision, (6, 3, 3, 5)) == len(as_kernel.data)
    decoded = dequantize(as_kernel)
    assert decoded.shape == kernel.shape
    np.testing.assert_array_equal(decoded.reshape(6, 45), dequantize(as_matrix))
    if precision == "int8":
        assert len(as_kernel.scales) == 6  # one per output channel


def test_payload_lengths_follow_format_md() -> None:
    assert payload_length("float32", (256, 784)) == 4 * 200_704
    assert payload_length("float16", (10,)) == 20
    assert payload_length("int8", (10, 256)) == 2560
    # 784 columns = 24.5 blocks -> 25 blocks of 18 bytes per row
    assert payload_length("int4", (256, 784)) == 256 * 25 * 18


def test_dequantize_rejects_a_payload_of_the_wrong_length() -> None:
    with pytest.raises(ShapeError, match="needs 8 payload bytes, found 7"):
        dequantize(QuantizedTensor("w", "float16", (2, 2), bytes(7)))


# --- round-trip error bounds (hypothesis) ---------------------------------------------

finite32 = st.floats(-1e4, 1e4, width=32, allow_nan=False, allow_infinity=False)
matrices = hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=70), elements=finite32)


@settings(max_examples=60, deadline=None)
@given(w=matrices, per_row=st.booleans())
def test_int8_error_is_at_most_half_a_step(w: np.ndarray, per_row: bool) -> None:
    t = quantize("w", w, "int8", per_row=per_row)
    scales = np.array(t.scales, np.float64).reshape(-1, 1)
    error = np.abs(w.astype(np.float64) - dequantize(t))
    assert (error <= scales / 2 * (1 + 1e-9)).all()


@settings(max_examples=60, deadline=None)
@given(w=matrices)
def test_int4_error_is_at_most_half_a_step_within_range(w: np.ndarray) -> None:
    t = quantize("w", w, "int4")
    rows, cols = w.shape
    blocks = -(-cols // 32)
    d = np.frombuffer(t.data, "<f2", count=rows * blocks).astype(np.float64).reshape(rows, blocks)
    d = np.repeat(d, 32, axis=1)[:, :cols]
    w64 = w.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(d == 0, 0, w64 / d)
    representable = (d != 0) & (ratio >= -8) & (ratio <= 7)
    error = np.abs(w64 - dequantize(t))
    assert (error[representable] <= np.abs(d[representable]) / 2 * (1 + 1e-9)).all()
    # zero scales only where the whole block is (after float16 rounding) zero
    assert (error[d == 0] <= 2**-24 * 8).all()


@settings(max_examples=60, deadline=None)
@given(w=matrices)
def test_float16_relative_error(w: np.ndarray) -> None:
    out = dequantize(quantize("w", w, "float16")).astype(np.float64)
    w64 = w.astype(np.float64)
    # 11 significant bits: half an ulp is 2**-11 relative; below 2**-14 the step is 2**-24
    assert (np.abs(out - w64) <= np.maximum(np.abs(w64) * 2**-11, 2**-25)).all()
