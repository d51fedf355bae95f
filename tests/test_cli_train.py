"""The `mnistpack` CLI: train end to end, its wiring, and user mistakes as one line + exit code."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mnistpack import __version__, train
from mnistpack.cli import EXIT_ERROR, EXIT_INTERRUPTED, app
from mnistpack.data import TEST_IMAGES, pixel_counts_from_json
from mnistpack.keras_model import load_network
from typer.testing import CliRunner

from tests.test_data import write_idx_dir

runner = CliRunner()


def assert_one_error_line(result: Any, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_train_end_to_end(mnist_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "small.keras"
    args = ["train", "--arch", "mlp", "--data", str(mnist_dir), "--limit", "1000", "--epochs", "2"]
    result = runner.invoke(app, [*args, "--hidden", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    # 900 digits and 3 augmented copies of each; 100 held out, and a player redraw of each
    assert "training 784-8-10 on 3600 images, validating on 200" in result.stdout
    assert "calibrated: temperature" in result.stdout
    assert "epoch  1/2" in result.stdout and "epoch  2/2" in result.stdout
    assert "test accuracy" in result.stdout and f"saved {out}" in result.stdout
    # Trained with Dropout, saved without: the file is a plain Dense stack.
    stack = load_network(out)
    assert [layer.weight.shape for layer in stack.layers] == [(8, 784), (10, 8)]
    note = json.loads(out.with_suffix(".json").read_text())
    assert note["model_sha256"] == stack.source_sha256
    assert note["test_total"] == 10000 and 0 < note["test_accuracy"] <= 1
    assert note["epochs_run"] == 2 and note["config"]["hidden"] == 8 and note["config"]["limit"] == 1000
    assert note["versions"]["keras"].startswith("3.") and note["versions"]["mnistpack"] == __version__
    assert sorted(path.name for path in out.parent.iterdir()) == ["small.json", "small.keras"]


def test_train_options_reach_the_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(train, "run_train", lambda **kwargs: seen.update(kwargs))
    result = runner.invoke(app, ["train", "--arch", "mlp", "--hidden", "64", "--epochs", "7", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert seen["out"] == Path("models/mnist64.keras")
    assert seen["data"] is None and seen["cache"] is None
    config = seen["config"]
    assert (config.hidden, config.max_epochs, config.seed, config.limit) == (64, 7, 3, None)
    assert (config.player_copies, config.warp_copies) == (2, 1)
    args = ["train", "--player-copies", "0", "--warp-copies", "3", "--cache", "cache"]
    assert runner.invoke(app, args).exit_code == 0
    assert (seen["config"].player_copies, seen["config"].warp_copies, seen["cache"]) == (0, 3, Path("cache"))


@pytest.mark.parametrize("arch", [[], ["--arch", "cnn"]])
def test_train_trains_the_shipped_cnn_by_default(monkeypatch: pytest.MonkeyPatch, arch: list[str]) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(train, "run_train", lambda **kwargs: seen.update(kwargs))
    result = runner.invoke(app, ["train", *arch, "--epochs", "5"])
    assert result.exit_code == 0, result.output
    assert seen["out"] == Path("models/mnist-cnn.keras")
    config = seen["config"]
    # the shipped CNN's recipe: jittered, redrawn as players draw (which calibration needs)
    assert config == train.TrainConfig.for_arch("cnn", max_epochs=5)
    assert (config.arch, config.jitter is not None, config.player_copies, config.warp_copies) == (
        "cnn",
        True,
        2,
        1,
    )


def test_unknown_arch_is_one_line() -> None:
    assert_one_error_line(runner.invoke(app, ["train", "--arch", "vit"]), EXIT_ERROR, "unknown --arch 'vit'")


def test_missing_data_folder_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "m.keras")]
    )
    assert_one_error_line(result, EXIT_ERROR, "MNIST data folder", "does not exist")


def test_damaged_data_names_the_file(tmp_path: Path) -> None:
    write_idx_dir(tmp_path / "data", gz=True)
    damaged = tmp_path / "data" / f"{TEST_IMAGES}.gz"
    damaged.write_bytes(gzip.compress(gzip.decompress(damaged.read_bytes())[:-5]))
    result = runner.invoke(
        app, ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "m.keras")]
    )
    assert_one_error_line(result, EXIT_ERROR, str(damaged), "truncated")


def test_output_folder_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--out", str(tmp_path)])
    assert_one_error_line(result, EXIT_ERROR, "is a folder")


def test_ctrl_c_is_one_line_and_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(**_: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run_train", interrupted)
    result = runner.invoke(app, ["train"])
    assert result.exit_code == EXIT_INTERRUPTED
    assert result.stderr.strip() == "interrupted"


def test_usage_errors_exit_2_without_traceback() -> None:
    result = runner.invoke(app, ["train", "--epochs", "0"])
    assert result.exit_code == 2
    assert "--epochs" in result.output and "Traceback" not in result.output


def test_help_and_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"mnistpack {__version__}"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "train" in result.stdout and "pixel-counts" not in result.stdout
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0 and "Early stopping" in result.stdout and "--limit" not in result.stdout


def test_pixel_counts_command(tmp_path: Path) -> None:
    write_idx_dir(tmp_path / "data", gz=False, n_train=25)
    out = tmp_path / "counts.json"
    result = runner.invoke(app, ["pixel-counts", "--data", str(tmp_path / "data"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    counts = pixel_counts_from_json(out.read_text(), str(out))
    assert counts.images == 25 and counts.lit.max() <= 25


def test_entry_point_starts_without_keras() -> None:
    # Keras and JAX take seconds to import: `mnistpack --help` and --version must not pay that.
    code = (
        "import sys\n"
        "from mnistpack.cli import main\n"
        "sys.argv = ['mnistpack', '--version']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    print(exit.code, 'keras' in sys.modules, 'jax' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["mnistpack", __version__, "0", "False", "False"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "status", "said"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_during_training_stops_it_and_saves_nothing(
    mnist_dir: Path, tmp_path: Path, signum: int, status: int, said: str
) -> None:
    out = tmp_path / "m.keras"
    out.write_bytes(b"the previous model")
    args = ["train", "--arch", "mlp", "--data", str(mnist_dir), "--hidden", "8", "--epochs", "500"]
    args += ["--limit", "3000"]
    process = subprocess.Popen(
        [sys.executable, "-m", "mnistpack", *args, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("epoch  1/"):
            break
    process.send_signal(signum)  # early stopping needs 6 more epochs at least: training is on
    _, err = process.communicate(timeout=120)
    assert process.returncode == status, err
    assert err.strip().splitlines() == [said], err
    assert out.read_bytes() == b"the previous model"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["m.keras"]
