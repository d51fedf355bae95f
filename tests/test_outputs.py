"""An output set is replaced whole or not at all (mnistpack.outputs): staged first, swapped in
with every move undone on failure, one writer per folder at a time, and no hidden folder
left behind on any way out, signals included."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mnistpack import outputs
from mnistpack.errors import OutputError
from mnistpack.outputs import BACKUP_PREFIX, STAGING_PREFIX, check_writable, write_files

ROOT = Path(__file__).resolve().parents[1]

OLD = {"MnistWeights.luau": "old weights", "MnistModel.rbxmx": "old model", "MnistDemo.rbxlx": "old place"}
NEW = {"MnistWeights.luau": "new weights", "MnistModel.rbxmx": "new model", "MnistDemo.rbxlx": "new place"}


def contents(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): path.read_text()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def hidden_folders(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith((STAGING_PREFIX, BACKUP_PREFIX))]


def test_a_set_replaces_the_previous_one(tmp_path: Path) -> None:
    write_files(tmp_path, OLD)
    written = write_files(tmp_path, NEW)
    assert contents(tmp_path) == NEW
    assert written == tuple(tmp_path / name for name in NEW)
    assert oct((tmp_path / "MnistWeights.luau").stat().st_mode & 0o777) == "0o644"
    assert hidden_folders(tmp_path) == []


@pytest.mark.parametrize("failing_move", range(6))
def test_a_failed_move_puts_every_previous_file_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_move: int
) -> None:
    # 3 old files moved aside, then 3 new ones moved in: a failure at any of the 6 moves
    write_files(tmp_path, OLD)
    real_replace = os.replace
    moves = []

    def replace(source: str | Path, target: str | Path) -> None:
        moves.append(source)
        if len(moves) == failing_move + 1:
            raise OSError(errno.EPERM, "Operation not permitted", str(target))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(
        OutputError, match="Operation not permitted; the previous files are back as they were"
    ):
        write_files(tmp_path, NEW)
    monkeypatch.undo()
    assert contents(tmp_path) == OLD
    assert hidden_folders(tmp_path) == []


def test_ctrl_c_during_the_swap_waits_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_files(tmp_path, OLD)
    real_replace = os.replace
    moves = []

    def replace(source: str | Path, target: str | Path) -> None:
        moves.append(source)
        if len(moves) == 2:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C between two renames
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        write_files(tmp_path, NEW)
    monkeypatch.undo()
    assert contents(tmp_path) == NEW  # the swap finished first
    assert len(moves) == 6
    assert hidden_folders(tmp_path) == []


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_files(tmp_path, OLD)

    def disk_full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OutputError, match="No space left on device"):
        write_files(tmp_path, NEW)
    assert contents(tmp_path) == OLD
    assert hidden_folders(tmp_path) == []


def test_something_in_the_way_is_named_before_anything_moves(tmp_path: Path) -> None:
    write_files(tmp_path, OLD)
    (tmp_path / "MnistDemo.rbxlx").unlink()
    (tmp_path / "MnistDemo.rbxlx").mkdir()
    with pytest.raises(OutputError, match=r"MnistDemo.rbxlx is in the way: mnistpack writes a file there"):
        write_files(tmp_path, NEW)
    assert (tmp_path / "MnistWeights.luau").read_text() == "old weights"
    (tmp_path / "MnistDemo.rbxlx").rmdir()
    (tmp_path / "MnistWeights").write_text("a file where the split module's folder goes")
    with pytest.raises(OutputError, match="MnistWeights is in the way: mnistpack needs a folder there"):
        write_files(tmp_path, {"MnistWeights/init.luau": "x"})
    assert hidden_folders(tmp_path) == []


def test_obsolete_files_are_retired_in_the_same_swap(tmp_path: Path) -> None:
    split = {"MnistWeights/init.luau": "init", "MnistWeights/Part1.luau": "part", "MnistModel.rbxmx": "m"}
    write_files(tmp_path, split)
    single = {"MnistWeights.luau": "single", "MnistModel.rbxmx": "m2"}
    write_files(tmp_path, single, obsolete=lambda: ["MnistWeights/init.luau", "MnistWeights/Part1.luau"])
    assert contents(tmp_path) == single
    assert not (tmp_path / "MnistWeights").exists()


def test_a_second_writer_waits_for_the_lock_then_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outputs, "LOCK_WAIT_SECONDS", 0.3)
    descriptor = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        with pytest.raises(OutputError, match="another mnistpack has been writing to .* for 0 s"):
            write_files(tmp_path, NEW)
    finally:
        os.close(descriptor)
    write_files(tmp_path, NEW)  # free again
    assert contents(tmp_path) == NEW


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mnistpack.outputs import write_files

    folder, layout, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    split = {f"MnistWeights/Part{k}.luau": "part" for k in range(1, 4)} | {"MnistWeights/init.luau": "init"}
    for _ in range(rounds):
        if layout == "split":
            write_files(folder, {**split, "MnistModel.rbxmx": "split"},
                        obsolete=lambda: ["MnistWeights.luau"])
        else:
            write_files(folder, {"MnistWeights.luau": "single", "MnistModel.rbxmx": "single"},
                        obsolete=lambda: list(split))
    """
)


def test_concurrent_writers_of_two_layouts_leave_one_of_them(tmp_path: Path) -> None:
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), layout, "25"], cwd=ROOT)
        for layout in ("split", "single")
    ]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    files = contents(tmp_path)
    if files["MnistModel.rbxmx"] == "split":
        assert set(files) == {"MnistModel.rbxmx", "MnistWeights/init.luau"} | {
            f"MnistWeights/Part{k}.luau" for k in range(1, 4)
        }
    else:
        assert set(files) == {"MnistModel.rbxmx", "MnistWeights.luau"}
    assert hidden_folders(tmp_path) == []


SLOW_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from mnistpack import signals
    from mnistpack.errors import Terminated
    from mnistpack.outputs import write_files

    signals.raise_on_sigterm()
    real_fsync = os.fsync

    def slow_fsync(descriptor):
        print("staging", flush=True)
        time.sleep(30)

    os.fsync = slow_fsync
    try:
        write_files(Path(sys.argv[1]), {"MnistWeights.luau": "new", "MnistModel.rbxmx": "new"})
    except Terminated:
        sys.exit(143)
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_staging_leaves_the_previous_set_and_no_temporary_file(
    tmp_path: Path, signum: int, status: int
) -> None:
    write_files(tmp_path, {"MnistWeights.luau": "old", "MnistModel.rbxmx": "old"})
    writer = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    assert writer.stdout.readline() == "staging\n"
    time.sleep(0.1)
    writer.send_signal(signum)
    assert writer.wait(timeout=60) == status
    assert contents(tmp_path) == {"MnistWeights.luau": "old", "MnistModel.rbxmx": "old"}
    assert hidden_folders(tmp_path) == []


def test_leftovers_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    (tmp_path / f"{STAGING_PREFIX}abc").mkdir()
    (tmp_path / f"{STAGING_PREFIX}abc" / "MnistWeights.luau").write_text("half")
    (tmp_path / f"{BACKUP_PREFIX}def").mkdir()
    write_files(tmp_path, NEW)
    assert hidden_folders(tmp_path) == []


def test_check_writable(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "folder")
    assert (tmp_path / "new" / "folder").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot write to the output folder .*file"):
        check_writable(tmp_path / "file")
    with pytest.raises(OutputError, match="cannot write to the output folder .*file/below"):
        check_writable(tmp_path / "file" / "below")
