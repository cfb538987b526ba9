"""Atomic file writes, one home for every writer of results, tables and manifests (issue 18).

A file is written to a dot-prefixed temporary name in its own directory, fsynced, then
`os.replace`d: a reader sees the old file or the new one, never a torn one. When the write fails
(disk full, a directory in the way, an interrupt) the temporary file is removed before the error
propagates, so none outlives a failed write. Only a process killed outright (SIGKILL) can leave one;
`remove_temp_files` clears those when a study is resumed (the study lock guarantees no writer is
active then).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def temp_path(path: Path) -> Path:
    """The temporary name `path` is written under: hidden, per process, in the same directory."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(temp)` to write the content, then fsync and rename it to `path`; on any failure
    remove the temporary file and re-raise the write's own error."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # the write's error is the cause; a temp file we cannot remove is only litter
            pass
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """`write_atomic` of raw bytes."""
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def fsync_dir(directory: Path) -> None:
    """fsync `directory` itself, so a rename or link replaced in it survives a crash. Raises OSError."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temp_files(directory: Path) -> list[Path]:
    """Remove the temporary files left in `directory` (not below it) by killed writers; returns them."""
    removed = []
    for path in Path(directory).glob(f".*{TEMP_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
