"""luau/MsgPack.luau against Python's msgpack: every type of the subset at every width,
and clear `mnistpack: msgpack:` errors for truncated, trailing, unknown or hostile bytes."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from mnistpack.constants import MAX_HEADER_DEPTH, MAX_HEADER_INTEGER, MAX_HEADER_VALUES

from tests.luau_host import LuauHost

# Decodes, then writes the value as a canonical text (maps sorted by key text, arrays and
# maps told apart) that Python writes the same way for the value it packed.
DESCRIBE = r"""
local MsgPack = require(root.MsgPack)
local function hex(s)
	return (string.gsub(s, ".", function(c)
		return string.format("%02x", string.byte(c))
	end))
end
local function describe(value, parent, key)
	if value == nil or value == MsgPack.NULL then
		return "nil"
	elseif type(value) == "boolean" then
		return tostring(value)
	elseif type(value) == "number" then
		local tag = if parent ~= nil and MsgPack.isFloat(parent, key) then "f:" else "n:"
		return tag .. string.format("%.17g", value)
	elseif type(value) == "string" then
		return "s:" .. hex(value)
	elseif type(value) == "buffer" then
		return "b:" .. hex(buffer.tostring(value))
	elseif MsgPack.isArray(value) then
		local parts = {}
		for i, item in value do
			parts[i] = describe(item, value, i)
		end
		return "[" .. table.concat(parts, ",") .. "]"
	elseif MsgPack.isMap(value) then
		local parts = {}
		for key, item in value do
			table.insert(parts, describe(key) .. "=" .. describe(item, value, key))
		end
		table.sort(parts)
		return "{" .. table.concat(parts, ",") .. "}"
	end
	error("unexpected " .. typeof(value))
end
return function(data, offset, length, depth, values)
	local ok, result = pcall(MsgPack.decode, buffer.fromstring(data), offset, length, depth, values)
	if not ok then
		return false, result
	end
	return true, describe(result)
end
"""

Decode = Callable[..., tuple[bool, str]]


@pytest.fixture(scope="module")
def luau_msgpack() -> Decode:
    host = LuauHost()
    describe = host.run(DESCRIBE)[0]

    def run(
        data: bytes,
        offset: int = 0,
        length: int | None = None,
        depth: int | None = None,
        values: int | None = None,
    ) -> tuple[bool, str]:
        size = len(data) - offset if length is None else length
        ok, result = describe(host.lua.create_string(data), offset, size, depth, values)
        return ok, result.as_bytes().decode("utf-8", "replace")

    return run


def describe(value: Any, nested: bool = False) -> str:
    """Python's side of DESCRIBE, for a value msgpack packed."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        # Luau holds every number as a double: 64-bit integers round like float(); only
        # values inside an array or map can say whether they were floats
        tag = "f:" if nested and isinstance(value, float) else "n:"
        return tag + luau_number(float(value))
    if isinstance(value, str):
        return "s:" + value.encode().hex()
    if isinstance(value, bytes):
        return "b:" + value.hex()
    if isinstance(value, list):
        return "[" + ",".join(describe(item, True) for item in value) + "]"
    if isinstance(value, dict):
        parts = sorted(describe(k) + "=" + describe(v, True) for k, v in value.items() if v is not None)
        return "{" + ",".join(parts) + "}"
    raise TypeError(value)


def luau_number(number: float) -> str:
    if math.isnan(number):
        return "nan" if math.copysign(1, number) > 0 else "-nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return f"{number:.17g}"


# --- every type at every width -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xc0", "nil"),
        (b"\xc2", "false"),
        (b"\xc3", "true"),
        (b"\x00", "n:0"),
        (b"\x7f", "n:127"),
        (b"\xe0", "n:-32"),
        (b"\xff", "n:-1"),
        (b"\xcc\xff", "n:255"),
        (b"\xcd\x01\x02", "n:258"),
        (b"\xce\xff\xff\xff\xff", "n:4294967295"),
        (b"\xcf\x00\x1f\xff\xff\xff\xff\xff\xff", "n:9007199254740991"),
        (b"\xd0\x80", "n:-128"),
        (b"\xd1\x80\x00", "n:-32768"),
        (b"\xd2\x80\x00\x00\x00", "n:-2147483648"),
        (b"\xd3\xff\xff\xff\xff\xff\xff\xff\xfe", "n:-2"),
        (b"\xd3\xff\xe0\x00\x00\x00\x00\x00\x01", "n:-9007199254740991"),
        (b"\xca" + struct.pack(">f", 1.5), "n:1.5"),
        (b"\xcb" + struct.pack(">d", -0.1), "n:-0.10000000000000001"),
        (b"\xa3abc", "s:616263"),
        (b"\xd9\x03abc", "s:616263"),
        (b"\xda\x00\x03abc", "s:616263"),
        (b"\xdb\x00\x00\x00\x03abc", "s:616263"),
        (b"\xa0", "s:"),
        (b"\xc4\x02\x00\xff", "b:00ff"),
        (b"\xc5\x00\x01z", "b:7a"),
        (b"\xc6\x00\x00\x00\x00", "b:"),
        (b"\x92\x01\x02", "[n:1,n:2]"),
        (b"\xdc\x00\x02\x01\x02", "[n:1,n:2]"),
        (b"\xdd\x00\x00\x00\x02\x01\x02", "[n:1,n:2]"),
        (b"\x93\x01\xc0\x03", "[n:1,nil,n:3]"),
        (b"\x90", "[]"),
        (b"\x80", "{}"),
        (b"\x81\xa1a\x01", "{s:61=n:1}"),
        (b"\xde\x00\x01\xa1a\x01", "{s:61=n:1}"),
        (b"\xdf\x00\x00\x00\x01\xa1a\x01", "{s:61=n:1}"),
        (b"\x92\xca" + struct.pack(">f", 2.0) + b"\x02", "[f:2,n:2]"),
        (b"\x82\xa1f\xcb" + struct.pack(">d", 3.0) + b"\xa1i\x03", "{s:66=f:3,s:69=n:3}"),
    ],
)
def test_hand_written_vectors(luau_msgpack: Decode, data: bytes, expected: str) -> None:
    assert luau_msgpack(data) == (True, expected)


def test_empty_map_and_array_are_told_apart(luau_msgpack: Decode) -> None:
    assert luau_msgpack(b"\x92\x80\x90") == (True, "[{},[]]")


def test_decodes_a_range_inside_a_larger_buffer(luau_msgpack: Decode) -> None:
    assert luau_msgpack(b"\xff\xff\x92\x01\x02\xff", 2, 3) == (True, "[n:1,n:2]")


keys = st.text(max_size=8)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    # every integer a double holds exactly (FORMAT.md section 3; larger ones fail, below)
    st.integers(-MAX_HEADER_INTEGER, MAX_HEADER_INTEGER),
    st.sampled_from([MAX_HEADER_INTEGER, -MAX_HEADER_INTEGER, 2**32, -(2**31) - 1]),
    st.floats(allow_nan=False, width=32),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.binary(max_size=40),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=6), st.dictionaries(keys, children, max_size=6)),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=values, single_float=st.booleans())
def test_random_values_match_python(luau_msgpack: Decode, value: Any, single_float: bool) -> None:
    try:
        data = msgpack.packb(value, use_bin_type=True, use_single_float=single_float)
    except OverflowError:  # a float64 beyond float32's range cannot be packed as float32
        assume(False)
    if single_float:
        # Python wrote its floats as float32: compare against what it reads back
        value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    assert luau_msgpack(data) == (True, describe(value))


@settings(max_examples=200, deadline=None)
@given(length=st.integers(0, 100_000), tag=st.sampled_from([0xDB, 0xC6, 0xDD, 0xDF]))
def test_lengths_beyond_the_data_fail_before_allocating(luau_msgpack: Decode, length: int, tag: int) -> None:
    # a 32-bit count with no bytes behind it: refused, not allocated and filled
    data = bytes([tag]) + struct.pack(">I", length + 1) + b"\x00" * (length // 1000)
    ok, message = luau_msgpack(data)
    assert not ok
    assert message.startswith("mnistpack: msgpack: expected "), message
    assert "truncated" in message


# --- errors --------------------------------------------------------------------------


HEADER_LIKE = msgpack.packb(
    {"format_version": 1, "tensors": [{"name": "w", "shape": [3, 4], "scales": [0.5]}], "meta": {"x": None}},
    use_single_float=True,
)


@pytest.mark.parametrize("cut", range(len(HEADER_LIKE)))
def test_every_truncation_fails(luau_msgpack: Decode, cut: int) -> None:
    ok, message = luau_msgpack(HEADER_LIKE[:cut])
    assert not ok
    assert message.startswith("mnistpack: msgpack: "), message


@pytest.mark.parametrize("extra", [b"\x00", b"\xc0", b"\x81\xa1a\x01"])
def test_trailing_bytes_fail(luau_msgpack: Decode, extra: bytes) -> None:
    ok, message = luau_msgpack(HEADER_LIKE + extra)
    assert not ok
    assert message.startswith("mnistpack: msgpack: expected the value to end here"), message
    assert f"found {len(extra)} more bytes" in message


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # never used
        b"\xc7\x01\x05a",  # ext8
        b"\xc8\x00\x01\x05a",  # ext16
        b"\xc9\x00\x00\x00\x01\x05a",  # ext32
        b"\xd4\x05a",  # fixext1
        b"\xd8\x05" + b"a" * 16,  # fixext16
    ],
)
def test_types_outside_the_subset_fail(luau_msgpack: Decode, data: bytes) -> None:
    ok, message = luau_msgpack(data)
    assert not ok
    assert message.startswith(
        "mnistpack: msgpack: expected a nil, bool, int, float, str, bin, array or map"
    ), message
    assert f"0x{data[0]:02X}" in message


@pytest.mark.parametrize(
    "raw",
    [b"\xff", b"\xc0\x80", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"a\x80"],
    ids=["0xFF", "overlong 2", "overlong 3", "surrogate", "beyond U+10FFFF", "lone continuation"],
)
def test_str_must_be_utf8(luau_msgpack: Decode, raw: bytes) -> None:
    data = bytes([0xA0 + len(raw)]) + raw
    with pytest.raises(UnicodeDecodeError):
        msgpack.unpackb(data, raw=False)  # Python refuses the same bytes
    ok, message = luau_msgpack(data)
    assert not ok
    assert message.startswith("mnistpack: msgpack: expected UTF-8 text in a str, found invalid bytes"), (
        message
    )


def test_bin_may_hold_any_bytes(luau_msgpack: Decode) -> None:
    assert luau_msgpack(b"\xc4\x03\xed\xa0\x80") == (True, "b:eda080")


def test_nesting_is_limited(luau_msgpack: Decode) -> None:
    deep = b"\x91" * 40 + b"\x00"
    ok, message = luau_msgpack(deep)
    assert not ok
    assert "nested deeper than 32 levels" in message
    assert luau_msgpack(b"\x91" * 31 + b"\x00")[0]
    assert luau_msgpack(deep, depth=64)[0]


@pytest.mark.parametrize(
    "data",
    [
        b"\xcf" + struct.pack(">Q", MAX_HEADER_INTEGER + 1),
        b"\xcf" + b"\xff" * 8,
        b"\xd3" + struct.pack(">q", -MAX_HEADER_INTEGER - 1),
        b"\xd3" + struct.pack(">q", -(2**63)),
        b"\xd3" + struct.pack(">q", 2**62),
    ],
    ids=["2^53", "2^64 - 1", "-2^53", "-2^63", "2^62 as int64"],
)
def test_integers_beyond_2_53_fail(luau_msgpack: Decode, data: bytes) -> None:
    ok, message = luau_msgpack(data)
    assert not ok
    assert message.startswith(f"mnistpack: msgpack: expected an integer from -{MAX_HEADER_INTEGER}"), message
    assert message.endswith("at byte 0"), message


def test_the_largest_exact_integers_decode(luau_msgpack: Decode) -> None:
    assert luau_msgpack(b"\xcf" + struct.pack(">Q", MAX_HEADER_INTEGER)) == (True, f"n:{MAX_HEADER_INTEGER}")
    assert luau_msgpack(b"\xd3" + struct.pack(">q", -MAX_HEADER_INTEGER)) == (
        True,
        f"n:-{MAX_HEADER_INTEGER}",
    )


def test_values_are_counted(luau_msgpack: Decode) -> None:
    # the array, then 3 elements: 4 values; a map entry is 2 (key and value)
    assert luau_msgpack(b"\x93\x01\x02\x03", values=4)[0]
    ok, message = luau_msgpack(b"\x93\x01\x02\x03", values=3)
    assert not ok
    assert "found more than 3 values" in message, message
    assert luau_msgpack(b"\x81\xa1a\x01", values=3)[0]
    assert not luau_msgpack(b"\x81\xa1a\x01", values=2)[0]


def test_the_default_limits_are_the_formats(luau_msgpack: Decode) -> None:
    many = b"\xdd" + struct.pack(">I", MAX_HEADER_VALUES - 1) + b"\x80" * (MAX_HEADER_VALUES - 1)
    assert luau_msgpack(many)[0]
    more = b"\xdd" + struct.pack(">I", MAX_HEADER_VALUES) + b"\x80" * MAX_HEADER_VALUES
    ok, message = luau_msgpack(more)
    assert not ok
    assert f"found more than {MAX_HEADER_VALUES} values" in message, message
    assert luau_msgpack(b"\x91" * (MAX_HEADER_DEPTH - 1) + b"\x00")[0]
    assert not luau_msgpack(b"\x91" * MAX_HEADER_DEPTH + b"\x00")[0]


def test_extreme_nesting_fails_cleanly(luau_msgpack: Decode) -> None:
    ok, message = luau_msgpack(b"\x91" * 200_000 + b"\x00")
    assert not ok
    assert message.startswith("mnistpack: msgpack: "), message


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\x82\xa1a\x01\xa1a\x02", 'found the key "a" twice in one map'),
        (b"\x81\xc0\x01", "expected a str map key, found nil"),
        (b"\x81\x90\x01", "expected a str map key, found table"),
        (b"\x81\x01\x01", "expected a str map key, found number"),
        (b"\x81\xc3\x01", "expected a str map key, found boolean"),
        (b"\x81\xc4\x01a\x01", "expected a str map key, found buffer"),
        (b"\x81\xcb" + struct.pack(">d", math.nan) + b"\x01", "expected a str map key, found number"),
    ],
)
def test_bad_map_keys_fail(luau_msgpack: Decode, data: bytes, fragment: str) -> None:
    ok, message = luau_msgpack(data)
    assert not ok
    assert message.startswith("mnistpack: msgpack: "), message
    assert fragment in message, message


def test_error_names_the_byte_offset(luau_msgpack: Decode) -> None:
    ok, message = luau_msgpack(b"\xff\xff\x92\x01\xc1", 2, 3)
    assert not ok
    assert message.endswith("at byte 4"), message
