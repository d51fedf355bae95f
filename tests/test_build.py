"""The build pipeline as a library: pruning, metadata, determinism, atomic outputs, layouts."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from mnistpack import assets
from mnistpack import build as build_module
from mnistpack.build import (
    ACCURACY_SKIPPED,
    build,
    dequantize_network,
    quantize_network,
    shipped_model,
    summary,
    text_export,
)
from mnistpack.compression import decompress
from mnistpack.container import Container, unpack
from mnistpack.data import PixelCounts
from mnistpack.errors import ModelError, OptionError, OutputError
from mnistpack.model import Network, dense_stack_from_arrays
from mnistpack.module_reader import read_module
from mnistpack.quantize import dequantize

from tests.random_model import random_arrays as make_random_arrays
from tests.random_model import save_random_model

HIDDEN = 100


def random_arrays(seed: int = 3) -> list[tuple[np.ndarray, np.ndarray, str]]:
    return make_random_arrays(HIDDEN, seed)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 784-100-10 Keras model file (100 hidden: big enough for float32 to split)."""
    return save_random_model(tmp_path_factory.mktemp("model") / "random100.keras", HIDDEN)


@pytest.fixture
def no_test_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No --data, no MNISTPACK_DATA and an empty Keras cache: accuracy must be skipped."""
    monkeypatch.delenv("MNISTPACK_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))


def decode(path: Path) -> Container:
    compression, blob = read_module(path)
    return unpack(decompress(blob, compression))


def stack() -> Network:
    return dense_stack_from_arrays(random_arrays(), source_sha256="cd" * 32)


def counts_lighting(lit: list[int], images: int = 1000) -> PixelCounts:
    """Pixel counts where pixel i is lit in lit[i] images (the rest: in every image)."""
    counts = np.full(784, images, np.int64)
    counts[: len(lit)] = lit
    return PixelCounts(lit=counts, images=images)


# --- quantize_network --------------------------------------------------------------------


def test_pruning_zeroes_exactly_the_rarely_lit_inputs_of_the_first_layer() -> None:
    # threshold 0.01 of 1000 images: pixels lit in fewer than 10 images go
    counts = counts_lighting([0, 9, 10, 11, 1000, 3])
    container = quantize_network(stack(), "float32", prune_threshold=0.01, pixel_counts=counts)
    first = dequantize(container.tensors[0])
    original = stack().layers[0].weight
    assert not first[:, [0, 1, 5]].any()
    assert np.array_equal(first[:, [2, 3, 4]], original[:, [2, 3, 4]])
    assert np.array_equal(first[:, 6:], original[:, 6:])
    assert np.array_equal(
        dequantize(container.tensors[2]), stack().layers[1].weight
    )  # later layers untouched
    assert container.meta["pruning"] == {"threshold": 0.01, "inputs_zeroed": 3}
    assert (
        quantize_network(stack(), "int8", prune_threshold=0.0, pixel_counts=counts).meta["pruning"][
            "inputs_zeroed"
        ]
        == 0
    )


def test_quantize_stack_names_meta_and_bias_precision() -> None:
    container = quantize_network(stack(), "int4", prune_threshold=0.001, pixel_counts=counts_lighting([]))
    assert [(t.name, t.precision, t.shape) for t in container.tensors] == [
        ("dense1.weight", "int4", (HIDDEN, 784)),
        ("dense1.bias", "float32", (HIDDEN,)),
        ("dense2.weight", "int4", (10, HIDDEN)),
        ("dense2.bias", "float32", (10,)),
    ]
    assert [(layer.activation, layer.weight, layer.bias) for layer in container.layers] == [
        ("relu", "dense1.weight", "dense1.bias"),
        ("softmax", "dense2.weight", "dense2.bias"),
    ]
    meta = container.meta
    assert meta["input"] == {"shape": [28, 28], "layout": "row-major", "range": [0.0, 1.0]}
    assert meta["labels"] == [str(i) for i in range(10)]
    assert (meta["precision"], meta["source_sha256"]) == ("int4", "cd" * 32)
    assert "accuracy" not in meta


def test_int8_uses_one_scale_per_tensor() -> None:
    container = quantize_network(stack(), "int8", prune_threshold=0.0, pixel_counts=counts_lighting([]))
    assert [len(t.scales) for t in container.tensors] == [1, 0, 1, 0]


def test_dequantize_stack_is_what_the_decoders_rebuild() -> None:
    container = quantize_network(stack(), "int4", prune_threshold=0.0, pixel_counts=counts_lighting([]))
    rebuilt = dequantize_network(container)
    for layer, weight in zip(rebuilt.layers, (container.tensors[0], container.tensors[2]), strict=True):
        assert np.array_equal(layer.weight, dequantize(weight))
    assert [layer.activation for layer in rebuilt.layers] == ["relu", "softmax"]


# --- text export -------------------------------------------------------------------------


def test_text_export_is_the_reference_projects_layout() -> None:
    arrays = random_arrays()
    arrays[1] = (
        arrays[1][0],
        np.array([0.25, -1.5, 0.00004, -0.00004, 2, 0, 0, 0, 0, 12.3456], np.float32),
        "softmax",
    )
    text = text_export(dense_stack_from_arrays(arrays))
    modules = text.split("return ")[1:]
    assert len(modules) == 4
    assert modules[3] == "{0.2500,-1.5000,0.0000,-0.0000,2.0000,0.0000,0.0000,0.0000,0.0000,12.3456}\n"
    rows = modules[0].removeprefix("{\n").removesuffix("\n}\n").split("},\n{")
    assert len(rows) == HIDDEN
    lines = rows[0].strip("{}").split(",\n")
    assert [len(line.split(",")) for line in lines] == [100] * 7 + [84]
    assert lines[0].split(",")[0] == f"{arrays[0][0][0, 0]:.4f}"


def test_text_export_size_matches_the_reference_project() -> None:
    rng = np.random.default_rng(0)
    arrays = [
        (
            rng.normal(0, 0.04, (256, 784)).astype(np.float32),
            rng.normal(0, 0.04, 256).astype(np.float32),
            "relu",
        ),
        (
            rng.normal(0, 0.2, (10, 256)).astype(np.float32),
            rng.normal(0, 0.05, 10).astype(np.float32),
            "softmax",
        ),
    ]
    # the TinyMNIST float32 export of its 784-256-10 network is about 1,530,000 bytes
    assert 1_450_000 < len(text_export(dense_stack_from_arrays(arrays)).encode()) < 1_600_000


# --- build ----------------------------------------------------------------------------------


def test_build_without_test_data(random_model: Path, tmp_path: Path, no_test_data: None) -> None:
    lines: list[str] = []
    report = build(
        model=random_model,
        precision="int8",
        out_dir=tmp_path,
        compression="zstd",
        data_dir=None,
        progress=lines.append,
    )
    assert report.files == (tmp_path / "MnistWeights.luau",)
    assert report.accuracy is None and report.source_accuracy is None
    assert ACCURACY_SKIPPED in summary(report)
    assert report.module_bytes == (tmp_path / "MnistWeights.luau").stat().st_size
    assert report.payload_bytes == HIDDEN * 784 + HIDDEN * 4 + 10 * HIDDEN + 40
    assert report.ratio == pytest.approx(report.text_export_bytes / report.module_bytes)
    assert (
        any(line.startswith("loading ") for line in lines)
        and f"wrote {tmp_path / 'MnistWeights.luau'}" in lines
    )
    container = decode(tmp_path / "MnistWeights.luau")
    assert "accuracy" not in container.meta
    assert container.meta["pruning"]["inputs_zeroed"] == report.inputs_zeroed > 0


def test_build_measures_accuracy_with_test_data(random_model: Path, tmp_path: Path, mnist_dir: Path) -> None:
    report = build(
        model=random_model, precision="int4", out_dir=tmp_path, compression="none", data_dir=mnist_dir
    )
    container = decode(tmp_path / "MnistWeights.luau")
    assert container.meta["accuracy"]["total"] == 10_000
    assert report.accuracy == container.meta["accuracy"]["correct"] / 10_000
    assert report.source_accuracy is not None
    assert f"accuracy: {report.accuracy:.2%} on the MNIST test set" in summary(report)[4]


def test_two_builds_are_byte_identical(random_model: Path, tmp_path: Path, no_test_data: None) -> None:
    for out in ("a", "b"):
        build(
            model=random_model, precision="float32", out_dir=tmp_path / out, compression="zstd", data_dir=None
        )
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in sorted((tmp_path / "a").rglob("*.luau"))}
    second = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in sorted((tmp_path / "b").rglob("*.luau"))}
    assert first == second and len(first) >= 2


def test_a_failed_write_leaves_the_previous_outputs_intact(
    random_model: Path, tmp_path: Path, no_test_data: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "MnistWeights.luau"
    target.write_text("-- the previous build\n")

    def disk_full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)  # after the temporary file has its text, before rename
    with pytest.raises(OutputError, match="No space left on device"):
        build(model=random_model, precision="int8", out_dir=tmp_path, compression="zstd", data_dir=None)
    assert target.read_text() == "-- the previous build\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MnistWeights.luau"]


def test_switching_layouts_removes_the_other_layout(
    random_model: Path, tmp_path: Path, no_test_data: None
) -> None:
    split = build(
        model=random_model, precision="float32", out_dir=tmp_path, compression="zstd", data_dir=None
    )
    assert {p.name for p in split.files} == {"init.luau", "Part1.luau", "Part2.luau"}
    (tmp_path / "notes.txt").write_text("not ours")
    (tmp_path / "MnistWeights" / "Keep.luau").write_text("not ours either")
    single = build(model=random_model, precision="int8", out_dir=tmp_path, compression="zstd", data_dir=None)
    assert single.files == (tmp_path / "MnistWeights.luau",)
    assert sorted(p.name for p in (tmp_path / "MnistWeights").iterdir()) == ["Keep.luau"]
    (tmp_path / "MnistWeights" / "Keep.luau").unlink()
    build(model=random_model, precision="float32", out_dir=tmp_path, compression="zstd", data_dir=None)
    assert not (tmp_path / "MnistWeights.luau").exists() and (tmp_path / "notes.txt").exists()


def test_output_folder_that_cannot_be_created(random_model: Path, tmp_path: Path, no_test_data: None) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(OutputError, match="cannot write to the output folder .*file/out"):
        build(
            model=random_model,
            precision="int8",
            out_dir=tmp_path / "file" / "out",
            compression="zstd",
            data_dir=None,
        )


def test_options_are_checked_before_any_work(tmp_path: Path) -> None:
    missing = tmp_path / "missing.keras"
    with pytest.raises(
        OptionError, match="unknown precision 'int3': choose one of float32, float16, int8, int4"
    ):
        build(model=missing, precision="int3", out_dir=tmp_path, compression="zstd", data_dir=None)
    with pytest.raises(OptionError, match="unknown compression 'gzip': choose one of zstd, none"):
        build(model=missing, precision="int8", out_dir=tmp_path, compression="gzip", data_dir=None)
    with pytest.raises(ModelError, match="does not exist"):
        build(model=missing, precision="int8", out_dir=tmp_path, compression="zstd", data_dir=None)


def test_the_shipped_default_is_the_cnn_and_the_mlp_ships_beside_it() -> None:
    # the CNN reads player drawings best (docs/cnn.md); the MLP stays as the alternative
    assert shipped_model() == assets.models_dir() / "mnist-cnn.keras"
    assert (assets.models_dir() / assets.MLP_MODEL_NAME).is_file()


def test_missing_shipped_model_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets, "SHIPPED_MODEL_NAME", "no-such-model.keras")
    with pytest.raises(ModelError, match="no --model given .* pass --model PATH"):
        build(model=None, precision="int8", out_dir=tmp_path, compression="zstd", data_dir=None)


def test_a_model_too_large_for_a_module_is_refused_before_packing(
    random_model: Path, tmp_path: Path, no_test_data: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FORMAT.md section 6 bounds the values of a container; build says so before packing
    # (the limit is lowered here so that a small model stands for a huge one)
    monkeypatch.setattr(build_module, "MAX_DECODED_VALUES", 1000)
    with pytest.raises(
        ModelError, match=r"holds [\d,]+ weights and biases; a weights module holds at most 1,000"
    ):
        build(model=random_model, precision="int8", out_dir=tmp_path, compression="zstd", data_dir=None)
    assert list(tmp_path.iterdir()) == []


def test_build_ships_the_calibration_of_the_models_note(
    random_model: Path, tmp_path: Path, no_test_data: None
) -> None:
    model = tmp_path / "m.keras"
    model.write_bytes(random_model.read_bytes())
    note = model.with_suffix(".json")
    note.write_text(json.dumps({"calibration": {"temperature": 1.75, "sure_threshold": 0.9}}))
    build(model=model, precision="int8", out_dir=tmp_path / "out", compression="zstd", data_dir=None)
    container = decode(tmp_path / "out" / "MnistWeights.luau")
    # header floats are float32 (FORMAT.md section 3)
    assert container.meta["calibration"] == {"temperature": 1.75, "sure_threshold": float(np.float32(0.9))}
    assert dequantize_network(container).temperature == 1.75


@pytest.mark.parametrize(
    "entry",
    [{"temperature": -1, "sure_threshold": 0.9}, {"temperature": 2.0}, "hot"],
    ids=["negative", "missing", "not-a-map"],
)
def test_a_broken_calibration_note_is_a_sentence(random_model: Path, tmp_path: Path, entry: object) -> None:
    model = tmp_path / "m.keras"
    model.write_bytes(random_model.read_bytes())
    model.with_suffix(".json").write_text(json.dumps({"calibration": entry}))
    with pytest.raises(ModelError, match=r"m.json holds no usable calibration"):
        build(model=model, precision="int8", out_dir=tmp_path / "out", compression="zstd", data_dir=None)
