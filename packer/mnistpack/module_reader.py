"""Read a weights module the way Roblox does: run it in a Luau VM and take the table it returns.

A weights module is Luau code (FORMAT.md section 5), and only running it says what Roblox
will see: a comment may hold another module's table, a long string may hold `]]`, a split
module's init may build its text any way it likes. So `read_module` compiles and runs the
module, as `require` would, in a sandboxed VM (pluau, the Luau VM the tests use):

- the module sees `script` (its instance, with the parts of a split module as children),
  `require`, the pure libraries (string, table, math, buffer, utf8, bit32) and the basic
  functions, and nothing else: no getfenv, no loadstring, and no pcall, xpcall or
  coroutine (pluau aborts the process with SIGILL when its interrupt's error is caught by
  a pcall in a VM without a memory limit: this VM has a limit, and a weights module needs
  no pcall);
- the VM may use MODULE_MEMORY_BYTES and MODULE_CPU_SECONDS of this thread's CPU time;
- files are read only when they are regular files, each at most MODULE_FILE_BYTES and
  MODULE_READ_BYTES in all, the size checked before reading.

The table it returns is read with raw gets (no metamethod runs), and its `data` is
checked as FORMAT.md's strict base64.
"""

from __future__ import annotations

import binascii
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mnistpack.constants import (
    COMPRESSIONS,
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_SOURCE_CHARS,
    MIN_FORMAT_VERSION,
)
from mnistpack.errors import Base64Error, ModuleFormatError
from mnistpack.luau_host import pluau
from mnistpack.roblox import INIT_STEM, script_kind

# Room for any module the format allows with MAX_DECODED_VALUES values: a float32
# container of 16 MiB is 22 MB of base64 in parts of MAX_SOURCE_CHARS, held twice while
# the init joins them. Luau's compiler works outside the VM's memory, so each file is kept
# small (the packer writes none longer than MAX_SOURCE_CHARS; the rest is room for
# comments and CRLF line ends).
MODULE_MEMORY_BYTES: Final = 96 << 20
MODULE_FILE_BYTES: Final = 1 << 20
MODULE_READ_BYTES: Final = 32 << 20
MODULE_CPU_SECONDS: Final = 1.0
# Entries of a split module's folder looked at for its parts.
MAX_FOLDER_ENTRIES: Final = 4096

# What a module's environment holds besides `script` and `require`.
SAFE_LIBRARIES: Final = ("string", "table", "math", "buffer", "utf8", "bit32")
SAFE_FUNCTIONS: Final = (
    "assert",
    "error",
    "getmetatable",
    "ipairs",
    "next",
    "pairs",
    "rawequal",
    "rawget",
    "rawlen",
    "rawset",
    "select",
    "setmetatable",
    "tonumber",
    "tostring",
    "type",
    "typeof",
    "unpack",
)

# Instances as Roblox has them for a module: Name, ClassName, Parent, children by name, and
# the methods a weights module could call. `require` runs a ModuleScript once, caches what
# it returns and insists on exactly one value, as Roblox does. No pcall anywhere (see above).
_PRELUDE: Final = r"""
local load, envFor = ...

local Instance = {}
local methods = {}

function methods.FindFirstChild(self, name)
	return rawget(self, "_children")[name]
end

function methods.WaitForChild(self, name)
	local child = rawget(self, "_children")[name]
	if child == nil then
		error("infinite yield: " .. rawget(self, "Name") .. " has no child " .. tostring(name), 2)
	end
	return child
end

function methods.GetChildren(self)
	local list = {}
	for _, child in rawget(self, "_children") do
		table.insert(list, child)
	end
	return list
end

function methods.IsA(self, className)
	return rawget(self, "ClassName") == className
end

function methods.GetFullName(self)
	local parent = rawget(self, "Parent")
	if parent == nil then
		return rawget(self, "Name")
	end
	return methods.GetFullName(parent) .. "." .. rawget(self, "Name")
end

Instance.__index = function(self, key)
	local method = methods[key]
	if method ~= nil then
		return method
	end
	local child = rawget(self, "_children")[key]
	if child == nil then
		error(tostring(key) .. " is not a valid member of " .. rawget(self, "Name"), 2)
	end
	return child
end
Instance.__tostring = function(self)
	return rawget(self, "Name")
end
Instance.__metatable = "The metatable is locked"

-- the instances made here, and the source each ModuleScript's code is read from
local sourceOf = {}

local function new(className, name, parent, sourceId)
	local fields = { ClassName = className, Name = name, Parent = parent, _children = {} }
	local instance = setmetatable(fields, Instance)
	if parent ~= nil then
		rawget(parent, "_children")[name] = instance
	end
	sourceOf[instance] = sourceId or false
	return instance
end

local cache = {}
local loading = {}

local function requireModule(target)
	if sourceOf[target] == nil then
		error("require expects a ModuleScript, got " .. typeof(target), 2)
	end
	if sourceOf[target] == false then
		error("require: " .. methods.GetFullName(target) .. " is not a ModuleScript", 2)
	end
	local cached = cache[target]
	if cached ~= nil then
		return cached
	end
	if loading[target] then
		error("require: " .. methods.GetFullName(target) .. " requires itself", 2)
	end
	loading[target] = true
	local fn = load(sourceOf[target], envFor(target, requireModule))
	local results = table.pack(fn())
	loading[target] = nil
	if results.n ~= 1 then
		error("module code of " .. methods.GetFullName(target) .. " did not return exactly one value", 2)
	end
	cache[target] = results[1]
	return results[1]
end

-- A module's environment answers only for what it holds: anything else is an error
-- saying so, rather than a nil that fails later with a vaguer message.
local environment = {
	__index = function(_, key)
		error(tostring(key) .. " is not available to a weights module read by mnistpack", 2)
	end,
}

return new, requireModule, environment
"""


@dataclass(frozen=True)
class ModuleValue:
    """The fields of the table a weights module returns, as FORMAT.md section 5 names them."""

    path: Path
    compression: str
    blob: bytes  # the data text, base64-decoded


@dataclass
class _Reader:
    """Bounded reads of the module's files: regular files only, MODULE_READ_BYTES in all."""

    budget: int = MODULE_READ_BYTES

    def read(self, path: Path) -> str:
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise ModuleFormatError(f"{path} does not exist.") from None
        except OSError as error:
            raise ModuleFormatError(f"{path} cannot be read ({error.strerror}).") from None
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                raise ModuleFormatError(f"{path} is not a regular file, so not a Luau module.")
            limit = min(MODULE_FILE_BYTES, self.budget)
            if info.st_size > limit:
                raise ModuleFormatError(self._too_large(path, info.st_size))
            with os.fdopen(descriptor, "rb", closefd=False) as stream:
                raw = stream.read(limit + 1)
        except OSError as error:
            raise ModuleFormatError(f"{path} cannot be read ({error.strerror}).") from None
        finally:
            os.close(descriptor)
        if len(raw) > limit:  # it grew after the size check
            raise ModuleFormatError(self._too_large(path, len(raw)))
        self.budget -= len(raw)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ModuleFormatError(f"{path} is not UTF-8 text, so not a Luau module.") from None

    def _too_large(self, path: Path, size: int) -> str:
        if size > MODULE_FILE_BYTES:
            return (
                f"{path} has {size:,} bytes; mnistpack reads module files of at most {MODULE_FILE_BYTES:,} "
                f"(it writes none longer than {MAX_SOURCE_CHARS:,} characters)."
            )
        return (
            f"the files of this module hold more than {MODULE_READ_BYTES:,} bytes in all, "
            "more than any weights module."
        )


def read_module(path: Path) -> tuple[str, bytes]:
    """(compression, blob) of a weights module: a `.luau` file, or a split folder or its init.luau."""
    value = evaluate_module(path)
    return value.compression, value.blob


def evaluate_module(path: Path) -> ModuleValue:
    """Run the module at `path` as Roblox's `require` would and check the table it returns."""
    if path.is_dir():
        path = path / f"{INIT_STEM}.luau"
    kind = script_kind(path.name)
    if kind is None or kind[1] != "ModuleScript":
        raise ModuleFormatError(
            f"{path} is not a ModuleScript source (a .luau file, or a folder with init.luau)."
        )
    return _Evaluation(path).run()


class _Evaluation:
    """One module evaluated in a VM of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader = _Reader()
        self.sources: dict[int, Path] = {}
        self.failure: Exception | None = None  # a Python error raised inside a callback
        self.environment: Any = None  # the metatable of every module's environment
        self.lua = pluau.Lua()
        self.lua.sandbox(True)  # libraries and their metatables read-only
        self.lua.set_memory_limit(MODULE_MEMORY_BYTES)

    def run(self) -> ModuleValue:
        new, require, self.environment = self.lua.load_chunk(_PRELUDE, "mnistpack module reader")(
            self.lua.create_function(self._guard(self._load)),
            self.lua.create_function(self._environment),
        )
        target = self._instances(new)
        deadline = time.thread_time() + MODULE_CPU_SECONDS

        def interrupt(*_: Any) -> Any:
            if time.thread_time() > deadline:
                raise TimeoutError("the module ran too long")
            return pluau.VmState.Continue

        self.lua.set_interrupt(interrupt)
        try:
            (returned,) = self._call(require, target)
        finally:
            self.lua.remove_interrupt()
        return self._check(returned)

    def _guard(self, callback: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """Keep a Python error raised inside Luau, so its own message reaches the user."""

        def guarded(lua: Any, args: Any) -> Any:
            try:
                return callback(lua, args)
            except ModuleFormatError as error:
                self.failure = error
                raise

        return guarded

    def _call(self, require: Any, target: Any) -> list[Any]:
        try:
            return list(require(target))
        except Exception as error:  # noqa: BLE001 - every VM failure becomes one sentence
            if self.failure is not None:
                raise self.failure from None
            raise ModuleFormatError(self._explain(error)) from None

    def _explain(self, error: Exception) -> str:
        text = str(error)
        first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
        if "TimeoutError" in text:
            return (
                f"running {self.path} took more than {MODULE_CPU_SECONDS} s of CPU time; a weights module "
                "only returns a table, so this one is damaged or hostile."
            )
        if first.startswith("memory error") or "not enough memory" in text:
            return (
                f"running {self.path} needs more than {MODULE_MEMORY_BYTES >> 20} MiB of memory; a weights "
                "module needs far less, so this one is damaged or hostile (a split module's init listing a "
                "part many times?)."
            )
        if "syntax error: " in first:
            return f"{self.path} is not valid Luau: {first.split('syntax error: ', 1)[1]}"
        first = first.removeprefix("runtime error: ")
        return f"{self.path} fails when run as a module: {first}"

    def _instances(self, new: Any) -> Any:
        """The module's instance, with the other scripts of its folder as children when it is
        a folder's init (Rojo's rule: `Part1.luau` beside `init.luau` is child Part1)."""
        stem, _ = script_kind(self.path.name) or ("", "")
        folder = self.path.parent
        if stem != INIT_STEM:
            parent = new("Folder", folder.resolve().name, None, None)[0]
            return new("ModuleScript", stem, parent, self._register(self.path))[0]
        parent = new("Folder", folder.resolve().parent.name, None, None)[0]
        module = new("ModuleScript", folder.resolve().name, parent, self._register(self.path))[0]
        for entry in self._folder_entries(folder):
            kind = script_kind(entry.name)
            if kind is None or kind[0] == INIT_STEM or not entry.is_file():
                continue
            source = self._register(folder / entry.name) if kind[1] == "ModuleScript" else None
            new(kind[1], kind[0], module, source)
        return module

    def _folder_entries(self, folder: Path) -> list[os.DirEntry[str]]:
        entries = []
        try:
            with os.scandir(folder) as listing:
                for entry in listing:
                    entries.append(entry)
                    if len(entries) > MAX_FOLDER_ENTRIES:
                        raise ModuleFormatError(
                            f"{folder} holds more than {MAX_FOLDER_ENTRIES} entries; a split weights module "
                            "holds an init and its parts."
                        )
        except OSError as error:
            raise ModuleFormatError(f"{folder} cannot be listed ({error.strerror}).") from None
        return sorted(entries, key=lambda entry: entry.name)

    def _register(self, path: Path) -> int:
        source_id = len(self.sources) + 1
        self.sources[source_id] = path
        return source_id

    def _load(self, lua: Any, args: Any) -> Any:
        """The compiled code of the ModuleScript read from source `source_id`."""
        source_id, env = args
        path = self.sources[int(source_id)]
        return lua.load_chunk(self.reader.read(path), _chunk_name(path), env)

    def _environment(self, lua: Any, args: Any) -> Any:
        script, require = args
        env = lua.create_table()
        globals_ = lua.globals()
        for name in (*SAFE_LIBRARIES, *SAFE_FUNCTIONS):
            env.set(name, globals_.get(name))  # sandboxed globals answer through __index
        env.set("script", script)
        env.set("require", require)
        env.set_metatable(self.environment)
        # Never set_safeenv here: with it, Luau resolves builtins such as pcall past this
        # table, and the module would reach what it must not.
        return env

    def _check(self, returned: Any) -> ModuleValue:
        """FORMAT.md section 5's fields of the returned table, read without metamethods."""
        path = self.path
        if not isinstance(returned, pluau.Table):
            raise ModuleFormatError(
                f"{path} returns {_describe(returned)}, not the table of a weights module."
            )
        name = returned.raw_get("format")
        if _text(name) != FORMAT_NAME:
            raise ModuleFormatError(
                f"{path} is not an mnistpack weights module: expected format = {FORMAT_NAME!r}, "
                f"found {_describe(name)}."
            )
        version = returned.raw_get("version")
        readable = _is_number(version) and version in range(MIN_FORMAT_VERSION, FORMAT_VERSION + 1)
        if not readable:
            if _is_number(version) and version > FORMAT_VERSION:
                raise ModuleFormatError(
                    f"{path} was made for format version {version:g}; this mnistpack reads versions "
                    f"{MIN_FORMAT_VERSION} to {FORMAT_VERSION}. Update mnistpack."
                )
            raise ModuleFormatError(
                f"{path}: expected version = {MIN_FORMAT_VERSION} to {FORMAT_VERSION} (a number), "
                f"found {_describe(version)}. Rebuild it with a current mnistpack."
            )
        compression = _text(returned.raw_get("compression"))
        if compression not in COMPRESSIONS:
            raise ModuleFormatError(
                f"{path}: expected compression to be one of {', '.join(COMPRESSIONS)}, "
                f"found {_describe(returned.raw_get('compression'))}."
            )
        return ModuleValue(path, compression, decode_base64(self._data_text(returned.raw_get("data"))))

    def _data_text(self, data: Any) -> bytes:
        if isinstance(data, pluau.String):
            return bytes(data.as_bytes())
        if isinstance(data, pluau.Table):
            # the parts of a split module, not yet joined (Decoder.decode accepts this too)
            parts = [data.raw_get(index) for index in range(1, data.raw_len() + 1)]
            if all(isinstance(part, pluau.String) for part in parts):
                return b"".join(bytes(part.as_bytes()) for part in parts)
        raise ModuleFormatError(f"{self.path}: expected data to be a string, found {_describe(data)}.")


def _chunk_name(path: Path) -> str:
    # Luau shows a chunk name in errors as [string "name"]: the path, without quotes in it
    return str(path).replace('"', "'")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: Any) -> str | None:
    if isinstance(value, pluau.String):
        return bytes(value.as_bytes()).decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return None


def _describe(value: Any) -> str:
    """What a Luau value is, for an error sentence: `the string "1"`, `a table`, `nothing`."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if _is_number(value):
        return f"the number {value:g}"
    text = _text(value)
    if text is not None:
        shown = text if len(text) <= 40 else text[:40] + "..."
        return f"the string {shown!r}"
    return f"a {type(value).__name__.lower()}"


def decode_base64(text: bytes | str) -> bytes:
    """Strict base64: newlines ignored, anything else outside the alphabet rejected."""
    raw = text.encode("latin-1") if isinstance(text, str) else text
    compact = raw.replace(b"\n", b"").replace(b"\r", b"")
    try:
        return binascii.a2b_base64(compact, strict_mode=True)
    except (binascii.Error, ValueError) as error:
        raise Base64Error(f"the data text is not valid base64{_first_foreign(compact)}: {error}.") from None


_ALPHABET: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _first_foreign(compact: bytes) -> str:
    for position, byte in enumerate(compact):
        if byte not in _ALPHABET:
            return f" (character {chr(byte)!r} at position {position})"
    return ""
