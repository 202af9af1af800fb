"""Every typed error fortis raises on purpose derives from one base, ``fortis.FortisError``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from fortis import FortisError

PACKAGES = ("robust", "secagg", "dp", "protocol", "simulations")


def _public_errors(package: str) -> list[type[BaseException]]:
    pkg = importlib.import_module(package)
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue  # private modules' control-flow exceptions never reach a caller
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found[f"{obj.__module__}.{name}"] = obj
    return sorted(found.values(), key=lambda c: c.__qualname__)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_error_is_a_fortis_error(package):
    errors = _public_errors(package)
    assert errors, f"{package} defines no error types?"
    stray = [f"{e.__module__}.{e.__qualname__}" for e in errors if not issubclass(e, FortisError)]
    assert not stray, f"not derived from fortis.FortisError: {stray}"


@pytest.mark.parametrize("package", PACKAGES)
def test_package_base_errors_are_value_errors(package):
    base = {
        "robust": "RobustError",
        "secagg": "SecAggError",
        "dp": "DPError",
        "protocol": "ProtocolError",
        "simulations": "SimulationError",
    }[package]
    cls = getattr(importlib.import_module(package), base)
    assert issubclass(cls, FortisError) and issubclass(cls, ValueError)
