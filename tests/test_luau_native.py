"""The Roblox fast paths of luau/Native.luau, with fake EncodingService and HttpService
(Python's base64, zstandard and json behind them): each path gives exactly the weights of
the pure-Luau path, a failing or lying service falls back to it, and a frame declaring
too much content is refused before DecompressBuffer runs."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import zstandard
from mnistpack.constants import MAX_CONTAINER_BYTES

from tests.luau_decode_helpers import (
    Packed,
    decode,
    error_stage,
    module_table,
    module_text,
    small_stack,
)
from tests.luau_host import LuauHost

# Fake services that count their calls; `modes` makes one of them fail in a chosen way:
# "error" raises, "string" returns a non-buffer, "garbage" returns wrong bytes; for the
# size, "unknown" answers nil and a number is the size it claims.
FAKES = r"""
local Native = require(root.Native)
local pyBase64, pyZstd, pyJson, pySize, modes = ...
local calls = { base64 = 0, size = 0, decompress = 0, json = 0, order = {} }
local ZSTD = table.freeze({ Name = "Zstd" }) -- stands for Enum.CompressionAlgorithm.Zstd

local function answer(mode, produce)
	if mode == "error" then
		error("the service failed")
	elseif mode == "string" then
		return "not a buffer"
	elseif mode == "garbage" then
		return buffer.fromstring(modes.garbageBytes or "MNPK\1\0\5\0\0\0garbage and more garbage")
	end
	return buffer.fromstring(produce())
end

local encoding = {}
function encoding:Base64Decode(input)
	calls.base64 += 1
	assert(typeof(input) == "buffer", "Base64Decode takes a buffer")
	return answer(modes.base64, function()
		return pyBase64(buffer.tostring(input))
	end)
end
function encoding:GetDecompressedBufferSize(input, algorithm)
	calls.size += 1
	table.insert(calls.order, "size")
	assert(typeof(input) == "buffer", "GetDecompressedBufferSize takes a buffer")
	assert(algorithm == ZSTD, "GetDecompressedBufferSize was not asked for Zstd")
	local mode = modes.size
	if mode == "error" then
		error("the service failed")
	elseif mode == "unknown" then
		return nil
	elseif type(mode) == "number" then
		return mode
	end
	return pySize(buffer.tostring(input))
end
function encoding:DecompressBuffer(input, algorithm)
	calls.decompress += 1
	table.insert(calls.order, "decompress")
	assert(typeof(input) == "buffer", "DecompressBuffer takes a buffer")
	assert(algorithm == ZSTD, "DecompressBuffer was not asked for Zstd")
	return answer(modes.decompress, function()
		return pyZstd(buffer.tostring(input))
	end)
end

local http = {}
function http:JSONDecode(text)
	calls.json += 1
	return answer(modes.json, function()
		return pyJson(text)
	end)
end

Native.setServices({
	encoding = if modes.noEncoding then nil else encoding,
	http = if modes.noHttp then nil else http,
	zstd = ZSTD,
})
return function()
	return calls.base64, calls.size, calls.decompress, calls.json, table.concat(calls.order, ",")
end
"""


def py_base64(_lua: Any, args: tuple[Any, ...]) -> Any:
    return _lua.create_string(base64.b64decode(args[0].as_bytes(), validate=True))


def py_zstd(_lua: Any, args: tuple[Any, ...]) -> Any:
    return _lua.create_string(zstandard.ZstdDecompressor().decompress(args[0].as_bytes()))


def py_size(_lua: Any, args: tuple[Any, ...]) -> Any:
    # what the frame header declares (zstandard says -1 when it declares nothing)
    size = zstandard.frame_content_size(args[0].as_bytes())
    return None if size < 0 else size


def py_json(_lua: Any, args: tuple[Any, ...]) -> Any:
    # only the object community code sends JSONDecode for compressed buffers (Roblox does
    # not document it), nothing else
    value = json.loads(args[0].as_bytes())
    assert list(value) == ["m", "t", "zbase64"] and value["m"] is None and value["t"] == "buffer", value
    raw = base64.b64decode(value["zbase64"], validate=True)
    return _lua.create_string(zstandard.ZstdDecompressor().decompress(raw))


def with_fakes(**modes: Any) -> tuple[LuauHost, Any]:
    """A VM whose Native module uses the fakes; returns it and a call counter."""
    host = LuauHost()
    lua_modes = host.lua.create_table()
    for key, value in modes.items():
        lua_modes.set(key, host.lua.create_string(value) if isinstance(value, bytes) else value)
    functions = [host.lua.create_function(f) for f in (py_base64, py_zstd, py_json, py_size)]
    counter = host.run(FAKES, *functions, lua_modes)[0]
    return host, counter


def calls(counter: Any) -> dict[str, int]:
    base64_calls, _, decompress_calls, json_calls, _ = counter()
    return {"base64": base64_calls, "decompress": decompress_calls, "json": json_calls}


def engine_order(counter: Any) -> str:
    """The EncodingService zstd calls in the order they were made, e.g. "size,decompress"."""
    return bytes(counter()[4].as_bytes()).decode()


PACKED = small_stack("int8", seed=11)


def pure_result(packed: Packed, compression: str) -> tuple[bool, bytes, str, str]:
    host = LuauHost()
    return decode(host, module_table(host, module_text(packed.container, compression), compression))


def test_pure_path_matches_python() -> None:
    assert pure_result(PACKED, "zstd") == (True, PACKED.flat, PACKED.shapes, PACKED.activations)


@pytest.mark.parametrize(
    ("modes", "expected_calls"),
    [
        ({}, {"base64": 1, "decompress": 1, "json": 0}),
        ({"noEncoding": True}, {"base64": 0, "decompress": 0, "json": 1}),
        ({"noEncoding": True, "json": "error"}, {"base64": 0, "decompress": 0, "json": 1}),
        # with EncodingService there, JSONDecode (which cannot be asked the size) is never tried
        ({"base64": "error"}, {"base64": 1, "decompress": 0, "json": 0}),
        ({"base64": "string"}, {"base64": 1, "decompress": 0, "json": 0}),
        ({"size": "error"}, {"base64": 1, "decompress": 0, "json": 0}),
        ({"size": "unknown"}, {"base64": 1, "decompress": 0, "json": 0}),
        ({"decompress": "error"}, {"base64": 1, "decompress": 1, "json": 0}),
        ({"decompress": "string"}, {"base64": 1, "decompress": 1, "json": 0}),
        ({"noEncoding": True, "noHttp": True}, {"base64": 0, "decompress": 0, "json": 0}),
    ],
    ids=[
        "all services",
        "no EncodingService",
        "no EncodingService, JSONDecode raises",
        "Base64Decode raises",
        "Base64Decode returns a string",
        "GetDecompressedBufferSize raises",
        "GetDecompressedBufferSize cannot tell",
        "DecompressBuffer raises",
        "DecompressBuffer returns a string",
        "no services",
    ],
)
def test_each_path_gives_the_pure_weights(modes: dict[str, Any], expected_calls: dict[str, int]) -> None:
    host, counter = with_fakes(**modes)
    module = module_table(host, module_text(PACKED.container, "zstd"), "zstd")
    assert decode(host, module) == pure_result(PACKED, "zstd")
    assert calls(counter) == expected_calls
    if expected_calls["decompress"]:
        assert engine_order(counter) == "size,decompress"


def test_uncompressed_module_uses_only_base64() -> None:
    host, counter = with_fakes()
    module = module_table(host, module_text(PACKED.container, "none"), "none")
    assert decode(host, module) == pure_result(PACKED, "none")
    assert calls(counter) == {"base64": 1, "decompress": 0, "json": 0}


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_bare_string_uses_the_fast_paths(compression: str) -> None:
    host, counter = with_fakes()
    text = module_text(PACKED.container, compression).encode()
    assert decode(host, host.lua.create_string(text)) == pure_result(PACKED, compression)
    assert calls(counter) == {"base64": 1, "decompress": int(compression == "zstd"), "json": 0}


@pytest.mark.parametrize("modes", [{"decompress": "garbage"}, {"noEncoding": True, "json": "garbage"}])
def test_a_lying_service_cannot_produce_weights(modes: dict[str, Any]) -> None:
    # output of another size than the frame declares is not used: the pure decoders run
    host, counter = with_fakes(**modes)
    module = module_table(host, module_text(PACKED.container, "zstd"), "zstd")
    assert decode(host, module) == pure_result(PACKED, "zstd")
    asked = calls(counter)
    assert asked["decompress"] + asked["json"] == 1, asked


@pytest.mark.parametrize("path", ["decompress", "json"])
def test_a_lying_service_of_the_right_size_is_caught_by_the_container_checks(path: str) -> None:
    # garbage of exactly the declared size gets through to the container checks, which refuse it
    # (its header, here: the header is checked before the CRC)
    garbage = b"MNPK\x01\x00\x05\x00\x00\x00garbage"
    container = garbage + bytes(len(PACKED.container) - len(garbage))
    modes = {path: "garbage", "garbageBytes": container} | ({"noEncoding": True} if path == "json" else {})
    host, _ = with_fakes(**modes)
    ok, message, _, _ = decode(host, module_table(host, module_text(PACKED.container, "zstd"), "zstd"))
    assert not ok
    assert error_stage(message) in ("container", "msgpack", "header", "crc"), message


def test_damaged_text_fails_with_the_pure_decoders_message() -> None:
    host, counter = with_fakes()
    text = module_text(PACKED.container, "zstd")
    damaged = text[:50] + "!" + text[51:]
    ok, message, _, _ = decode(host, module_table(host, damaged, "zstd"))
    assert not ok
    # both engine paths refused it (the fakes validate as Roblox does); the error that
    # reaches the user is the pure decoder's, with the position
    assert message.startswith(b"mnistpack: base64: expected only base64 characters"), message
    assert b"found byte 0x21 at character 51 (line 1, column 51)" in message, message
    assert calls(counter) == {"base64": 1, "decompress": 0, "json": 0}


@pytest.mark.parametrize("char", ['"', "\\"])
def test_text_that_could_escape_the_json_string_never_reaches_json_decode(char: str) -> None:
    host, counter = with_fakes(noEncoding=True)
    text = module_text(PACKED.container, "zstd")
    ok, message, _, _ = decode(host, module_table(host, text[:20] + char + text[21:], "zstd"))
    assert not ok
    assert error_stage(message) == "base64", message
    assert calls(counter)["json"] == 0


def test_a_frame_larger_than_max_bytes_is_refused_before_decompressing() -> None:
    host, counter = with_fakes()
    module = module_table(host, module_text(PACKED.container, "zstd"), "zstd")
    limit = len(PACKED.container) - 1
    ok, message, _, _ = decode(host, module, limit)
    assert not ok
    expected = f"mnistpack: zstd: expected a frame content size of at most {limit} bytes (the limit), found"
    assert message.startswith(expected.encode()), message
    assert engine_order(counter) == "size"


def test_a_size_over_the_format_limit_never_reaches_decompress_buffer() -> None:
    # the engine says what the frame header says: a hostile header can claim anything
    host, counter = with_fakes(size=MAX_CONTAINER_BYTES + 1)
    ok, message, _, _ = decode(host, module_table(host, module_text(PACKED.container, "zstd"), "zstd"))
    assert not ok
    expected = (
        f"mnistpack: zstd: expected a frame content size of at most {MAX_CONTAINER_BYTES} bytes"
        f" (the limit), found {MAX_CONTAINER_BYTES + 1} declared in the frame header"
    )
    assert message.decode() == expected
    assert calls(counter) == {"base64": 1, "decompress": 0, "json": 0}
    assert engine_order(counter) == "size"


def test_a_size_at_the_format_limit_is_decompressed() -> None:
    # the limit itself is allowed: the refusal is for sizes above it, not at it
    host, counter = with_fakes(size=MAX_CONTAINER_BYTES)
    assert decode(host, module_table(host, module_text(PACKED.container, "zstd"), "zstd"))[0]
    assert engine_order(counter) == "size,decompress"


def test_no_services_outside_roblox() -> None:
    host = LuauHost()
    assert host.run("return require(root.Native).available()") == [False]
    assert host.run("return require(root.Native).decodeBase64('AAAA')") == [None]


def test_a_game_global_that_is_not_an_instance_is_ignored() -> None:
    host = LuauHost()
    lookalike = host.lua.create_table()
    lookalike.set("GetService", host.lua.create_function(lambda _lua, _args: None))
    host.globals.set("game", lookalike)
    assert host.run("return require(root.Native).available()") == [False]
    ok, flat, _, _ = decode(host, module_table(host, module_text(PACKED.container, "zstd"), "zstd"))
    assert ok and flat == PACKED.flat
