"""Write build outputs atomically: every file goes to a temporary file first, then is renamed.

A build that fails part way (disk full, no permission, Ctrl-C) leaves the previous
outputs exactly as they were, never a half-written module that Rojo would sync.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from mnistpack.errors import OutputError

# mkstemp makes private files (0600); outputs are ordinary, readable project files
OUTPUT_MODE = 0o644


def write_files(
    out_dir: Path, files: Mapping[str, str | bytes], *, obsolete: Iterable[str] = ()
) -> tuple[Path, ...]:
    """Write `files` (path relative to `out_dir` -> UTF-8 text or bytes), then delete the `obsolete` ones.

    No existing file is replaced until every new file has been written in full.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for relative, content in files.items():
            target = out_dir / relative
            data = content.encode("utf-8") if isinstance(content, str) else content
            staged.append((_write_temporary(target, data), target))
    except BaseException:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        raise
    for temporary, target in staged:
        os.replace(temporary, target)
    for relative in obsolete:
        _remove(out_dir / relative, out_dir)
    return tuple(target for _, target in staged)


def _write_temporary(target: Path, data: bytes) -> Path:
    """`data` in a new temporary file beside `target` (same folder, so the rename is atomic)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise OutputError(f"cannot write to the output folder {target.parent}: {_reason(error)}.") from None
    temporary = Path(name)
    try:
        os.fchmod(descriptor, OUTPUT_MODE)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OutputError(f"cannot write {target}: {_reason(error)}.") from None
        raise
    return temporary


def _remove(path: Path, out_dir: Path) -> None:
    """Delete an output that no longer exists in this build, and its folder once empty."""
    path.unlink(missing_ok=True)
    if path.parent != out_dir:
        try:
            path.parent.rmdir()  # refuses unless the folder is empty
        except OSError:
            pass


def _reason(error: OSError) -> str:
    return error.strerror or str(error)
