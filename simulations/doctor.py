"""``fortis doctor``: what this installation has, in one screen.

:func:`diagnose` collects the facts (it never raises: a part that cannot be checked is
reported with the reason); :func:`format_report` renders them. The command exits non-zero
only when something ``fortis`` needs to run at all is missing.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sys
from typing import Any

__all__ = ["REQUIRED", "OPTIONAL", "diagnose", "format_report", "kernel_report", "mnist_report"]

#: Distributions every fortis process needs (the server side: robust, secagg, protocol).
REQUIRED: tuple[str, ...] = ("numpy", "cryptography", "phe", "gmpy2")
#: Distributions only ``fortis simulate`` / ``fortis matrix`` need (the ``sim`` extra).
OPTIONAL: tuple[str, ...] = ("torch", "opacus", "scikit-learn", "matplotlib", "tqdm")


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _importable(module: str) -> tuple[bool, str | None]:
    try:
        importlib.import_module(module)
    except Exception as exc:  # any import failure is a fact to report, not a crash
        return False, f"{type(exc).__name__}: {exc}"
    return True, None


def kernel_report() -> dict[str, Any]:
    """Whether robust's compiled kernels are in use, and why.

    Uses ``robust.kernel_status()`` when robust provides it; otherwise (older robust) asks
    ``robust._native`` and adds ``"source": "robust._native"``. Keys: ``available``,
    ``in_use``, ``reason`` and whatever ``kernel_status`` adds (``source_hash_ok``,
    ``path`` ...). On an error the dict has ``in_use: False`` and the error as ``reason``.
    """
    try:
        import robust

        if hasattr(robust, "kernel_status"):
            return {"source": "robust.kernel_status", **robust.kernel_status()}
        from robust import _native

        available = _native.available()
        mode = _native.mode()
        in_use = _native.enabled()
    except Exception as exc:  # robust broken or $FORTIS_KERNELS invalid: report it
        return {"in_use": False, "reason": f"{type(exc).__name__}: {exc}"}
    if in_use:
        reason = f"compiled kernels built and enabled (FORTIS_KERNELS mode {mode})"
    elif available:
        reason = "built, but FORTIS_KERNELS=numpy turns them off"
    else:
        reason = "not built (no C compiler at install); numpy gives the same results"
    return {
        "source": "robust._native",
        "available": available,
        "in_use": in_use,
        "mode": mode,
        "reason": reason,
    }


def mnist_report(data_dir: str | None = None) -> dict[str, Any]:
    """Where ``fortis simulate --dataset mnist`` would read MNIST from, and whether the four
    IDX files are there (checked by name, not read)."""
    from simulations.datasets import MNIST_KEYS, mnist_file, mnist_folder

    folder, candidates = mnist_folder(data_dir)
    report: dict[str, Any] = {"tried": [str(c) for c in candidates], "folder": None}
    if folder is None:
        return {**report, "ok": False, "reason": "no such folder"}
    missing = [key for key in MNIST_KEYS if mnist_file(folder, key) is None]
    return {
        **report,
        "folder": str(folder.resolve()),
        "ok": not missing,
        "reason": f"missing {', '.join(missing)}" if missing else "the four IDX files",
    }


def diagnose(data_dir: str | None = None) -> dict[str, Any]:
    """Every fact ``fortis doctor`` shows, as a JSON-ready dict."""
    from fortis import __version__

    torch_ok, torch_error = _importable("torch")
    return {
        "fortis": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "required": {name: _version(name) for name in REQUIRED},
        "optional": {name: _version(name) for name in OPTIONAL},
        "torch_importable": torch_ok,
        "torch_error": torch_error,
        "kernels": kernel_report(),
        "mnist": mnist_report(data_dir),
    }


def format_report(facts: dict[str, Any]) -> str:
    """The facts of :func:`diagnose` as lines for a terminal."""

    def versions(table: dict[str, str | None]) -> str:
        return ", ".join(f"{name} {v or 'MISSING'}" for name, v in table.items())

    kernels = facts["kernels"]
    mnist = facts["mnist"]
    torch = "yes" if facts["torch_importable"] else f"no ({facts['torch_error']})"
    extra = {k: v for k, v in kernels.items() if k not in ("in_use", "reason")}
    lines = [
        f"fortis      {facts['fortis']}",
        f"python      {facts['python']}",
        f"required    {versions(facts['required'])}",
        f"sim extra   {versions(facts['optional'])}",
        f"torch       importable: {torch}",
        f"kernels     {'in use' if kernels.get('in_use') else 'not in use'}: "
        f"{kernels.get('reason', '')}",
        f"            {', '.join(f'{k}={v}' for k, v in extra.items())}",
        f"mnist       {'ok' if mnist['ok'] else 'not found'}: "
        f"{mnist['folder'] or ', '.join(mnist['tried'])} ({mnist['reason']})",
    ]
    return "\n".join(lines)


def missing_required(facts: dict[str, Any]) -> list[str]:
    """The required distributions that are not installed."""
    return [name for name, v in facts["required"].items() if v is None]
