"""The drawing client (luau/client) run headless: the shipped scripts, fake Roblox around them.

Brush and strokes are checked as pure functions; the client as a whole is driven by input
events and frames, and read back through the GUI objects' properties. Stand-in Decoder and
Model modules (below) make loading, threading and the UI checkable without weights; the
last tests use the real Decoder, Model and shipped model, built with `--quant int8`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.fakes.client import Client, Stroke, start_client
from tests.luau_host import ROOT, LuauHost

GRID = 28

# Decodes nothing, but like the real one: yields between steps through options.yield.
# Notes how many frames had been drawn (PreRender steps run) when decoding began.
STANDIN_DECODER = r"""
local Decoder = { calls = 0, yields = 0, failWith = FAIL, framesDrawnBefore = nil }
function Decoder.decode(module, options)
	Decoder.calls += 1
	Decoder.framesDrawnBefore = game:GetService("RunService").PreRender.fired
	for _ = 1, 3 do
		Decoder.yields += 1
		options.yield("step")
	end
	if Decoder.failWith ~= nil then
		error(Decoder.failWith, 0)
	end
	return { layers = {}, meta = {} }
end
return Decoder
"""

# Answers what the test puts in `answer`, and keeps every input it was given.
STANDIN_MODEL = r"""
local Model = { inputs = {}, answer = nil }
Model.__index = Model
function Model.new(weights)
	return setmetatable({}, Model)
end
function Model.predict(self, pixels)
	table.insert(Model.inputs, table.clone(pixels))
	local p = Model.answer or { 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.91, 0.01, 0.01 }
	local best = 1
	for k = 2, #p do
		if p[k] > p[best] then
			best = k
		end
	end
	return best - 1, p
end
return Model
"""

# Preprocessing.fromStrokes of the same strokes, as the canvas should have recorded them:
# points go to screen pixels and back exactly as the draw helper and the canvas do it.
EXPECTED_INPUT = r"""
local fakes, strokes = ...
local P = require(root.client.Preprocessing)
local cells = fakes.find("Cells")
local o, s = cells.AbsolutePosition, cells.AbsoluteSize
local function map(point)
	local x, y = o.X + point[1] / 28 * s.X, o.Y + point[2] / 28 * s.Y
	return { x = (x - o.X) / s.X * 28, y = (y - o.Y) / s.Y * 28 }
end
local recorded = {}
for _, stroke in strokes do
	local points = {}
	for _, point in stroke do
		table.insert(points, map(point))
	end
	table.insert(recorded, points)
end
return P.fromStrokes(recorded)
"""

LAST_INPUT = "local inputs = require(root.Model).inputs; return inputs[#inputs]"
PREDICTIONS = "return #require(root.Model).inputs"

DIAGONAL: Sequence[Stroke] = [[(3.5, 3.5), (24.5, 24.5)]]


def standin_client(fail: str | None = None) -> Client:
    decoder = STANDIN_DECODER.replace("FAIL", "nil" if fail is None else repr(fail).replace("'", '"'))
    return start_client(extra={"Decoder": decoder, "Model": STANDIN_MODEL, "MnistWeights": "return {}"})


def loaded(client: Client, frames: int = 10) -> Client:
    client.step(frames)
    assert client.text("Status") == constant(client, "READY_TEXT")
    return client


def constant(client: Client, name: str) -> object:
    return client.lua("local _, name = ...; return require(root.client.Constants)[name]", name)[0]


def lua_list(client: Client, code: str, *args: object) -> np.ndarray:
    (table,) = client.host.run(code, *args)
    return np.array([table.get(i) for i in range(1, table.len() + 1)], dtype=float)


@pytest.fixture()
def client() -> Iterator[Client]:
    started = standin_client()
    yield started
    assert started.errors() == []


# --- the brush ----------------------------------------------------------------------------

BRUSH = r"""
local Canvas = require(root.client.Canvas)
local C = require(root.client.Constants)
local pixels = table.create(784, 0)
local x0, y0, x1, y1, times = ...
for _ = 1, times do
	Canvas.stamp(pixels, x0, y0)
	Canvas.segment(pixels, x0, y0, x1, y1)
end
return pixels, C.BRUSH_RADIUS, C.BRUSH_CORE
"""


@pytest.fixture(scope="module")
def host() -> LuauHost:
    return LuauHost()


def brush(host: LuauHost, x0: float, y0: float, x1: float, y1: float, times: int = 1) -> np.ndarray:
    table, _, _ = host.run(BRUSH, x0, y0, x1, y1, times)
    return np.array([table.get(i) for i in range(1, GRID * GRID + 1)]).reshape(GRID, GRID)


def test_one_stamp_has_a_full_core_and_a_soft_edge(host: LuauHost) -> None:
    _, radius, core = host.run(BRUSH, 0, 0, 0, 0, 0)
    dot = brush(host, 14.5, 10.5, 14.5, 10.5)
    assert dot[10, 14] == 1.0
    rows, cols = np.mgrid[0:GRID, 0:GRID]
    distance = np.hypot(rows + 0.5 - 10.5, cols + 0.5 - 14.5)
    expected = np.clip((radius - distance) / (radius - core), 0, 1)
    expected[distance <= core] = 1.0
    assert np.allclose(dot, expected, atol=1e-12)
    assert 0 < dot[10, 15] < 1 and dot[10, 17] == 0


def test_going_over_a_stroke_again_changes_nothing(host: LuauHost) -> None:
    once = brush(host, 4.2, 20.7, 23.9, 6.1, times=1)
    thrice = brush(host, 4.2, 20.7, 23.9, 6.1, times=3)
    assert np.array_equal(once, thrice)
    assert once.max() == 1.0 and once.min() == 0.0


def test_a_fast_swipe_leaves_no_gap(host: LuauHost) -> None:
    # one segment 30 cells long, as two input events far apart would give
    line = brush(host, 1.5, 1.5, 26.5, 26.5)
    for i in range(1, 27):
        assert line[i, i] == 1.0, f"gap at cell ({i}, {i})"


# --- the client with stand-ins ------------------------------------------------------------------


def test_first_frame_shows_loading_and_decoding_waits_for_later_frames(client: Client) -> None:
    assert client.text("Status") == constant(client, "LOADING_TEXT")
    assert client.lua("return require(root.Decoder).calls") == [0]
    client.step()
    assert client.lua("return require(root.Decoder).calls") == [1]
    # decoding began only after a frame (showing "Loading model...") had been drawn
    assert client.lua("return require(root.Decoder).framesDrawnBefore") == [1]
    # the decoder yields between steps: each step costs a frame, the screen stays live
    assert client.text("Status") == constant(client, "LOADING_TEXT")
    loaded(client)
    assert client.lua("return require(root.Decoder).yields") == [3]


def test_every_text_is_set_in_builder_sans(client: Client) -> None:
    (faces,) = client.lua(
        """
        local fakes = ...
        local faces = {}
        for _, inst in fakes.playerGui:GetDescendants() do
            if inst:IsA("TextLabel") or inst:IsA("TextButton") then
                local face = inst.FontFace
                table.insert(faces, inst.Name .. "=" .. face.Family .. ":" .. face.Weight.Name)
            end
        end
        table.sort(faces)
        return table.concat(faces, ",")
        """
    )
    family = "rbxasset://fonts/families/BuilderSans.json"
    weights = [("Title", "Bold"), ("Status", "Regular"), ("TopGuess", "Bold"), ("Confidence", "Medium")]
    weights += [("Clear", "Bold")] + [("Digit", "Bold"), ("Percent", "Medium")] * 10
    assert faces.split(",") == sorted(f"{name}={family}:{weight}" for name, weight in weights)


def test_a_decoder_error_is_shown_not_thrown() -> None:
    client = standin_client(fail="mnistpack: crc: expected checksum 1, found 2")
    client.step(10)
    assert client.text("Status") == constant(client, "FAILED_TEXT")
    assert any("mnistpack: crc: expected checksum 1, found 2" in line for line in client.warnings())
    assert client.errors() == []


def test_the_model_gets_the_strokes_through_from_strokes(client: Client) -> None:
    loaded(client)
    client.draw(DIAGONAL)
    got = lua_list(client, LAST_INPUT)
    assert np.array_equal(got, expected_input(client, DIAGONAL))
    # values stay 0..1 end to end: a stray /255 would leave the maximum near 0.004
    assert 0.9 < got.max() <= 1.0 and got.min() == 0.0


def test_touch_draws_exactly_like_the_mouse() -> None:
    inputs = []
    for device in ("mouse", "touch"):
        client = loaded(standin_client())
        client.draw(DIAGONAL, device=device)
        inputs.append(lua_list(client, LAST_INPUT))
        assert client.errors() == []
    assert np.array_equal(inputs[0], inputs[1])


def test_at_most_one_prediction_per_frame(client: Client) -> None:
    loaded(client)
    # 40 pointer events inside one frame
    client.lua(
        """
		local fakes = ...
		local cells = fakes.find("Cells")
		local o, s = cells.AbsolutePosition, cells.AbsoluteSize
		fakes.mouseDown(o.X + s.X * 0.2, o.Y + s.Y * 0.2)
		for k = 1, 39 do
			fakes.mouseMove(o.X + s.X * (0.2 + k / 80), o.Y + s.Y * 0.5)
		end
		"""
    )
    assert client.lua(PREDICTIONS) == [0]
    client.step()
    assert client.lua(PREDICTIONS) == [1]
    client.step(3)  # nothing new drawn: nothing to predict
    assert client.lua(PREDICTIONS) == [1]


def test_the_canvas_shows_the_ink(client: Client) -> None:
    loaded(client)
    client.draw(DIAGONAL)
    inked, blank, ink, background = client.lua(
        """
		local fakes = ...
		local C = require(root.client.Constants)
		local cells = fakes.find("Cells")
		local function hex(c) return string.format("%.4f %.4f %.4f", c.R, c.G, c.B) end
		local function rgb(t) return hex(Color3.fromRGB(t[1], t[2], t[3])) end
		local inked, blank = cells.Cell_14_14.BackgroundColor3, cells.Cell_0_27.BackgroundColor3
		return hex(inked), hex(blank), rgb(C.COLORS.ink), rgb(C.COLORS.canvas)
		"""
    )
    assert inked == ink and blank == background


def test_top_guess_is_highlighted_and_bars_follow_the_probabilities(client: Client) -> None:
    loaded(client)
    client.draw(DIAGONAL)
    assert client.text("TopGuess") == "7"
    assert client.text("Confidence") == "91% sure"
    fill, accent, percent = client.lua(
        """
		local fakes = ...
		local C = require(root.client.Constants)
		local row = fakes.find("Row7")
		local fill = row.Bar.Fill
		local a = C.COLORS.accent
		local same = math.abs(fill.BackgroundColor3.R - a[1] / 255) < 1e-9
		return fill.Size.X.Scale, same, row.Percent.Text
		"""
    )
    assert fill == pytest.approx(0.91) and accent is True and percent == "91%"


def test_low_confidence_says_not_sure(client: Client) -> None:
    loaded(client)
    client.lua("require(root.Model).answer = { 0.05, 0.3, 0.05, 0.05, 0.05, 0.05, 0.05, 0.3, 0.05, 0.05 }")
    client.draw(DIAGONAL)
    assert client.text("TopGuess") == constant(client, "NOT_SURE_TEXT")
    # the two likeliest digits, ties to the lower one first
    assert client.text("Confidence") == "1 (30%) or 7 (30%)"
    highlighted = client.lua(
        """
        local fakes = ...
        local C = require(root.client.Constants)
        local w = C.COLORS.warning
        local found = {}
        for d = 0, 9 do
            local c = fakes.find("Row" .. d).Bar.Fill.BackgroundColor3
            if math.abs(c.R - w[1] / 255) < 1e-9 and math.abs(c.G - w[2] / 255) < 1e-9 then
                table.insert(found, d)
            end
        end
        return table.concat(found, ",")
        """
    )[0]
    assert highlighted == "1,7"


def test_a_tap_is_not_a_digit(client: Client) -> None:
    loaded(client)
    client.draw([[(14.0, 14.0)]])
    # a dot is drawn on the canvas but there is nothing to read: no prediction, no guess
    assert client.lua(PREDICTIONS) == [0]
    assert client.text("TopGuess") == ""


def expected_input(client: Client, strokes: Sequence[Stroke]) -> np.ndarray:
    return lua_list(client, EXPECTED_INPUT, client.fakes, client.strokes_table(strokes))


def test_clear_forgets_the_strokes_and_close_points_are_not_kept(client: Client) -> None:
    loaded(client)
    client.draw([[(4.0, 4.0), (10.0, 4.0), (10.0, 12.0)]])
    client.click("Clear")
    # the second point is closer than POINT_SPACING to the first: the canvas skips it
    client.draw([[(20.0, 5.0), (20.0, 5.05), (20.0, 20.0)], [(15.0, 12.0), (25.0, 12.0)]])
    got = lua_list(client, LAST_INPUT)
    assert np.array_equal(
        got, expected_input(client, [[(20.0, 5.0), (20.0, 20.0)], [(15.0, 12.0), (25.0, 12.0)]])
    )


# The canvas's recording, as a pure function of the positions it is given.
RECORD = r"""
local Canvas = require(root.client.Canvas)
local C = require(root.client.Constants)
local strokes = ...
local fields = { strokes = {}, pointCount = 0, spacing = C.POINT_SPACING, dirty = false }
local canvas = setmetatable(fields, Canvas)
local refused = 0
for _, stroke in strokes do
	for i, point in stroke do
		if not canvas:_record(point[1], point[2], i == 1) then
			refused += 1
		end
	end
end
local flat = {}
for _, stroke in canvas.strokes do
	for _, point in stroke do
		table.insert(flat, point.x)
		table.insert(flat, point.y)
	end
	table.insert(flat, -1)
end
return flat, canvas.pointCount, canvas.spacing, refused, C.MAX_POINTS, C.POINT_SPACING
"""


def record(
    host: LuauHost, strokes: Sequence[Stroke]
) -> tuple[list[list[tuple[float, float]]], int, float, int]:
    outer = host.lua.create_table()
    for stroke in strokes:
        inner = host.lua.create_table()
        for x, y in stroke:
            point = host.lua.create_table()
            point.push(float(x))
            point.push(float(y))
            inner.push(point)
        outer.push(inner)
    flat, count, spacing, refused, _, _ = host.run(RECORD, outer)
    values = [flat.get(k) for k in range(1, flat.len() + 1)]
    kept: list[list[tuple[float, float]]] = [[]]
    k = 0
    while k < len(values):
        if values[k] == -1:
            kept.append([])
            k += 1
        else:
            kept[-1].append((values[k], values[k + 1]))
            k += 2
    return kept[:-1], int(count), float(spacing), int(refused)


def test_a_long_scribble_is_thinned_not_cut(host: LuauHost) -> None:
    limit, spacing = host.run(
        "local C = require(root.client.Constants); return C.MAX_POINTS, C.POINT_SPACING"
    )
    # a cell between points, and no point twice
    scribble = [(4.0 + (k % 20), 4.0 + (k // 20) % 20 + k / 1e4) for k in range(3 * int(limit))]
    (kept,), count, now, refused = record(host, [scribble])
    assert refused == 0 and count == len(kept) <= limit
    assert now > spacing, "each thinning doubles the spacing"
    assert kept[0] == scribble[0] and set(kept) <= set(scribble)
    # the shape survives: the kept points still run from the first to (nearly) the last
    assert scribble.index(kept[-1]) > len(scribble) - 10


def test_hundreds_of_taps_fill_the_canvas(host: LuauHost) -> None:
    (limit,) = host.run("return require(root.client.Constants).MAX_POINTS")
    taps = [[(1.0 + k % 26, 1.0 + (k // 26) % 26)] for k in range(int(limit) + 5)]
    kept, count, _, refused = record(host, taps)
    assert count == limit and refused == 5 and len(kept) == limit


def test_clear_empties_the_canvas_and_the_result(client: Client) -> None:
    loaded(client)
    client.draw(DIAGONAL)
    assert client.text("TopGuess") != ""
    before = client.lua(PREDICTIONS)[0]
    client.click("Clear")
    assert client.text("TopGuess") == "" and client.text("Confidence") == ""
    percents = client.lua(
        """
		local fakes = ...
		local texts = {}
		for d = 0, 9 do
			local row = fakes.find("Row" .. d)
			table.insert(texts, row.Percent.Text .. "|" .. row.Bar.Fill.Size.X.Scale)
		end
		return table.concat(texts, ",")
		"""
    )[0]
    assert percents == ",".join(["|0"] * 10)
    # an empty canvas is never fed to the model: the UI just shows nothing
    assert client.lua(PREDICTIONS)[0] == before


def test_a_press_outside_the_canvas_draws_nothing(client: Client) -> None:
    loaded(client)
    client.lua("local fakes = ...; fakes.mouseDown(2, 2); fakes.mouseMove(600, 400); fakes.mouseUp(600, 400)")
    client.step(2)
    assert client.lua(PREDICTIONS) == [0]
    assert client.text("TopGuess") == ""


def test_a_digit_drawn_while_loading_is_predicted_once_ready() -> None:
    client = standin_client()
    client.draw(DIAGONAL)  # the draw helper plays a frame per event: decoding is under way
    client.step(10)
    assert client.text("TopGuess") == "7"
    assert client.errors() == []


# --- the real thing: Decoder, Model and the shipped model --------------------------------------

SHIPPED_MODELS = {"mlp": ROOT / "models" / "mnist256.keras", "cnn": ROOT / "models" / "mnist-cnn.keras"}


def ellipse(cx: float, cy: float, rx: float, ry: float, points: int = 16) -> list[tuple[float, float]]:
    return [
        (cx + rx * math.sin(2 * math.pi * k / points), cy - ry * math.cos(2 * math.pi * k / points))
        for k in range(points + 1)
    ]


# Drawn the way a player might: a "1" a little slanted and right of centre, a "7" small in
# the top-left corner (only Preprocessing makes that one readable), a "0" as one loop.
DIGITS: dict[str, Sequence[Stroke]] = {
    "1": [[(17, 5), (15.5, 23)]],
    "7": [[(4, 4), (14, 4), (8, 17)]],
    "0": [ellipse(14, 14, 6.5, 9.5)],
}


@pytest.fixture(scope="module", params=sorted(SHIPPED_MODELS))
def shipped_weights(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The int8 module of each shipped model: the client works the same with either."""
    missing = [
        p.name for p in (ROOT / "luau" / "Decoder.luau", ROOT / "luau" / "Model.luau") if not p.is_file()
    ]
    if missing:
        pytest.skip(f"the Luau runtime is not complete yet ({', '.join(missing)} missing)")
    model = SHIPPED_MODELS[request.param]
    if not model.is_file():
        pytest.skip(f"no shipped model at {model} yet")
    from mnistpack.build import build

    out = tmp_path_factory.mktemp("weights")
    build(model=model, precision="int8", out_dir=out, compression="zstd", data_dir=None)
    return out


def real_client(weights: Path) -> Client:
    single = weights / "MnistWeights.luau"
    if single.is_file():
        return start_client(extra={"MnistWeights": single.read_text(encoding="utf-8")})
    return start_client(extra_dirs={"MnistWeights": weights / "MnistWeights"})


def test_real_model_recognises_drawn_digits(shipped_weights: Path) -> None:
    client = real_client(shipped_weights)
    with client.host.time_limit(60):
        client.step(30)
        assert client.text("Status") == constant(client, "READY_TEXT"), client.warnings()
        for digit, strokes in DIGITS.items():
            client.draw(strokes, events_per_frame=3)
            assert client.text("TopGuess") == digit, (digit, client.text("Confidence"))
            client.click("Clear")
            assert client.text("TopGuess") == ""
    assert client.errors() == []
