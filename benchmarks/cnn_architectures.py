"""Small CNNs trained and measured alike, to choose the one mnistpack ships (docs/cnn.md).

Run: nice -n 5 .venv/bin/python -m benchmarks.cnn_architectures [--data DIR] [--only NAME]...
     [--models DIR] [--reuse] [--cache DIR] [--digits N] [--repeat N]

Each candidate (an architectures.CnnSpec) is trained exactly as `mnistpack train --arch cnn`
trains the shipped one (TrainConfig.for_arch("cnn"), seed 0), then measured: parameters;
the Keras model's accuracy on the 10,000 MNIST test digits; the int8 module `mnistpack build`
writes (bytes); that module decoded and run by Model in the Luau VM on all 10,000 digits
(accuracy, and agreement with the Keras model's digit); Model's time per digit against the
reference project's forward pass over the shipped MLP, in the same VM (medians of
interleaved runs on this thread's CPU clock); the VM memory the Model holds. Trained models
are kept in --models (default build/cnn-candidates), so --reuse measures without training.
Writes benchmarks/results/cnn_architectures.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from mnistpack.architectures import CNN, CnnSpec
from mnistpack.build import build
from mnistpack.data import Mnist, load_mnist, resolve_data_dir
from mnistpack.keras_model import load_network
from mnistpack.luau_runtime import LuauRuntime, to_pixels
from mnistpack.model import Conv2DLayer, DenseLayer, import_keras
from mnistpack.train import TrainConfig, run_train

from benchmarks.run import Bench, built_files, machine, versions

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "cnn_architectures.json"
MLP = HERE.parent / "models" / "mnist256.keras"
PRECISION: Final = "int8"

# Roughly from the cheapest to the dearest; CNN (the shipped spec) is among them.
CANDIDATES: Final = (
    CnnSpec(channels=(8, 16)),
    CnnSpec(channels=(8, 16), hidden=32),
    CnnSpec(channels=(12, 24)),
    CnnSpec(channels=(8, 16, 32), head="average"),
    CnnSpec(channels=(8, 16, 32)),
    CnnSpec(channels=(8, 16, 32), hidden=32),
    CnnSpec(channels=(8, 16, 48)),
    CnnSpec(channels=(12, 16, 32)),
)


@dataclass(frozen=True)
class Candidate:
    name: str
    shipped: bool
    parameters: int
    multiply_adds: int  # per digit, with every input (no zero skipped)
    epochs_run: int
    player_copies: int  # training copies of each digit redrawn as players draw (0: before issue 9)
    warp_copies: int
    keras_accuracy: float
    module_bytes: int  # int8, as `mnistpack build` writes it
    luau_accuracy: float  # the int8 module, decoded and run by Model in the VM
    agreement_with_keras: float  # share of digits where Luau and the Keras model agree
    luau_ms: float  # Model.predict per digit
    reference_ms: float  # the reference forward pass over the MLP, same runs
    model_bytes: int  # Model:memoryBytes()


def train_candidate(
    spec: CnnSpec, mnist_dir: Path | None, out: Path, options: dict[str, Any], cache: Path | None = None
) -> dict[str, Any]:
    config = TrainConfig.for_arch("cnn", cnn=spec, **options)

    def log(line: str) -> None:
        print(f"  {line}", flush=True)

    run_train(data=mnist_dir, out=out, config=config, log=log, cache=cache)
    note: dict[str, Any] = json.loads(out.with_suffix(".json").read_text())
    return note


def luau_scores(model: Path, mnist: Mnist) -> tuple[float, float, int]:
    """(Luau accuracy, agreement with Keras, module bytes) of the int8 module of `model`."""
    with tempfile.TemporaryDirectory(prefix="mnistpack-cnn-") as folder:
        report = build(
            model=model, precision=PRECISION, out_dir=Path(folder), compression="zstd", data_dir=None
        )
        files = {str(path.relative_to(folder)): path.read_text(encoding="utf-8") for path in report.files}
    digits = LuauRuntime(files).predict(to_pixels(mnist.test_images)).digits
    keras_digits = (
        import_keras().saving.load_model(model).predict(mnist.test_images, verbose=0).argmax(axis=1)
    )
    return (
        float((digits == mnist.test_labels).mean()),
        float((digits == keras_digits).mean()),
        report.module_bytes,
    )


def timing(bench: Bench, model: Path, reference_weights: Any, repeat: int) -> tuple[float, float, int]:
    """(Model ms, reference ms, Model bytes): medians of interleaved runs over the same digits."""
    weights = bench.decode(bench.compile_and_run(built_files(model, PRECISION)))[0]
    network = bench.model_new(weights)[0]
    bench.run_model(network, bench.digits)  # warm up
    model_s, reference_s = [], []
    for _ in range(repeat):
        started = time.thread_time()
        bench.run_reference(reference_weights, bench.digits)
        reference_s.append(time.thread_time() - started)
        started = time.thread_time()
        bench.run_model(network, bench.digits)
        model_s.append(time.thread_time() - started)
    per_digit = 1e3 / bench.count
    memory = int(bench.memory_bytes(network)[0])
    return statistics.median(model_s) * per_digit, statistics.median(reference_s) * per_digit, memory


def measure(
    spec: CnnSpec, model: Path, note: dict[str, Any], mnist: Mnist, bench: Bench, reference: Any, repeat: int
) -> Candidate:
    network = load_network(model)
    parameters = sum(layer.weight.size + layer.bias.size for layer in network.weighted)
    multiply_adds = sum(
        int(np.prod(shape)) * int(np.prod(layer.weight.shape[1:]))
        for layer, shape in zip(network.layers, network.shapes(), strict=True)
        if isinstance(layer, DenseLayer | Conv2DLayer)
    )
    luau_accuracy, agreement, module_bytes = luau_scores(model, mnist)
    luau_ms, reference_ms, model_bytes = timing(bench, model, reference, repeat)
    return Candidate(
        name=spec.describe(),
        shipped=spec == CNN,
        parameters=parameters,
        multiply_adds=multiply_adds,
        epochs_run=int(note["epochs_run"]),
        player_copies=int(note["config"].get("player_copies", 0)),
        warp_copies=int(note["config"].get("warp_copies", 0)),
        keras_accuracy=float(note["test_accuracy"]),
        module_bytes=module_bytes,
        luau_accuracy=luau_accuracy,
        agreement_with_keras=agreement,
        luau_ms=luau_ms,
        reference_ms=reference_ms,
        model_bytes=model_bytes,
    )


def markdown(rows: list[Candidate]) -> list[str]:
    lines = [
        "| architecture | parameters | multiply-adds | training copies | epochs | Keras accuracy "
        "| int8 module | Luau accuracy | same digit as Keras | Luau per digit (vs reference) "
        "| Model memory |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        name = f"**{r.name}** (shipped)" if r.shipped else r.name
        lines.append(
            f"| {name} | {r.parameters:,} | {r.multiply_adds:,} "
            f"| {r.player_copies} player, {r.warp_copies} warp | {r.epochs_run} | {r.keras_accuracy:.2%} "
            f"| {r.module_bytes:,} B | {r.luau_accuracy:.2%} | {r.agreement_with_keras:.2%} "
            f"| {r.luau_ms:.2f} ms ({r.luau_ms / r.reference_ms:.2f}x) | {r.model_bytes / 1e3:.0f} KB |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="MNIST folder (default: $MNISTPACK_DATA)")
    parser.add_argument(
        "--only", action="append", default=[], help="candidate name(s) to run, e.g. c8-c16-c48-flat-10"
    )
    parser.add_argument(
        "--models", type=Path, default=Path("build/cnn-candidates"), help="where trained models go"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="measure models already in --models, train the rest"
    )
    parser.add_argument("--digits", type=int, default=500, help="test digits per timed run")
    parser.add_argument("--repeat", type=int, default=7, help="interleaved timed runs per candidate")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file to write")
    parser.add_argument(
        "--epochs", type=int, default=None, help="most epochs (default: the trainer's); quick trials"
    )
    parser.add_argument("--limit", type=int, default=None, help="train on N images only; quick trials")
    parser.add_argument(
        "--cache", type=Path, default=None, help="keep the augmented digits here between candidates"
    )
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data)
    mnist = load_mnist(data_dir, allow_download=False)
    started = datetime.datetime.now(datetime.UTC)
    bench = Bench(mnist.test_images, args.digits)
    reference = bench.decode(bench.compile_and_run(built_files(MLP, PRECISION)))[0]
    chosen = [spec for spec in CANDIDATES if not args.only or spec.describe() in args.only]
    args.models.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in chosen:
        path = args.models / f"{spec.describe()}.keras"
        print(f"{spec.describe()}: {'measuring' if args.reuse and path.exists() else 'training'}", flush=True)
        if not (args.reuse and path.exists()):
            options = {
                key: value for key, value in (("max_epochs", args.epochs), ("limit", args.limit)) if value
            }
            train_candidate(spec, data_dir, path, options, args.cache)
        note = json.loads(path.with_suffix(".json").read_text())
        rows.append(measure(spec, path, note, mnist, bench, reference, args.repeat))
        print("\n".join(markdown(rows)[-1:]), flush=True)
    result = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "precision": PRECISION,
        "digits_timed": bench.count,
        "repeat": args.repeat,
        "clock": "thread CPU time (time.thread_time), median of interleaved runs",
        "candidates": [asdict(row) for row in rows],
        "markdown": markdown(rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("\n" + "\n".join(result["markdown"]) + f"\n\nwrote {args.out}")


if __name__ == "__main__":
    main()
