"""luau/Base64.luau against Python's base64: every byte string round-trips, bad text fails
with the position of the first bad character."""

from __future__ import annotations

import base64
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.luau_host import LuauHost

DECODE = r"""
local Base64 = require(root.Base64)
return function(text)
	local ok, result = pcall(Base64.decode, text)
	if not ok then
		return false, result
	end
	return true, buffer.tostring(result)
end
"""


Decode = Callable[[bytes], tuple[bool, bytes]]


@pytest.fixture(scope="module")
def luau_decode() -> Decode:
    """Base64.decode in one VM for the whole module: (ok, bytes or error message)."""
    host = LuauHost()
    decode_fn = host.run(DECODE)[0]

    def run(text: bytes) -> tuple[bool, bytes]:
        ok, result = decode_fn(host.lua.create_string(text))
        return ok, result.as_bytes()

    return run


def lines(text: bytes, width: int, ending: bytes) -> bytes:
    return b"".join(text[i : i + width] + ending for i in range(0, len(text), width))


@pytest.mark.parametrize(
    ("raw", "text"),
    # RFC 4648 section 10
    [
        (b"", b""),
        (b"f", b"Zg=="),
        (b"fo", b"Zm8="),
        (b"foo", b"Zm9v"),
        (b"foob", b"Zm9vYg=="),
        (b"fooba", b"Zm9vYmE="),
        (b"foobar", b"Zm9vYmFy"),
    ],
)
def test_rfc_4648_vectors(luau_decode: Decode, raw: bytes, text: bytes) -> None:
    assert luau_decode(text) == (True, raw)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """0 B to 1 MB: random, highly repetitive, or sizes around the 8-character loop's edges."""
    size = draw(
        st.one_of(st.integers(0, 40), st.integers(0, 4096), st.integers(0, 1 << 20), st.just(1 << 20))
    )
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["random", "repetitive", "small alphabet"]))
    if kind == "random":
        return rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    if kind == "repetitive":
        return bytes([seed % 256]) * size
    return rng.integers(0, 4, size, dtype=np.uint8).tobytes()


@settings(max_examples=60, deadline=None)
@given(raw=payloads(), layout=st.sampled_from(["one line", "960 LF", "76 CRLF", "7 LF"]))
def test_random_bytes_round_trip(luau_decode: Decode, raw: bytes, layout: str) -> None:
    text = base64.b64encode(raw)
    if layout == "960 LF":
        text = lines(text, 960, b"\n")
    elif layout == "76 CRLF":
        text = lines(text, 76, b"\r\n")
    elif layout == "7 LF":
        text = lines(text, 7, b"\n")
    assert luau_decode(text) == (True, raw)


def test_only_line_breaks_is_empty(luau_decode: Decode) -> None:
    assert luau_decode(b"\n\r\n\n") == (True, b"")


@pytest.mark.parametrize("bad", [b" ", b"\t", b"-", b"_", b"\x00", b"\xff", b'"', b"."])
def test_foreign_character_is_refused_with_its_position(luau_decode: Decode, bad: bytes) -> None:
    text = lines(base64.b64encode(bytes(range(200))), 16, b"\n")
    # line 3, column 5: after two lines of 16 characters plus their newlines
    position = 2 * 17 + 4
    damaged = text[:position] + bad + text[position + 1 :]
    ok, message = luau_decode(damaged)
    assert not ok
    expected = f"found byte 0x{bad[0]:02X} at character {position + 1} (line 3, column 5)"
    assert message.startswith(b"mnistpack: base64: expected only base64 characters"), message
    assert expected.encode() in message, message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (b"Zm9vY", b"expected a multiple of 4 characters"),
        (b"Zm9vYmF", b"expected a multiple of 4 characters"),
        (b"Zm=vYmFy", b"found padding '=' at character 3"),
        (b"Zg==Zg==", b"found padding '=' at character 3"),
        (b"====", b"found padding '=' at character 1"),
        (b"Z===", b"found padding '=' at character 2"),
        (b"Zh==", b"bits set that its padding must leave zero"),
        (b"Zm9=", b"bits set that its padding must leave zero"),
    ],
)
def test_malformed_text_is_refused(luau_decode: Decode, text: bytes, fragment: bytes) -> None:
    ok, message = luau_decode(text)
    assert not ok
    assert message.startswith(b"mnistpack: base64: "), message
    assert fragment in message, message


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(min_size=1, max_size=200), data=st.data())
def test_any_foreign_byte_anywhere_is_refused(luau_decode: Decode, raw: bytes, data: st.DataObject) -> None:
    text = base64.b64encode(raw)
    position = data.draw(st.integers(0, len(text) - 1))
    allowed = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n")
    bad = data.draw(st.integers(0, 255).filter(lambda b: b not in allowed))
    ok, message = luau_decode(text[:position] + bytes([bad]) + text[position + 1 :])
    assert not ok
    assert message.startswith(b"mnistpack: base64: "), message


def test_position_counts_crlf_and_blank_lines(luau_decode: Decode) -> None:
    text = b"\r\n" * 200_000 + b"QUJD\n" + b"!AAA\n"
    ok, message = luau_decode(text)
    assert not ok
    assert b"found byte 0x21 at character 400006 (line 200002, column 1)" in message, message


def test_text_of_only_line_breaks_stays_within_its_size() -> None:
    # stripping line breaks copies into one buffer: no table of a million pieces
    host = LuauHost(memory_limit=24 << 20)
    decode_fn = host.run(DECODE)[0]
    ok, result = decode_fn(host.lua.create_string(b"\n" * 4_000_000 + b"QUJD"))
    assert ok, result.as_bytes()
    assert result.as_bytes() == b"ABC"
