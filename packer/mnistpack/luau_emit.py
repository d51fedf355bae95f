"""The Luau module of FORMAT.md section 5: write it from a blob, and read a blob back from it."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from mnistpack.constants import (
    BASE64_LINE_CHARS,
    COMPRESSIONS,
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_SOURCE_CHARS,
    MIN_FORMAT_VERSION,
)
from mnistpack.errors import Base64Error, ModuleFormatError

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


# --- reading -------------------------------------------------------------------------

_FIELD = r"\b{}\s*=\s*{}"
_LONG_STRING = re.compile(r"\[\[\r?\n?(.*?)\]\]", re.DOTALL)
_PART_REQUIRE = re.compile(r"require\(\s*script\.(\w+)\s*\)")


def read_module(path: Path) -> tuple[str, bytes]:
    """(compression, blob) of a weights module: a `.luau` file, or a split folder or its init.luau."""
    if path.is_dir():
        path = path / "init.luau"
    # whole-line comments go first: the header comment may mention any word
    source = re.sub(r"^[ \t]*--[^\n]*", "", _read(path), flags=re.MULTILINE)
    name = _string_field(source, "format", path)
    if name != FORMAT_NAME:
        raise ModuleFormatError(f"{path} is not an mnistpack weights module (format = {name!r}).")
    version = re.search(_FIELD.format("version", r"(\d+)"), source)
    if version is None:
        raise ModuleFormatError(f"{path} has no version = <number> field.")
    number = int(version.group(1))
    if not MIN_FORMAT_VERSION <= number <= FORMAT_VERSION:
        raise ModuleFormatError(
            f"{path} was made for format version {version.group(1)}; this mnistpack reads versions "
            f"{MIN_FORMAT_VERSION} to {FORMAT_VERSION}. Rebuild it, or update mnistpack."
        )
    compression = _string_field(source, "compression", path)
    if compression not in COMPRESSIONS:
        raise ModuleFormatError(
            f"{path}: compression must be one of {', '.join(COMPRESSIONS)}, found {compression!r}."
        )
    return compression, decode_base64(_data_text(source, path))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModuleFormatError(f"{path} does not exist.") from None
    except UnicodeDecodeError:
        raise ModuleFormatError(f"{path} is not UTF-8 text, so not a Luau module.") from None
    except OSError as error:
        raise ModuleFormatError(f"{path} cannot be read ({error.strerror}).") from None


def _string_field(source: str, key: str, path: Path) -> str:
    found = re.search(_FIELD.format(key, r'"([^"\n]*)"'), source)
    if found is None:
        raise ModuleFormatError(f'{path} is not an mnistpack weights module: it has no {key} = "..." field.')
    return found.group(1)


def _data_text(source: str, path: Path) -> str:
    """The base64 text of the module: its own long string, or its parts' strings joined."""
    data = re.search(r"\bdata\s*=\s*", source)
    if data is None:
        raise ModuleFormatError(f"{path} has no data = ... field.")
    rest = source[data.end() :]
    if rest.startswith("[["):
        return _long_string(rest, path)
    if not rest.startswith("table.concat("):
        raise ModuleFormatError(f"{path}: data must be a [[...]] string or table.concat of parts.")
    end = rest.find("})")
    if end < 0:
        raise ModuleFormatError(f"{path}: the table.concat of parts is not closed; the file is cut short.")
    names = _PART_REQUIRE.findall(rest[:end])
    if not names:
        raise ModuleFormatError(f"{path}: table.concat lists no require(script.PartN).")
    return "".join(_long_string(_read(path.parent / f"{name}.luau"), path.parent / name) for name in names)


def _long_string(text: str, path: Path) -> str:
    found = _LONG_STRING.search(text)
    if found is None:
        raise ModuleFormatError(f"{path}: its [[...]] data string is not closed; the file is cut short.")
    return found.group(1)


def decode_base64(text: str) -> bytes:
    """Strict base64: newlines ignored, anything else outside the alphabet rejected."""
    compact = text.replace("\n", "").replace("\r", "")
    try:
        return binascii.a2b_base64(compact, strict_mode=True)
    except (binascii.Error, ValueError) as error:
        bad = re.search(r"[^A-Za-z0-9+/=]", compact)
        where = f" (character {bad.group()!r} at position {bad.start()})" if bad else ""
        raise Base64Error(f"the data text is not valid base64{where}: {error}.") from None
