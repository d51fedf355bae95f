"""`mnistpack compare` end to end on a tiny Keras model and a small IDX test set made here."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from mnistpack.cli import app
from mnistpack.compare import CHART_DPI, CHART_SIZE_INCHES, compare
from mnistpack.constants import PRECISIONS
from mnistpack.data import IMAGE_SIDE, INPUT_SIZE, TEST_IMAGES, TEST_LABELS
from typer.testing import CliRunner

DIGITS = 120
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RESULT_KEYS = {
    "precision",
    "payload_bytes",
    "module_bytes",
    "ratio_to_text_export",
    "python_accuracy",
    "luau_accuracy",
    "agreement_with_float32",
    "max_probability_difference",
}


def write_idx(path: Path, array: np.ndarray) -> None:
    # IDX: two zero bytes, type 0x08 (unsigned byte), the number of dimensions, then each size
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 784-12-10 Keras model (untrained: compare only needs its weights) and a test set of 120
    digit-like images."""
    from mnistpack.model import import_keras

    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(7)
    # lit pixels only in the middle, where MNIST digits are: the packer prunes the border
    images = np.zeros((DIGITS, IMAGE_SIDE, IMAGE_SIDE))
    middle = rng.uniform(0, 255, (DIGITS, 16, 16)) * (rng.uniform(size=(DIGITS, 16, 16)) < 0.4)
    images[:, 6:22, 6:22] = np.rint(middle)
    labels = rng.integers(0, 10, DIGITS)
    write_idx(root / TEST_IMAGES, images.astype(np.uint8))
    write_idx(root / TEST_LABELS, labels)
    keras = import_keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((INPUT_SIZE,)),
            keras.layers.Dense(12, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.save(root / "tiny.keras")
    return root / "tiny.keras", root


def test_compare_scores_every_precision_in_python_and_luau(tiny: tuple[Path, Path]) -> None:
    model, data = tiny
    seen: list[tuple[str, int, int]] = []
    report = compare(model=model, data_dir=data, luau=True, progress=lambda *step: seen.append(step))
    assert [r.precision for r in report.results] == list(PRECISIONS)
    assert report.test_digits == DIGITS
    assert report.text_export_bytes > 0
    for r in report.results:
        # the same dequantized weights in NumPy (float32) and Luau (doubles)
        assert r.max_probability_difference is not None and r.max_probability_difference < 1e-5
        assert r.luau_accuracy == r.python_accuracy
        assert r.agreement_with_float32 is not None and 0.9 <= r.agreement_with_float32 <= 1
        assert r.module_bytes > 0
        assert r.ratio_to_text_export == pytest.approx(r.module_bytes / report.text_export_bytes)
    sizes = [r.payload_bytes for r in report.results]
    assert sizes == sorted(sizes, reverse=True), "float32 > float16 > int8 > int4"
    # progress: 0 then the end of each batch, per precision
    assert (PRECISIONS[0], 0, DIGITS) in seen and (PRECISIONS[-1], DIGITS, DIGITS) in seen


def test_cli_compare_prints_the_table_and_writes_json_and_png(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = tiny
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["compare", "--model", str(model), "--data", str(data), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "| precision | payload bytes | module bytes |" in result.output
    for precision in PRECISIONS:
        assert f"| {precision} |" in result.output
    report = json.loads((out / "compare.json").read_text())
    assert report["luau"] is True and report["test_digits"] == DIGITS
    assert [r["precision"] for r in report["results"]] == list(PRECISIONS)
    assert all(set(r) == RESULT_KEYS for r in report["results"])
    assert all(r["luau_accuracy"] is not None for r in report["results"])
    png = (out / "compare.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk comes first
    assert (width, height) == (
        round(CHART_SIZE_INCHES[0] * CHART_DPI),
        round(CHART_SIZE_INCHES[1] * CHART_DPI),
    )


def test_no_luau_leaves_the_luau_columns_empty(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny
    result = CliRunner().invoke(
        app, ["compare", "--no-luau", "--model", str(model), "--data", str(data), "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "Luau columns skipped (--no-luau)." in result.output
    report = json.loads((tmp_path / "compare.json").read_text())
    for r in report["results"]:
        assert r["luau_accuracy"] is None and r["max_probability_difference"] is None
        assert 0 <= r["python_accuracy"] <= 1


def test_compare_without_a_test_set_says_what_to_do(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = tiny
    result = CliRunner().invoke(
        app, ["compare", "--model", str(model), "--data", str(tmp_path), "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "error: No MNIST test set in" in result.output
    assert not (tmp_path / "compare.json").exists()


def test_compare_covers_a_convolutional_model(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    from mnistpack.architectures import CnnSpec, cnn, glorot_init
    from mnistpack.model import import_keras

    _, data = tiny
    keras = import_keras()
    model = cnn(keras, CnnSpec(channels=(4, 6), hidden=8))
    glorot_init(keras, model, seed=2)
    model.save(tmp_path / "cnn.keras")
    report = compare(model=tmp_path / "cnn.keras", data_dir=data, luau=True)
    assert [r.precision for r in report.results] == list(PRECISIONS)
    for r in report.results:
        assert r.max_probability_difference is not None and r.max_probability_difference < 1e-5
        assert r.luau_accuracy == r.python_accuracy
    sizes = [r.module_bytes for r in report.results]
    assert sizes == sorted(sizes, reverse=True)
