"""Patterns in luau/ that a strict Luau type checker reports and that can be found without
one (none installs here; issue 12 lists what luau-lsp and the analyzer said). Each check
is also run on a small bad and good snippet, so it cannot pass by finding nothing.

- Every file starts with `--!strict`.
- `require` takes an instance path (`script.Parent.X`, `Mnist:WaitForChild("X")`), never a
  cast: luau-lsp resolves only such paths, and a cast makes everything required `any`.
- `table.create(n)` always gets a fill value: without one the list is `{unknown}`.
- A function declared `: never` ends with `return ...` or `error(...)`, and no function
  ends with a bare call to a never-returning helper: checkers do not see that such a call
  ends the code path ("Not all codepaths in this function return ...").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.luau_host import LUAU_DIR

SOURCES = sorted(LUAU_DIR.rglob("*.luau"))

# what luau-lsp resolves: a root, then .Parent, .Name, :WaitForChild("Name") or :FindFirstChild("Name")
RESOLVABLE = re.compile(r'[A-Za-z_]\w*(\.[A-Za-z_]\w*|:(WaitForChild|FindFirstChild)\("[\w ]+"\))*')
FUNCTION = re.compile(r"(\t*)(?:local\s+)?function\s+([\w.:]+)\s*\(")
# lines that close or continue a statement begun above them
CONTINUATION = re.compile(r"(\)|\}|\]|end\b|else\b|elseif\b|until\b|--)")


def call_arguments(text: str, open_at: int) -> tuple[list[str], int]:
    """The top-level arguments of the call whose "(" is at `open_at`, and the index after its ")"."""
    depth, start, args = 0, open_at + 1, []
    i = open_at
    while i < len(text):
        char = text[i]
        if char in "\"'`":
            i = text.index(char, i + 1)  # the calls checked here hold no escaped quotes
        elif text.startswith("--", i):
            i = text.index("\n", i)
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                args.append(text[start:i].strip())
                return [a for a in args if a], i + 1
        elif char == "," and depth == 1:
            args.append(text[start:i].strip())
            start = i + 1
        i += 1
    raise ValueError(f"unclosed call at {open_at}")


def calls(text: str, name: str) -> Iterator[tuple[int, list[str], int]]:
    """(line, arguments, end index) of every call to `name` in `text`."""
    for found in re.finditer(rf"(?<![\w.:]){re.escape(name)}\s*\(", text):
        args, end = call_arguments(text, found.end() - 1)
        yield text.count("\n", 0, found.start()) + 1, args, end


def require_problems(text: str) -> list[str]:
    problems = []
    for line, args, end in calls(text, "require"):
        cast_after = re.match(r"\s*::", text[end:]) is not None
        if len(args) != 1 or not RESOLVABLE.fullmatch(args[0]) or cast_after:
            problems.append(f"line {line}: require({', '.join(args)}){' :: ...' if cast_after else ''}")
    return problems


def table_create_problems(text: str) -> list[str]:
    return [
        f"line {line}: table.create({args[0]}) has no fill value"
        for line, args, _ in calls(text, "table.create")
        if len(args) < 2
    ]


@dataclass(frozen=True)
class Function:
    name: str
    line: int
    returns: str  # the return annotation, "" when there is none
    last: str  # the first line of the body's last statement, stripped


def functions(text: str) -> Iterator[Function]:
    """Every `function` statement: StyLua indents its body one tab deeper and ends it with an
    `end` at its own indentation, which is how the body is found here."""
    lines = text.split("\n")
    offset = 0
    starts_at = []
    for line in lines:
        starts_at.append(offset)
        offset += len(line) + 1
    for number, line in enumerate(lines):
        header = FUNCTION.match(line)
        if header is None:
            continue
        indent = header.group(1)
        # the parameters may span lines: the annotation follows the ")" that closes them
        _, after = call_arguments(text, starts_at[number] + header.end() - 1)
        close = text.count("\n", 0, after)
        returns = text[after : starts_at[close] + len(lines[close])].strip().removeprefix(":").strip()
        end = next(k for k in range(close + 1, len(lines)) if lines[k] == indent + "end")
        body_indent = indent + "\t"
        starts = [
            lines[k].strip()
            for k in range(close + 1, end)
            if lines[k].startswith(body_indent)
            and not lines[k].startswith(body_indent + "\t")
            and not CONTINUATION.match(lines[k].strip())
        ]
        yield Function(header.group(2), number + 1, returns, starts[-1] if starts else "")


def never_problems(text: str) -> list[str]:
    found = list(functions(text))
    helpers = {f.name for f in found if f.returns == "never"} | {"Errors.raise"}
    problems = []
    for f in found:
        if f.returns == "never" and not re.match(r"(return\b|error\()", f.last):
            problems.append(f"{f.name} (line {f.line}) is declared never but ends with: {f.last}")
        ends_bare = any(re.match(rf"{re.escape(h)}\s*\(", f.last) for h in helpers)
        if ends_bare:
            problems.append(f"{f.name} (line {f.line}) ends with a bare never call, write return: {f.last}")
    return problems


def test_the_checks_see_the_runtime() -> None:
    names = {path.relative_to(LUAU_DIR).as_posix() for path in SOURCES}
    assert {"Decoder.luau", "Native.luau", "client/init.client.luau", "client/UI.luau"} <= names
    texts = [path.read_text(encoding="utf-8") for path in SOURCES]
    assert sum(len(list(calls(text, "require"))) for text in texts) > 30
    assert sum(len(list(calls(text, "table.create"))) for text in texts) > 20
    never = [f for text in texts for f in functions(text) if f.returns == "never"]
    assert len(never) >= 8, [f.name for f in never]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(LUAU_DIR).as_posix())
def test_strict_luau_patterns(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("--!strict\n"), f"{path.name} does not start with --!strict"
    problems = require_problems(text) + table_create_problems(text) + never_problems(text)
    assert problems == [], f"{path.name}: " + "; ".join(problems)


BAD = """--!strict
local A = require(script:WaitForChild("A") :: ModuleScript)
local B = require(script.Parent.B) :: any
local list = table.create(#A)
local function fail(message: string): never
	Errors.raise("x", message)
end
local function last(): number
	fail("always")
end
"""

GOOD = """--!strict
local A = require(script:WaitForChild("A"))
local B = require(script.Parent.B)
local list = table.create(#A, 0)
local function fail(message: string): never
	return Errors.raise("x", message)
end
local function other(message: string): never
	error("mnistpack: x: " .. message, 0)
end
local function last(
	x: number
): number
	if x > 0 then
		fail("positive")
	end
	return fail("always")
end
"""


def test_the_checks_catch_each_pattern() -> None:
    assert require_problems(BAD) == [
        'line 2: require(script:WaitForChild("A") :: ModuleScript)',
        "line 3: require(script.Parent.B) :: ...",
    ]
    assert table_create_problems(BAD) == ["line 4: table.create(#A) has no fill value"]
    assert never_problems(BAD) == [
        'fail (line 5) is declared never but ends with: Errors.raise("x", message)',
        'fail (line 5) ends with a bare never call, write return: Errors.raise("x", message)',
        'last (line 8) ends with a bare never call, write return: fail("always")',
    ]
    assert require_problems(GOOD) == table_create_problems(GOOD) == never_problems(GOOD) == []
