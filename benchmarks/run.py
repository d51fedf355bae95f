"""mnistpack against the reference project's float32 text export, in one Luau VM.

Run: .venv/bin/python -m benchmarks.run [--model PATH] [--cnn PATH] [--data DIR] [--digits N] [--repeat N]

For each precision of the MLP (models/mnist256.keras by default) and of the CNN
(models/mnist-cnn.keras, the shipped default, by default), built exactly as `mnistpack build` builds them:
module bytes and Luau bytecode bytes; time to compile the module and decode it to ready
weights (and to build Model from them); memory the decoded weights and the Model hold in
the VM; time per prediction of Model against the reference project's forward pass on
real test digits. The reference runs the MLP's decoded weights (it only knows dense
layers): for the CNN's rows too, so each row's ratio is against the same baseline. The
text export is compiled, run and measured the same way. Times are medians of `--repeat`
runs on this thread's CPU clock (less disturbed by other work on a shared machine than
the wall clock; on an idle machine the two agree), Model and reference runs interleaved.
Writes benchmarks/results/bench.json and prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import numpy as np
from mnistpack.assets import CNN_MODEL_NAME, MLP_MODEL_NAME, models_dir
from mnistpack.build import build, text_export
from mnistpack.constants import PRECISIONS
from mnistpack.data import load_test_set, resolve_data_dir
from mnistpack.keras_model import load_network
from mnistpack.luau_host import LuauHost, pluau
from mnistpack.luau_runtime import instance_paths, to_pixels

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "bench.json"
REFERENCE_FORWARD = HERE / "reference_forward.luau"
COMPRESSION: Final = "zstd"
# Bytecode as Roblox ships it: optimisation level 2, line info, no type info, no coverage.
COMPILER_SETTINGS: Final = (2, 1, 0, 0)
TEXT_EXPORT: Final = "text export"

# Luau helpers, run once: the Decoder, Model.new, the memory counter, and a timed loop of
# predictions (Model, or the reference forward pass on the decoded row-major weights).
_HELPERS = r"""
local Decoder = require(root.Decoder)
local Model = require(root.Model)
local Reference = require(root.ReferenceForward)

local function kilobytes(): number
	collectgarbage("collect")
	return collectgarbage("count")
end

-- Test digits as tables of 0..1 pixels, made once, outside the timed loops.
local function digits(images: string, count: number, inputs: number): { { number } }
	local data = buffer.fromstring(images)
	local list = table.create(count)
	for n = 1, count do
		local pixels = table.create(inputs, 0)
		for i = 1, inputs do
			pixels[i] = buffer.readu8(data, (n - 1) * inputs + i - 1) / 255
		end
		list[n] = pixels
	end
	return list
end

local function runModel(model, list): number
	local sum = 0
	for _, pixels in list do
		local digit = model:predict(pixels)
		sum += digit
	end
	return sum
end

local function runReference(weights, list): number
	local sum = 0
	for _, pixels in list do
		local digit = Reference.predict(weights.layers, pixels)
		sum += digit
	end
	return sum
end

-- The text export's four modules (W1, b1, W2, b2) as the decoder's layer list.
local function referenceLayers(W1, b1, W2, b2)
	local hidden = { W = W1, b = b1, activation = "relu" }
	return { layers = { hidden, { W = W2, b = b2, activation = "softmax" } } }
end

local function memoryBytes(model): number
	return model:memoryBytes()
end

return Decoder.decode, Model.new, kilobytes, digits, runModel, runReference, referenceLayers, memoryBytes
"""


@dataclass(frozen=True)
class Row:
    name: str  # a precision, or "text export"
    module_bytes: int
    bytecode_bytes: int
    load_ms: float  # compile + run the module(s), then decode to ready weights
    model_new_ms: float | None  # Model.new on the decoded weights (re-layout)
    weights_bytes: int  # VM memory the ready weights hold (lua.used_memory delta)
    weights_bytes_gc_count: int  # the same from collectgarbage("count"), as a check
    model_bytes: int | None  # VM memory the Model holds once the decoded weights are dropped
    model_estimate_bytes: int | None  # Model:memoryBytes()
    model_us: float | None  # median time per prediction, Model
    reference_us: float  # median time per prediction, reference forward pass, same weights


def median_time(action: Callable[[], Any], repeat: int) -> float:
    """Median seconds of `repeat` calls on this thread's CPU clock."""
    times = []
    for _ in range(repeat):
        start = time.thread_time()
        action()
        times.append(time.thread_time() - start)
    return statistics.median(times)


def bytecode_bytes(sources: list[str]) -> int:
    compiler = pluau.Compiler(*COMPILER_SETTINGS)
    return sum(len(compiler.compile(source)) for source in sources)


def text_export_modules(source: str) -> list[str]:
    """`build.text_export` is its modules one after another, each starting `return {`."""
    modules: list[list[str]] = []
    for line in source.splitlines(keepends=True):
        if line.startswith("return "):
            modules.append([])
        modules[-1].append(line)
    return ["".join(lines) for lines in modules]


class Bench:
    """One VM: luau/ plus the reference forward pass, and the helpers above."""

    def __init__(self, images: np.ndarray, digits: int) -> None:
        self.host = LuauHost(extra={"ReferenceForward": REFERENCE_FORWARD.read_text(encoding="utf-8")})
        self.lua = self.host.lua
        (
            self.decode,
            self.model_new,
            self.kilobytes,
            make_digits,
            self.run_model,
            self.run_reference,
            self.reference_layers,
            self.memory_bytes,
        ) = self.host.run(_HELPERS)
        pixels = to_pixels(images[:digits])
        self.count = len(pixels)
        self.digits = make_digits(self.lua.create_string(pixels.tobytes()), self.count, pixels.shape[1])[0]

    def compile_and_run(self, files: Mapping[str, str]) -> Any:
        """A weights module as Roblox loads it: compile every script, run it, join the parts."""
        mounted = instance_paths(files)
        parts = {name.rsplit("/", 1)[1]: source for name, source in mounted.items() if "/" in name}
        init = next(source for name, source in mounted.items() if "/" not in name)
        results = {name: self.lua.load_chunk(source, name)()[0] for name, source in parts.items()}
        env = self.lua.create_table()
        env.set("script", self._table(results))
        env.set("require", self.lua.create_function(lambda _lua, args: args[0]))
        env.set("table", self.lua.globals().get("table"))
        return self.lua.load_chunk(init, "MnistWeights", env)()[0]

    def _table(self, values: Mapping[str, Any]) -> Any:
        table = self.lua.create_table()
        for key, value in values.items():
            table.set(key, value)
        return table

    def used(self) -> tuple[int, float]:
        """(lua.used_memory, collectgarbage("count") KB) after a full collection."""
        kilobytes = self.kilobytes()[0]
        return self.lua.used_memory(), kilobytes

    def per_prediction_us(self, run: Any, weights: Any, repeat: int) -> float:
        run(weights, self.digits)  # warm up: first touches of fresh tables
        return 1e6 * median_time(lambda: run(weights, self.digits), repeat) / self.count

    def paired_us(self, model: Any, reference: Any, repeat: int) -> tuple[float, float]:
        """Model and reference per prediction, medians of interleaved runs on the same digits:
        a busy machine slows both alike, so their ratio holds."""
        self.run_model(model, self.digits)  # warm up: first touches of fresh tables
        self.run_reference(reference, self.digits)
        model_s, reference_s = [], []
        for _ in range(repeat):
            for run, arg, times in (
                (self.run_model, model, model_s),
                (self.run_reference, reference, reference_s),
            ):
                start = time.thread_time()
                run(arg, self.digits)
                times.append(time.thread_time() - start)
        return (
            1e6 * statistics.median(model_s) / self.count,
            1e6 * statistics.median(reference_s) / self.count,
        )


def measure_precision(
    bench: Bench, name: str, files: Mapping[str, str], repeat: int, reference: Any | None = None
) -> Row:
    """One row; `reference` holds the weights the reference pass runs (default: these)."""
    load_s = median_time(lambda: bench.decode(bench.compile_and_run(files)), repeat)
    before = bench.used()
    weights = bench.decode(bench.compile_and_run(files))[0]
    after = bench.used()
    model_new_s = median_time(lambda: bench.model_new(weights), repeat)
    model = bench.model_new(weights)[0]
    model_us, reference_us = bench.paired_us(model, reference if reference is not None else weights, repeat)
    weights = None  # drop the decoded tables: what is left is what the Model holds
    with_model = bench.used()
    estimate = int(bench.memory_bytes(model)[0])
    return Row(
        name=name,
        module_bytes=sum(len(source.encode()) for source in files.values()),
        bytecode_bytes=bytecode_bytes(list(files.values())),
        load_ms=1e3 * load_s,
        model_new_ms=1e3 * model_new_s,
        weights_bytes=after[0] - before[0],
        weights_bytes_gc_count=round(1024 * (after[1] - before[1])),
        model_bytes=with_model[0] - before[0],
        model_estimate_bytes=estimate,
        model_us=model_us,
        reference_us=reference_us,
    )


def measure_text_export(bench: Bench, source: str, repeat: int) -> Row:
    modules = text_export_modules(source)

    def load() -> Any:
        W1, b1, W2, b2 = (bench.lua.load_chunk(module, "TextExport")()[0] for module in modules)
        return bench.reference_layers(W1, b1, W2, b2)[0]

    load_s = median_time(load, repeat)
    before = bench.used()
    weights = load()
    after = bench.used()
    reference_us = bench.per_prediction_us(bench.run_reference, weights, repeat)
    return Row(
        name=TEXT_EXPORT,
        module_bytes=len(source.encode()),
        bytecode_bytes=bytecode_bytes(modules),
        load_ms=1e3 * load_s,
        model_new_ms=None,
        weights_bytes=after[0] - before[0],
        weights_bytes_gc_count=round(1024 * (after[1] - before[1])),
        model_bytes=None,
        model_estimate_bytes=None,
        model_us=None,
        reference_us=reference_us,
    )


def built_files(model: Path, precision: str) -> dict[str, str]:
    """The weights scripts `mnistpack build` writes for `precision`."""
    with tempfile.TemporaryDirectory(prefix="mnistpack-bench-") as folder:
        report = build(
            model=model, precision=precision, out_dir=Path(folder), compression=COMPRESSION, data_dir=None
        )
        return {str(path.relative_to(folder)): path.read_text(encoding="utf-8") for path in report.files}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "load_average_1min": os.getloadavg()[0],
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("mnistpack", "pluau", "numpy", "keras", "zstandard"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def markdown(rows: list[Row], text: Row) -> list[str]:
    lines = [
        "| weights | module bytes | bytecode bytes | compile + decode | VM memory, weights | Model memory "
        "| Model per digit | reference per digit |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in [*rows, text]:
        ratio = "" if r is text else f" ({text.module_bytes / r.module_bytes:.1f}x smaller)"
        load = f"{r.load_ms:.0f} ms" + ("" if r is text else f" ({r.load_ms / text.load_ms:.2f}x)")
        model_mem = "-" if r.model_bytes is None else f"{r.model_bytes / 1e6:.2f} MB"
        if r.model_us is None:
            model = "-"
        else:
            model = f"{r.model_us / 1e3:.3f} ms ({r.model_us / r.reference_us:.2f}x)"
        lines.append(
            f"| {r.name} | {r.module_bytes:,}{ratio} | {r.bytecode_bytes:,} | {load} | "
            f"{r.weights_bytes / 1e6:.2f} MB | {model_mem} | {model} | {r.reference_us / 1e3:.3f} ms |"
        )
    return lines


def run(model: Path, cnn: Path | None, data_dir: Path | None, digits: int, repeat: int) -> dict[str, Any]:
    test_set = load_test_set(data_dir)
    if test_set is None:
        raise SystemExit("the benchmark needs MNIST test digits: pass --data DIR or set MNISTPACK_DATA")
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()[0]
    stack = load_network(model)
    bench = Bench(test_set[0], digits)
    text = measure_text_export(bench, text_export(stack), repeat)
    rows = []
    for precision in PRECISIONS:
        rows.append(measure_precision(bench, precision, built_files(model, precision), repeat))
        print(f"measured {precision}", flush=True)
    if cnn is not None:
        # the reference pass runs the MLP's int8 weights for every CNN row
        reference = bench.decode(bench.compile_and_run(built_files(model, "int8")))[0]
        for precision in PRECISIONS:
            name = f"CNN {precision}"
            rows.append(measure_precision(bench, name, built_files(cnn, precision), repeat, reference))
            print(f"measured {name}", flush=True)
    info = machine()
    info["load_average_1min"] = max(load_before, info["load_average_1min"])
    return {
        "date": started.isoformat(timespec="seconds"),
        "machine": info,
        "versions": versions(),
        "model": str(model),
        "source_sha256": stack.source_sha256,
        "cnn": None if cnn is None else str(cnn),
        "digits": bench.count,
        "repeat": repeat,
        "clock": "thread CPU time (time.thread_time), median of repeat runs",
        "text_export": asdict(text),
        "precisions": [asdict(row) for row in rows],
        "markdown": markdown(rows, text),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=None, help=f"Keras MLP (default: models/{MLP_MODEL_NAME})"
    )
    parser.add_argument(
        "--cnn",
        type=Path,
        default=None,
        help=f"Keras CNN (default: models/{CNN_MODEL_NAME}, skipped if missing)",
    )
    parser.add_argument("--data", type=Path, default=None, help="MNIST folder (default: $MNISTPACK_DATA)")
    parser.add_argument("--digits", type=int, default=500, help="test digits per timed prediction run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per median")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file to write")
    args = parser.parse_args()
    cnn = args.cnn or models_dir() / CNN_MODEL_NAME
    result = run(
        args.model or models_dir() / MLP_MODEL_NAME,
        cnn if cnn.is_file() else None,
        resolve_data_dir(args.data),
        args.digits,
        args.repeat,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    machine_line = f"{result['machine']['cpu']}, {result['machine']['cores']} cores"
    print(f"\n{result['date']} on {machine_line}, {result['digits']} test digits, median of {args.repeat}\n")
    print("\n".join(result["markdown"]))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
