"""How much of a convolutional network's arithmetic Model skips, on real inputs.

Run: .venv/bin/python -m benchmarks.cnn_work [--model PATH] [--data DIR] [--digits N] [--out PATH]

luau/Model.luau skips a 3x3 window of one input channel whose nine values are all 0, and
a dense layer adds only the columns of its nonzero inputs. This counts, with the NumPy
forward pass of the same network (mnistpack.model: the int8 build's digits agree with it),
how many windows and multiply-adds that leaves on MNIST test digits and on the same digits
drawn as players draw them (benchmarks.player_drawn's generator, rendered by
`strokes.from_strokes`, the NumPy twin of the client's `Preprocessing.fromStrokes`).
Counts are per digit, averaged; "all" is what a pass over every input would do. A 3x3
convolution that a 2x2 max pool follows makes only the outputs the pool keeps, as Model
does. Writes benchmarks/results/cnn_work.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any, Final

import numpy as np
from mnistpack.assets import shipped_model
from mnistpack.data import load_test_set, resolve_data_dir
from mnistpack.keras_model import load_network
from mnistpack.model import Conv2DLayer, DenseLayer, Network, Pool2DLayer
from mnistpack.strokes import from_strokes

from benchmarks.player_drawn import player_drawing
from benchmarks.run import machine

RESULTS: Final = Path(__file__).resolve().parent / "results" / "cnn_work.json"


def layer_work(network: Network, images: np.ndarray) -> list[dict[str, Any]]:
    """Per weighted layer: windows (or inputs) in all and lit, multiply-adds in all and done."""
    x = images.reshape(len(images), *network.input_shape).astype(np.float32)
    rows = []
    layers = network.layers
    for index, layer in enumerate(layers):
        if isinstance(layer, Conv2DLayer):
            out, kh, kw, _ = layer.kernel.shape
            if layer.padding != "valid":
                raise SystemExit(f"{layer.name}: only valid convolutions are counted here")
            windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
            windows = windows[:, :: layer.strides[0], :: layer.strides[1]]  # [N, OH, OW, C, kh, kw]
            following = layers[index + 1] if index + 1 < len(layers) else None
            if isinstance(following, Pool2DLayer) and following.pool_size == (2, 2):
                # Model makes only the outputs a 2x2 pool reads
                keep = 2 * (np.array(windows.shape[1:3]) // 2)
                windows = windows[:, : keep[0], : keep[1]]
            lit = np.asarray(windows.any(axis=(-2, -1)))  # [N, OH, OW, C]
            per_window = kh * kw * out
            rows.append(
                {
                    "layer": f"conv {kh}x{kw}, {lit.shape[-1]} -> {out} channels",
                    "units": "windows",  # one per output position and input channel
                    "all": float(lit[0].size),
                    "lit": float(lit.sum() / len(x)),
                    "multiply_adds_all": float(lit[0].size * per_window),
                    "multiply_adds_done": float(lit.sum() / len(x) * per_window),
                }
            )
        elif isinstance(layer, DenseLayer):
            flat = x.reshape(len(x), -1)
            outputs = layer.weight.shape[0]
            lit = np.count_nonzero(flat, axis=1)
            rows.append(
                {
                    "layer": f"dense {flat.shape[1]} -> {outputs}",
                    "units": "inputs",
                    "all": float(flat.shape[1]),
                    "lit": float(lit.mean()),
                    "multiply_adds_all": float(flat.shape[1] * outputs),
                    "multiply_adds_done": float(lit.mean() * outputs),
                }
            )
        if index + 1 < len(layers):
            x = layer.forward(x)
    return rows


def markdown(result: dict[str, Any]) -> list[str]:
    lines = [
        "| layer | MNIST test: lit / all | multiply-adds done | player drawings: lit / all "
        "| multiply-adds done |",
        "|---|--:|--:|--:|--:|",
    ]
    mnist, drawn = result["mnist_test"], result["player_drawn"]
    for a, b in zip(mnist, drawn, strict=True):
        lines.append(
            f"| {a['layer']} ({a['units']}) | {a['lit']:,.0f} / {a['all']:,.0f} "
            f"| {a['multiply_adds_done']:,.0f} of {a['multiply_adds_all']:,.0f} "
            f"| {b['lit']:,.0f} / {b['all']:,.0f} | {b['multiply_adds_done']:,.0f} |"
        )
    lines.append("")
    for name, rows in (("MNIST test", mnist), ("player drawings", drawn)):
        done = sum(r["multiply_adds_done"] for r in rows)
        every = sum(r["multiply_adds_all"] for r in rows)
        lines.append(f"{name}: {done:,.0f} of {every:,.0f} multiply-adds per digit ({done / every:.0%})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="Keras CNN (default: the shipped one)")
    parser.add_argument("--data", type=Path, default=None, help="MNIST folder (default: $MNISTPACK_DATA)")
    parser.add_argument("--digits", type=int, default=2000, help="test digits to count over")
    parser.add_argument("--seed", type=int, default=0, help="the player drawings' seed")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file to write")
    args = parser.parse_args()
    test_set = load_test_set(resolve_data_dir(args.data))
    if test_set is None:
        raise SystemExit("no MNIST test data: pass --data DIR or set MNISTPACK_DATA")
    model = args.model or shipped_model()
    network = load_network(model)
    images = test_set[0][: args.digits]
    rng = np.random.default_rng(args.seed)
    drawn = np.stack(
        [
            from_strokes(player_drawing(image.reshape(28, 28).astype(np.float64), rng).strokes)
            for image in images
        ]
    )
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "model": str(model),
        "digits": len(images),
        "mnist_test": layer_work(network, images),
        "player_drawn": layer_work(network, drawn),
    }
    result["markdown"] = markdown(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("\n".join(result["markdown"]) + f"\n\nwrote {args.out}")


if __name__ == "__main__":
    main()
