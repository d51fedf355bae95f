"""The generated Luau module (FORMAT.md section 5): exact text and splitting (tests/test_module_reader.py
reads it back)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from mnistpack.constants import BASE64_LINE_CHARS, MAX_SOURCE_CHARS
from mnistpack.luau_emit import emit_module

from tests.luau_host import LuauHost

REQUIRE_CHUNK = """
local m = require(root.MnistWeights)
return m.format, m.version, m.compression, m.data
"""


def write_files(directory: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text(text, encoding="utf-8", newline="")


def single_source_length(blob_size: int) -> int:
    """Length the one-file module would have (emit_module's own choice is under test)."""
    text = base64.b64encode(bytes(blob_size)).decode()
    lines = -(-len(text) // BASE64_LINE_CHARS)
    return (
        len(emit_module(b"", "zstd", version=1, comment_lines=["c"])["MnistWeights.luau"]) + len(text) + lines
    )


def test_small_module_text_is_exactly_format_md_section_5() -> None:
    files = emit_module(b"\x00\x01\x02\xff", "none", version=1, comment_lines=["first line", "do not edit"])
    assert files == {
        "MnistWeights.luau": "-- first line\n"
        "-- do not edit\n"
        "return {\n"
        '\tformat = "mnistpack",\n'
        "\tversion = 1,\n"
        '\tcompression = "none",\n'
        "\tdata = [[\n"
        "AAEC/w==\n"
        "]],\n"
        "}\n"
    }


def test_lines_are_960_characters() -> None:
    blob = os.urandom(5000)
    (source,) = emit_module(blob, "zstd", version=1, comment_lines=[]).values()
    data = source.split("[[\n", 1)[1].split("]]", 1)[0]
    lines = data.split("\n")
    assert lines[-1] == ""  # every line, the last included, ends with a newline
    assert {len(line) for line in lines[:-2]} == {BASE64_LINE_CHARS}
    assert 0 < len(lines[-2]) <= BASE64_LINE_CHARS
    assert base64.b64decode("".join(lines)) == blob


def test_split_exactly_when_one_file_would_exceed_the_limit() -> None:
    size = 3 * (MAX_SOURCE_CHARS // 4) - 3000
    while single_source_length(size + 1) <= MAX_SOURCE_CHARS:
        size += 1
    assert single_source_length(size) <= MAX_SOURCE_CHARS < single_source_length(size + 1)
    just_fits = emit_module(bytes(size), "zstd", version=1, comment_lines=["c"])
    assert list(just_fits) == ["MnistWeights.luau"]
    assert len(just_fits["MnistWeights.luau"]) == single_source_length(size)
    too_big = emit_module(bytes(size + 1), "zstd", version=1, comment_lines=["c"])
    assert list(too_big) == ["MnistWeights/init.luau", "MnistWeights/Part1.luau", "MnistWeights/Part2.luau"]


def test_split_parts_hold_whole_lines_under_the_limit() -> None:
    blob = os.urandom(700_000)
    files = emit_module(blob, "zstd", version=1, comment_lines=["c"])
    parts = [files[f"MnistWeights/Part{k}.luau"] for k in range(1, len(files))]
    assert len(parts) == 5
    for source in files.values():
        assert len(source) <= MAX_SOURCE_CHARS and source.isascii()
    for part in parts:
        body = part.split("return [[\n", 1)[1]
        assert body.endswith("\n]]\n")
        assert all(len(line) in range(1, BASE64_LINE_CHARS + 1) for line in body[: -len("]]\n")].splitlines())
    assert "require(script.Part5)" in files["MnistWeights/init.luau"]


@pytest.mark.parametrize("size", [10, 700_000])
def test_luau_require_gives_the_table_without_decoding(tmp_path: Path, size: int) -> None:
    blob = os.urandom(size)
    files = emit_module(blob, "zstd", version=1, comment_lines=["c"])
    write_files(tmp_path, files)
    if "MnistWeights.luau" in files:
        host = LuauHost(extra={"MnistWeights": files["MnistWeights.luau"]})
    else:
        host = LuauHost(extra_dirs={"MnistWeights": tmp_path / "MnistWeights"})
    name, version, compression, data = host.run(REQUIRE_CHUNK)
    assert (name, version, compression) == ("mnistpack", 1, "zstd")
    text = data.as_bytes().decode() if hasattr(data, "as_bytes") else data
    assert text.endswith("\n") and not text.startswith("\n")
    assert base64.b64decode(text.replace("\n", "")) == blob


def test_comment_lines_must_be_single_ascii_lines() -> None:
    for bad in ("two\nlines", "caf\u00e9"):
        with pytest.raises(ValueError, match="one ASCII line"):
            emit_module(b"x", "none", version=1, comment_lines=[bad])
