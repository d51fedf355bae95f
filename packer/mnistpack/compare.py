"""`mnistpack compare`: size against accuracy for every precision, measured on the code that ships.

Each precision is built exactly as `mnistpack build` builds it, then scored three ways on
the MNIST test set: the Python dequantized model, the Luau decoder + model running the
built module in a Luau VM, and the Luau predictions against the float32 Keras model's.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import numpy as np

from mnistpack import __version__
from mnistpack.build import build, dequantize_network, shipped_model
from mnistpack.compression import decompress
from mnistpack.constants import PRECISIONS
from mnistpack.container import unpack
from mnistpack.data import DATA_ENV_VAR, PIXEL_MAX, load_test_set
from mnistpack.errors import DataError
from mnistpack.keras_model import load_network
from mnistpack.luau_emit import module_path
from mnistpack.luau_runtime import LuauRuntime, to_pixels
from mnistpack.model import Network
from mnistpack.module_reader import read_module
from mnistpack.outputs import write_files

JSON_NAME: Final = "compare.json"
CHART_NAME: Final = "compare.png"
COMPRESSION: Final = "zstd"  # what `mnistpack build` writes unless told otherwise
CHART_SIZE_INCHES: Final = (7.0, 4.5)
CHART_DPI: Final = 120

# (precision, digits done, digits in all) after each batch of the Luau pass
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PrecisionResult:
    precision: str
    payload_bytes: int  # tensor bytes inside the container
    module_bytes: int  # the generated weights scripts together
    ratio_to_text_export: float  # module_bytes / the float32 text export's bytes
    python_accuracy: float  # the dequantized weights, NumPy forward pass
    luau_accuracy: float | None  # Decoder + Model in the Luau VM; None with --no-luau
    agreement_with_float32: float | None  # share of digits where Luau = the float32 Keras model
    max_probability_difference: float | None  # Luau vs NumPy, same dequantized weights


@dataclass(frozen=True)
class CompareReport:
    model: str
    source_sha256: str
    test_digits: int
    text_export_bytes: int  # the reference project's float32 number literals (build.text_export)
    float32_accuracy: float  # the Keras model as trained, before pruning and quantization
    luau: bool
    results: tuple[PrecisionResult, ...]
    packer_version: str = __version__


def compare(
    *,
    model: Path | None,
    data_dir: Path | None,
    luau: bool,
    precisions: Sequence[str] = PRECISIONS,
    progress: Progress | None = None,
) -> CompareReport:
    """Build every precision of `model` (None: the shipped one) and score each on the test set."""
    path = model if model is not None else shipped_model()
    test_set = load_test_set(data_dir)
    if test_set is None:
        raise DataError(
            f"compare needs the MNIST test set: point --data or {DATA_ENV_VAR} at a folder with "
            "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (.gz or raw)."
        )
    images, labels = test_set
    stack = load_network(path)
    float32_digits = stack.predict(images).argmax(axis=1)
    pixels = to_pixels(images)
    results = []
    text_bytes = 0
    for precision in precisions:
        with tempfile.TemporaryDirectory(prefix="mnistpack-compare-") as folder:
            report = build(
                model=path, precision=precision, out_dir=Path(folder), compression=COMPRESSION, data_dir=None
            )
            files = {str(file.relative_to(folder)): file.read_text(encoding="utf-8") for file in report.files}
            python_model = _module_stack(Path(folder) / module_path(files))
        text_bytes = report.text_export_bytes
        python = python_model.predict(pixels.astype(np.float32) / np.float32(PIXEL_MAX))
        result = PrecisionResult(
            precision=precision,
            payload_bytes=report.payload_bytes,
            module_bytes=report.module_bytes,
            ratio_to_text_export=report.module_bytes / report.text_export_bytes,
            python_accuracy=_accuracy(python.argmax(axis=1), labels),
            luau_accuracy=None,
            agreement_with_float32=None,
            max_probability_difference=None,
        )
        if luau:
            result = _with_luau(result, files, pixels, labels, float32_digits, python, progress)
        results.append(result)
    return CompareReport(
        model=str(path),
        source_sha256=stack.source_sha256,
        test_digits=len(labels),
        text_export_bytes=text_bytes,
        float32_accuracy=_accuracy(float32_digits, labels),
        luau=luau,
        results=tuple(results),
    )


def _module_stack(path: Path) -> Network:
    """The network as any decoder rebuilds it from the module file that was written."""
    compression, blob = read_module(path)
    return dequantize_network(unpack(decompress(blob, compression)))


def _with_luau(
    result: PrecisionResult,
    files: dict[str, str],
    pixels: np.ndarray,
    labels: np.ndarray,
    float32_digits: np.ndarray,
    python: np.ndarray,
    progress: Progress | None,
) -> PrecisionResult:
    def step(done: int) -> None:
        if progress is not None:
            progress(result.precision, done, len(pixels))

    step(0)
    predictions = LuauRuntime(files).predict(pixels, step)
    return PrecisionResult(
        **{
            **asdict(result),
            "luau_accuracy": _accuracy(predictions.digits, labels),
            "agreement_with_float32": float((predictions.digits == float32_digits).mean()),
            "max_probability_difference": float(np.abs(predictions.probabilities - python).max()),
        }
    )


def _accuracy(digits: np.ndarray, labels: np.ndarray) -> float:
    return float((digits == labels).mean())


# --- presenting the report --------------------------------------------------------------------


def table_lines(report: CompareReport) -> list[str]:
    """The report as a Markdown table, with a line above naming the model and the baseline."""
    header = (
        "| precision | payload bytes | module bytes | vs text export | Python accuracy | Luau accuracy "
        "| same digit as Keras float32 | max abs prob diff (Luau vs Python) |"
    )
    lines = [
        f"{report.model}: {report.test_digits:,} MNIST test digits; float32 Keras model "
        f"{report.float32_accuracy:.2%}; float32 text export {report.text_export_bytes:,} bytes",
        "",
        header,
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in report.results:
        lines.append(
            f"| {r.precision} | {r.payload_bytes:,} | {r.module_bytes:,} | "
            f"{r.ratio_to_text_export:.1%} ({1 / r.ratio_to_text_export:.1f}x smaller) | "
            f"{r.python_accuracy:.2%} | {_percent(r.luau_accuracy)} | "
            f"{_percent(r.agreement_with_float32)} | {_number(r.max_probability_difference)} |"
        )
    if not report.luau:
        lines.append("")
        lines.append("Luau columns skipped (--no-luau).")
    return lines


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def report_json(report: CompareReport) -> str:
    return json.dumps(asdict(report), indent=2) + "\n"


def chart_png(report: CompareReport) -> bytes:
    """Module size (log scale) against test accuracy: one point per precision and the
    reference project's float32 text export as the baseline."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=CHART_SIZE_INCHES)
    try:
        axes.axhline(100 * report.float32_accuracy, color="grey", linestyle="--", linewidth=1)
        for r in report.results:
            accuracy = r.luau_accuracy if r.luau_accuracy is not None else r.python_accuracy
            point = (r.module_bytes / 1000, 100 * accuracy)
            axes.scatter(*point, s=60, zorder=3)
            axes.annotate(r.precision, point, textcoords="offset points", xytext=(0, 8), ha="center")
        baseline = (report.text_export_bytes / 1000, 100 * report.float32_accuracy)
        axes.scatter(*baseline, marker="X", s=90, color="black", zorder=3)
        axes.annotate(
            "float32 text export\n(reference project)",
            baseline,
            textcoords="offset points",
            xytext=(0, -30),
            ha="center",
        )
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
        axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axes.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.margins(x=0.15, y=0.3)
        axes.set_xlabel("weights module size, KB (log scale)")
        source = "Luau VM" if report.luau else "Python"
        axes.set_ylabel(f"test accuracy, % ({source})")
        axes.set_title(
            f"Size vs accuracy on {report.test_digits:,} MNIST test digits (dashed: float32 model)"
        )
        axes.grid(True, which="major", alpha=0.3)
        buffer = io.BytesIO()
        figure.tight_layout()
        figure.savefig(buffer, format="png", dpi=CHART_DPI)
    finally:
        plt.close(figure)
    return buffer.getvalue()


def write_report(report: CompareReport, out_dir: Path) -> tuple[Path, Path]:
    """Write compare.json and compare.png into `out_dir`; no old file is replaced until both are written."""
    json_path, chart_path = write_files(
        out_dir, {JSON_NAME: report_json(report), CHART_NAME: chart_png(report)}
    )
    return json_path, chart_path


@contextmanager
def luau_progress() -> Iterator[Progress]:
    """A progress bar on stderr for the Luau pass, one line per precision."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bars

    columns = (
        TextColumn("Luau {task.description:>7}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Bars(*columns, console=Console(stderr=True)) as bars:
        tasks: dict[str, TaskID] = {}

        def update(precision: str, done: int, total: int) -> None:
            if precision not in tasks:
                tasks[precision] = bars.add_task(precision, total=total)
            bars.update(tasks[precision], completed=done)

        yield update
