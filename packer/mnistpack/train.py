"""Train a network (mnistpack.architectures: the 784-hidden-10 MLP or the small CNN) with Keras
and save it, with a JSON note of what was measured.

The MLP trains with Dropout after the hidden layer; the saved model is the same weights
in a fresh model without it (Dropout is the identity at inference), so
`keras_model.load_network` reads it and the file carries no optimizer state. The CNN
also sees every training image rotated, scaled and shifted anew each epoch
(mnistpack.affine).

The training images are MNIST's own plus copies redrawn in players' styles
(mnistpack.augment); after training, the network is calibrated on held-out digits
(mnistpack.calibrate) and the note records the calibration, which `mnistpack build` ships.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import numpy as np

from mnistpack import __version__, architectures, signals
from mnistpack.affine import Jitter, jittered_batches
from mnistpack.augment import AugmentConfig, augmented, player_redraws
from mnistpack.calibrate import Calibration, Operating, calibrate
from mnistpack.constants import MAX_DECODED_VALUES
from mnistpack.data import INPUT_SIZE, NUM_CLASSES, Mnist, load_mnist, resolve_data_dir
from mnistpack.errors import OutputError
from mnistpack.model import import_keras
from mnistpack.outputs import write_files

Log = Callable[[str], None]

PREDICT_BATCH: Final = 2000
MIN_TRAIN_IMAGES: Final = 20  # at least 2 validation images at a 10% split
MAX_SEED: Final = 2**32 - 1  # what Keras and NumPy take
# The widest hidden layer whose network a container may hold (FORMAT.md section 6):
# hidden * (784 inputs + 1 bias + 10 outputs) + 10 values, so `build` packs every model
# `train` makes.
MAX_HIDDEN: Final = (MAX_DECODED_VALUES - NUM_CLASSES) // (INPUT_SIZE + 1 + NUM_CLASSES)


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
    # Copies of each training digit (mnistpack.augment): redrawn as a player would draw it,
    # and warped as an image. Measured on the player-drawn benchmark: see README.
    player_copies: int = 2
    warp_copies: int = 1
    # The "not sure" rule is chosen on held-out player redraws (mnistpack.calibrate): at most
    # this share of sure answers wrong (half the 1% the player-drawn target allows), unless
    # that would make "not sure" fire on more than this share of the redraws (the target's
    # 10%; the held-out redraws come in training's wider range of styles, so on the benchmark
    # it fires less).
    max_wrong_among_sure: float = 0.005
    max_not_sure: float = 0.10

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.max_epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError(f"hidden, max_epochs, batch_size and patience must be >= 1, got {self}.")
        if self.limit is not None and self.limit < MIN_TRAIN_IMAGES:
            raise ValueError(f"limit must be >= {MIN_TRAIN_IMAGES}, got {self.limit}.")
        if self.hidden > MAX_HIDDEN:
            raise ValueError(f"hidden must be at most {MAX_HIDDEN}, got {self.hidden}.")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be from 0 to {MAX_SEED}, got {self.seed}.")
        if self.player_copies < 0 or self.warp_copies < 0:
            raise ValueError(f"player_copies and warp_copies must be >= 0, got {self}.")
        if not (0 < self.max_wrong_among_sure < 1 and 0 < self.max_not_sure < 1):
            raise ValueError(f"max_wrong_among_sure and max_not_sure must be in (0, 1), got {self}.")
        if self.arch not in architectures.ARCHITECTURES:
            known = ", ".join(architectures.ARCHITECTURES)
            raise ValueError(f"arch must be one of {known}, got {self.arch!r}.")

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
    calibration: Calibration | None = None  # None without held-out player redraws
    held_out: Operating | None = None  # what the calibration does on those redraws

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
    cache: Path | None = None,
) -> TrainReport:
    """Load MNIST, train, evaluate, then save the model and its `<out>.json` note atomically."""
    started = time.perf_counter()
    _check_writable(out)
    mnist = load_mnist(resolve_data_dir(data), allow_download=allow_download)
    model, report = train(mnist, config, log, cache=cache)
    model_bytes = model_file_bytes(model, out)
    note = train_note(config, report, out, model_bytes, seconds=time.perf_counter() - started)
    # the model and its note are one set: both replaced, or neither
    write_files(out.parent, {out.name: model_bytes, sidecar_path(out).name: _json_text(note)})
    log(f"test accuracy {100 * report.test_accuracy:.2f}% ({report.test_correct}/{report.test_total})")
    log(f"saved {out} ({len(model_bytes):,} bytes) and {sidecar_path(out)}")
    return report


def train(mnist: Mnist, config: TrainConfig, log: Log, cache: Path | None = None) -> tuple[Any, TrainReport]:
    """Fit on MNIST (and its augmented copies) with early stopping; calibrate on held-out
    player redraws; return the Dropout-free model and its measurements. `cache` is a folder
    where the augmented copies are kept between runs (None: computed afresh)."""
    keras = import_keras()
    keras.utils.set_random_seed(config.seed)
    images, labels = mnist.train_images, mnist.train_labels
    if config.limit is not None:
        images, labels = images[: config.limit], labels[: config.limit]
    n_val = max(1, round(len(images) * config.validation_fraction))
    x_train, y_train = images[:-n_val], labels[:-n_val]
    x_val, y_val = images[-n_val:], labels[-n_val:]
    augment = _augment_config(config)
    x_train, y_train = augmented(x_train, y_train, augment, log, cache)
    # held out as players would draw them too: early stopping and the calibration see both
    x_player = (
        player_redraws(x_val, replace(augment, seed=augment.seed + 1)) if config.player_copies else None
    )
    if x_player is not None:
        x_val, y_val = np.concatenate([x_val, x_player]), np.concatenate([y_val, y_val])

    training = _training_model(keras, config, steps_per_epoch=-(-len(x_train) // config.batch_size))
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    log(f"training {_describe(config)} on {len(x_train)} images, validating on {len(x_val)}")
    started = time.perf_counter()
    batches = (
        {"x": x_train, "y": y_train, "batch_size": config.batch_size}
        if config.jitter is None
        else {"x": jittered_batches(keras, x_train, y_train, config.batch_size, config.jitter, config.seed)}
    )
    # Ctrl-C and SIGTERM stop training at the end of a batch, never inside JAX (which may
    # swallow a KeyboardInterrupt or crash on it); then they are raised, and nothing is saved.
    with signals.deferred(escalate=True) as pending:
        history = training.fit(
            **batches,
            epochs=config.max_epochs,
            validation_data=(x_val, y_val),
            callbacks=[
                stopper,
                _progress_callback(keras, config.max_epochs, log),
                _stop_callback(keras, pending),
            ],
            verbose=0,
        )
        pending.check()
        fit_seconds = time.perf_counter() - started
        val_losses = history.history["val_loss"]
        best = int(np.argmin(val_losses))
        log(
            f"stopped after {len(val_losses)} epochs; kept epoch {best + 1} (val_loss {val_losses[best]:.4f})"
        )

        model = export_model(keras, training, config)
        calibration = held_out = None
        if x_player is not None:
            player = slice(len(x_val) - len(x_player), len(x_val))
            probabilities = model.predict(x_val, batch_size=PREDICT_BATCH, verbose=0)
            calibration, held_out = calibrate(
                probabilities[player],
                y_val[player],
                max_wrong_among_sure=config.max_wrong_among_sure,
                max_not_sure=config.max_not_sure,
            )
            log(
                f"calibrated: temperature {calibration.temperature:.3f},"
                f" sure from {calibration.sure_threshold:.3f}"
                f" (held-out player redraws: not sure {held_out.not_sure:.1%},"
                f" wrong among sure {held_out.wrong_among_sure:.2%})"
            )
        probabilities = model.predict(mnist.test_images, batch_size=PREDICT_BATCH, verbose=0)
        pending.check()
    correct = int(np.count_nonzero(np.argmax(probabilities, axis=1) == mnist.test_labels))
    report = TrainReport(
        test_correct=correct,
        test_total=len(mnist.test_labels),
        epochs_run=len(val_losses),
        best_epoch=best + 1,
        best_val_loss=float(val_losses[best]),
        fit_seconds=fit_seconds,
        calibration=calibration,
        held_out=held_out,
    )
    return model, report


def _augment_config(config: TrainConfig) -> AugmentConfig:
    return AugmentConfig(player_copies=config.player_copies, warp_copies=config.warp_copies, seed=config.seed)


def export_model(keras: Any, training: Any, config: TrainConfig) -> Any:
    """The trained weights in a fresh, uncompiled model of the same layers without Dropout."""
    model = _network(keras, config, dropout=0.0)
    # Dropout has no weights, so both models list the same weights in the same order
    model.set_weights(training.get_weights())
    return model


def save_model(model: Any, out: Path) -> None:
    """Save atomically: a half-written model never replaces a good one."""
    write_files(out.parent, {out.name: model_file_bytes(model, out)})


def model_file_bytes(model: Any, out: Path) -> bytes:
    """The `.keras` file of `model`, saved in a temporary folder (removed on every way out,
    Ctrl-C included) and read back; `out` names the file in errors."""
    with tempfile.TemporaryDirectory(prefix="mnistpack-model-") as folder:
        # Keras insists on the .keras suffix
        path = Path(folder) / f"model{out.suffix}"
        try:
            model.save(path)
            return path.read_bytes()
        except (OSError, ValueError) as exc:
            raise OutputError(f"Cannot save the model to {out}: {exc}.") from exc


def sidecar_path(out: Path) -> Path:
    """Where the measurements of a model go: models/mnist256.keras -> models/mnist256.json."""
    return out.with_suffix(".json")


def train_note(
    config: TrainConfig, report: TrainReport, out: Path, model_bytes: bytes, *, seconds: float
) -> dict[str, Any]:
    """What the README quotes about a trained model: its score, how it was made, on what."""
    keras = import_keras()
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
        "calibration": None if report.calibration is None else report.calibration.as_meta(),
        "held_out_player_redraws": None if report.held_out is None else asdict(report.held_out),
        "augmentation": asdict(_augment_config(config)),
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
    write_files(path.parent, {path.name: _json_text(doc)})


def _json_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


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


def _stop_callback(keras: Any, pending: signals.Deferred) -> Any:
    """Ends `fit` after the batch during which Ctrl-C or SIGTERM came."""

    class StopOnSignal(keras.callbacks.Callback):  # type: ignore[misc]
        def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
            if pending.pending:
                self.model.stop_training = True

    return StopOnSignal()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
