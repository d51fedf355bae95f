"""Reading a weights module the way Roblox does (mnistpack.module_reader): the module runs in a
sandboxed Luau VM with memory and CPU limits, files are read only when regular and small
enough, and every problem is one sentence naming it."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from mnistpack.errors import Base64Error, ModuleFormatError
from mnistpack.luau_emit import emit_module
from mnistpack.module_reader import (
    MAX_FOLDER_ENTRIES,
    MODULE_FILE_BYTES,
    decode_base64,
    evaluate_module,
    read_module,
)


def write_files(directory: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text(text, encoding="utf-8", newline="")


def module_file(tmp_path: Path, text: str, name: str = "M.luau") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = emit_module(b"some bytes!", "zstd", version=1, comment_lines=["c"])["MnistWeights.luau"]


def refused(path: Path, fragment: str, error: type[Exception] = ModuleFormatError) -> str:
    with pytest.raises(error) as caught:
        read_module(path)
    message = str(caught.value)
    assert fragment in message, message
    assert "\n" not in message, message
    return message


# --- what the module returns ---------------------------------------------------------------


@pytest.mark.parametrize("size", [10, 700_000])
def test_file_folder_and_init_round_trip(tmp_path: Path, size: int) -> None:
    blob = os.urandom(size)
    files = emit_module(blob, "zstd", version=1, comment_lines=['format = "other" in a comment'])
    write_files(tmp_path, files)
    paths = [tmp_path / "MnistWeights.luau"] if size == 10 else [tmp_path / "MnistWeights"]
    paths += [tmp_path / "MnistWeights" / "init.luau"] if size != 10 else []
    for path in paths:
        assert read_module(path) == ("zstd", blob)


def test_windows_line_endings(tmp_path: Path) -> None:
    (source,) = emit_module(b"hello world", "none", version=1, comment_lines=["c"]).values()
    path = tmp_path / "MnistWeights.luau"
    path.write_bytes(source.replace("\n", "\r\n").encode())
    assert read_module(path) == ("none", b"hello world")


def test_a_table_in_a_comment_is_not_read(tmp_path: Path) -> None:
    # the block comment holds another module's table; Luau (and so Roblox) skips it
    decoy = emit_module(b"the decoy", "none", version=1, comment_lines=["c"])["MnistWeights.luau"]
    real = emit_module(b"the real one", "none", version=1, comment_lines=["c"])["MnistWeights.luau"]
    path = module_file(tmp_path, "--[=[\n" + decoy + "]=]\n" + real)
    assert read_module(path) == ("none", b"the real one")


def test_a_module_built_any_way_luau_allows(tmp_path: Path) -> None:
    text = base64.b64encode(b"computed").decode()
    source = (
        f'local half = "{text[:4]}"\n'
        "local t = {}\n"
        't.format = "mnist" .. "pack"\n'
        "t.version = 2 - 1\n"
        't.compression = string.lower("NONE")\n'
        f't.data = half .. "{text[4:]}"\n'
        "return t\n"
    )
    assert read_module(module_file(tmp_path, source)) == ("none", b"computed")


def test_data_as_a_list_of_parts(tmp_path: Path) -> None:
    text = base64.b64encode(b"in parts").decode()
    parts = f'{{ "{text[:4]}", "{text[4:]}" }}'
    source = f'return {{ format = "mnistpack", version = 1, compression = "none", data = {parts} }}'
    assert read_module(module_file(tmp_path, source)) == ("none", b"in parts")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("return { answer = 42 }\n", "expected format = 'mnistpack', found nothing"),
        (GOOD.replace('"mnistpack"', '"othertool"'), "found the string 'othertool'"),
        (
            GOOD.replace("version = 1", "version = 3"),
            "made for format version 3; this mnistpack reads versions 1 to 2",
        ),
        (
            GOOD.replace("version = 1", 'version = "1"'),
            "expected version = 1 to 2 (a number), found the string '1'",
        ),
        (GOOD.replace("version = 1", "versio = 1"), "expected version = 1 to 2 (a number), found nothing"),
        (
            GOOD.replace('"zstd"', '"lz4"'),
            "expected compression to be one of zstd, none, found the string 'lz4'",
        ),
        (GOOD.replace("data = [[", "data = 5 or [["), "expected data to be a string, found the number 5"),
        ('return "just text"\n', "returns the string 'just text', not the table of a weights module"),
        ("return 1, 2\n", "did not return exactly one value"),
        ("local x = 1\n", "did not return exactly one value"),
        (GOOD[: len(GOOD) - 12], "is not valid Luau"),
        ("return {{{\n", "is not valid Luau"),
    ],
)
def test_errors_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    refused(module_file(tmp_path, text), fragment)


def test_a_table_whose_metatable_errors_is_read_without_it(tmp_path: Path) -> None:
    text = base64.b64encode(b"raw").decode()
    source = (
        f'local t = {{ format = "mnistpack", version = 1, compression = "none", data = "{text}" }}\n'
        'local boom = function() error("boom") end\n'
        "return setmetatable(t, { __index = boom, __len = boom })\n"
    )
    assert read_module(module_file(tmp_path, source)) == ("none", b"raw")
    lying = 'return setmetatable({}, { __index = function() error("boom") end })\n'
    refused(module_file(tmp_path, lying), "expected format = 'mnistpack', found nothing")


def test_an_unclosed_long_string_followed_by_many_more(tmp_path: Path) -> None:
    # a regex reader took minutes on this; the Luau parser refuses it at once
    source = 'return { format = "mnistpack", data = [[' + "[[" * 99_000 + "\n"
    refused(module_file(tmp_path, source), "is not valid Luau")


# --- the sandbox -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["pcall", "xpcall", "coroutine", "getfenv", "loadstring", "os", "_G", "game"]
)
def test_the_module_sees_only_what_a_weights_module_needs(tmp_path: Path, name: str) -> None:
    refused(module_file(tmp_path, f"local x = {name}\nreturn {{}}\n"), f"{name} is not available")


def test_libraries_are_read_only(tmp_path: Path) -> None:
    refused(module_file(tmp_path, "string.rep = nil\nreturn {}\n"), "readonly")


def test_a_module_that_never_returns_is_stopped(tmp_path: Path) -> None:
    refused(module_file(tmp_path, "while true do end\n"), "took more than 1.0 s of CPU time")


def test_a_module_that_asks_for_too_much_memory_is_stopped(tmp_path: Path) -> None:
    refused(module_file(tmp_path, 'return string.rep("x", 2^30)\n'), "needs more than 96 MiB of memory")


def test_a_split_init_listing_one_part_many_times(tmp_path: Path) -> None:
    write_files(tmp_path, emit_module(os.urandom(700_000), "zstd", version=1, comment_lines=["c"]))
    init = tmp_path / "MnistWeights" / "init.luau"
    source = init.read_text()
    start = source.index("require(script.Part1),")
    end = source.index("\t})")
    init.write_text(source[:start] + "require(script.Part1),\n" * 20_000 + source[end:])
    refused(tmp_path / "MnistWeights", "needs more than 96 MiB of memory")


def test_require_follows_roblox(tmp_path: Path) -> None:
    write_files(tmp_path, emit_module(os.urandom(300_000), "zstd", version=1, comment_lines=["c"]))
    init = tmp_path / "MnistWeights" / "init.luau"
    (tmp_path / "MnistWeights" / "Part2.luau").unlink()
    refused(tmp_path / "MnistWeights", "Part2 is not a valid member of MnistWeights")
    init.write_text("return require(script)\n")
    refused(tmp_path / "MnistWeights", "requires itself")
    init.write_text("return require(42)\n")
    refused(tmp_path / "MnistWeights", "require expects a ModuleScript, got number")
    init.write_text("return require(script.Parent)\n")
    refused(tmp_path / "MnistWeights", "is not a ModuleScript")


# --- files ---------------------------------------------------------------------------------


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    refused(tmp_path / "missing.luau", "does not exist")
    (tmp_path / "bin.luau").write_bytes(b"\xff\xfe\x00return")
    refused(tmp_path / "bin.luau", "not UTF-8 text")
    refused(tmp_path / "notes.txt", "is not a ModuleScript source")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "init.luau does not exist")
    (tmp_path / "folder.luau").mkdir()
    (tmp_path / "folder.luau" / "init.luau").mkdir()
    refused(tmp_path / "folder.luau", "is not a regular file")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "MnistWeights.luau"
    os.mkfifo(fifo)
    refused(fifo, "is not a regular file")


def test_a_device_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "MnistWeights.luau"
    link.symlink_to("/dev/zero")
    refused(link, "is not a regular file")


def test_a_file_too_large_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "MnistWeights.luau"
    with path.open("wb") as stream:
        stream.truncate(50 << 30)  # sparse: 50 GB that take no disk
    refused(path, f"mnistpack reads module files of at most {MODULE_FILE_BYTES:,}")


def test_a_folder_with_too_many_entries_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "MnistWeights"
    write_files(tmp_path, emit_module(b"x", "none", version=1, comment_lines=["c"]))
    folder.mkdir()
    (folder / "init.luau").write_text((tmp_path / "MnistWeights.luau").read_text())
    for k in range(MAX_FOLDER_ENTRIES + 1):
        (folder / f"f{k}").touch()
    refused(folder, f"holds more than {MAX_FOLDER_ENTRIES} entries")


def test_what_was_read(tmp_path: Path) -> None:
    write_files(tmp_path, emit_module(os.urandom(300_000), "none", version=1, comment_lines=["c"]))
    value = evaluate_module(tmp_path / "MnistWeights")
    assert value.path == tmp_path / "MnistWeights" / "init.luau"
    assert value.compression == "none"


# --- base64 --------------------------------------------------------------------------------


def test_base64_errors(tmp_path: Path) -> None:
    with pytest.raises(Base64Error, match=r"^base64: .*character '\*' at position 3"):
        read_module(module_file(tmp_path, GOOD.replace("c29t", "c29*")))
    with pytest.raises(Base64Error, match="^base64: "):
        decode_base64("c29tZQ")  # padding cut off
    with pytest.raises(Base64Error, match="^base64: "):
        decode_base64("c2=9tZQ==")
    with pytest.raises(Base64Error, match="^base64: .*character ' '"):
        decode_base64("c29t ZQ==")
    assert decode_base64("c29t\r\nZQ==\n") == b"some"
