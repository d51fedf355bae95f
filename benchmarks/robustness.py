"""Accuracy on digits drawn too small, too large or off-centre, with and without Preprocessing.

Run: .venv/bin/python benchmarks/robustness.py [--data DIR] [--model PATH] [--quant int8] [--seed 0]

Each of the 10,000 MNIST test digits is redrawn as a player might: its ink box scaled
by a factor in [0.6, 1.3] (area-averaging, so ink per cell stays physical) and moved by up
to 6 cells in x and y (less where the canvas edge stops it: a player's digit is never cut
off), all from one seeded generator. The network sees each digit raw, as the reference
project fed it, and after luau/client/Preprocessing.luau, which runs in the Luau VM
exactly as shipped. The network itself is the NumPy forward pass of the quantized weights
the build ships (`--quant`, int8 by default): the same numbers the Luau Model computes,
at NumPy speed. Target: >= 97% with Preprocessing.

Writes benchmarks/results/robustness.json and prints the numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mnistpack.build import dequantize_network, quantize_network, shipped_model
from mnistpack.data import IMAGE_SIDE, bundled_pixel_counts, load_test_set, resolve_data_dir
from mnistpack.keras_model import load_network
from mnistpack.luau_host import LuauHost
from mnistpack.luau_runtime import luau_prepare
from mnistpack.model import Network
from mnistpack.pruning import DEFAULT_PRUNE_THRESHOLD

RESULTS = Path(__file__).resolve().parent / "results" / "robustness.json"
SCALE_RANGE = (0.6, 1.3)
MAX_SHIFT = 6
TARGET = 0.97


@dataclass(frozen=True)
class Drawn:
    images: np.ndarray  # float64 [N, 784] in 0..1
    scales: np.ndarray  # float64 [N]
    shifts: np.ndarray  # int64 [N, 2]: (down, right) actually applied


def area_weights(n: int, m: int) -> np.ndarray:
    """[m, n] matrix averaging n cells into m: output j is the mean over [j n/m, (j+1) n/m)."""
    edges_out = np.arange(m + 1)[:, None] * n  # in 1/m of an input cell
    edges_in = np.arange(n + 1)[None, :] * m
    overlap = np.minimum(edges_out[1:], edges_in[:, 1:]) - np.maximum(edges_out[:-1], edges_in[:, :-1])
    weights: np.ndarray = np.clip(overlap, 0, None) / n
    return weights


def redraw(image: np.ndarray, scale: float, shift: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """`image` (28x28) with its ink box scaled by `scale` and moved by `shift`, kept on the canvas."""
    rows, cols = np.nonzero(image > 0)
    top, left = rows.min(), cols.min()
    crop = image[top : rows.max() + 1, left : cols.max() + 1]
    h, w = crop.shape
    oh = min(IMAGE_SIDE, max(1, round(h * scale)))
    ow = min(IMAGE_SIDE, max(1, round(w * scale)))
    small = np.clip(area_weights(h, oh) @ crop @ area_weights(w, ow).T, 0, 1)
    # keep the box's centre where it was, then move it
    new_top = round(top + h / 2 - oh / 2) + shift[0]
    new_left = round(left + w / 2 - ow / 2) + shift[1]
    clamped_top = min(max(new_top, 0), IMAGE_SIDE - oh)
    clamped_left = min(max(new_left, 0), IMAGE_SIDE - ow)
    out = np.zeros((IMAGE_SIDE, IMAGE_SIDE))
    out[clamped_top : clamped_top + oh, clamped_left : clamped_left + ow] = small
    moved = (clamped_top - (new_top - shift[0]), clamped_left - (new_left - shift[1]))
    return out, moved


def draw_all(images: np.ndarray, seed: int) -> Drawn:
    rng = np.random.default_rng(seed)
    scales = rng.uniform(*SCALE_RANGE, size=len(images))
    shifts = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=(len(images), 2))
    drawn = np.zeros((len(images), IMAGE_SIDE * IMAGE_SIDE))
    applied = np.zeros((len(images), 2), dtype=np.int64)
    for n, image in enumerate(images):
        out, moved = redraw(
            image.reshape(IMAGE_SIDE, IMAGE_SIDE).astype(np.float64), scales[n], tuple(shifts[n])
        )
        drawn[n] = out.ravel()
        applied[n] = moved
    return Drawn(images=drawn, scales=scales, shifts=applied)


def accuracy(stack: Network, images: np.ndarray, labels: np.ndarray) -> float:
    predicted = stack.predict(images.astype(np.float32)).argmax(axis=1)
    return float((predicted == labels).mean())


def shipped_network(model: Path, precision: str) -> Network:
    """The network as the build ships it: pruned and quantized, then read back."""
    stack = load_network(model)
    container = quantize_network(
        stack, precision, prune_threshold=DEFAULT_PRUNE_THRESHOLD, pixel_counts=bundled_pixel_counts()
    )
    return dequantize_network(container)


def run(data_dir: Path | None, model: Path, precision: str, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    test_set = load_test_set(data_dir)
    if test_set is None:
        raise SystemExit("no MNIST test data: pass --data DIR or set MNISTPACK_DATA")
    images, labels = test_set
    network = shipped_network(model, precision)
    drawn = draw_all(images, seed)
    host = LuauHost()
    originals = images.astype(np.float64)
    scores = {
        "mnist_raw": accuracy(network, originals, labels),
        "mnist_preprocessed": accuracy(network, luau_prepare(host, originals), labels),
        "redrawn_raw": accuracy(network, drawn.images, labels),
        "redrawn_preprocessed": accuracy(network, luau_prepare(host, drawn.images), labels),
    }
    return {
        "digits": len(labels),
        "seed": seed,
        "scale_range": list(SCALE_RANGE),
        "max_shift": MAX_SHIFT,
        "model": model.name,
        "precision": precision,
        "network": "NumPy forward pass of the dequantized shipped weights",
        "preprocessing": "luau/client/Preprocessing.luau in the Luau VM",
        "mean_abs_shift_applied": float(np.abs(drawn.shifts).mean()),
        "accuracy": scores,
        "target_preprocessed": TARGET,
        "target_met": scores["redrawn_preprocessed"] >= TARGET,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--model", type=Path, default=None, help="Keras model (default: the shipped one)")
    parser.add_argument("--quant", default="int8", help="precision the build ships (default int8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run(resolve_data_dir(args.data), args.model or shipped_model(), args.quant, args.seed)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    acc = result["accuracy"]
    print(f"{result['digits']:,} MNIST test digits, {result['model']} at {result['precision']}")
    print(f"  as in MNIST:        raw {acc['mnist_raw']:.2%}   preprocessed {acc['mnist_preprocessed']:.2%}")
    low, high = SCALE_RANGE
    moved = result["mean_abs_shift_applied"]
    print(f"  redrawn x{low}-{high}, moved <= {MAX_SHIFT} px (mean |shift| {moved:.1f}):")
    print(
        f"                      raw {acc['redrawn_raw']:.2%}   preprocessed {acc['redrawn_preprocessed']:.2%}"
    )
    verdict = "met" if result["target_met"] else "MISSED"
    print(f"  target >= {TARGET:.0%} with Preprocessing: {verdict}   ({result['seconds']} s) -> {RESULTS}")


if __name__ == "__main__":
    main()
