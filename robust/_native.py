"""The optional compiled kernels of robust (internal).

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

``FORTIS_KERNELS=numpy`` turns them off; ``FORTIS_KERNELS=compiled`` requires them (and
uses the network for any number of rows).
"""

from __future__ import annotations

import os

try:
    from . import _kernels as kernels
except ImportError:  # pragma: no cover - exercised on installs without a C compiler
    kernels = None

__all__ = ["available", "mode", "kernels"]


def available() -> bool:
    """Whether ``robust._kernels`` was built and imported."""
    return kernels is not None


def mode() -> str:
    """``"compiled"``, ``"numpy"`` or ``"auto"`` (the default: compiled when available),
    from ``$FORTIS_KERNELS``. Raises RuntimeError for an unknown value, or for
    ``compiled`` when the kernels were not built."""
    value = os.environ.get("FORTIS_KERNELS", "").strip().lower()
    if value in ("", "auto"):
        return "auto"
    if value == "numpy":
        return "numpy"
    if value == "compiled":
        if kernels is None:
            raise RuntimeError(
                "FORTIS_KERNELS=compiled but robust._kernels was not built "
                "(reinstall fortis with a C compiler and the Python headers available)"
            )
        return "compiled"
    raise RuntimeError(f"FORTIS_KERNELS must be 'auto', 'compiled' or 'numpy', got {value!r}")


def enabled() -> bool:
    """Whether the compiled kernels are to be used (see :func:`mode`)."""
    m = mode()
    return m == "compiled" or (m == "auto" and kernels is not None)
