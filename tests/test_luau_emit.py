"""The generated Luau module (FORMAT.md section 5): exact text, splitting, reading it back."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from mnistpack.constants import BASE64_LINE_CHARS, MAX_SOURCE_CHARS
from mnistpack.errors import Base64Error, ModuleFormatError
from mnistpack.luau_emit import decode_base64, emit_module, read_module

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


@pytest.mark.parametrize("size", [10, 700_000])
def test_read_module_round_trips_file_folder_and_init(tmp_path: Path, size: int) -> None:
    blob = os.urandom(size)
    files = emit_module(blob, "zstd", version=1, comment_lines=['format = "other" in a comment'])
    write_files(tmp_path, files)
    paths = [tmp_path / "MnistWeights.luau"] if size == 10 else [tmp_path / "MnistWeights"]
    paths += [tmp_path / "MnistWeights" / "init.luau"] if size != 10 else []
    for path in paths:
        assert read_module(path) == ("zstd", blob)


def test_read_module_tolerates_windows_line_endings(tmp_path: Path) -> None:
    (source,) = emit_module(b"hello world", "none", version=1, comment_lines=["c"]).values()
    path = tmp_path / "MnistWeights.luau"
    path.write_bytes(source.replace("\n", "\r\n").encode())
    assert read_module(path) == ("none", b"hello world")


def _module(tmp_path: Path, text: str, name: str = "M.luau") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_module_errors_name_the_problem(tmp_path: Path) -> None:
    (good,) = emit_module(b"some bytes!", "zstd", version=1, comment_lines=["c"]).values()
    cases = [
        ("return { answer = 42 }\n", 'has no format = "..." field'),
        (
            good.replace('"mnistpack"', '"othertool"'),
            r"not an mnistpack weights module \(format = 'othertool'\)",
        ),
        (
            good.replace("version = 1", "version = 3"),
            "made for format version 3; this mnistpack reads versions 1 to 2",
        ),
        (
            good.replace("version = 1", "version = 0"),
            "made for format version 0; this mnistpack reads versions 1 to 2",
        ),
        (good.replace('"zstd"', '"lz4"'), "compression must be one of zstd, none, found 'lz4'"),
        (good[: len(good) - 12], r"\[\[...\]\] data string is not closed; the file is cut short"),
        (good.replace("version = 1", "versio = 1"), "no version = <number> field"),
    ]
    for text, message in cases:
        with pytest.raises(ModuleFormatError, match=message):
            read_module(_module(tmp_path, text))
    with pytest.raises(ModuleFormatError, match="does not exist"):
        read_module(tmp_path / "missing.luau")
    (tmp_path / "bin.luau").write_bytes(b"\xff\xfe\x00return")
    with pytest.raises(ModuleFormatError, match="not UTF-8 text"):
        read_module(tmp_path / "bin.luau")


def test_a_missing_part_is_named(tmp_path: Path) -> None:
    write_files(tmp_path, emit_module(os.urandom(300_000), "zstd", version=1, comment_lines=["c"]))
    (tmp_path / "MnistWeights" / "Part2.luau").unlink()
    with pytest.raises(ModuleFormatError, match=r"Part2\.luau does not exist"):
        read_module(tmp_path / "MnistWeights")


def test_base64_errors(tmp_path: Path) -> None:
    (good,) = emit_module(b"some bytes!!", "zstd", version=1, comment_lines=["c"]).values()
    with pytest.raises(Base64Error, match=r"^base64: .*character '\*' at position 3"):
        read_module(_module(tmp_path, good.replace("c29t", "c29*")))
    with pytest.raises(Base64Error, match="^base64: "):
        decode_base64("c29tZQ")  # padding cut off
    with pytest.raises(Base64Error, match="^base64: "):
        decode_base64("c2=9tZQ==")
    with pytest.raises(Base64Error, match="^base64: .*character ' '"):
        decode_base64("c29t ZQ==")
    assert decode_base64("c29t\r\nZQ==\n") == b"some"


def test_comment_lines_must_be_single_ascii_lines() -> None:
    for bad in ("two\nlines", "caf\u00e9"):
        with pytest.raises(ValueError, match="one ASCII line"):
            emit_module(b"x", "none", version=1, comment_lines=[bad])
