"""Train a network (mnistpack.architectures: the 784-hidden-10 MLP or the small CNN) with Keras
and save it, with a JSON note of what was measured.

The MLP trains with Dropout after the hidden layer; the saved model is the same weights
in a fresh model without it (Dropout is the identity at inference), so
`keras_model.load_network` reads it and the file carries no optimizer state. The CNN
trains on training images rotated, scaled and shifted anew each epoch (mnistpack.affine).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import numpy as np

from mnistpack import __version__, architectures
from mnistpack.affine import Jitter, jittered_batches
from mnistpack.data import Mnist, load_mnist, resolve_data_dir
from mnistpack.errors import OutputError
from mnistpack.model import import_keras
from mnistpack.outputs import write_files

Log = Callable[[str], None]

PREDICT_BATCH: Final = 2000
MIN_TRAIN_IMAGES: Final = 20  # at least 2 validation images at a 10% split


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "mlp"  # one of architectures.ARCHITECTURES
    hidden: int = 256  # the MLP's hidden layer
    cnn: architectures.CnnSpec = architectures.CNN  # the CNN's layers
    # Upper bound: with the cosine schedule early stopping usually ends at 20-30 epochs, ~1 s each.
    max_epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 1e-3  # Adam, cosine-decayed over max_epochs down to lr_floor of it
    lr_floor: float = 0.01
    # Training-only regularisation: measured +0.2-0.3 points of test accuracy at hidden=256.
    dropout: float = 0.3  # the MLP's
    # Rotation, scale and shift of every training image, drawn anew each epoch; None: off.
    jitter: Jitter | None = None
    validation_fraction: float = 0.1  # the last 10% of the training images
    patience: int = 6  # epochs without a lower validation loss before stopping
    seed: int = 0
    limit: int | None = None  # train on the first N training images only (quick tests)

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.max_epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError(f"hidden, max_epochs, batch_size and patience must be >= 1, got {self}.")
        if self.limit is not None and self.limit < MIN_TRAIN_IMAGES:
            raise ValueError(f"limit must be >= {MIN_TRAIN_IMAGES}, got {self.limit}.")
        if self.arch not in architectures.ARCHITECTURES:
            raise ValueError(
                f"arch must be one of {', '.join(architectures.ARCHITECTURES)}, got {self.arch!r}."
            )

    @classmethod
    def for_arch(cls, arch: str, **options: Any) -> TrainConfig:
        """The defaults measured for `arch` (docs/cnn.md for the CNN's), then `options`."""
        defaults: dict[str, Any] = {}
        if arch == "cnn":
            # The CNN: a higher learning rate, every training image jittered each epoch, and
            # every epoch run (the best one is still kept). Its validation loss is noisy at
            # high learning rates: stopping after 6 epochs without a new low ended 3 of the
            # first 5 candidates early (after 16, 17 and 26 of 30 epochs), before the cosine
            # schedule's low rates (docs/cnn.md).
            epochs = options.get("max_epochs", cls.max_epochs)
            defaults = {"learning_rate": 3e-3, "jitter": Jitter(), "patience": epochs}
        return cls(arch=arch, **{**defaults, **options})


@dataclass(frozen=True)
class TrainReport:
    test_correct: int
    test_total: int
    epochs_run: int
    best_epoch: int  # 1-based, whose weights were restored
    best_val_loss: float
    fit_seconds: float

    @property
    def test_accuracy(self) -> float:
        return self.test_correct / self.test_total


def run_train(
    *,
    data: Path | None,
    out: Path,
    config: TrainConfig,
    log: Log,
    allow_download: bool = True,
) -> TrainReport:
    """Load MNIST, train, evaluate, then save the model and its `<out>.json` note atomically."""
    started = time.perf_counter()
    _check_writable(out)
    mnist = load_mnist(resolve_data_dir(data), allow_download=allow_download)
    model, report = train(mnist, config, log)
    save_model(model, out)
    note = train_note(config, report, out, seconds=time.perf_counter() - started)
    write_json_atomic(sidecar_path(out), note)
    log(f"test accuracy {100 * report.test_accuracy:.2f}% ({report.test_correct}/{report.test_total})")
    log(f"saved {out} ({out.stat().st_size:,} bytes) and {sidecar_path(out)}")
    return report


def train(mnist: Mnist, config: TrainConfig, log: Log) -> tuple[Any, TrainReport]:
    """Fit on MNIST with early stopping; return the Dropout-free model and its measurements."""
    keras = import_keras()
    keras.utils.set_random_seed(config.seed)
    images, labels = mnist.train_images, mnist.train_labels
    if config.limit is not None:
        images, labels = images[: config.limit], labels[: config.limit]
    n_val = max(1, round(len(images) * config.validation_fraction))
    x_train, y_train = images[:-n_val], labels[:-n_val]
    x_val, y_val = images[-n_val:], labels[-n_val:]

    training = _training_model(keras, config, steps_per_epoch=-(-len(x_train) // config.batch_size))
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    log(f"training {_describe(config)} on {len(x_train)} images, validating on {n_val}")
    started = time.perf_counter()
    batches = (
        {"x": x_train, "y": y_train, "batch_size": config.batch_size}
        if config.jitter is None
        else {"x": jittered_batches(keras, x_train, y_train, config.batch_size, config.jitter, config.seed)}
    )
    history = training.fit(
        **batches,
        epochs=config.max_epochs,
        validation_data=(x_val, y_val),
        callbacks=[stopper, _progress_callback(keras, config.max_epochs, log)],
        verbose=0,
    )
    fit_seconds = time.perf_counter() - started
    val_losses = history.history["val_loss"]
    best = int(np.argmin(val_losses))
    log(f"stopped after {len(val_losses)} epochs; kept epoch {best + 1} (val_loss {val_losses[best]:.4f})")

    model = export_model(keras, training, config)
    probabilities = model.predict(mnist.test_images, batch_size=PREDICT_BATCH, verbose=0)
    correct = int(np.count_nonzero(np.argmax(probabilities, axis=1) == mnist.test_labels))
    report = TrainReport(
        test_correct=correct,
        test_total=len(mnist.test_labels),
        epochs_run=len(val_losses),
        best_epoch=best + 1,
        best_val_loss=float(val_losses[best]),
        fit_seconds=fit_seconds,
    )
    return model, report


def export_model(keras: Any, training: Any, config: TrainConfig) -> Any:
    """The trained weights in a fresh, uncompiled model of the same layers without Dropout."""
    model = _network(keras, config, dropout=0.0)
    # Dropout has no weights, so both models list the same weights in the same order
    model.set_weights(training.get_weights())
    return model


def save_model(model: Any, out: Path) -> None:
    """Save atomically: a half-written model never replaces a good one."""
    # Keras insists on the .keras suffix, so the temporary name keeps it.
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")
    try:
        model.save(tmp)
        tmp.replace(out)
    except (OSError, ValueError) as exc:
        raise OutputError(f"Cannot save the model to {out}: {exc}.") from exc
    finally:
        # Also on Ctrl-C: no half-written temporary file is left behind.
        tmp.unlink(missing_ok=True)


def sidecar_path(out: Path) -> Path:
    """Where the measurements of a model go: models/mnist256.keras -> models/mnist256.json."""
    return out.with_suffix(".json")


def train_note(config: TrainConfig, report: TrainReport, out: Path, *, seconds: float) -> dict[str, Any]:
    """What the README quotes about a trained model: its score, how it was made, on what."""
    keras = import_keras()
    model_bytes = out.read_bytes()
    return {
        "model": out.name,
        "model_bytes": len(model_bytes),
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "test_accuracy": round(report.test_accuracy, 6),
        "test_correct": report.test_correct,
        "test_total": report.test_total,
        "epochs_run": report.epochs_run,
        "best_epoch": report.best_epoch,
        "best_val_loss": round(report.best_val_loss, 6),
        "fit_seconds": round(report.fit_seconds, 1),
        "total_seconds": round(seconds, 1),
        "config": asdict(config),
        "versions": {
            "mnistpack": __version__,
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "jax": _version("jax"),
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    write_files(path.parent, {path.name: json.dumps(doc, indent=2, sort_keys=True) + "\n"})


def _check_writable(out: Path) -> None:
    # Fail before a two-minute training, not after it.
    if out.is_dir():
        raise OutputError(f"Output path {out} is a folder; give a file name ending in .keras.")
    if out.suffix != ".keras":
        raise OutputError(f"Output path {out} must end in .keras (the Keras 3 model format).")
    probe = out.with_name(f".{out.stem}.{os.getpid()}.probe")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"Cannot write to {out.parent}: {exc.strerror or exc}.") from exc


def _training_model(keras: Any, config: TrainConfig, *, steps_per_epoch: int) -> Any:
    model = _network(keras, config, dropout=config.dropout)
    architectures.glorot_init(keras, model, config.seed)
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=steps_per_epoch * config.max_epochs, alpha=config.lr_floor
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    return model


def _network(keras: Any, config: TrainConfig, *, dropout: float) -> Any:
    if config.arch == "cnn":
        return architectures.cnn(keras, config.cnn)
    return architectures.mlp(keras, config.hidden, dropout=dropout)


def _describe(config: TrainConfig) -> str:
    if config.arch == "cnn":
        return f"the CNN {config.cnn.describe()}"
    return f"784-{config.hidden}-10"


def _progress_callback(keras: Any, max_epochs: int, log: Log) -> Any:
    started: list[float] = []

    def begin(epoch: int, logs: dict[str, float] | None) -> None:
        started[:] = [time.perf_counter()]

    def end(epoch: int, logs: dict[str, float] | None) -> None:
        values = logs or {}
        log(
            f"epoch {epoch + 1:>2}/{max_epochs}  loss {values.get('loss', float('nan')):.4f}"
            f"  acc {100 * values.get('accuracy', float('nan')):.2f}%"
            f"  val_loss {values.get('val_loss', float('nan')):.4f}"
            f"  val_acc {100 * values.get('val_accuracy', float('nan')):.2f}%"
            f"  {time.perf_counter() - started[0]:.1f}s"
        )

    return keras.callbacks.LambdaCallback(on_epoch_begin=begin, on_epoch_end=end)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
