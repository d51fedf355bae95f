"""luau/Crc32.luau against zlib.crc32, over whole buffers and sub-ranges."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.luau_host import LuauHost

COMPUTE = r"""
local Crc32 = require(root.Crc32)
return function(data, offset, length)
	return Crc32.compute(buffer.fromstring(data), offset, length)
end
"""

Crc = Callable[[bytes, int, int], int]


@pytest.fixture(scope="module")
def luau_crc() -> Crc:
    host = LuauHost()
    compute = host.run(COMPUTE)[0]

    def run(data: bytes, offset: int, length: int) -> int:
        return int(compute(host.lua.create_string(data), offset, length)[0])

    return run


def test_check_value_of_the_crc_catalogue(luau_crc: Crc) -> None:
    # CRC-32/ISO-HDLC's published check value
    assert luau_crc(b"123456789", 0, 9) == 0xCBF43926


def test_empty_range_is_zero(luau_crc: Crc) -> None:
    assert luau_crc(b"abc", 1, 0) == 0


@pytest.mark.parametrize("length", range(0, 41))
def test_every_tail_length(luau_crc: Crc, length: int) -> None:
    # the loop takes 8 bytes at a time: lengths 0..40 reach every remainder, at odd offsets too
    data = bytes((i * 37 + 11) % 256 for i in range(64))
    for offset in (0, 1, 3):
        assert luau_crc(data, offset, length) == zlib.crc32(data[offset : offset + length])


@settings(max_examples=80, deadline=None)
@given(data=st.binary(max_size=5000), cut=st.data())
def test_random_ranges_match_zlib(luau_crc: Crc, data: bytes, cut: st.DataObject) -> None:
    start = cut.draw(st.integers(0, len(data)))
    stop = cut.draw(st.integers(start, len(data)))
    assert luau_crc(data, start, stop - start) == zlib.crc32(data[start:stop])


def test_one_megabyte(luau_crc: Crc) -> None:
    data = bytes(range(256)) * 4096
    assert luau_crc(data, 0, len(data)) == zlib.crc32(data)
