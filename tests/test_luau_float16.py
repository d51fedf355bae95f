"""luau/Float16.luau and Dequantize.float16 against NumPy, for all 65,536 half bit patterns."""

from __future__ import annotations

import numpy as np
import pytest

from tests.luau_host import LuauHost

ALL_HALVES = r"""
local Float16 = require(root.Float16)
local Dequantize = require(root.Dequantize)
local planar = ...
local out = buffer.create(65536 * 8)
for bits = 0, 65535 do
	buffer.writef64(out, bits * 8, Float16.fromBits(bits))
end
-- the same values through the tensor decoder: one row of 65,536 byte-planar halves
local rows = Dequantize.float16(buffer.fromstring(planar), 0, 1, 65536)
local viaRows = buffer.create(65536 * 8)
for i, v in rows[1] do
	buffer.writef64(viaRows, (i - 1) * 8, v)
end
return buffer.tostring(out), buffer.tostring(viaRows)
"""

BITS = np.arange(65536, dtype=np.uint16)


@pytest.fixture(scope="module")
def luau_values() -> tuple[np.ndarray, np.ndarray]:
    host = LuauHost()
    planar = (BITS >> 8).astype(np.uint8).tobytes() + (BITS & 0xFF).astype(np.uint8).tobytes()
    direct, via_rows = host.run(ALL_HALVES, host.lua.create_string(planar))
    return (
        np.frombuffer(direct.as_bytes(), "<f8"),
        np.frombuffer(via_rows.as_bytes(), "<f8"),
    )


def expected() -> np.ndarray:
    # NumPy warns when it widens the signalling NaNs; widening them is the point here
    with np.errstate(invalid="ignore"):
        return BITS.view(np.float16).astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("path", ["Float16.fromBits", "Dequantize.float16"])
def test_every_finite_half_and_infinity_is_exact(
    luau_values: tuple[np.ndarray, np.ndarray], path: str
) -> None:
    got = luau_values[0] if path == "Float16.fromBits" else luau_values[1]
    want = expected()
    keep = ~np.isnan(want)
    # bit patterns, so -0.0 and every subnormal count
    mismatch = np.flatnonzero(got[keep].view(np.uint64) != want[keep].view(np.uint64))
    assert mismatch.size == 0, f"{mismatch.size} halves differ, first bits {BITS[keep][mismatch[0]]:#06x}"
    assert keep.sum() == 65536 - 2046  # every half but the 2,046 NaNs was compared


@pytest.mark.parametrize("path", ["Float16.fromBits", "Dequantize.float16"])
def test_nan_keeps_sign_and_payload(luau_values: tuple[np.ndarray, np.ndarray], path: str) -> None:
    got = luau_values[0] if path == "Float16.fromBits" else luau_values[1]
    want = expected()
    nan = np.isnan(want)
    assert np.isnan(got[nan]).all()
    # widening may set the quiet bit (as NumPy's cast does); sign and payload stay
    quiet = np.uint64(1 << 51)
    assert (got[nan].view(np.uint64) | quiet == want[nan].view(np.uint64) | quiet).all()


def test_landmarks(luau_values: tuple[np.ndarray, np.ndarray]) -> None:
    got = luau_values[0]
    assert got[0x3C00] == 1.0
    assert got[0xC000] == -2.0
    assert got[0x7BFF] == 65504.0
    assert got[0x0001] == 2.0**-24  # smallest subnormal
    assert got[0x03FF] == 1023 * 2.0**-24  # largest subnormal
    assert got[0x0400] == 2.0**-14  # smallest normal
    assert got[0x7C00] == np.inf and got[0xFC00] == -np.inf
    assert np.signbit(got[0x8000]) and got[0x8000] == 0.0
