"""packer/constants.py and luau/Constants.luau name the same constants with the same values."""

from __future__ import annotations

from typing import Any

import mnistpack.constants as constants

from tests.luau_host import LuauHost

# Luau strings, numbers and frozen arrays as Python values (arrays become tuples).
EXPORT = r"""
local Constants = require(root.Constants)
local names, kinds, values = {}, {}, {}
for name, value in Constants do
	table.insert(names, name)
	if type(value) == "table" then
		table.insert(kinds, if table.isfrozen(value) then "list" else "unfrozen list")
		table.insert(values, table.concat(value, "\0"))
	else
		table.insert(kinds, type(value))
		table.insert(values, if type(value) == "number" then string.format("%.17g", value) else value)
	end
end
local frozen = table.isfrozen(Constants)
return table.concat(names, "\n"), table.concat(kinds, "\n"), table.concat(values, "\n"), frozen
"""


def python_constants() -> dict[str, Any]:
    public = vars(constants).items()
    return {name: value for name, value in public if name.isupper() and not name.startswith("_")}


def luau_constants() -> tuple[dict[str, Any], bool]:
    names, kinds, values, frozen = LuauHost().run(EXPORT)
    result: dict[str, Any] = {}
    for name, kind, value in zip(
        names.as_bytes().decode().split("\n"),
        kinds.as_bytes().decode().split("\n"),
        values.as_bytes().split(b"\n"),
        strict=True,
    ):
        assert kind != "unfrozen list", f"Constants.{name} must be frozen"
        if kind == "list":
            result[name] = tuple(item.decode() for item in value.split(b"\0"))
        elif kind == "number":
            number = float(value)
            result[name] = int(number) if number.is_integer() else number
        else:
            result[name] = value
    return result, frozen


def as_comparable(value: Any) -> Any:
    """Python's view of a constant as Luau holds it: bytes are Luau strings."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, tuple):
        return tuple(value)
    return value


def test_every_constant_has_the_same_name_and_value_in_luau() -> None:
    python = python_constants()
    luau, frozen = luau_constants()
    assert frozen, "luau/Constants.luau must return a frozen table"
    assert sorted(luau) == sorted(python), "the two constant modules name different constants"
    for name, value in python.items():
        expected = as_comparable(value)
        assert luau[name] == expected, f"{name}: Python {value!r}, Luau {luau[name]!r}"
