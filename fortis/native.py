"""The checks shared by fortis's optional compiled extensions (``robust._kernels``,
``secagg._multiexp``): is a build there, does it match its source, is it switched on.

``setup.py`` compiles the SHA-256 of each extension's C source into it (``SOURCE_SHA256``).
Where the source is shipped next to the package (a checkout, an editable install), a build with
another hash (edited, not rebuilt) or none (not built by ``setup.py``) is refused; without the
source (a wheel) the build is used as is. ``$FORTIS_KERNELS`` switches every extension at
once: ``auto`` (default, compiled when usable), ``numpy`` (off) or ``compiled`` (required).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["check_build", "kernels_mode", "kernels_enabled", "kernels_reason"]


def check_build(
    load: Callable[[], ModuleType],
    source: Path,
    *,
    name: str,
    needs: str,
    fallback: str,
) -> tuple[ModuleType | None, dict[str, Any]]:
    """Import the extension (``load``) and compare its compiled-in hash with ``source``.

    Returns (the module if usable, else None; the facts ``built``, ``path``,
    ``source_hash_ok`` -- True, False for a refused build, None when there is nothing to
    compare -- and ``problem``, one line saying why it is not used, or None). ``name`` is the
    module's dotted name, ``needs`` what a build requires (e.g. "a C compiler"), ``fallback``
    what runs instead (e.g. "numpy"). Never raises.
    """
    try:
        built = load()
    except ImportError as exc:
        problem = f"{name} is not built ({exc}); reinstall with {needs}"
        return None, {"built": False, "path": None, "source_hash_ok": None, "problem": problem}
    facts: dict[str, Any] = {"built": True, "path": getattr(built, "__file__", None)}
    compiled = getattr(built, "SOURCE_SHA256", "")
    try:
        shipped = hashlib.sha256(source.read_bytes()).hexdigest()
    except OSError:  # a wheel: the source is not shipped, nothing to compare
        return built, dict(facts, source_hash_ok=None, problem=None)
    if compiled == shipped:
        return built, dict(facts, source_hash_ok=True, problem=None)
    if not compiled:
        problem = f"{name} was built without a source hash (not by setup.py)"
    else:
        problem = (
            f"{name} is stale: built from a {source.name} with SHA-256 {compiled[:12]}..., "
            f"the source is now {shipped[:12]}..."
        )
    problem += f"; rebuild with `pip install -e .` ({fallback} is used meanwhile)"
    return None, dict(facts, source_hash_ok=False, problem=problem)


def kernels_mode(kernels: ModuleType | None, build: dict[str, Any]) -> str:
    """``"compiled"``, ``"numpy"`` or ``"auto"`` from ``$FORTIS_KERNELS``.

    Raises RuntimeError for an unknown value, or for ``compiled`` when the extension has no
    usable build (``build["problem"]`` says why).
    """
    value = os.environ.get("FORTIS_KERNELS", "").strip().lower()
    if value in ("", "auto"):
        return "auto"
    if value == "numpy":
        return "numpy"
    if value == "compiled":
        if kernels is None:
            raise RuntimeError(f"FORTIS_KERNELS=compiled but {build['problem']}")
        return "compiled"
    raise RuntimeError(f"FORTIS_KERNELS must be 'auto', 'compiled' or 'numpy', got {value!r}")


def kernels_enabled(kernels: ModuleType | None, build: dict[str, Any]) -> bool:
    """Whether the extension is to be used (see :func:`kernels_mode`; raises as it does)."""
    mode = kernels_mode(kernels, build)
    return mode == "compiled" or (mode == "auto" and kernels is not None)


def kernels_reason(
    kernels: ModuleType | None, build: dict[str, Any], *, in_use: str, what: str
) -> tuple[bool, str]:
    """(whether the extension is in use, one line saying why), never raising: ``in_use`` is
    the line when it is, ``what`` names it in "... turned off by FORTIS_KERNELS=numpy"."""
    try:
        enabled = kernels_enabled(kernels, build)
    except RuntimeError as exc:
        return False, str(exc)
    if enabled:
        return True, in_use
    if kernels is not None:
        return False, f"{what} turned off by FORTIS_KERNELS=numpy"
    return False, build["problem"]
