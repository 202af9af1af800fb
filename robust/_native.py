"""The optional compiled kernels of robust (internal), and whether they are in use.

``robust._kernels`` is built from ``robust/_kernels.c`` at install when a C compiler is
available. It provides three kernels, each with a numpy fallback that gives the same results
(up to float rounding):

* ``rank_columns``: column order statistics by a vectorised sorting network
  (:mod:`robust._ranking`), for median, trimmed mean and Bulyan;
* ``sq_dists``: squared distances of rows to a point in one float64 streaming pass
  (:meth:`robust._rows.RowSet.sq_dist_to`), for clipping, centered clipping, RFA and the
  norm filter;
* ``center_rows``: a float32 column chunk centred on its float64 column mean in one pass,
  feeding the float32-product Gram of Krum, Multi-Krum, Bulyan and NNM.

**A build must match its source.** ``setup.py`` compiles in the SHA-256 of
``_kernels.c`` (``SOURCE_SHA256``). Where the source is shipped next to this file (a
checkout or an editable install), a build whose hash differs (the source was edited and not
rebuilt), or that has no hash (built some other way), is refused: robust uses numpy and
:func:`kernel_status` says why. Without the source (a wheel) the build is used as is.

``FORTIS_KERNELS=numpy`` turns the kernels off; ``FORTIS_KERNELS=compiled`` requires them
(and uses the network for any number of rows).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

from fortis.native import check_build, kernels_enabled, kernels_mode, kernels_reason

__all__ = ["available", "enabled", "kernel_status", "kernels", "mode"]

SOURCE = Path(__file__).with_name("_kernels.c")


def _load() -> ModuleType:
    from . import _kernels

    return _kernels


def _check_build() -> tuple[ModuleType | None, dict[str, Any]]:
    """Import the build and compare its compiled-in source hash with the shipped source.
    Returns (the module if usable, else None; the facts for :func:`kernel_status`)."""
    return check_build(
        _load, SOURCE, name="robust._kernels", needs="a C compiler", fallback="numpy"
    )


#: The compiled module when it is built and matches its source, else None.
kernels, _BUILD = _check_build()


def available() -> bool:
    """Whether ``robust._kernels`` was built, imported and matches its source."""
    return kernels is not None


def mode() -> str:
    """``"compiled"``, ``"numpy"`` or ``"auto"`` (the default: compiled when available),
    from ``$FORTIS_KERNELS``. Raises RuntimeError for an unknown value, or for
    ``compiled`` when no usable build exists (the message says why)."""
    return kernels_mode(kernels, _BUILD)


def enabled() -> bool:
    """Whether the compiled kernels are to be used (see :func:`mode`)."""
    return kernels_enabled(kernels, _BUILD)


def kernel_status() -> dict[str, Any]:
    """Whether robust's compiled kernels are in use, and why (never raises).

    Keys:
        ``available``: built, imported and matching its source;
        ``in_use``: available and not turned off by ``FORTIS_KERNELS``;
        ``reason``: one line saying which and why, e.g. for ``fortis --version``;
        ``source_hash_ok``: True (the build matches ``_kernels.c``), False (stale or
        unhashed: refused) or None (not built, or no source shipped to compare with);
        ``built``: whether the extension module exists; ``path``: its file (or None);
        ``mode``: ``$FORTIS_KERNELS`` (``"auto"`` when unset).
    """
    setting = os.environ.get("FORTIS_KERNELS", "").strip().lower() or "auto"
    checked = {True: "matches robust/_kernels.c", None: "source not shipped, unchecked"}
    in_use, reason = kernels_reason(
        kernels,
        _BUILD,
        in_use=f"compiled kernels in use ({checked.get(_BUILD['source_hash_ok'])})",
        what="compiled kernels",
    )
    return {
        "available": kernels is not None,
        "in_use": in_use,
        "reason": reason,
        "source_hash_ok": _BUILD["source_hash_ok"],
        "built": _BUILD["built"],
        "path": _BUILD["path"],
        "mode": setting,
    }
