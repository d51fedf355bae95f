"""Run the shipped Luau (Decoder + Model, and the client's fromStrokes) on many inputs in one VM.

Images cross into the VM as one string of uint8 pixels per batch, drawings as one string
of float64 numbers per batch (`encode_drawings`), and results come back as one string per
batch (a uint32 digit, then float64 probabilities per input): a handful of Python <-> Luau
calls instead of one per digit.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from mnistpack.data import PIXEL_MAX
from mnistpack.errors import MnistpackError
from mnistpack.luau_emit import MODULE_NAME
from mnistpack.luau_host import LuauHost
from mnistpack.roblox import INIT_STEM
from mnistpack.strokes import GRID, Strokes

# Images per call into the VM: large enough that call overhead vanishes, small enough
# that a progress bar moves every few tenths of a second.
BATCH_IMAGES: Final = 500
LUAU_SUFFIX: Final = ".luau"


class LuauRuntimeError(MnistpackError, RuntimeError):
    """The Luau runtime is missing or raised an error while decoding or predicting."""


@dataclass(frozen=True)
class LuauPredictions:
    digits: np.ndarray  # int64 [N]: 0-based index of the largest output
    probabilities: np.ndarray  # float64 [N, outputs]: the last layer's outputs


# Shared by the batch chunks below (and the benchmarks' own): a prediction as a record,
# the digit as u32 then each probability as float64, and runs of float64 values.
RECORDS_LUAU = r"""
local function writeRecord(out: buffer, at: number, digit: number, probabilities: { number }, outputs: number)
	buffer.writeu32(out, at, digit)
	for o = 1, outputs do
		buffer.writef64(out, at + 4 + 8 * (o - 1), probabilities[o])
	end
end
"""

# `count` float64 values starting at value index `first` (0-based) of a buffer.
FLOATS_LUAU = r"""
local function readFloats(source: buffer, first: number, into: { number }, count: number)
	for i = 1, count do
		into[i] = buffer.readf64(source, (first + i - 1) * 8)
	end
end

local function writeFloats(out: buffer, first: number, values: { number }, count: number)
	for i = 1, count do
		buffer.writef64(out, (first + i - 1) * 8, values[i])
	end
end
"""


# Decodes the weights module once and returns a function that predicts a batch of
# images given as a string of `count * inputs` uint8 pixels.
_LOAD_CHUNK = (
    RECORDS_LUAU
    + r"""
local Decoder = require(root.Decoder)
local Model = require(root.Model)
local moduleName, pixelMax = ...
local model = Model.new(Decoder.decode(require(root[moduleName])))
local inputs, outputs = model.inputs, model.outputs
local pixels = table.create(inputs, 0)
local recordBytes = 4 + 8 * outputs

local function predictBatch(images: string, count: number): string
	local source = buffer.fromstring(images)
	local out = buffer.create(count * recordBytes)
	for n = 0, count - 1 do
		local base = n * inputs
		for i = 1, inputs do
			pixels[i] = buffer.readu8(source, base + i - 1) / pixelMax
		end
		local digit, probabilities = model:predict(pixels)
		writeRecord(out, n * recordBytes, digit, probabilities, outputs)
	end
	return buffer.tostring(out)
end

return predictBatch, inputs, outputs, model
"""
)


# Reads drawings written by encode_drawings back into the strokes fromStrokes takes.
READ_DRAWINGS_LUAU = r"""
local function readDrawings(data: string, count: number): { { { { x: number, y: number } } } }
	local source = buffer.fromstring(data)
	local at = 0
	local function nextNumber(): number
		local v = buffer.readf64(source, at)
		at += 8
		return v
	end
	local drawings = table.create(count)
	for n = 1, count do
		local strokes = {}
		for s = 1, nextNumber() do
			local stroke = {}
			for p = 1, nextNumber() do
				local x = nextNumber()
				stroke[p] = { x = x, y = nextNumber() }
			end
			strokes[s] = stroke
		end
		drawings[n] = strokes
	end
	return drawings
end
"""

# Preprocessing.fromStrokes on a batch of drawings: their 784 inputs as float64.
_FROM_STROKES_CHUNK = (
    READ_DRAWINGS_LUAU
    + FLOATS_LUAU
    + r"""
local Preprocessing = require(root.client.Preprocessing)
return function(data: string, count: number): string
	local out = buffer.create(count * 784 * 8)
	for n, strokes in readDrawings(data, count) do
		writeFloats(out, (n - 1) * 784, Preprocessing.fromStrokes(strokes), 784)
	end
	return buffer.tostring(out)
end
"""
)

# Preprocessing.prepare on a batch of float64 28x28 images: their 784 inputs as float64.
_PREPARE_CHUNK = (
    FLOATS_LUAU
    + r"""
local Preprocessing = require(root.client.Preprocessing)
local canvas = table.create(784, 0)
return function(data: string, count: number): string
	local source = buffer.fromstring(data)
	local out = buffer.create(count * 784 * 8)
	for n = 0, count - 1 do
		readFloats(source, n * 784, canvas, 784)
		writeFloats(out, n * 784, Preprocessing.prepare(canvas), 784)
	end
	return buffer.tostring(out)
end
"""
)


# The client's own path for a batch of drawings: fromStrokes, then the model.
_PREDICT_STROKES_CHUNK = (
    READ_DRAWINGS_LUAU
    + RECORDS_LUAU
    + r"""
local Preprocessing = require(root.client.Preprocessing)
local model, outputs = ...
local recordBytes = 4 + 8 * outputs
return function(data: string, count: number): string
	local out = buffer.create(count * recordBytes)
	for n, strokes in readDrawings(data, count) do
		local digit, probabilities = model:predict(Preprocessing.fromStrokes(strokes))
		writeRecord(out, (n - 1) * recordBytes, digit, probabilities, outputs)
	end
	return buffer.tostring(out)
end
"""
)


# The model on a batch of float64 inputs, as they are.
_PREDICT_FLOATS_CHUNK = (
    RECORDS_LUAU
    + FLOATS_LUAU
    + r"""
local model, outputs = ...
local inputs = model.inputs
local recordBytes = 4 + 8 * outputs
local pixels = table.create(inputs, 0)
return function(data: string, count: number): string
	local source = buffer.fromstring(data)
	local out = buffer.create(count * recordBytes)
	for n = 0, count - 1 do
		readFloats(source, n * inputs, pixels, inputs)
		local digit, probabilities = model:predict(pixels)
		writeRecord(out, n * recordBytes, digit, probabilities, outputs)
	end
	return buffer.tostring(out)
end
"""
)


def encode_drawings(drawings: Sequence[Strokes]) -> bytes:
    """Drawings as float64 little-endian: per drawing its stroke count, then per stroke its
    point count and x, y of each point (what the Luau readDrawings reads)."""
    numbers: list[float] = []
    for strokes in drawings:
        numbers.append(len(strokes))
        for stroke in strokes:
            numbers.append(len(stroke))
            for x, y in stroke:
                numbers += (float(x), float(y))
    return struct.pack(f"<{len(numbers)}d", *numbers)


def luau_from_strokes(host: LuauHost, drawings: Sequence[Strokes]) -> np.ndarray:
    """float64 [N, 784]: `Preprocessing.fromStrokes` of every drawing, run in `host`'s VM."""
    run = host.run(_FROM_STROKES_CHUNK)[0]
    chunks = []
    for start in range(0, len(drawings), BATCH_IMAGES):
        batch = drawings[start : start + BATCH_IMAGES]
        raw = run(host.lua.create_string(encode_drawings(batch)), len(batch))[0]
        chunks.append(np.frombuffer(raw.as_bytes(), "<f8").reshape(len(batch), GRID * GRID))
    return np.concatenate(chunks) if chunks else np.zeros((0, GRID * GRID))


def luau_prepare(host: LuauHost, images: np.ndarray) -> np.ndarray:
    """float64 [N, 784]: `Preprocessing.prepare` of every row of `images`, run in `host`'s VM."""
    run = host.run(_PREPARE_CHUNK)[0]
    chunks = []
    for start in range(0, len(images), BATCH_IMAGES):
        batch = np.ascontiguousarray(images[start : start + BATCH_IMAGES], dtype="<f8").reshape(
            -1, GRID * GRID
        )
        raw = run(host.lua.create_string(batch.tobytes()), len(batch))[0]
        chunks.append(np.frombuffer(raw.as_bytes(), "<f8").reshape(len(batch), GRID * GRID))
    return np.concatenate(chunks) if chunks else np.zeros((0, GRID * GRID))


def instance_paths(files: Mapping[str, str]) -> dict[str, str]:
    """Module files as the packer writes them ("MnistWeights/Part1.luau") -> instance paths
    as Rojo mounts them ("MnistWeights/Part1"; an `init.luau` becomes its folder)."""
    mounted = {}
    for relative, source in files.items():
        if not relative.endswith(LUAU_SUFFIX):
            continue
        parts = relative[: -len(LUAU_SUFFIX)].split("/")
        if parts[-1] == INIT_STEM:
            parts = parts[:-1]
        mounted["/".join(parts)] = source
    return mounted


class LuauRuntime:
    """One VM holding `luau/`, a weights module and the Model built from it."""

    def __init__(self, files: Mapping[str, str], module_name: str = MODULE_NAME) -> None:
        """`files` maps the packer's output paths (`emit_module`'s keys) to their sources."""
        self.host = LuauHost(extra=instance_paths(files))
        try:
            predict_batch, inputs, outputs, self.model = self.host.run(_LOAD_CHUNK, module_name, PIXEL_MAX)
        except RuntimeError as exc:
            raise LuauRuntimeError(f"The Luau decoder or model failed: {_first_line(exc)}.") from exc
        self._predict_batch: Any = predict_batch
        self.inputs = int(inputs)
        self.outputs = int(outputs)
        self._predict_strokes: Any = None
        # the model's calibrated "sure" threshold (meta.calibration), None when it has none
        (threshold,) = self.host.run("local model = ...; return model.sureThreshold", self.model)
        self.sure_threshold: float | None = None if threshold is None else float(threshold)
        self._predict_floats: Any = None

    def predict(self, pixels: np.ndarray, progress: Callable[[int], None] | None = None) -> LuauPredictions:
        """Predict every row of `pixels` (uint8 [N, inputs]); `progress(done)` after each batch."""
        if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != self.inputs:
            raise ValueError(
                f"predict wants uint8 [N, {self.inputs}] pixels, got {pixels.dtype} {pixels.shape}."
            )
        return self._batched(
            self._predict_batch,
            len(pixels),
            lambda a, b: np.ascontiguousarray(pixels[a:b]).tobytes(),
            progress,
        )

    def predict_inputs(
        self, inputs: np.ndarray, progress: Callable[[int], None] | None = None
    ) -> LuauPredictions:
        """Predict every row of `inputs` (float64 [N, inputs], 0..1), passed to the model as they are."""
        if inputs.ndim != 2 or inputs.shape[1] != self.inputs:
            raise ValueError(f"predict_inputs wants [N, {self.inputs}] inputs, got shape {inputs.shape}.")
        if self._predict_floats is None:
            self._predict_floats = self.host.run(_PREDICT_FLOATS_CHUNK, self.model, self.outputs)[0]
        return self._batched(
            self._predict_floats,
            len(inputs),
            lambda a, b: np.ascontiguousarray(inputs[a:b], dtype="<f8").tobytes(),
            progress,
        )

    def predict_strokes(
        self, drawings: Sequence[Strokes], progress: Callable[[int], None] | None = None
    ) -> LuauPredictions:
        """Predict every drawing the way the client does: `Preprocessing.fromStrokes`, then Model."""
        if self._predict_strokes is None:
            self._predict_strokes = self.host.run(_PREDICT_STROKES_CHUNK, self.model, self.outputs)[0]
        return self._batched(
            self._predict_strokes, len(drawings), lambda a, b: encode_drawings(drawings[a:b]), progress
        )

    def _batched(
        self,
        run: Any,
        count: int,
        encode: Callable[[int, int], bytes],
        progress: Callable[[int], None] | None,
    ) -> LuauPredictions:
        """`run` (a Luau batch function) over inputs [0, count), BATCH_IMAGES at a time."""
        chunks = []
        for start in range(0, count, BATCH_IMAGES):
            stop = min(start + BATCH_IMAGES, count)
            try:
                raw = run(self.host.lua.create_string(encode(start, stop)), stop - start)[0]
            except RuntimeError as exc:
                raise LuauRuntimeError(f"The Luau model failed: {_first_line(exc)}.") from exc
            chunks.append(raw.as_bytes())
            if progress is not None:
                progress(stop)
        return self._records(chunks)

    def _records(self, chunks: list[bytes]) -> LuauPredictions:
        record = np.dtype([("digit", "<u4"), ("probabilities", "<f8", (self.outputs,))])
        records = np.frombuffer(b"".join(chunks), record)
        return LuauPredictions(
            digits=records["digit"].astype(np.int64),
            probabilities=records["probabilities"].reshape(len(records), self.outputs).copy(),
        )


def to_pixels(images: np.ndarray) -> np.ndarray:
    """float32 images in 0..1 (k / 255, as the MNIST loader makes them) back to uint8."""
    pixels: np.ndarray = np.rint(np.clip(images, 0.0, 1.0) * PIXEL_MAX).astype(np.uint8)
    return pixels


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__
