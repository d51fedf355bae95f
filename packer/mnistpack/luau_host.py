"""A headless Luau host that lays out `luau/` the way Rojo lays it out in Roblox.

Used by `mnistpack compare` (accuracy measured on the code that ships), by the
benchmarks and by the tests (`tests/luau_host.py` re-exports it). Modules run in a
real Luau VM (pluau) compiled at optimisation level 2, each with its own `script`
global, so `require(script.Parent.X)` resolves exactly as in a place built from
`project.json`. Roblox services are not faked here: a test that
needs one passes its own `game` (or other globals) through `globals=`.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from mnistpack import assets
from mnistpack.roblox import INIT_STEM, script_kind


def load_pluau() -> ModuleType:
    """Import pluau's compiled core directly: its package __init__ needs Python 3.12."""
    if "_pluau" in sys.modules:
        return sys.modules["_pluau"]
    for entry in sys.path:
        found = glob.glob(str(Path(entry) / "pluau" / "_pluau*.so"))
        if found:
            spec = importlib.util.spec_from_file_location("_pluau", found[0])
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules["_pluau"] = module
            return module
    raise ImportError("pluau is not installed; install it with pip install pluau.")


pluau = load_pluau()

# Builds the instance tree and the module loader inside the VM, so instances are
# plain Luau tables that behave like Roblox Instances for the calls we use.
_PRELUDE = r"""
local compile, entries, extraGlobals = ...

local Instance = {}
local methods = {}

function methods.GetChildren(self)
	local list = {}
	for _, child in rawget(self, "_children") do
		table.insert(list, child)
	end
	table.sort(list, function(a, b) return rawget(a, "Name") < rawget(b, "Name") end)
	return list
end

function methods.FindFirstChild(self, name)
	return rawget(self, "_children")[name]
end

function methods.WaitForChild(self, name)
	local child = rawget(self, "_children")[name]
	if child == nil then
		error("infinite yield: " .. rawget(self, "Name") .. " has no child " .. name, 2)
	end
	return child
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

local function new(className, name, parent, source)
	local inst = setmetatable(
		{ ClassName = className, Name = name, Parent = parent, Source = source, _children = {} },
		Instance
	)
	if parent ~= nil then
		rawget(parent, "_children")[name] = inst
	end
	return inst
end

local root = new("Folder", "Mnist", nil, nil)
-- entries: array of {path = {"client", "Canvas"}, className = "ModuleScript", source = "..."}
for _, entry in entries do
	local parent = root
	local path = entry.path
	for i = 1, #path - 1 do
		local child = rawget(parent, "_children")[path[i]]
		if child == nil then
			child = new("Folder", path[i], parent, nil)
		end
		parent = child
	end
	local name = path[#path]
	local existing = rawget(parent, "_children")[name]
	if existing ~= nil then
		-- a folder created for children first, now given its own script (init.luau)
		rawset(existing, "ClassName", entry.className)
		rawset(existing, "Source", entry.source)
	else
		new(entry.className, name, parent, entry.source)
	end
end

local cache = {}
local loading = {}
local requireModule

local function envFor(scriptInstance)
	local function lookup(_, key)
		local value = extraGlobals[key]
		if value ~= nil then
			return value
		end
		return _G[key]
	end
	local env = setmetatable({ script = scriptInstance, require = requireModule }, { __index = lookup })
	return env
end

function requireModule(target)
	if cache[target] ~= nil then
		return cache[target]
	end
	if type(target) ~= "table" or getmetatable(target) ~= Instance then
		error("require expects a ModuleScript instance, got " .. typeof(target), 2)
	end
	if rawget(target, "ClassName") ~= "ModuleScript" then
		local kind = rawget(target, "ClassName")
		error("require: " .. methods.GetFullName(target) .. " is a " .. kind .. ", not a ModuleScript", 2)
	end
	if loading[target] then
		error("require: cyclic require of " .. methods.GetFullName(target), 2)
	end
	loading[target] = true
	local fn = compile(rawget(target, "Source"), methods.GetFullName(target), envFor(target))
	local result = fn()
	loading[target] = nil
	if result == nil then
		error("require: " .. methods.GetFullName(target) .. " returned nothing", 2)
	end
	cache[target] = result
	return result
end

local function runScript(target)
	local fn = compile(rawget(target, "Source"), methods.GetFullName(target), envFor(target))
	return fn()
end

return root, requireModule, envFor, runScript
"""


def _class_for(path: Path) -> tuple[list[str], str]:
    """Rojo's naming rules: `X.luau` -> ModuleScript X, `init.luau` -> the folder itself."""
    kind = script_kind(path.name)
    if kind is None:
        raise ValueError(f"{path} is not a Luau source file.")
    stem, class_name = kind
    parts = list(path.parent.parts)
    return (parts if stem == INIT_STEM else [*parts, stem]), class_name


def collect_tree(directory: Path, prefix: tuple[str, ...] = ()) -> list[tuple[list[str], str, str]]:
    """Every Luau file under `directory` as (instance path, class name, source)."""
    entries: list[tuple[list[str], str, str]] = []
    for file in sorted(directory.rglob("*.luau")):
        rel = file.relative_to(directory)
        path, class_name = _class_for(rel)
        entries.append(([*prefix, *path], class_name, file.read_text(encoding="utf-8")))
    return entries


class LuauHost:
    """One Luau VM with `luau/` (plus any extra modules) mounted as the folder `root`."""

    def __init__(
        self,
        extra: Mapping[str, str] | None = None,
        extra_dirs: Mapping[str, Path] | None = None,
        globals: Mapping[str, Any] | None = None,
        memory_limit: int | None = None,
    ) -> None:
        """`extra` maps an instance path ("MnistWeights" or "A/B") to Luau source;
        `extra_dirs` mounts a Rojo-style folder (e.g. a split weights module) at a name."""
        self.lua = pluau.Lua()
        self.lua.set_compiler(pluau.Compiler(2, 1, 0, 0))
        entries = collect_tree(assets.luau_dir())
        for name, directory in (extra_dirs or {}).items():
            entries.extend(collect_tree(directory, tuple(name.split("/"))))
        for name, source in (extra or {}).items():
            entries.append((name.split("/"), "ModuleScript", source))
        lua_entries = self.lua.create_table()
        for path, class_name, source in entries:
            entry = self.lua.create_table()
            lua_path = self.lua.create_table()
            for part in path:
                lua_path.push(part)
            entry.set("path", lua_path)
            entry.set("className", class_name)
            entry.set("source", source)
            lua_entries.push(entry)
        extra_globals = self.lua.create_table()
        for key, value in (globals or {}).items():
            extra_globals.set(key, value)
        self.globals = extra_globals
        compile_fn = self.lua.create_function(self._compile)
        prelude = self.lua.load_chunk(_PRELUDE, "host")
        self.root, self.require, self._env_for, self._run_script = prelude(
            compile_fn, lua_entries, extra_globals
        )
        if memory_limit is not None:
            self.lua.set_memory_limit(memory_limit)

    def _compile(self, _lua: Any, args: tuple[Any, Any, Any]) -> Any:
        source, name, env = args
        # Roblox runs scripts with a safe environment, which lets Luau cache builtins
        # (15x faster loops); our envs never replace a builtin, so this is sound.
        env.set_safeenv(True)
        return self.lua.load_chunk(source, str(name), env)

    def run(self, code: str, *args: Any) -> list[Any]:
        """Run a chunk where `root` is the mounted folder and `require` works as in Roblox."""
        env = self._env_for(self.root)[0]
        env.set("root", self.root)
        env.set_safeenv(True)  # as in _compile: `root` is no builtin
        chunk = self.lua.load_chunk(code, "test", env)
        return list(chunk(*args))

    def start_script(self, path: str, spawn: Any) -> None:
        """Start the Script at `path` through `spawn` (a Luau function such as a fake
        task.spawn), so it runs in a thread of its own and may yield, as in Roblox."""
        target = self.root
        for part in path.split("/"):
            target = target.get("_children").get(part)
        spawn(self._run_script, target)

    def bytes_arg(self, data: bytes) -> Any:
        return self.lua.create_string(data)

    @contextlib.contextmanager
    def time_limit(self, seconds: float) -> Iterator[None]:
        """Abort Luau code that runs longer than `seconds` (the interrupt is costly: tests only)."""
        deadline = time.monotonic() + seconds

        def interrupt(*_: Any) -> Any:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Luau code ran longer than {seconds} s")
            return pluau.VmState.Continue

        self.lua.set_interrupt(interrupt)
        try:
            yield
        finally:
            self.lua.remove_interrupt()
