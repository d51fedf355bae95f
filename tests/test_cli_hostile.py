"""Issue 11's hostile inputs through the command line, each in a process of its own that
256 MiB of data memory (RLIMIT_DATA) or 2 s of CPU time (an ITIMER_PROF timer, whose
SIGPROF ends the process) would stop: every case ends in the right output or in one
`error:` line and exit code 1, with no traceback, within those limits.

The limits are the proof: no case is timed.
"""

from __future__ import annotations

import gzip
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from mnistpack.luau_emit import emit_module
from mnistpack.module_reader import MODULE_READ_BYTES

from tests.hostile_corpus import WEIGHTS, Case, cases, module_files, slug

MEMORY_LIMIT = 256 << 20
CPU_SECONDS = 2.0


# Sets the limits, then becomes `python -m mnistpack ARGS` (the timer survives exec). A
# launcher rather than preexec_fn: this test process may run JAX's threads, and forking
# a threaded process to run Python code before exec can deadlock.
LAUNCHER = f"""
import os, resource, signal, sys
resource.setrlimit(resource.RLIMIT_DATA, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))
signal.setitimer(signal.ITIMER_PROF, {CPU_SECONDS})
os.execv(sys.argv[1], sys.argv[1:])
"""


def under_limits(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LAUNCHER, *command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def limited(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`mnistpack ARGS` under the limits; the test fails if the process exceeds either."""
    done = under_limits([sys.executable, "-m", "mnistpack", *map(str, args)], cwd)
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        pytest.fail(f"mnistpack {' '.join(map(str, args))} was ended by {name}: {done.stderr[-1500:]}")
    return done


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def write(folder: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    name = next(iter(files))
    return folder / (name.split("/")[0] if "/" in name else name)


def test_the_limits_are_real() -> None:
    # what the tests below rely on: a process that computes or allocates too much is stopped
    spin = under_limits([sys.executable, "-c", "while True: pass"])
    assert spin.returncode == -signal.SIGPROF
    hog = under_limits([sys.executable, "-c", f"x = bytearray({MEMORY_LIMIT})"])
    assert hog.returncode == 1 and "MemoryError" in hog.stderr


# --- the hostile corpus ----------------------------------------------------------------------

SLOW = [(case, compression) for case in cases() if case.slow for compression in case.compressions()]


@pytest.mark.parametrize(("case", "compression"), SLOW, ids=[slug(c, z) for c, z in SLOW])
def test_inspect_on_the_large_corpus_cases(tmp_path: Path, case: Case, compression: str) -> None:
    files = module_files(case, compression)
    module = write(tmp_path, files)
    done = limited("inspect", module)
    if sum(len(text) for text in files.values()) > MODULE_READ_BYTES:
        # a module this large is refused as a whole, before it is run
        assert_one_line_error(done, "error: module: ", f"more than {MODULE_READ_BYTES:,} bytes")
    elif case.expect == WEIGHTS:
        assert done.returncode == 0, done.stderr[-2000:]
        assert "(verified)" in done.stdout
        assert max(len(line) for line in done.stdout.splitlines()) < 2000
    else:
        assert_one_line_error(done, f"error: {case.expect}: ")


# --- modules that are hostile as Luau ------------------------------------------------------------

GOOD = emit_module(b"MNPK-ish bytes", "none", version=1, comment_lines=["c"])["MnistWeights.luau"]


def test_an_unclosed_long_string_followed_by_many_more(tmp_path: Path) -> None:
    source = 'return { format = "mnistpack", data = [[' + "[[" * 99_000 + "\n"  # 198 KB
    assert_one_line_error(limited("inspect", write(tmp_path, {"M.luau": source})), "is not valid Luau")


def test_a_table_in_a_block_comment_is_not_what_is_read(tmp_path: Path) -> None:
    good = (Path(__file__).parent / "golden" / "int8.luau").read_text()
    decoy = (Path(__file__).parent / "golden" / "float32.luau").read_text()
    done = limited("inspect", write(tmp_path, {"M.luau": "--[=[\n" + decoy + "]=]\n" + good}))
    assert done.returncode == 0, done.stderr
    assert "precision: int8" in done.stdout


def test_a_split_init_listing_one_part_thousands_of_times(tmp_path: Path) -> None:
    files = emit_module(os.urandom(700_000), "zstd", version=1, comment_lines=["c"])
    init = files["MnistWeights/init.luau"]
    start, end = init.index("require(script.Part1),"), init.index("\t})")
    files["MnistWeights/init.luau"] = init[:start] + "require(script.Part1),\n" * 20_000 + init[end:]
    assert_one_line_error(limited("inspect", write(tmp_path, files)), "MiB of memory")


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("while true do end\n", "s of CPU time"),
        ('return string.rep("x", 2^30)\n', "MiB of memory"),
        ("local t = {}\nfor i = 1, 100 do t[i] = table.create(1e6, 0) end\n", "MiB of memory"),
        ('return setmetatable({}, { __index = function() error("boom") end })\n', "found nothing"),
        (
            GOOD.replace("version = 1", 'version = "1"'),
            "expected version = 1 to 2 (a number), found the string",
        ),
        ("local ok = pcall(function() while true do end end)\nreturn ok\n", "pcall is not available"),
    ],
    ids=["endless loop", "huge string", "huge table", "metatable that errors", "version '1'", "pcall"],
)
def test_modules_that_misbehave_when_run(tmp_path: Path, source: str, fragment: str) -> None:
    assert_one_line_error(limited("inspect", write(tmp_path, {"M.luau": source})), fragment)


# --- files that are not modules --------------------------------------------------------------------


def test_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "MnistWeights.luau")
    assert_one_line_error(limited("inspect", tmp_path / "MnistWeights.luau"), "is not a regular file")


def test_dev_zero(tmp_path: Path) -> None:
    (tmp_path / "MnistWeights.luau").symlink_to("/dev/zero")
    assert_one_line_error(limited("inspect", tmp_path / "MnistWeights.luau"), "is not a regular file")


def test_a_huge_sparse_file(tmp_path: Path) -> None:
    with (tmp_path / "MnistWeights.luau").open("wb") as stream:
        stream.truncate(50 << 30)
    assert_one_line_error(limited("inspect", tmp_path / "MnistWeights.luau"), "mnistpack reads module files")


def test_a_folder_without_init(tmp_path: Path) -> None:
    assert_one_line_error(limited("inspect", tmp_path), "init.luau does not exist")


# --- MNIST data ------------------------------------------------------------------------------------


def test_a_gzip_bomb_among_the_mnist_files(tmp_path: Path) -> None:
    # a valid IDX header for 60,000 images, then 2 GiB of zeros: about 2 MB of gzip
    header = struct.pack(">I", 0x803) + struct.pack(">III", 60_000, 28, 28)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as stream:
        stream.write(header)
        chunk = bytes(1 << 24)
        for _ in range(128):
            stream.write(chunk)
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(b"")
    done = limited("pixel-counts", "--data", tmp_path, "--out", tmp_path / "counts.json")
    assert_one_line_error(done, "train-images-idx3-ubyte.gz", "more than")
    assert not (tmp_path / "counts.json").exists()
