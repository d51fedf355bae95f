"""Runs the drawing client (luau/client) headless: the real scripts, fake Roblox around them.

`start_client()` mounts luau/ like Rojo does, installs the fakes of `Roblox.luau` as the
scripts' globals and starts the LocalScript in a thread of its own; the test then plays
frames and input events and reads the GUI objects' properties, as a player would see them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.luau_host import LuauHost

FAKES_SOURCE = (Path(__file__).with_name("Roblox.luau")).read_text(encoding="utf-8")
VIEWPORT = (1280, 720)

# Points in canvas cells (x right, y down, 0..28) -> input events at the matching screen
# pixels of the canvas frame the client built, one stroke at a time.
_DRAW = r"""
local fakes, strokes, device, eventsPerFrame = ...
local cells = fakes.find("Cells")
local origin, size = cells.AbsolutePosition, cells.AbsoluteSize
local function screen(point)
	return origin.X + point[1] / 28 * size.X, origin.Y + point[2] / 28 * size.Y
end
local sinceFrame = 0
local function tick()
	sinceFrame += 1
	if sinceFrame >= eventsPerFrame then
		fakes.step()
		sinceFrame = 0
	end
end
for _, stroke in strokes do
	local x, y = screen(stroke[1])
	local touch
	if device == "touch" then
		touch = fakes.touchStart(x, y)
	else
		fakes.mouseDown(x, y)
	end
	tick()
	for i = 2, #stroke do
		x, y = screen(stroke[i])
		if device == "touch" then
			fakes.touchMove(touch, x, y)
		else
			fakes.mouseMove(x, y)
		end
		tick()
	end
	if device == "touch" then
		fakes.touchEnd(touch)
	else
		fakes.mouseUp(x, y)
	end
	tick()
end
fakes.step()
"""

Stroke = Sequence[tuple[float, float]]


@dataclass
class Client:
    host: LuauHost
    fakes: Any

    def lua(self, code: str, *args: Any) -> list[Any]:
        """Run `code` with `fakes` (first vararg) and `root`, returning plain Python values."""
        return [_plain(value) for value in self.host.run(code, self.fakes, *args)]

    def step(self, frames: int = 1) -> None:
        self.lua("local fakes, n = ...; for _ = 1, n do fakes.step() end", frames)

    def text(self, name: str) -> str:
        """The Text of the first GUI object called `name`."""
        (value,) = self.lua("local fakes, name = ...; return fakes.find(name).Text", name)
        return str(value)

    def errors(self) -> list[str]:
        """Errors raised in any client thread so far (each with its traceback)."""
        (count,) = self.lua("local fakes = ...; return #fakes.errors")
        return [
            self.lua("local fakes, i = ...; return fakes.errors[i]", i)[0] for i in range(1, int(count) + 1)
        ]

    def warnings(self) -> list[str]:
        (joined,) = self.lua("local fakes = ...; return table.concat(fakes.warnings, '\\n')")
        return [line for line in str(joined).split("\n") if line]

    def strokes_table(self, strokes: Sequence[Stroke]) -> Any:
        """Strokes as a Luau list of lists of {x, y} points."""
        outer = self.host.lua.create_table()
        for stroke in strokes:
            inner = self.host.lua.create_table()
            for x, y in stroke:
                point = self.host.lua.create_table()
                point.push(float(x))
                point.push(float(y))
                inner.push(point)
            outer.push(inner)
        return outer

    def draw(self, strokes: Sequence[Stroke], *, device: str = "mouse", events_per_frame: int = 1) -> None:
        self.host.run(_DRAW, self.fakes, self.strokes_table(strokes), device, events_per_frame)

    def click(self, name: str) -> None:
        self.lua("local fakes, name = ...; fakes.click(fakes.find(name)); fakes.step()", name)


def _plain(value: Any) -> Any:
    return value.as_bytes().decode("utf-8") if hasattr(value, "as_bytes") else value


def start_client(
    extra: Mapping[str, str] | None = None, extra_dirs: Mapping[str, Path] | None = None
) -> Client:
    """The client started as Roblox starts a LocalScript, before its first frame."""
    host = LuauHost(extra=extra, extra_dirs=extra_dirs)
    factory = host.lua.load_chunk(FAKES_SOURCE, "fakes")()[0]
    fakes = factory(host.root, *VIEWPORT)[0]
    host.run(
        "local fakes, globals = ...; for k, v in fakes.globals do globals[k] = v end", fakes, host.globals
    )
    host.start_script("client", fakes.get("task").get("spawn"))
    return Client(host=host, fakes=fakes)
