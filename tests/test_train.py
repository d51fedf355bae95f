"""Training: reproducible, early stopping keeps the best epoch, saving is atomic and checked first."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from mnistpack.data import Mnist
from mnistpack.errors import OutputError
from mnistpack.keras_model import load_network
from mnistpack.model import import_keras
from mnistpack.train import (
    TrainConfig,
    run_train,
    save_model,
    sidecar_path,
    train,
    write_json_atomic,
)


def test_same_seed_same_model(tiny_model: Path, tiny_config: TrainConfig, mnist_data: Mnist) -> None:
    model, report = train(mnist_data, tiny_config, log=lambda line: None)
    saved = import_keras().saving.load_model(tiny_model).get_weights()
    fresh = model.get_weights()
    assert len(fresh) == len(saved) == 4
    for ours, theirs in zip(fresh, saved, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert report.epochs_run == tiny_config.max_epochs
    assert report.test_total == 10000 and report.test_accuracy > 0.8


def test_early_stopping_keeps_the_best_epoch(mnist_data: Mnist) -> None:
    # 500 images, a big learning rate and no dropout: validation loss bottoms out within a few epochs.
    config = TrainConfig(
        hidden=64,
        max_epochs=20,
        batch_size=32,
        learning_rate=1e-2,
        dropout=0.0,
        patience=2,
        limit=500,
        player_copies=0,
        warp_copies=0,
    )
    lines: list[str] = []
    model, report = train(mnist_data, config, log=lines.append)
    assert report.epochs_run < config.max_epochs
    assert report.best_epoch == report.epochs_run - config.patience
    assert f"kept epoch {report.best_epoch}" in lines[-1]
    assert sum(line.startswith("epoch ") for line in lines) == report.epochs_run
    x_val, y_val = mnist_data.train_images[450:500], mnist_data.train_labels[450:500]
    probabilities = model.predict(x_val, verbose=0)
    val_loss = -np.mean(np.log(probabilities[np.arange(len(y_val)), y_val]))
    assert val_loss == pytest.approx(report.best_val_loss, abs=1e-4)


class _HalfWritingModel:
    """Stands in for a Keras model whose save dies halfway (disk full, Ctrl-C, ...)."""

    def __init__(self, failure: BaseException) -> None:
        self.failure = failure

    def save(self, path: Path) -> None:
        Path(path).write_bytes(b"half a model")
        raise self.failure


@pytest.mark.parametrize(
    ("failure", "raised", "message"),
    [
        (OSError(28, "No space left on device"), OutputError, "Cannot save the model to .*No space left"),
        (KeyboardInterrupt(), KeyboardInterrupt, None),
    ],
    ids=["disk-full", "ctrl-c"],
)
def test_failed_save_keeps_the_previous_model(
    tmp_path: Path, failure: BaseException, raised: type[BaseException], message: str | None
) -> None:
    out = tmp_path / "m.keras"
    out.write_bytes(b"the good model")
    with pytest.raises(raised, match=message):
        save_model(_HalfWritingModel(failure), out)
    assert out.read_bytes() == b"the good model"
    assert [path.name for path in tmp_path.iterdir()] == ["m.keras"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("folder", "is a folder; give a file name ending in .keras"),
        ("model.h5", "must end in .keras"),
        ("blocker/model.keras", "Cannot write to .*blocker"),
    ],
)
def test_bad_output_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, message: str
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "blocker").write_text("a file where a folder should be")
    # No data anywhere: reaching the data loader would raise DataError instead.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    with pytest.raises(OutputError, match=message):
        run_train(data=None, out=tmp_path / name, config=TrainConfig(), log=print, allow_download=False)


def test_json_note_is_atomic_and_sorted(tmp_path: Path) -> None:
    path = sidecar_path(tmp_path / "mnist256.keras")
    assert path == tmp_path / "mnist256.json"
    write_json_atomic(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert path.read_text().index('"a"') < path.read_text().index('"b"')
    assert [p.name for p in tmp_path.iterdir()] == ["mnist256.json"]


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="limit must be >= 20"):
        TrainConfig(limit=5)
    with pytest.raises(ValueError, match="must be >= 1"):
        replace(TrainConfig(), max_epochs=0)


@pytest.mark.slow
def test_cnn_trains_reproducibly_and_saves_what_the_packer_reads(mnist_data: Mnist, tmp_path: Path) -> None:
    config = TrainConfig.for_arch("cnn", max_epochs=2, batch_size=32, limit=600)
    assert config.jitter is not None and config.learning_rate == 3e-3
    model, report = train(mnist_data, config, log=lambda line: None)
    again, _ = train(mnist_data, config, log=lambda line: None)
    for ours, theirs in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    # 2 short epochs: batch norm's running statistics are still far from settled, but well
    # above chance (0.1) shows the jittered batches taught it digits
    assert report.epochs_run == 2 and report.test_accuracy > 0.25
    path = tmp_path / "cnn.keras"
    save_model(model, path)
    network = load_network(path)
    assert [layer.kind for layer in network.layers][:2] == ["conv2d", "maxpool2d"]
    x = mnist_data.test_images[:200]
    np.testing.assert_allclose(network.predict(x), model.predict(x, verbose=0), rtol=0, atol=1e-5)


def test_config_knows_its_architectures() -> None:
    with pytest.raises(ValueError, match="arch must be one of mlp, cnn"):
        TrainConfig(arch="resnet")
    assert TrainConfig.for_arch("mlp") == TrainConfig()
    assert TrainConfig.for_arch("cnn", learning_rate=1e-2).learning_rate == 1e-2


def test_augmented_training_is_calibrated_and_the_build_ships_the_calibration(
    mnist_data: Mnist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnistpack.build import build
    from mnistpack.compression import decompress
    from mnistpack.container import unpack
    from mnistpack.module_reader import read_module

    config = TrainConfig(
        hidden=16, max_epochs=2, batch_size=32, learning_rate=1e-2, dropout=0.0, limit=300, warp_copies=1
    )
    lines: list[str] = []
    monkeypatch.setattr("mnistpack.train.load_mnist", lambda *args, **kwargs: mnist_data)
    out = tmp_path / "m.keras"
    report = run_train(data=None, out=out, config=config, log=lines.append)
    # 270 training digits, each with 2 player redraws and 1 warp; 30 held out, and their redraws
    assert any("on 1080 images, validating on 60" in line for line in lines)
    assert report.calibration is not None and report.held_out is not None
    assert report.held_out.not_sure <= config.max_not_sure
    note = json.loads(sidecar_path(out).read_text())
    assert note["calibration"] == report.calibration.as_meta()
    assert note["augmentation"]["player_copies"] == 2

    build(model=out, precision="int8", out_dir=tmp_path / "build", compression="zstd", data_dir=None)
    meta = unpack(decompress(*reversed(read_module(tmp_path / "build" / "MnistWeights.luau")))).meta
    shipped = meta["calibration"]
    assert shipped["temperature"] == pytest.approx(report.calibration.temperature, rel=1e-6)
    assert shipped["sure_threshold"] == pytest.approx(report.calibration.sure_threshold, rel=1e-6)
