"""Atomic file writes: a file is either its old content or its complete new content, never a
mix, even if the process dies mid-write (write a temporary file in the same directory, fsync
it, rename it over the target, fsync the directory)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, data: bytes, *, private: bool = False) -> None:
    """Replace ``path`` by ``data`` atomically and durably; ``private``: mode 0600 from the
    start (the temporary file is never readable by others). Raises ``OSError`` on failure,
    leaving the old file untouched."""
    target = Path(path)
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
