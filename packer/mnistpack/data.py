"""MNIST loading: the four IDX files (gzip or raw), a Keras `mnist.npz`, or the Keras cache.

Images come out as float32 rows of 784 pixels (28x28, row-major) scaled to 0..1,
which is what the network and the Luau runtime expect.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import socket
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

import numpy as np

from mnistpack.errors import DataError
from mnistpack.outputs import write_files

DATA_ENV_VAR: Final = "MNISTPACK_DATA"
IMAGE_SIDE: Final = 28
INPUT_SIZE: Final = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES: Final = 10
PIXEL_MAX: Final = 255

TRAIN_IMAGES: Final = "train-images-idx3-ubyte"
TRAIN_LABELS: Final = "train-labels-idx1-ubyte"
TEST_IMAGES: Final = "t10k-images-idx3-ubyte"
TEST_LABELS: Final = "t10k-labels-idx1-ubyte"
NPZ_NAME: Final = "mnist.npz"

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
IDX_UBYTE: Final = 0x08
IDX_PREFIX_BYTES: Final = 4
IDX_DIM_BYTES: Final = 4
GZIP_MAGIC: Final = b"\x1f\x8b"
# MNIST's largest file (60,000 training images) holds 47,040,000 bytes; a file declaring
# more than this is refused before anything is read or inflated.
MAX_IDX_BYTES: Final = 1 << 28

# Keras' urlretrieve has no timeout of its own: a silently dropped connection would hang `train`.
DOWNLOAD_TIMEOUT_S: Final = 20.0

PIXEL_COUNTS_RESOURCE: Final = "mnist_pixel_counts.json"


@dataclass(frozen=True)
class Mnist:
    train_images: np.ndarray  # float32 [60000, 784], row-major 28x28, values 0..1
    train_labels: np.ndarray  # uint8 [60000]
    test_images: np.ndarray  # float32 [10000, 784]
    test_labels: np.ndarray  # uint8 [10000]


@dataclass(frozen=True)
class PixelCounts:
    """For each of the 784 pixels, in how many training images it is lit (> 0)."""

    lit: np.ndarray  # int64 [784], row-major 28x28
    images: int  # how many images were counted

    def lit_fraction(self) -> np.ndarray:
        """float64 [784]: the share of the counted images in which each pixel is lit."""
        return self.lit.astype(np.float64) / self.images


def resolve_data_dir(option: Path | None) -> Path | None:
    """The --data option, else the MNISTPACK_DATA environment variable, else None."""
    if option is not None:
        return option
    env = os.environ.get(DATA_ENV_VAR, "").strip()
    return Path(env) if env else None


def load_mnist(data_dir: Path | None, *, allow_download: bool) -> Mnist:
    """All of MNIST from `data_dir`, else from the Keras cache, else (if allowed) a Keras download."""
    if data_dir is not None:
        return _load_local(data_dir)
    cached = _keras_cache_npz()
    if cached is not None:
        return _mnist_from_npz(cached)
    if not allow_download:
        raise DataError(
            f"No MNIST data found: neither --data nor {DATA_ENV_VAR} is set and there is no Keras "
            f"cache at {_keras_cache_candidates()[0]}; point --data at the four IDX files or mnist.npz."
        )
    return _download_with_keras()


def load_test_set(data_dir: Path | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The MNIST test images and labels from local files only; None when there are none.

    Never downloads. With no `data_dir`, looks in the Keras cache and returns None when it is
    absent. A `data_dir` the user named explicitly that holds no usable test set is an error
    (DataError), not a silent skip.
    """
    if data_dir is None:
        cached = _keras_cache_npz()
        if cached is None:
            return None
        mnist = _mnist_from_npz(cached)
        return mnist.test_images, mnist.test_labels
    _check_dir(data_dir)
    if data_dir.is_file():
        mnist = _mnist_from_npz(data_dir)
        return mnist.test_images, mnist.test_labels
    images_path = _find_idx(data_dir, TEST_IMAGES)
    labels_path = _find_idx(data_dir, TEST_LABELS)
    if images_path is not None and labels_path is not None:
        return _load_idx_pair(images_path, labels_path)
    npz = data_dir / NPZ_NAME
    if npz.is_file():
        mnist = _mnist_from_npz(npz)
        return mnist.test_images, mnist.test_labels
    missing = TEST_IMAGES if images_path is None else TEST_LABELS
    raise DataError(
        f"No MNIST test set in {data_dir}: {missing} (or {missing}.gz) is missing and there is no {NPZ_NAME}."
    )


def parse_idx(raw: bytes, ndim: int, name: str) -> np.ndarray:
    """Decode one IDX file of unsigned bytes with `ndim` dimensions; `name` is used in errors."""
    header_bytes = IDX_PREFIX_BYTES + IDX_DIM_BYTES * ndim
    dims = _idx_dims(raw[:header_bytes], ndim, name)
    _check_body_size(len(raw) - header_bytes, dims, name)
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(dims)


def _idx_dims(header: bytes, ndim: int, name: str) -> tuple[int, ...]:
    """The dimensions an IDX header declares, checked against MAX_IDX_BYTES."""
    header_bytes = IDX_PREFIX_BYTES + IDX_DIM_BYTES * ndim
    if len(header) < header_bytes:
        raise DataError(
            f"{name} is truncated: {len(header)} bytes, shorter than its {header_bytes}-byte IDX header."
        )
    expected_magic = bytes((0, 0, IDX_UBYTE, ndim))
    if header[:IDX_PREFIX_BYTES] != expected_magic:
        raise DataError(
            f"{name} has IDX magic 0x{header[:IDX_PREFIX_BYTES].hex()}, expected 0x{expected_magic.hex()} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''}); is it the right file?"
        )
    dims = tuple(
        int.from_bytes(header[at : at + IDX_DIM_BYTES], "big")
        for at in range(IDX_PREFIX_BYTES, header_bytes, IDX_DIM_BYTES)
    )
    declared = math.prod(dims)
    if declared > MAX_IDX_BYTES:
        raise DataError(
            f"{name} declares {_shape_text(dims)} = {declared:,} bytes, more than the {MAX_IDX_BYTES:,} "
            "mnistpack reads from one MNIST file (the training images take 47,040,000)."
        )
    return dims


def _check_body_size(found: int, dims: tuple[int, ...], name: str) -> None:
    declared = math.prod(dims)
    if found < declared:
        raise DataError(
            f"{name} is truncated: its header declares {_shape_text(dims)} = {declared} bytes, "
            f"{found} follow."
        )
    if found > declared:
        raise DataError(
            f"{name} has {found - declared} bytes more than the {_shape_text(dims)} = {declared} "
            "its header declares."
        )


def _shape_text(dims: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in dims)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file, gunzipping it first when it is gzip (detected by content, not name).

    Never reads or inflates more than one byte past what the header declares, so a small
    gzip file that would inflate to gigabytes is refused after the declared size.
    """
    header_bytes = IDX_PREFIX_BYTES + IDX_DIM_BYTES * ndim
    try:
        with path.open("rb") as file:
            gzipped = file.read(len(GZIP_MAGIC)) == GZIP_MAGIC
            file.seek(0)
            stream: io.BufferedIOBase = gzip.GzipFile(fileobj=file, mode="rb") if gzipped else file
            dims = _idx_dims(stream.read(header_bytes), ndim, str(path))
            body = stream.read(math.prod(dims) + 1)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path} is a damaged or truncated gzip file ({exc}).") from exc
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    found = len(body)
    if found > math.prod(dims):
        raise DataError(
            f"{path} holds more than the {_shape_text(dims)} = {math.prod(dims):,} bytes its header "
            f"declares{' once inflated' if gzipped else ''}."
        )
    _check_body_size(found, dims, str(path))
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def pixel_lit_counts(images: np.ndarray) -> np.ndarray:
    """int64 [784]: in how many of `images` ([N, 784], any scale) each pixel is > 0."""
    lit: np.ndarray = np.count_nonzero(np.asarray(images) > 0, axis=0)
    return lit.astype(np.int64)


def pixel_counts_to_json(counts: PixelCounts) -> str:
    """Deterministic JSON text, one line per image row so the file reads as a 28x28 picture."""
    rows = counts.lit.reshape(IMAGE_SIDE, IMAGE_SIDE).tolist()
    row_lines = ",\n".join("    " + json.dumps(row) for row in rows)
    return (
        "{\n"
        '  "about": "MNIST training images in which each pixel (row-major 28x28) is > 0",\n'
        f'  "images": {counts.images},\n'
        f'  "lit": [\n{row_lines}\n  ]\n'
        "}\n"
    )


def pixel_counts_from_json(text: str, source: str) -> PixelCounts:
    """Parse and check what pixel_counts_to_json wrote; `source` names the file in errors."""
    try:
        doc = json.loads(text)
        images = doc["images"]
        lit = np.array(doc["lit"], dtype=np.int64).reshape(INPUT_SIZE)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{source} is not a pixel-count file ({exc}).") from exc
    if not isinstance(images, int) or images <= 0 or lit.min() < 0 or lit.max() > images:
        raise DataError(f"{source} holds counts outside 0..images (images = {images!r}).")
    return PixelCounts(lit=lit, images=images)


def bundled_pixel_counts() -> PixelCounts:
    """The pixel counts of the 60,000 MNIST training images, shipped with the package."""
    resource = resources.files("mnistpack").joinpath(PIXEL_COUNTS_RESOURCE)
    return pixel_counts_from_json(resource.read_text(encoding="utf-8"), PIXEL_COUNTS_RESOURCE)


def write_pixel_counts(*, data_dir: Path | None, out: Path) -> PixelCounts:
    """Count lit pixels over the local MNIST training set and write them to `out` as JSON."""
    mnist = load_mnist(data_dir, allow_download=False)
    counts = PixelCounts(lit=pixel_lit_counts(mnist.train_images), images=len(mnist.train_images))
    write_files(out.parent, {out.name: pixel_counts_to_json(counts)})
    return counts


def _load_local(data_dir: Path) -> Mnist:
    _check_dir(data_dir)
    if data_dir.is_file():
        return _mnist_from_npz(data_dir)
    stems = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
    found = {stem: _find_idx(data_dir, stem) for stem in stems}
    missing = [stem for stem, path in found.items() if path is None]
    if not missing:
        train = _load_idx_pair(_exists(found[TRAIN_IMAGES]), _exists(found[TRAIN_LABELS]))
        test = _load_idx_pair(_exists(found[TEST_IMAGES]), _exists(found[TEST_LABELS]))
        return Mnist(train[0], train[1], test[0], test[1])
    npz = data_dir / NPZ_NAME
    if npz.is_file():
        return _mnist_from_npz(npz)
    if len(missing) < len(stems):
        raise DataError(f"MNIST file {data_dir / missing[0]} (or {missing[0]}.gz) is missing.")
    raise DataError(
        f"No MNIST data in {data_dir}: expected the four IDX files ({', '.join(stems)}, gzip or raw) "
        f"or {NPZ_NAME}."
    )


def _check_dir(data_dir: Path) -> None:
    if not data_dir.exists():
        raise DataError(f"MNIST data folder {data_dir} does not exist.")
    if data_dir.is_file() and data_dir.suffix != ".npz":
        raise DataError(f"{data_dir} is a file; --data wants a folder with the IDX files, or an .npz file.")


def _exists(path: Path | None) -> Path:
    assert path is not None, "caller checked every IDX file was found"
    return path


def _find_idx(data_dir: Path, stem: str) -> Path | None:
    # Some mirrors spell the names with a dot ("train-images.idx3-ubyte").
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, f"{stem}.gz", dotted, f"{dotted}.gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def _load_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        dims = "x".join(str(d) for d in images.shape[1:])
        raise DataError(f"{images_path} holds {dims} images, expected {IMAGE_SIDE}x{IMAGE_SIDE}.")
    if len(images) != len(labels):
        raise DataError(
            f"{labels_path} holds {len(labels)} labels but {images_path} holds {len(images)} images."
        )
    return _checked(images, labels, str(labels_path))


def _checked(images: np.ndarray, labels: np.ndarray, labels_source: str) -> tuple[np.ndarray, np.ndarray]:
    if len(images) == 0:
        raise DataError(f"{labels_source} holds no examples.")
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{labels_source} holds label {int(labels.max())}, expected 0..{NUM_CLASSES - 1}.")
    flat = images.reshape(len(images), INPUT_SIZE).astype(np.float32) / np.float32(PIXEL_MAX)
    return flat, labels.astype(np.uint8)


def _mnist_from_npz(path: Path) -> Mnist:
    keys = ("x_train", "y_train", "x_test", "y_test")
    # np.load takes any other file for a pickle (and says so): an .npz is a zip archive
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{path} is not an .npz file: an .npz is a zip archive of arrays, and this is not one."
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in keys if key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc}).") from exc
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise DataError(f"{path} lacks the array '{missing[0]}' of a Keras mnist.npz.")
    return _mnist_from_arrays(arrays, str(path))


def _mnist_from_arrays(arrays: dict[str, np.ndarray], source: str) -> Mnist:
    sets = []
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            raise DataError(
                f"{source}: x_{split} is {images.dtype} {images.shape}, expected uint8 (N, 28, 28)."
            )
        if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(images),):
            raise DataError(
                f"{source}: y_{split} is {labels.dtype} {labels.shape}, "
                f"expected {len(images)} integer labels."
            )
        if labels.size and int(labels.min()) < 0:
            raise DataError(
                f"{source}: y_{split} holds label {int(labels.min())}, expected 0..{NUM_CLASSES - 1}."
            )
        sets.append(_checked(images, labels, f"{source}: y_{split}"))
    (train_images, train_labels), (test_images, test_labels) = sets
    return Mnist(train_images, train_labels, test_images, test_labels)


def _keras_cache_candidates() -> list[Path]:
    # Where keras.datasets.mnist caches its download (keras/src/backend/config.py, file_utils.get_file).
    if "KERAS_HOME" in os.environ:
        return [Path(os.environ["KERAS_HOME"]) / "datasets" / NPZ_NAME]
    return [Path.home() / ".keras" / "datasets" / NPZ_NAME, Path("/tmp/.keras/datasets") / NPZ_NAME]


def _keras_cache_npz() -> Path | None:
    return next((path for path in _keras_cache_candidates() if path.is_file()), None)


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download_with_keras() -> Mnist:
    from mnistpack.model import import_keras

    keras = import_keras()
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as exc:  # Keras wraps network failures in a bare Exception.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"Could not download MNIST through Keras ({reason}); point --data or {DATA_ENV_VAR} "
            f"at a folder with the four IDX files or {NPZ_NAME}."
        ) from exc
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return _mnist_from_arrays(arrays, "the Keras MNIST download")
