"""Run the shipped Luau (Decoder + Model) on many images inside one Luau VM.

Images cross into the VM as one string of uint8 pixels per batch and results come
back as one string per batch (a uint32 digit, then float64 probabilities per image):
a handful of Python <-> Luau calls instead of one per digit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from mnistpack.data import PIXEL_MAX
from mnistpack.errors import MnistpackError
from mnistpack.luau_emit import MODULE_NAME
from mnistpack.luau_host import LuauHost
from mnistpack.roblox import INIT_STEM

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


# Decodes the weights module once and returns a function that predicts a batch of
# images given as a string of `count * inputs` uint8 pixels.
_LOAD_CHUNK = r"""
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
		local at = n * recordBytes
		buffer.writeu32(out, at, digit)
		for o = 1, outputs do
			buffer.writef64(out, at + 4 + 8 * (o - 1), probabilities[o])
		end
	end
	return buffer.tostring(out)
end

return predictBatch, inputs, outputs
"""


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
            predict_batch, inputs, outputs = self.host.run(_LOAD_CHUNK, module_name, PIXEL_MAX)
        except RuntimeError as exc:
            raise LuauRuntimeError(f"The Luau decoder or model failed: {_first_line(exc)}.") from exc
        self._predict_batch: Any = predict_batch
        self.inputs = int(inputs)
        self.outputs = int(outputs)

    def predict(self, pixels: np.ndarray, progress: Callable[[int], None] | None = None) -> LuauPredictions:
        """Predict every row of `pixels` (uint8 [N, inputs]); `progress(done)` after each batch."""
        if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != self.inputs:
            raise ValueError(
                f"predict wants uint8 [N, {self.inputs}] pixels, got {pixels.dtype} {pixels.shape}."
            )
        record = np.dtype([("digit", "<u4"), ("probabilities", "<f8", (self.outputs,))])
        chunks = []
        for start in range(0, len(pixels), BATCH_IMAGES):
            batch = np.ascontiguousarray(pixels[start : start + BATCH_IMAGES])
            try:
                raw = self._predict_batch(self.host.lua.create_string(batch.tobytes()), len(batch))[0]
            except RuntimeError as exc:
                raise LuauRuntimeError(f"The Luau model failed: {_first_line(exc)}.") from exc
            chunks.append(np.frombuffer(raw.as_bytes(), record))
            if progress is not None:
                progress(start + len(batch))
        records = np.concatenate(chunks) if chunks else np.zeros(0, record)
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
