"""Digits drawn the way players draw them, read end to end through the client's own Luau code.

Run: .venv/bin/python -m benchmarks.player_drawn [--data DIR] [--model PATH]... [--digits N] [--seed 0]

Every MNIST *test* digit (never seen in training) is turned into what a player's mouse
would have produced: its skeleton traced into strokes (mnistpack.trace), then, from one
seeded generator, slanted, rotated, squashed or stretched, drawn at any size from tiny
(3 cells) to the whole canvas (27 cells) anywhere on the 28x28 canvas, and sampled the
way pointer events arrive: unevenly spaced along the stroke (slow and fast strokes cut
corners differently), with hand jitter, rounded to the screen pixels of a 420-pixel canvas.

Each drawing is then read exactly as the client reads it, by every model given (default:
both shipped models, the CNN and the MLP, in the same run), in a Luau VM: the int8 build
of the model (`mnistpack build --quant int8`, decoded by luau/Decoder), and
- **strokes**: `Preprocessing.fromStrokes` on the strokes, then `Model:predict` (the client
  since issue 9);
- **canvas**: the old client: `Canvas.stamp`/`Canvas.segment` brush pixels, then
  `Preprocessing.prepare`, then `Model:predict`.
MNIST's own test images also go through `Preprocessing.prepare` and the same Model.

A drawing counts as "not sure" when its top probability is below the model's sure threshold
(`meta.calibration.sure_threshold`, else the client's NOT_SURE_THRESHOLD), and as
"confidently wrong" when it is wrong and not flagged. Prints tables (per size band, per
digit, confusions) and writes benchmarks/results/player_drawn.json. Targets (issue 9): strokes
>= 97% (moonshot 98.5%), confidently wrong <= 1% of drawings, wrong among sure answers <= 1%,
not sure <= 10%, MNIST test >= 98.2% through the same path.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from mnistpack.assets import CNN_MODEL_NAME, MLP_MODEL_NAME, models_dir
from mnistpack.build import build
from mnistpack.data import load_test_set, resolve_data_dir
from mnistpack.luau_runtime import (
    FLOATS_LUAU,
    READ_DRAWINGS_LUAU,
    LuauPredictions,
    LuauRuntime,
    encode_drawings,
    luau_prepare,
)
from mnistpack.strokes import Strokes
from mnistpack.trace import image_strokes

from benchmarks.run import machine, versions

RESULTS: Final = Path(__file__).resolve().parent / "results" / "player_drawn.json"
BATCH: Final = 500

# How players draw, as ranges the generator draws from uniformly (per drawing unless noted).
SIZE_CELLS: Final = (3.0, 27.0)  # longer side of the drawing on the 28-cell canvas
SIZE_BANDS: Final = ((3, 6), (6, 10), (10, 14), (14, 18), (18, 22), (22, 28))
ROTATION_DEGREES: Final = 15.0  # +-
SLANT: Final = 0.35  # +- horizontal shear per unit of height
ASPECT: Final = (0.75, 1.33)  # width factor, log-uniform
EVENT_SPACING_CELLS: Final = (0.15, 2.0)  # mean distance between pointer events, per stroke
EVENT_SPACING_SPREAD: Final = 0.4  # each event's step is the mean times U(1 - s, 1 + s)
JITTER_CELLS: Final = (0.0, 0.12)  # standard deviation of hand tremor
SCREEN_PIXELS_PER_CELL: Final = 15.0  # a 420-pixel canvas
NOT_SURE_FALLBACK: Final = 0.6  # luau/client/Constants.luau NOT_SURE_THRESHOLD

# Canvas brush pixels, then Preprocessing.prepare: the client's input before issue 9.
_CANVAS_PREPARE = (
    READ_DRAWINGS_LUAU
    + FLOATS_LUAU
    + r"""
local Canvas = require(root.client.Canvas)
local P = require(root.client.Preprocessing)
return function(data: string, count: number): string
	local out = buffer.create(count * 784 * 8)
	for n, strokes in readDrawings(data, count) do
		local pixels = table.create(784, 0)
		for _, stroke in strokes do
			local x, y = stroke[1].x, stroke[1].y
			Canvas.stamp(pixels, x, y)
			for i = 2, #stroke do
				Canvas.segment(pixels, x, y, stroke[i].x, stroke[i].y)
				x, y = stroke[i].x, stroke[i].y
			end
		end
		writeFloats(out, (n - 1) * 784, P.prepare(pixels), 784)
	end
	return buffer.tostring(out)
end
"""
)

_TIME_STROKES = (
    READ_DRAWINGS_LUAU
    + r"""
local P = require(root.client.Preprocessing)
local model = ...
return function(data: string, count: number): (number, number)
	local drawings = readDrawings(data, count)
	local started = os.clock()
	for _, strokes in drawings do
		P.fromStrokes(strokes)
	end
	local middle = os.clock()
	for _, strokes in drawings do
		model:predict(P.fromStrokes(strokes))
	end
	return middle - started, os.clock() - middle
end
"""
)


@dataclass(frozen=True)
class Drawing:
    strokes: Strokes
    size: float  # longer side on the canvas, in cells
    points: int


def player_drawing(image: np.ndarray, rng: np.random.Generator) -> Drawing:
    """One MNIST image (28x28, 0..1) as a player might draw that digit with a mouse."""
    traced = image_strokes(image)
    if not traced:
        return Drawing(strokes=[], size=0.0, points=0)
    points = np.concatenate(traced)
    centre = (points.min(axis=0) + points.max(axis=0)) / 2
    angle = np.radians(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES))
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shear = np.array([[1.0, rng.uniform(-SLANT, SLANT)], [0.0, 1.0]])
    aspect = np.diag([np.exp(rng.uniform(*np.log(ASPECT))), 1.0])
    transform = aspect @ shear @ rotate
    shaped = [(stroke - centre) @ transform.T for stroke in traced]
    every = np.concatenate(shaped)
    low, high = every.min(axis=0), every.max(axis=0)
    size = rng.uniform(*SIZE_CELLS)
    scale = size / max(float((high - low).max()), 1e-9)
    extent = (high - low) * scale
    corner = np.array([rng.uniform(0.5, 27.5 - extent[0]), rng.uniform(0.5, 27.5 - extent[1])])
    spacing = rng.uniform(*EVENT_SPACING_CELLS)
    jitter = rng.uniform(*JITTER_CELLS)
    strokes = []
    for stroke in shaped:
        placed = (stroke - low) * scale + corner
        events = pointer_events(placed, spacing * rng.uniform(0.7, 1.3), rng)
        events = events + rng.normal(0.0, jitter, events.shape)
        events = np.round(events * SCREEN_PIXELS_PER_CELL) / SCREEN_PIXELS_PER_CELL
        strokes.append([(float(x), float(y)) for x, y in events])
    return Drawing(strokes=strokes, size=size, points=sum(len(s) for s in strokes))


def pointer_events(path: np.ndarray, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Where pointer events land along `path`: about `spacing` cells apart, unevenly, ends included."""
    steps = np.hypot(*np.diff(path, axis=0).T)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    total = float(along[-1])
    marks = [0.0]
    while marks[-1] < total:
        marks.append(marks[-1] + spacing * rng.uniform(1 - EVENT_SPACING_SPREAD, 1 + EVENT_SPACING_SPREAD))
    marks[-1] = total
    xs = np.interp(marks, along, path[:, 0])
    ys = np.interp(marks, along, path[:, 1])
    return np.stack([xs, ys], axis=1)


def run_chunk(runtime: LuauRuntime, code: str, data: Sequence[bytes], counts: Sequence[int]) -> np.ndarray:
    fn = runtime.host.run(code)[0]
    parts = [
        np.frombuffer(fn(runtime.host.lua.create_string(chunk), count)[0].as_bytes(), "<f8").reshape(
            count, 784
        )
        for chunk, count in zip(data, counts, strict=True)
    ]
    return np.concatenate(parts)


def scores(predictions: LuauPredictions, labels: np.ndarray, threshold: float) -> dict[str, float]:
    right = predictions.digits == labels
    top = predictions.probabilities.max(axis=1)
    sure = top >= threshold
    return {
        "accuracy": float(right.mean()),
        "not_sure": float((~sure).mean()),
        "confidently_wrong": float((sure & ~right).mean()),
        "wrong_among_sure": float((sure & ~right).sum() / max(int(sure.sum()), 1)),
        "errors_caught": float((~sure & ~right).sum() / max(int((~right).sum()), 1)),
    }


def band_name(band: tuple[int, int]) -> str:
    return f"{band[0]}-{band[1]} cells"


def tables(
    predictions: LuauPredictions, labels: np.ndarray, sizes: np.ndarray, threshold: float
) -> dict[str, Any]:
    by_band = {}
    for band in SIZE_BANDS:
        chosen = (sizes >= band[0]) & (sizes < band[1])
        subset = LuauPredictions(predictions.digits[chosen], predictions.probabilities[chosen])
        by_band[band_name(band)] = {
            "drawings": int(chosen.sum()),
            **scores(subset, labels[chosen], threshold),
        }
    by_digit = {}
    for digit in range(10):
        chosen = labels == digit
        by_digit[str(digit)] = float((predictions.digits[chosen] == digit).mean())
    wrong = predictions.digits != labels
    confusions = Counter(f"{a}->{b}" for a, b in zip(labels[wrong], predictions.digits[wrong], strict=True))
    return {
        "overall": scores(predictions, labels, threshold),
        "by_size": by_band,
        "by_digit": by_digit,
        "confusions": dict(confusions.most_common(10)),
    }


def built_module(model: Path) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="mnistpack-player-") as folder:
        report = build(model=model, precision="int8", out_dir=Path(folder), compression="zstd", data_dir=None)
        return {str(path.relative_to(folder)): path.read_text(encoding="utf-8") for path in report.files}


def per_digit_times(runtime: LuauRuntime, drawings: Sequence[Strokes], repeat: int) -> dict[str, float]:
    """Median ms per drawing on the VM's CPU clock: fromStrokes alone, and fromStrokes + predict."""
    fn = runtime.host.run(_TIME_STROKES, runtime.model)[0]
    data = runtime.host.lua.create_string(encode_drawings(drawings))
    runs = [fn(data, len(drawings)) for _ in range(repeat)]
    return {
        "from_strokes_ms": 1e3 * statistics.median(r[0] for r in runs) / len(drawings),
        "from_strokes_and_predict_ms": 1e3 * statistics.median(r[1] for r in runs) / len(drawings),
    }


def read(
    model: Path,
    strokes: list[Strokes],
    labels: np.ndarray,
    sizes: np.ndarray,
    test_set: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """Everything the benchmark measures of one model: the drawings through both paths, MNIST's
    test digits through `prepare`, and the time per drawing."""
    started = time.perf_counter()
    files = built_module(model)
    runtime = LuauRuntime(files)
    threshold = runtime.sure_threshold if runtime.sure_threshold is not None else NOT_SURE_FALLBACK
    via_strokes = runtime.predict_strokes(strokes)
    print(f"{model.name}: read through fromStrokes: {time.perf_counter() - started:.0f} s", flush=True)
    batches = [strokes[i : i + BATCH] for i in range(0, len(strokes), BATCH)]
    canvas_inputs = run_chunk(
        runtime, _CANVAS_PREPARE, [encode_drawings(b) for b in batches], [len(b) for b in batches]
    )
    via_canvas = runtime.predict_inputs(canvas_inputs)
    seconds = time.perf_counter() - started
    print(f"{model.name}: read through the canvas and prepare: {seconds:.0f} s", flush=True)
    originals = test_set[0].astype(np.float64)
    prepared = luau_prepare(runtime.host, originals)
    mnist = runtime.predict_inputs(prepared)
    return {
        "model": str(model),
        "module_bytes": sum(len(source.encode()) for source in files.values()),
        "sure_threshold": threshold,
        "threshold_source": "model meta.calibration"
        if runtime.sure_threshold is not None
        else "client fallback",
        "strokes": tables(via_strokes, labels, sizes, threshold),
        "canvas": tables(via_canvas, labels, sizes, threshold),
        "mnist_test_prepare": scores(mnist, test_set[1].astype(np.int64), threshold),
        "per_digit_time": per_digit_times(runtime, strokes[:500], repeat=5),
    }


def run(data_dir: Path | None, models: Sequence[Path], digits: int, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    test_set = load_test_set(data_dir)
    if test_set is None:
        raise SystemExit("no MNIST test data: pass --data DIR or set MNISTPACK_DATA")
    images, labels = test_set[0][:digits], test_set[1][:digits].astype(np.int64)
    rng = np.random.default_rng(seed)
    drawings = [player_drawing(image.reshape(28, 28).astype(np.float64), rng) for image in images]
    print(f"generated {len(drawings):,} drawings in {time.perf_counter() - started:.0f} s", flush=True)
    strokes = [d.strokes for d in drawings]
    sizes = np.array([d.size for d in drawings])
    readers = [read(model, strokes, labels, sizes, test_set) for model in models]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "precision": "int8",
        "seed": seed,
        "drawings": len(drawings),
        "generator": {
            "size_cells": SIZE_CELLS,
            "rotation_degrees": ROTATION_DEGREES,
            "slant": SLANT,
            "aspect": ASPECT,
            "event_spacing_cells": EVENT_SPACING_CELLS,
            "jitter_cells": JITTER_CELLS,
            "screen_pixels_per_cell": SCREEN_PIXELS_PER_CELL,
            "mean_points": float(np.mean([d.points for d in drawings])),
        },
        "mnist_test_images": len(test_set[1]),
        "readers": readers,
        "clock": "os.clock in the VM (process CPU time), median of 5 runs over 500 drawings",
        "seconds": round(time.perf_counter() - started, 1),
    }


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def markdown(result: dict[str, Any]) -> list[str]:
    readers = result["readers"]
    names = [Path(r["model"]).name for r in readers]
    lines = [
        "| model (int8, `fromStrokes`) | player-drawn | confidently wrong | wrong among sure | not sure "
        "| MNIST test (`prepare`) | old path (canvas + `prepare`) | ms per drawing |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, r in zip(names, readers, strict=True):
        s = r["strokes"]["overall"]
        lines.append(
            f"| {name} | **{percent(s['accuracy'])}** | {percent(s['confidently_wrong'])} "
            f"| {percent(s['wrong_among_sure'])} | {percent(s['not_sure'])} "
            f"| {percent(r['mnist_test_prepare']['accuracy'])} "
            f"| {percent(r['canvas']['overall']['accuracy'])} "
            f"| {r['per_digit_time']['from_strokes_and_predict_ms']:.2f} |"
        )
    header = " | ".join(f"{n}: read, not sure, confidently wrong" for n in names)
    lines += ["", f"| drawn size (longer side) | drawings | {header} |", "|---|--:|" + "--:|" * len(names)]
    for band in readers[0]["strokes"]["by_size"]:
        cells = " | ".join(
            f"{percent(row['accuracy'])}, {percent(row['not_sure'])}, {percent(row['confidently_wrong'])}"
            for row in (r["strokes"]["by_size"][band] for r in readers)
        )
        drawings = readers[0]["strokes"]["by_size"][band]["drawings"]
        lines.append(f"| {band} | {drawings:,} | {cells} |")
    lines += ["", "| digit | " + " | ".join(str(d) for d in range(10)) + " |", "|---|" + "--:|" * 10]
    for name, r in zip(names, readers, strict=True):
        cells = " | ".join(percent(r["strokes"]["by_digit"][str(d)]) for d in range(10))
        lines.append(f"| {name} | {cells} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="folder with the MNIST IDX files")
    parser.add_argument(
        "--model",
        type=Path,
        action="append",
        default=[],
        help="Keras model; repeat to compare (default: both shipped models, the CNN and the MLP)",
    )
    parser.add_argument("--digits", type=int, default=10000, help="test digits to draw (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file to write")
    args = parser.parse_args()
    models = args.model or [models_dir() / CNN_MODEL_NAME, models_dir() / MLP_MODEL_NAME]
    result = run(resolve_data_dir(args.data), models, args.digits, args.seed)
    result["markdown"] = markdown(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\n{result['drawings']:,} player-drawn MNIST test digits, int8, through the Luau client path\n")
    print("\n".join(result["markdown"]))
    for r in result["readers"]:
        s, c, m = r["strokes"]["overall"], r["canvas"]["overall"], r["mnist_test_prepare"]
        t = r["per_digit_time"]
        print(
            f"\n{r['model']} (sure from {r['sure_threshold']:.3f}, {r['threshold_source']}):\n"
            f"  fromStrokes: {percent(s['accuracy'])} (target >= 97%), confidently wrong "
            f"{percent(s['confidently_wrong'])} (<= 1%), wrong among sure "
            f"{percent(s['wrong_among_sure'])} (<= 1%), not sure {percent(s['not_sure'])} (<= 10%)\n"
            f"  old path, canvas + prepare: {percent(c['accuracy'])}, "
            f"confidently wrong {percent(c['confidently_wrong'])}\n"
            f"  MNIST test through prepare: {percent(m['accuracy'])} (target >= 98.2%)\n"
            f"  per drawing: fromStrokes {t['from_strokes_ms']:.2f} ms, with predict "
            f"{t['from_strokes_and_predict_ms']:.2f} ms"
        )
    print(f"\n({result['seconds']} s) -> {args.out}")


if __name__ == "__main__":
    main()
