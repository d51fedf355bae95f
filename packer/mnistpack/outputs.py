"""Write a set of output files as one: after a run the folder holds the whole new set, or the
whole previous one, never a mix.

A build writes files that belong together (the weights module or its split folder, and the
`.rbxmx`, `.rbxlx` and Rojo project made from it). `write_files`:

1. locks the output folder (an exclusive `flock`), so two mnistpack runs writing into one
   folder take turns; one that cannot get the lock in LOCK_WAIT_SECONDS says so and stops;
2. stages every new file in full (written and fsynced) in a hidden folder inside the output
   folder, on the same file system, so the moves below are atomic renames;
3. checks that nothing is in the way (a folder where a file goes, a file where a folder goes);
4. moves the files it replaces or retires aside, then the staged ones into place; if any
   move fails, it puts everything back as it was. Ctrl-C and SIGTERM wait for the end of
   this step (it is a few renames), then take effect;
5. removes its hidden folders on every way out, and those a killed run left behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Final

from mnistpack import signals
from mnistpack.errors import OutputError

# mkstemp makes private files (0600); outputs are ordinary, readable project files
OUTPUT_MODE: Final = 0o644
LOCK_WAIT_SECONDS: Final = 30.0
LOCK_POLL_SECONDS: Final = 0.05
STAGING_PREFIX: Final = ".mnistpack-new-"
BACKUP_PREFIX: Final = ".mnistpack-old-"


def write_files(
    out_dir: Path,
    files: Mapping[str, str | bytes],
    *,
    obsolete: Callable[[], Iterable[str]] | None = None,
) -> tuple[Path, ...]:
    """Replace the set of files in `out_dir` with `files` (path relative to `out_dir` -> UTF-8
    text or bytes) and remove the `obsolete` ones (asked under the lock), all or nothing."""
    _make_folder(out_dir)
    try:
        with _locked(out_dir):
            _remove_leftovers(out_dir)
            retired = [name for name in (obsolete() if obsolete is not None else ()) if name not in files]
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
            try:
                staged = {name: _stage(staging, name, content, out_dir) for name, content in files.items()}
                _check_targets(out_dir, [*files, *retired])
                _swap(out_dir, staged, retired)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except OutputError:
        raise
    except OSError as error:  # listing, staging or checking the folder; nothing was replaced
        raise OutputError(f"cannot write to the output folder {out_dir}: {_reason(error)}.") from None
    return tuple(out_dir / name for name in files)


def check_writable(out_dir: Path) -> None:
    """Fail now, not after minutes of work, when `out_dir` cannot take output files."""
    _make_folder(out_dir)
    try:
        descriptor, name = tempfile.mkstemp(prefix=STAGING_PREFIX, dir=out_dir)
        os.close(descriptor)
        os.unlink(name)
    except OSError as error:
        raise OutputError(f"cannot write to the output folder {out_dir}: {_reason(error)}.") from None


def _make_folder(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot write to the output folder {out_dir}: a file is in the way.") from None
    except OSError as error:
        raise OutputError(f"cannot write to the output folder {out_dir}: {_reason(error)}.") from None


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """An exclusive lock on the folder itself (no lock file to leave behind)."""
    try:
        descriptor = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise OutputError(f"cannot open the output folder {out_dir}: {_reason(error)}.") from None
    try:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OutputError(
                        f"another mnistpack has been writing to {out_dir} for {LOCK_WAIT_SECONDS:.0f} s; "
                        "wait for it to finish, or choose another output folder."
                    ) from None
                time.sleep(LOCK_POLL_SECONDS)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _remove_leftovers(out_dir: Path) -> None:
    """Hidden folders of a run killed beyond cleaning up (SIGKILL, power loss); the lock is
    ours, so no live run owns them."""
    for entry in out_dir.iterdir():
        ours = entry.name.startswith((STAGING_PREFIX, BACKUP_PREFIX))
        if ours and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _stage(staging: Path, name: str, content: str | bytes, out_dir: Path) -> Path:
    """`content` in full in the staging folder, under its final relative name."""
    path = staging / name
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("xb") as stream:
            os.fchmod(stream.fileno(), OUTPUT_MODE)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
    except OSError as error:
        raise OutputError(f"cannot write {out_dir / name}: {_reason(error)}.") from None
    return path


def _check_targets(out_dir: Path, names: Iterable[str]) -> None:
    """Every target is a file or absent, and every folder on its way a folder or absent."""
    for name in names:
        target = out_dir / name
        for parent in reversed(target.relative_to(out_dir).parents[:-1]):
            folder = out_dir / parent
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise OutputError(f"{folder} is in the way: mnistpack needs a folder there; move it away.")
        if target.is_symlink() or not target.exists():
            continue
        if not stat.S_ISREG(target.stat().st_mode):
            raise OutputError(f"{target} is in the way: mnistpack writes a file there; move it away.")


def _swap(out_dir: Path, staged: Mapping[str, Path], retired: list[str]) -> None:
    """Move the previous files aside and the staged ones in; on any failure, undo every move."""
    backup = Path(tempfile.mkdtemp(prefix=BACKUP_PREFIX, dir=out_dir))
    moved: list[tuple[Path, Path]] = []  # (from, to), in the order done
    made: list[Path] = []  # folders created for new files
    try:
        with signals.deferred():
            try:
                for name in [*staged, *retired]:
                    target = out_dir / name
                    if os.path.lexists(target):
                        _move(target, backup / name, moved, made)
                for name, path in staged.items():
                    _move(path, out_dir / name, moved, made)
                for name in retired:
                    _remove_empty_parents(out_dir / name, out_dir)
            except BaseException as error:
                _undo(moved, made)
                if isinstance(error, OSError):
                    raise OutputError(
                        f"cannot put {error.filename or out_dir} in place: {_reason(error)}; "
                        "the previous files are back as they were."
                    ) from None
                raise
    finally:
        shutil.rmtree(backup, ignore_errors=True)


def _move(source: Path, target: Path, moved: list[tuple[Path, Path]], made: list[Path]) -> None:
    missing = [parent for parent in target.parents if not parent.exists()]
    for folder in reversed(missing):
        folder.mkdir()
        made.append(folder)
    os.replace(source, target)
    moved.append((source, target))


def _undo(moved: list[tuple[Path, Path]], made: list[Path]) -> None:
    for source, target in reversed(moved):
        with contextlib.suppress(OSError):
            source.parent.mkdir(parents=True, exist_ok=True)
            os.replace(target, source)
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _remove_empty_parents(path: Path, out_dir: Path) -> None:
    """A retired file's folder, once it holds nothing (a split module's, after a single build)."""
    for parent in path.parents:
        if parent == out_dir or out_dir not in parent.parents:
            return
        try:
            parent.rmdir()  # refuses unless the folder is empty
        except OSError:
            return


def _reason(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return "No space left on device"
    return error.strerror or str(error)
