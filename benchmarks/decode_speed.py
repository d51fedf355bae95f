"""Speed of the pure-Luau decoder stack on the shipped models, in the Luau VM at -O2.

Run: .venv/bin/python benchmarks/decode_speed.py [--model PATH]... [--repeat N] [--out PATH]

Builds each model (default: both shipped ones, the default CNN models/mnist-cnn.keras and
the MLP models/mnist256.keras) at every precision with `mnistpack build`'s own pipeline,
then times with the process CPU clock the median of N runs of:
Base64.decode, Zstd.decompress, Crc32.compute and the whole
Decoder.decode per precision, plus compiling and running the reference project's float32
text export of the same weights. Prints a table and writes JSON to
benchmarks/results/decode_speed.json. Targets (issue 3): base64 >= 40 MB/s, zstd >= 20 MB/s
of output, Decoder.decode(int8) <= 40 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mnistpack.assets import CNN_MODEL_NAME, MLP_MODEL_NAME, models_dir  # noqa: E402
from mnistpack.build import build, text_export  # noqa: E402
from mnistpack.compression import decompress  # noqa: E402
from mnistpack.constants import PRECISIONS  # noqa: E402
from mnistpack.keras_model import load_network  # noqa: E402
from mnistpack.luau_emit import base64_lines  # noqa: E402
from mnistpack.module_reader import read_module  # noqa: E402

from tests.luau_host import LuauHost  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "decode_speed.json"
TARGETS = {"base64_text_MBps": 40.0, "zstd_output_MBps": 20.0, "decode_int8_ms": 40.0}

# Each function runs its step once; Python times the call with the process CPU clock, so
# other work on a shared machine inflates the figures as little as possible.
TIMERS = r"""
local Base64 = require(root.Base64)
local Zstd = require(root.Zstd)
local Crc32 = require(root.Crc32)
local Decoder = require(root.Decoder)

local text, frame, crcData, module
return {
	setup = function(t, c, m)
		text = t
		frame = if t ~= nil then Base64.decode(t) else nil
		crcData = if c ~= nil then buffer.fromstring(c) else nil
		module = m
	end,
	base64 = function()
		Base64.decode(text)
	end,
	zstd = function()
		Zstd.decompress(frame)
	end,
	crc = function()
		Crc32.compute(crcData, 0, buffer.len(crcData))
	end,
	decode = function()
		Decoder.decode(module)
	end,
}
"""


def median_seconds(step: Any, repeats: int) -> float:
    """Median CPU seconds of `repeats` calls, after one warm-up call (lazy tables)."""
    step()
    runs = []
    for _ in range(repeats):
        start = time.process_time()
        step()
        runs.append(time.process_time() - start)
    return statistics.median(runs)


def build_modules(workdir: Path, model: Path) -> dict[str, Path]:
    """`model` built at every precision, as `mnistpack build` writes it."""
    paths = {}
    for precision in PRECISIONS:
        out = workdir / precision
        build(model=model, precision=precision, out_dir=out, compression="zstd", data_dir=None)
        folder = out / "MnistWeights"
        paths[precision] = folder if folder.is_dir() else out / "MnistWeights.luau"
    return paths


def text_export_timing(model: Path, repeats: int) -> dict[str, float]:
    """Compile (and run) the reference project's float32 text export of the same weights."""
    source = text_export(load_network(model))
    modules = [m for m in re.split(r"(?m)^(?=return )", source) if m.strip()]
    host = LuauHost()
    compile_times, run_times = [], []
    for _ in range(repeats):
        start = time.process_time()
        chunks = [host.lua.load_chunk(m, f"export{i}") for i, m in enumerate(modules)]
        compile_times.append(time.process_time() - start)
        start = time.process_time()
        for chunk in chunks:
            chunk()
        run_times.append(time.process_time() - start)
    return {
        "text_export_bytes": float(len(source.encode())),
        "text_export_compile_ms": statistics.median(compile_times) * 1e3,
        "text_export_run_ms": statistics.median(run_times) * 1e3,
    }


def measure(model: Path, repeats: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_modules(Path(tmp), model)
        host = LuauHost()
        timers = host.run(TIMERS)[0]
        compression, blob = read_module(paths["int8"])
        container = decompress(blob, compression)
        # the module's data text as shipped, line breaks included
        text = "".join(base64_lines(blob))
        timers.get("setup")(host.lua.create_string(text.encode()), host.lua.create_string(container), None)
        seconds = median_seconds(timers.get("base64"), repeats)
        results["base64_text_bytes"] = len(text)
        results["base64_text_MBps"] = len(text) / seconds / 1e6
        results["base64_output_MBps"] = len(blob) / seconds / 1e6
        seconds = median_seconds(timers.get("zstd"), repeats)
        results["zstd_frame_bytes"] = len(blob)
        results["zstd_output_bytes"] = len(container)
        results["zstd_output_MBps"] = len(container) / seconds / 1e6
        seconds = median_seconds(timers.get("crc"), repeats)
        results["crc_MBps"] = len(container) / seconds / 1e6

        for precision, path in paths.items():
            if path.is_dir():
                module_host = LuauHost(extra_dirs={"MnistWeights": path})
            else:
                module_host = LuauHost(extra={"MnistWeights": path.read_text()})
            module_timers = module_host.run(TIMERS)[0]
            module = module_host.run("return require(root.MnistWeights)")[0]
            module_timers.get("setup")(None, None, module)
            results[f"decode_{precision}_ms"] = median_seconds(module_timers.get("decode"), repeats) * 1e3
            results[f"module_{precision}_bytes"] = sum(
                p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*.luau"))
            )
    results.update(text_export_timing(model, max(3, repeats // 4)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        action="append",
        default=[],
        help="Keras model; repeat for several (default: both shipped models, the CNN and the MLP)",
    )
    parser.add_argument("--repeat", type=int, default=21, help="runs per measurement; the median is kept")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    models = args.model or [models_dir() / CNN_MODEL_NAME, models_dir() / MLP_MODEL_NAME]
    report: dict[str, Any] = {"models": {}, "targets": TARGETS}
    for model in models:
        results = measure(model, args.repeat)
        met = {
            "base64": results["base64_text_MBps"] >= TARGETS["base64_text_MBps"],
            "zstd": results["zstd_output_MBps"] >= TARGETS["zstd_output_MBps"],
            "decode_int8": results["decode_int8_ms"] <= TARGETS["decode_int8_ms"],
        }
        report["models"][model.name] = {"results": results, "met": met}
        print(model)
        for key, value in results.items():
            print(f"  {key:28s} {value:12.2f}" if isinstance(value, float) else f"  {key:28s} {value:12d}")
        print("  targets met:", ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in met.items()))
    report["repeats"] = args.repeat
    report["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
