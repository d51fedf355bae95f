"""The Luau module of FORMAT.md section 5, written from a blob (`module_reader` reads it back)."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Final

from mnistpack.constants import (
    BASE64_LINE_CHARS,
    COMPRESSIONS,
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_SOURCE_CHARS,
    MIN_FORMAT_VERSION,
)

MODULE_NAME: Final = "MnistWeights"
SPLIT_NOTE: Final = (
    f"The base64 text is split across the child modules Part1, Part2, ...: no script's source may "
    f"exceed {MAX_SOURCE_CHARS:,} characters."
)


def module_path(files: Mapping[str, str]) -> str:
    """Where `emit_module` put the module: the single file, else the split folder."""
    single = f"{MODULE_NAME}.luau"
    return single if single in files else MODULE_NAME


def emit_module(
    blob: bytes, compression: str, *, version: int, comment_lines: Sequence[str]
) -> dict[str, str]:
    """Relative path -> source: one `MnistWeights.luau`, or a split `MnistWeights/` folder.

    `version` is the container's format version, which the module table repeats."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, not {compression!r}.")
    if not MIN_FORMAT_VERSION <= version <= FORMAT_VERSION:
        raise ValueError(f"version must be {MIN_FORMAT_VERSION} to {FORMAT_VERSION}, not {version}.")
    comments = "".join(_comment(line) for line in comment_lines)
    lines = base64_lines(blob)
    single = comments + _table(compression, version, "[[\n" + "".join(lines) + "]]")
    if len(single) <= MAX_SOURCE_CHARS:
        return {f"{MODULE_NAME}.luau": single}
    parts = _split(lines)
    requires = "".join(f"\t\trequire(script.Part{k}),\n" for k in range(1, len(parts) + 1))
    joined = "table.concat({\n" + requires + "\t})"
    files = {
        f"{MODULE_NAME}/init.luau": comments + _comment(SPLIT_NOTE) + _table(compression, version, joined)
    }
    for k, part in enumerate(parts, start=1):
        files[f"{MODULE_NAME}/Part{k}.luau"] = part
    return files


def base64_lines(blob: bytes) -> list[str]:
    """Standard padded base64 in lines of BASE64_LINE_CHARS, each ended by a newline."""
    text = base64.b64encode(blob).decode("ascii")
    return [text[i : i + BASE64_LINE_CHARS] + "\n" for i in range(0, len(text), BASE64_LINE_CHARS)]


def _comment(line: str) -> str:
    if not line.isascii() or "\n" in line or "\r" in line:
        raise ValueError(f"a module comment must be one ASCII line, not {line!r}.")
    return f"-- {line}\n"


def _table(compression: str, version: int, data: str) -> str:
    return (
        "return {\n"
        f'\tformat = "{FORMAT_NAME}",\n'
        f"\tversion = {version},\n"
        f'\tcompression = "{compression}",\n'
        f"\tdata = {data},\n"
        "}\n"
    )


def _part_source(number: int, lines: Sequence[str]) -> str:
    return _comment(f"{MODULE_NAME} part {number}: base64 lines for init.luau; do not edit") + (
        "return [[\n" + "".join(lines) + "]]\n"
    )


def _split(lines: list[str]) -> list[str]:
    """Part sources of whole lines, each as long as MAX_SOURCE_CHARS allows."""
    parts: list[str] = []
    start = 0
    while start < len(lines):
        room = MAX_SOURCE_CHARS - len(_part_source(len(parts) + 1, []))
        count = max(1, room // (BASE64_LINE_CHARS + 1))
        parts.append(_part_source(len(parts) + 1, lines[start : start + count]))
        start += count
    return parts
