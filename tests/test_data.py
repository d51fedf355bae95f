"""MNIST loaders: IDX (gzip and raw), npz, Keras cache, every DataError, and the real files."""

from __future__ import annotations

import gzip
import struct
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mnistpack import data
from mnistpack.data import (
    NPZ_NAME,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    Mnist,
    PixelCounts,
    bundled_pixel_counts,
    load_mnist,
    load_test_set,
    parse_idx,
    pixel_counts_from_json,
    pixel_counts_to_json,
    pixel_lit_counts,
    resolve_data_dir,
)
from mnistpack.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes((0, 0, 0x08, array.ndim)) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def write_idx_dir(folder: Path, *, gz: bool, n_train: int = 30, n_test: int = 12) -> dict[str, np.ndarray]:
    """Four small IDX files; returns the arrays written, keyed like a Keras npz."""
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train = synthetic(n_train, 1)
    x_test, y_test = synthetic(n_test, 2)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    names = {"x_train": TRAIN_IMAGES, "y_train": TRAIN_LABELS, "x_test": TEST_IMAGES, "y_test": TEST_LABELS}
    for key, stem in names.items():
        raw = idx_bytes(arrays[key])
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return arrays


def assert_matches(mnist: Mnist, arrays: dict[str, np.ndarray]) -> None:
    for split in ("train", "test"):
        images = getattr(mnist, f"{split}_images")
        labels = getattr(mnist, f"{split}_labels")
        x = arrays[f"x_{split}"]
        assert images.dtype == np.float32 and images.shape == (len(x), 784)
        assert labels.dtype == np.uint8
        # Row-major: pixel (row 3, column 5) of image 2 is column 3 * 28 + 5.
        assert images[2, 3 * 28 + 5] == np.float32(x[2, 3, 5]) / np.float32(255)
        np.testing.assert_array_equal(images, x.reshape(len(x), 784) / np.float32(255))
        np.testing.assert_array_equal(labels, arrays[f"y_{split}"])


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_loads_idx_files(tmp_path: Path, gz: bool) -> None:
    arrays = write_idx_dir(tmp_path, gz=gz)
    assert_matches(load_mnist(tmp_path, allow_download=False), arrays)


def test_loads_dotted_idx_names(tmp_path: Path) -> None:
    arrays = write_idx_dir(tmp_path, gz=True)
    for path in tmp_path.iterdir():
        path.rename(path.with_name(path.name.replace("-idx", ".idx")))
    assert_matches(load_mnist(tmp_path, allow_download=False), arrays)


def test_loads_npz_folder_and_file(tmp_path: Path) -> None:
    arrays = write_idx_dir(tmp_path / "unused", gz=True)
    np.savez(tmp_path / NPZ_NAME, **arrays)
    assert_matches(load_mnist(tmp_path, allow_download=False), arrays)
    assert_matches(load_mnist(tmp_path / NPZ_NAME, allow_download=False), arrays)


def test_keras_cache_is_used_without_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_idx_dir(tmp_path / "idx", gz=True)
    (tmp_path / "kh" / "datasets").mkdir(parents=True)
    np.savez(tmp_path / "kh" / "datasets" / NPZ_NAME, **arrays)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert_matches(load_mnist(None, allow_download=False), arrays)
    test_set = load_test_set(None)
    assert test_set is not None
    np.testing.assert_array_equal(test_set[1], arrays["y_test"])


def test_no_data_and_no_download_is_a_fast_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(DataError, match="No MNIST data found.*--data"):
        load_mnist(None, allow_download=False)
    assert load_test_set(None) is None


def test_failed_download_names_the_way_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    keras = pytest.importorskip("keras")

    def unreachable(**_: Any) -> None:
        raise Exception("URL fetch failure on https://example/mnist.npz: None -- [Errno -2] Name unknown")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", unreachable)
    with pytest.raises(DataError, match=r"Could not download MNIST.*Errno -2.*MNISTPACK_DATA"):
        load_mnist(None, allow_download=True)


def test_load_test_set_needs_only_the_test_files(tmp_path: Path) -> None:
    arrays = write_idx_dir(tmp_path, gz=False)
    (tmp_path / TRAIN_IMAGES).unlink()
    (tmp_path / TRAIN_LABELS).unlink()
    test_set = load_test_set(tmp_path)
    assert test_set is not None
    images, labels = test_set
    np.testing.assert_array_equal(images, arrays["x_test"].reshape(-1, 784) / np.float32(255))
    np.testing.assert_array_equal(labels, arrays["y_test"])


def test_load_test_set_explicit_folder_without_data_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"No MNIST test set in .*{TEST_IMAGES}"):
        load_test_set(tmp_path)


def test_resolve_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MNISTPACK_DATA", str(tmp_path))
    assert resolve_data_dir(Path("given")) == Path("given")
    assert resolve_data_dir(None) == tmp_path
    monkeypatch.setenv("MNISTPACK_DATA", "  ")
    assert resolve_data_dir(None) is None
    monkeypatch.delenv("MNISTPACK_DATA")
    assert resolve_data_dir(None) is None


def test_parse_idx_reads_big_endian_dims() -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(idx_bytes(array), 3, "x"), array)


def _damage(folder: Path, stem: str, edit: Any) -> Path:
    path = folder / f"{stem}.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(edit(raw)))
    return path


@pytest.mark.parametrize(
    ("stem", "edit", "message"),
    [
        (TRAIN_IMAGES, lambda raw: raw[:-100], "is truncated: its header declares 30x28x28 = 23520 bytes"),
        (TRAIN_IMAGES, lambda raw: raw[:10], "is truncated: 10 bytes, shorter than its 16-byte IDX header"),
        (TEST_LABELS, lambda raw: raw + b"\0", "holds more than the 12 = 12 bytes its header declares"),
        (
            TRAIN_IMAGES,
            lambda raw: b"\0\0\x08\x01" + raw[4:],
            "has IDX magic 0x00000801, expected 0x00000803",
        ),
        (
            TRAIN_LABELS,
            lambda raw: b"\0\0\x0d\x01" + raw[4:],
            "has IDX magic 0x00000d01, expected 0x00000801",
        ),
        (
            TRAIN_LABELS,
            lambda raw: idx_bytes(np.zeros(29, np.uint8)),
            "holds 29 labels but .* holds 30 images",
        ),
        (
            TEST_IMAGES,
            lambda raw: idx_bytes(np.zeros((12, 27, 28), np.uint8)),
            "holds 27x28 images, expected 28x28",
        ),
        (TEST_LABELS, lambda raw: idx_bytes(np.full(12, 10, np.uint8)), "holds label 10, expected 0..9"),
        (
            TRAIN_IMAGES,
            lambda raw: raw[:4] + struct.pack(">III", 10**6, 28, 28) + raw[16:],
            "declares 1000000x28x28 = 784,000,000 bytes, more than the 268,435,456 mnistpack reads",
        ),
    ],
    ids=[
        "truncated",
        "header-cut",
        "extra-bytes",
        "wrong-magic",
        "wrong-type",
        "count",
        "dims",
        "label",
        "huge",
    ],
)
def test_damaged_idx_files_are_named(tmp_path: Path, stem: str, edit: Any, message: str) -> None:
    write_idx_dir(tmp_path, gz=True)
    path = _damage(tmp_path, stem, edit)
    with pytest.raises(DataError, match=message) as info:
        load_mnist(tmp_path, allow_download=False)
    culprit = path if "labels but" not in message else tmp_path / f"{TRAIN_LABELS}.gz"
    assert str(culprit) in str(info.value)


def test_truncated_gzip_is_named(tmp_path: Path) -> None:
    write_idx_dir(tmp_path, gz=True)
    path = tmp_path / f"{TEST_IMAGES}.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match=f"{path} is a damaged or truncated gzip file"):
        load_mnist(tmp_path, allow_download=False)


def test_missing_file_is_named(tmp_path: Path) -> None:
    write_idx_dir(tmp_path, gz=True)
    (tmp_path / f"{TEST_LABELS}.gz").unlink()
    with pytest.raises(
        DataError, match=f"MNIST file {tmp_path / TEST_LABELS} \\(or {TEST_LABELS}.gz\\) is missing"
    ):
        load_mnist(tmp_path, allow_download=False)


def test_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nope", allow_download=False)
    with pytest.raises(DataError, match=f"No MNIST data in {tmp_path}: expected the four IDX files"):
        load_mnist(tmp_path, allow_download=False)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="is a file; --data wants a folder"):
        load_mnist(tmp_path / "notes.txt", allow_download=False)


def test_bad_npz_files(tmp_path: Path) -> None:
    arrays = write_idx_dir(tmp_path / "idx", gz=True)
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="junk.npz is not an .npz file: an .npz is a zip archive"):
        load_mnist(tmp_path / "junk.npz", allow_download=False)
    np.savez(tmp_path / "partial.npz", x_train=arrays["x_train"])
    with pytest.raises(DataError, match="partial.npz lacks the array 'y_train'"):
        load_mnist(tmp_path / "partial.npz", allow_download=False)
    np.savez(tmp_path / "floats.npz", **{**arrays, "x_test": arrays["x_test"].astype(np.float32)})
    with pytest.raises(DataError, match=r"floats.npz: x_test is float32 \(12, 28, 28\), expected uint8"):
        load_mnist(tmp_path / "floats.npz", allow_download=False)


def test_pixel_counts_json_round_trip() -> None:
    images = np.zeros((3, 784), np.float32)
    images[0, 5] = 0.2
    images[1, 5] = 1.0
    images[2, 783] = 0.01
    lit = pixel_lit_counts(images)
    assert lit.dtype == np.int64 and lit.shape == (784,)
    assert lit[5] == 2 and lit[783] == 1 and lit.sum() == 3
    counts = PixelCounts(lit=lit, images=3)
    again = pixel_counts_from_json(pixel_counts_to_json(counts), "t.json")
    np.testing.assert_array_equal(again.lit, lit)
    assert again.images == 3
    with pytest.raises(DataError, match="t.json holds counts outside 0..images"):
        pixel_counts_from_json(pixel_counts_to_json(PixelCounts(lit=lit, images=1)), "t.json")
    with pytest.raises(DataError, match="t.json is not a pixel-count file"):
        pixel_counts_from_json('{"images": 3}', "t.json")


def test_bundled_pixel_counts_are_packaged() -> None:
    counts = bundled_pixel_counts()
    assert counts.images == 60000
    assert counts.lit.shape == (784,)
    assert counts.lit[0] == 0  # the top-left corner is never lit in MNIST
    assert 0 < counts.lit_fraction().max() < 1
    # tests/test_package.py checks that the wheel carries the file


def test_real_mnist(mnist_data: Mnist) -> None:
    assert mnist_data.train_images.shape == (60000, 784)
    assert mnist_data.test_images.shape == (10000, 784)
    assert mnist_data.train_images.dtype == np.float32
    assert float(mnist_data.train_images.min()) == 0.0 and float(mnist_data.train_images.max()) == 1.0
    # The first training labels of MNIST, as every tutorial prints them.
    assert mnist_data.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert np.bincount(mnist_data.test_labels).tolist()[:2] == [980, 1135]


def test_bundled_pixel_counts_match_real_mnist(mnist_data: Mnist) -> None:
    counts = PixelCounts(lit=pixel_lit_counts(mnist_data.train_images), images=len(mnist_data.train_images))
    shipped = resources.files("mnistpack").joinpath(data.PIXEL_COUNTS_RESOURCE).read_text(encoding="utf-8")
    assert pixel_counts_to_json(counts) == shipped
