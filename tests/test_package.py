"""The wheel a user installs: it carries the Luau runtime and the shipped model, and the tool
works from an empty folder with no checkout in reach.

One test, because building the wheel and a fresh venv is the expensive part: it builds the
wheel from this checkout, installs it (with its dependencies, from pip's cache in CI) into a
new venv, then runs `build`, `inspect` and `compare` there from an empty folder and checks
that the Roblox files match those the editable install under test writes.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import venv
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from mnistpack.build import build
from mnistpack.data import PIXEL_COUNTS_RESOURCE, TEST_IMAGES, TEST_LABELS, Mnist
from mnistpack.roblox import MODEL_FILE, PLACE_FILE

from tests.luau_host import LUAU_DIR, ROOT

SLICE_DIGITS = 300  # enough for compare to have something to score, quick in the Luau VM
TIMEOUT_SECONDS = 900


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    # IDX: two zero bytes, type 0x08 (unsigned byte), the number of dimensions, then each size
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0))


def run(command: list[str | Path], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # hatchling comes with the test extras, so no build environment has to be downloaded
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            out,
            ROOT,
        ],
        cwd=out,
        env=dict(os.environ),
    )
    (found,) = out.glob("mnistpack-*.whl")
    return found


def test_the_wheel_carries_the_runtime_and_the_model_and_nothing_else(wheel: Path) -> None:
    names = {PurePosixPath(name) for name in zipfile.ZipFile(wheel).namelist()}
    runtime = {
        PurePosixPath("mnistpack/luau") / p.relative_to(LUAU_DIR).as_posix() for p in LUAU_DIR.rglob("*.luau")
    }
    assert runtime <= names, f"missing from the wheel: {sorted(map(str, runtime - names))}"
    shipped = {PurePosixPath("mnistpack/models") / p.name for p in (ROOT / "models").iterdir() if p.is_file()}
    both = {PurePosixPath("mnistpack/models") / name for name in ("mnist-cnn.keras", "mnist256.keras")}
    assert shipped <= names and both <= shipped
    assert PurePosixPath("mnistpack/__main__.py") in names
    assert PurePosixPath("mnistpack/py.typed") in names
    assert PurePosixPath(f"mnistpack/{PIXEL_COUNTS_RESOURCE}") in names
    unwanted = [
        str(name)
        for name in names
        if name.parts[0] == "tests"
        or "__pycache__" in name.parts
        or name.suffix in {".pyc", ".pyo"}
        or name.parts[0] in {"benchmarks", "build", "luau", "models", "packer"}
    ]
    assert not unwanted, f"the wheel carries files a user does not need: {unwanted}"


def test_a_wheel_install_builds_inspects_and_compares_from_an_empty_folder(
    wheel: Path, tmp_path: Path, mnist_data: Mnist
) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    env = {key: value for key, value in os.environ.items() if key not in {"MNISTPACK_DATA", "PYTHONPATH"}}
    env["KERAS_HOME"] = str(tmp_path / "keras-home")  # no cached MNIST to fall back on
    run([python, "-m", "pip", "install", "--quiet", wheel], cwd=tmp_path, env=env)

    empty = tmp_path / "empty"
    empty.mkdir()
    tool = env_dir / "bin" / "mnistpack"
    version = run([tool, "--version"], cwd=empty, env=env).stdout
    assert version.strip() == f"mnistpack {wheel.name.split('-')[1]}"
    assert run([python, "-m", "mnistpack", "--version"], cwd=empty, env=env).stdout == version

    # the import really comes from the venv, not from this checkout
    where = run([python, "-c", "import mnistpack; print(mnistpack.__file__)"], cwd=empty, env=env).stdout
    assert Path(where.strip()).is_relative_to(env_dir), where

    run([tool, "build", "--quant", "int8"], cwd=empty, env=env)
    built = empty / "build"
    inspected = run([tool, "inspect", built / "MnistWeights.luau"], cwd=empty, env=env).stdout
    assert "int8" in inspected and "conv2d" in inspected  # the default is the shipped CNN

    data = tmp_path / "slice"
    data.mkdir()
    images = np.rint(mnist_data.test_images[:SLICE_DIGITS] * 255).reshape(SLICE_DIGITS, 28, 28)
    write_idx_gz(data / f"{TEST_IMAGES}.gz", images)
    write_idx_gz(data / f"{TEST_LABELS}.gz", mnist_data.test_labels[:SLICE_DIGITS])
    compared = run([tool, "compare", "--data", data, "--out", empty / "compare"], cwd=empty, env=env).stdout
    assert "int8" in compared and (empty / "compare" / "compare.json").is_file()

    # the Roblox files match those the editable install under test writes, byte for byte
    editable = tmp_path / "editable"
    build(model=None, precision="int8", out_dir=editable, compression="zstd", data_dir=None)
    for name in (MODEL_FILE, PLACE_FILE):
        assert (built / name).read_bytes() == (editable / name).read_bytes(), name
