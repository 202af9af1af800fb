"""Crash-safe state files: a server's state after every completed round, written atomically.

A state file is one ``.npz`` archive (numpy's zip of arrays, no pickle) holding the arrays and
a JSON document ``meta``. It is written through :func:`fortis.files.atomic_write` (temporary
file, fsync, rename, fsync of the folder) with owner-only permissions, so after a crash the
file is either the previous round's state or the new one, complete. :func:`load_state` checks
the format version, the federation, and that every array is finite.

The write-ahead rule the network server follows with it: a round id is recorded as *used*
before the round is opened, and a round's outcome is recorded together with the state it
produced. A server restarted with ``--resume`` therefore never reuses a round id (clients'
ledgers would refuse it) and never applies a round twice: a round that was in flight when the
process died is simply run again under a fresh round id.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fortis.files import atomic_write

from .errors import StateError

__all__ = ["STATE_VERSION", "save_state", "load_state"]

STATE_VERSION = 1
_META = "__meta__"


def save_state(
    path: str | os.PathLike, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> None:
    """Write ``meta`` (JSON-able) and ``arrays`` (name -> array) to ``path`` atomically, 0600.

    Raises ``TypeError`` if ``meta`` is not JSON-serialisable, ``ValueError`` for a bad array
    name, ``OSError`` if the write fails (the previous file is then untouched).
    """
    doc = {"version": STATE_VERSION, **dict(meta)}
    text = json.dumps(doc, sort_keys=True, allow_nan=False)
    buf = io.BytesIO()
    payload = {}
    for name, value in arrays.items():
        if name == _META or not name.isidentifier():
            raise ValueError(f"state array name {name!r} is not allowed")
        payload[name] = np.asarray(value)
    payload[_META] = np.frombuffer(text.encode(), dtype=np.uint8)
    np.savez(buf, **payload)
    atomic_write(path, buf.getvalue(), private=True)


def load_state(
    path: str | os.PathLike, *, federation: str | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a state file written by :func:`save_state`.

    Raises :class:`StateError` naming the problem: missing, not a state file, another
    version, another federation (when ``federation`` is given), or a non-finite array.
    """
    p = Path(path)
    if not p.is_file():
        raise StateError(f"state file {p} does not exist (nothing to resume)")
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {name: np.array(npz[name]) for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise StateError(f"{p} is not a readable fortis state file ({exc})") from None
    raw = arrays.pop(_META, None)
    if raw is None or raw.dtype != np.uint8:
        raise StateError(f"{p} has no state metadata")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise StateError(f"{p}: corrupt state metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("version") != STATE_VERSION:
        raise StateError(
            f"{p}: state version {meta.get('version') if isinstance(meta, dict) else None!r}, "
            f"this build reads {STATE_VERSION}"
        )
    if federation is not None and meta.get("federation") != federation:
        raise StateError(
            f"{p} belongs to federation {meta.get('federation')!r}, not {federation!r}"
        )
    for name, value in arrays.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise StateError(f"{p}: array {name!r} has non-finite values")
    return meta, arrays
