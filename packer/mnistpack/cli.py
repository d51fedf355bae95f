"""The `mnistpack` command line: a thin Typer layer over plain keyword-only functions.

Only this module prints errors: a MnistpackError becomes one red `error: ...` line on
stderr and exit code 1; Ctrl-C and SIGTERM one line and 130 or 143. Standard output is
for information only: when it goes away (`| head`) or fails (`> /dev/full`) the work
still finishes, and a failure other than a closed pipe is reported at the end. Keras and
JAX are imported inside the commands that need them, so `mnistpack --help` stays fast.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Final

import typer
from typer._click.exceptions import ClickException

from mnistpack import __version__, signals
from mnistpack.architectures import DEFAULT_ARCH
from mnistpack.constants import COMPRESSIONS, PRECISIONS
from mnistpack.errors import MnistpackError, OptionError, Terminated
from mnistpack.train import MAX_HIDDEN, MAX_SEED

EXIT_ERROR: Final = 1
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED: Final = 143  # 128 + SIGTERM

app = typer.Typer(
    name="mnistpack",
    help="Train a Keras MNIST network, quantize it and ship it to Roblox as a compact Luau module.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataOption = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Folder with the four MNIST IDX files (.gz or raw) or a Keras mnist.npz "
        "(default: $MNISTPACK_DATA, else the Keras cache).",
        show_default=False,
    ),
]


class Stdout:
    """Lines for standard output, which must never stop the work: when a write fails, later
    lines are dropped and `reporting_errors` reports the failure once the work is done
    (a reader that went away, as `head` does, silently, as Unix tools do)."""

    def __init__(self) -> None:
        self.failure: OSError | None = None

    def say(self, line: str) -> None:
        if self.failure is not None:
            return
        try:
            typer.echo(line)
        except OSError as error:
            self.failure = error
            _silence_stdout()


def _silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null: Python's own flush at exit finds nothing to fail on."""
    try:
        sys.stdout.flush()
    except OSError:
        pass
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):
        pass


stdout = Stdout()


def _error_line(text: str) -> None:
    try:
        typer.secho(text, fg=typer.colors.RED, err=True)
    except OSError:
        pass


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn a MnistpackError into one red line and exit 1, Ctrl-C into one line and exit 130,
    SIGTERM into one line and 143, and a failed standard output into one line and exit 1."""
    try:
        yield
    except MnistpackError as exc:
        message = str(exc).replace("\n", " ")
        _error_line(f"error: {message}")
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        _error_line("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Terminated:
        _error_line("terminated")
        raise typer.Exit(EXIT_TERMINATED) from None
    failure = stdout.failure
    if failure is not None and failure.errno != errno.EPIPE:
        _error_line(f"error: cannot write to standard output: {failure.strerror or failure}.")
        raise typer.Exit(EXIT_ERROR)


def _data_path(value: str | None) -> Path | None:
    return None if value is None else _path(value, "--data")


def _path(value: str, option: str) -> Path:
    """A path option's value; an empty one would silently mean the current folder."""
    if not value.strip():
        raise OptionError(f"{option} needs a path, not an empty string.")
    return Path(value)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"mnistpack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Train a Keras MNIST network, quantize it and ship it to Roblox as a compact Luau module."""


@app.command()
def train(
    data: DataOption = None,
    arch: Annotated[
        str,
        typer.Option(
            metavar="cnn|mlp",
            help="Network to train: cnn (the small convolutional net of docs/cnn.md, shipped as the "
            "default) or mlp (784-hidden-10).",
        ),
    ] = DEFAULT_ARCH,
    epochs: Annotated[
        int, typer.Option(min=1, help="Most epochs to train; early stopping usually ends sooner.")
    ] = 30,
    hidden: Annotated[
        int, typer.Option(min=1, max=MAX_HIDDEN, help="Neurons in the MLP's hidden layer (mlp only).")
    ] = 256,
    out: Annotated[
        str | None,
        typer.Option(
            help="Where to save the model (default: models/mnist<hidden>.keras, or models/mnist-cnn.keras).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Random seed: same seed, same data, same model.")
    ] = 0,
    limit: Annotated[
        int | None, typer.Option(min=20, hidden=True, help="Train on the first N training images only.")
    ] = None,
    player_copies: Annotated[
        int, typer.Option(min=0, help="Copies of each training digit redrawn as a player would draw it.")
    ] = 2,
    warp_copies: Annotated[
        int, typer.Option(min=0, help="Copies of each training digit warped and re-inked as an image.")
    ] = 1,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="Folder to keep the augmented digits in between runs (default: none, computed afresh).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train a network on MNIST, print the test accuracy and save the model.

    By default it trains the small convolutional network mnistpack ships
    (models/mnist-cnn.keras); --arch mlp trains the 784-hidden-10 MLP.

    The training digits are MNIST's own plus copies of each redrawn the way players
    draw (strokes at any size, slant and pace) and warped as images.

    Early stopping on the validation loss (the last 10% of the training images, and
    player redraws of them) keeps the best epoch (the MLP stops after 6 epochs without
    a new low, the CNN runs all of them); those held-out digits then calibrate the
    "not sure" rule. Next to the model goes a .json note of what was
    measured: test accuracy, calibration, epochs, seconds, versions.
    """
    from mnistpack.architectures import ARCHITECTURES
    from mnistpack.errors import OptionError
    from mnistpack.train import TrainConfig, run_train

    with reporting_errors():
        if arch not in ARCHITECTURES:
            raise OptionError(f"unknown --arch {arch!r}: choose one of {', '.join(ARCHITECTURES)}.")
        config = TrainConfig.for_arch(
            arch,
            hidden=hidden,
            max_epochs=epochs,
            seed=seed,
            limit=limit,
            player_copies=player_copies,
            warp_copies=warp_copies,
        )
        default_out = Path("models") / ("mnist-cnn.keras" if arch == "cnn" else f"mnist{hidden}.keras")
        run_train(
            data=_data_path(data),
            out=_path(out, "--out") if out is not None else default_out,
            config=config,
            log=stdout.say,
            cache=cache,
        )


@app.command("pixel-counts", hidden=True)
def pixel_counts(
    out: Annotated[str, typer.Option(help="JSON file to write (packer/mnist_pixel_counts.json).")],
    data: DataOption = None,
) -> None:
    """Regenerate the shipped count of MNIST training images lighting each pixel (maintainers)."""
    from mnistpack.data import resolve_data_dir, write_pixel_counts

    with reporting_errors():
        path = _path(out, "--out")
        counts = write_pixel_counts(data_dir=resolve_data_dir(_data_path(data)), out=path)
        stdout.say(f"wrote {path}: {counts.images} images, {int((counts.lit == 0).sum())} pixels never lit")


@app.command("build")
def build_command(
    quant: Annotated[
        str,
        typer.Option(
            "--quant", metavar="|".join(PRECISIONS), help="Weight precision: float32, float16, int8 or int4."
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            help="Keras model to pack (default: the shipped CNN, models/mnist-cnn.keras).", show_default=False
        ),
    ] = None,
    out: Annotated[str, typer.Option(help="Folder to write MnistWeights.luau into.")] = "build",
    compress: Annotated[
        str, typer.Option(metavar="|".join(COMPRESSIONS), help="zstd, or none for the bare container.")
    ] = "zstd",
    data: DataOption = None,
) -> None:
    """Quantize a trained model and write the weights module, then print a summary.

    Test accuracy is measured when MNIST test data is found locally (--data,
    $MNISTPACK_DATA or the Keras cache); build never downloads.
    """
    from mnistpack.build import build, summary
    from mnistpack.data import resolve_data_dir

    with reporting_errors():
        report = build(
            model=model,
            precision=quant,
            out_dir=_path(out, "--out"),
            compression=compress,
            data_dir=resolve_data_dir(_data_path(data)),
            progress=stdout.say,
        )
        for line in summary(report):
            stdout.say(line)


@app.command("inspect")
def inspect_command(
    module: Annotated[
        Path, typer.Argument(help="MnistWeights.luau, or a split MnistWeights folder or its init.luau.")
    ],
) -> None:
    """Decode a weights module in Python and print its header, checksum and metadata."""
    from mnistpack.inspection import inspect_module

    with reporting_errors():
        for line in inspect_module(module):
            stdout.say(line)


@app.command("compare")
def compare_command(
    model: Annotated[
        Path | None,
        typer.Option(
            help="Keras model to compare (default: the shipped CNN, models/mnist-cnn.keras).",
            show_default=False,
        ),
    ] = None,
    data: DataOption = None,
    luau: Annotated[
        bool, typer.Option("--luau/--no-luau", help="Also score every precision in the Luau VM.")
    ] = True,
    out: Annotated[str, typer.Option(help="Folder to write compare.json and compare.png into.")] = "build",
) -> None:
    """Build every precision and print size against test accuracy, measured in Python and in Luau.

    Needs the MNIST test set (--data or $MNISTPACK_DATA). Writes the table as JSON and
    a size-vs-accuracy chart next to it.
    """
    from mnistpack.compare import compare, luau_progress, table_lines, write_report
    from mnistpack.data import resolve_data_dir
    from mnistpack.outputs import check_writable

    with reporting_errors():
        out_dir = _path(out, "--out")
        check_writable(out_dir)  # before minutes of work, not after
        with luau_progress() as progress:
            report = compare(
                model=model, data_dir=resolve_data_dir(_data_path(data)), luau=luau, progress=progress
            )
        for line in table_lines(report):
            stdout.say(line)
        for path in write_report(report, out_dir):
            stdout.say(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`mnistpack`).

    Typer's own usage errors (a missing or malformed option) are drawn as a
    multi-line box; a user mistake must be one line, so they are caught here.
    """
    signals.raise_on_sigterm()
    try:
        status = app(args=argv, prog_name="mnistpack", standalone_mode=False)
    except BrokenPipeError:
        # --help or a usage message into a closed pipe: nothing more to say
        _silence_stdout()
        raise SystemExit(0) from None
    except ClickException as exc:
        if not exc.format_message():
            # `mnistpack` alone: the help was the answer
            raise SystemExit(0) from None
        typer.secho(f"error: {exc.format_message()} (see 'mnistpack --help')", fg=typer.colors.RED, err=True)
        raise SystemExit(exc.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        _error_line("interrupted")
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Terminated:
        _error_line("terminated")
        raise SystemExit(EXIT_TERMINATED) from None
    raise SystemExit(status if isinstance(status, int) else 0)
