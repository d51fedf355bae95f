"""The `mnistpack` command line: a thin Typer layer over plain keyword-only functions.

Only this module prints errors: a MnistpackError becomes one red `error: ...` line on
stderr and exit code 1. Keras and JAX are imported inside the commands that need
them, so `mnistpack --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Final

import typer
from typer._click.exceptions import ClickException

from mnistpack import __version__
from mnistpack.constants import COMPRESSIONS, MAX_DIM, PRECISIONS
from mnistpack.errors import MnistpackError

EXIT_ERROR: Final = 1
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, what shells report for Ctrl-C

app = typer.Typer(
    name="mnistpack",
    help="Train a Keras MNIST network, quantize it and ship it to Roblox as a compact Luau module.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Folder with the four MNIST IDX files (.gz or raw) or a Keras mnist.npz "
        "(default: $MNISTPACK_DATA, else the Keras cache).",
        show_default=False,
    ),
]


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn a MnistpackError into one red line and exit 1, Ctrl-C into one line and exit 130."""
    try:
        yield
    except MnistpackError as exc:
        message = str(exc).replace("\n", " ")
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


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
            metavar="mlp|cnn",
            help="Network to train: mlp (784-hidden-10) or cnn (the small convolutional net of docs/cnn.md).",
        ),
    ] = "mlp",
    epochs: Annotated[
        int, typer.Option(min=1, help="Most epochs to train; early stopping usually ends sooner.")
    ] = 30,
    hidden: Annotated[
        int, typer.Option(min=1, max=MAX_DIM, help="Neurons in the MLP's hidden layer (mlp only).")
    ] = 256,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where to save the model (default: models/mnist<hidden>.keras, or models/mnist-cnn.keras).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data, same model.")] = 0,
    limit: Annotated[
        int | None, typer.Option(min=20, hidden=True, help="Train on the first N training images only.")
    ] = None,
) -> None:
    """Train a network on MNIST, print the test accuracy and save the model.

    Early stopping on the validation loss (the last 10% of the training images)
    restores the best epoch. Next to the model goes a .json note of what was
    measured: test accuracy, epochs, seconds, versions.
    """
    from mnistpack.architectures import ARCHITECTURES
    from mnistpack.errors import OptionError
    from mnistpack.train import TrainConfig, run_train

    with reporting_errors():
        if arch not in ARCHITECTURES:
            raise OptionError(f"unknown --arch {arch!r}: choose one of {', '.join(ARCHITECTURES)}.")
        config = TrainConfig.for_arch(arch, hidden=hidden, max_epochs=epochs, seed=seed, limit=limit)
        default_out = Path("models") / ("mnist-cnn.keras" if arch == "cnn" else f"mnist{hidden}.keras")
        run_train(data=data, out=out if out is not None else default_out, config=config, log=typer.echo)


@app.command("pixel-counts", hidden=True)
def pixel_counts(
    out: Annotated[Path, typer.Option(help="JSON file to write (packer/mnist_pixel_counts.json).")],
    data: DataOption = None,
) -> None:
    """Regenerate the shipped count of MNIST training images lighting each pixel (maintainers)."""
    from mnistpack.data import resolve_data_dir, write_pixel_counts

    with reporting_errors():
        counts = write_pixel_counts(data_dir=resolve_data_dir(data), out=out)
        typer.echo(f"wrote {out}: {counts.images} images, {int((counts.lit == 0).sum())} pixels never lit")


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
        typer.Option(help="Keras model to pack (default: models/mnist256.keras).", show_default=False),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder to write MnistWeights.luau into.")] = Path("build"),
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
            out_dir=out,
            compression=compress,
            data_dir=resolve_data_dir(data),
            progress=typer.echo,
        )
        for line in summary(report):
            typer.echo(line)


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
            typer.echo(line)


@app.command("compare")
def compare_command(
    model: Annotated[
        Path | None,
        typer.Option(help="Keras model to compare (default: models/mnist256.keras).", show_default=False),
    ] = None,
    data: DataOption = None,
    luau: Annotated[
        bool, typer.Option("--luau/--no-luau", help="Also score every precision in the Luau VM.")
    ] = True,
    out: Annotated[Path, typer.Option(help="Folder to write compare.json and compare.png into.")] = Path(
        "build"
    ),
) -> None:
    """Build every precision and print size against test accuracy, measured in Python and in Luau.

    Needs the MNIST test set (--data or $MNISTPACK_DATA). Writes the table as JSON and
    a size-vs-accuracy chart next to it.
    """
    from mnistpack.compare import compare, luau_progress, table_lines, write_report
    from mnistpack.data import resolve_data_dir

    with reporting_errors():
        with luau_progress() as progress:
            report = compare(model=model, data_dir=resolve_data_dir(data), luau=luau, progress=progress)
        for line in table_lines(report):
            typer.echo(line)
        for path in write_report(report, out):
            typer.echo(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`mnistpack`).

    Typer's own usage errors (a missing or malformed option) are drawn as a
    multi-line box; a user mistake must be one line, so they are caught here.
    """
    try:
        status = app(args=argv, prog_name="mnistpack", standalone_mode=False)
    except ClickException as exc:
        if not exc.format_message():
            # `mnistpack` alone: the help was the answer
            raise SystemExit(0) from None
        typer.secho(f"error: {exc.format_message()} (see 'mnistpack --help')", fg=typer.colors.RED, err=True)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    raise SystemExit(status if isinstance(status, int) else 0)
