"""Command-line specs like ``bucketing:s=2+krum``, ``alie:z=1.5`` and ``z=1.5``: parsing
and the labels that name them in reports."""

from __future__ import annotations

from typing import Any

from simulations.errors import ConfigError


def parse_value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"`` -> True, ``"none"`` -> None, else the string."""
    low = text.strip().lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_params(items: list[str] | str | None, what: str) -> dict[str, Any]:
    """Parse ``["k=v", ...]`` or ``"k=v,k2=v2"`` into a dict; the error names ``what``."""
    if not items:
        return {}
    if isinstance(items, str):
        items = [p for p in items.split(",") if p]
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what}: expected key=value, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def parse_component(spec: str, what: str) -> tuple[str, dict[str, Any]]:
    """``"name:k=v,k2=v2"`` -> ``("name", {...})``."""
    name, _, params = spec.partition(":")
    if not name.strip():
        raise ConfigError(f"{what}: empty name in {spec!r}")
    return name.strip(), parse_params(params, f"{what} {name.strip()!r}")


def parse_attack(spec: str, what: str = "attack") -> tuple[str, dict[str, Any]]:
    """``"adaptive:base=ipm"`` -> ``("adaptive", {"base": "ipm"})``. An attack is one
    component: a ``+`` (which chains a defence's pre-aggregators) is a :class:`ConfigError`."""
    if "+" in spec:
        raise ConfigError(f"{what}: {spec!r} has a '+', but an attack is one NAME[:K=V,...]")
    return parse_component(spec, what)


def parse_defence(spec: str) -> tuple[tuple[tuple[str, dict[str, Any]], ...], str, dict[str, Any]]:
    """``"bucketing:s=2+krum"`` -> (pre-aggregators, rule, rule params)."""
    parts = [p for p in spec.split("+") if p.strip()]
    if not parts:
        raise ConfigError(f"defence: empty spec {spec!r}")
    components = [parse_component(p, "defence") for p in parts]
    rule, params = components[-1]
    return tuple(components[:-1]), rule, params


def component_label(name: str, params: dict[str, Any]) -> str:
    """``name(k=v,...)`` with the parameters sorted by key; the bare name without any."""
    if not params:
        return name
    return f"{name}(" + ",".join(f"{k}={v}" for k, v in sorted(params.items())) + ")"


def defence_label(
    pre: tuple[tuple[str, dict[str, Any]], ...],
    rule: str,
    params: dict[str, Any] | None = None,
) -> str:
    """``bucketing(s=2)+centered_clipping(tau=1)``: names with their explicit parameters, so
    defences that differ only in a parameter get different labels."""
    parts = [component_label(name, p) for name, p in pre]
    parts.append(component_label(rule, params or {}))
    return "+".join(parts)


def split_specs(text: str) -> list[str]:
    """Split a comma-separated list of specs, keeping ``k=v`` items with the spec before them:
    ``"centered_clipping:tau=1,iters=3,median"`` -> ``["centered_clipping:tau=1,iters=3",
    "median"]``."""
    specs: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if "=" in item and ":" not in item and "+" not in item and specs:
            specs[-1] += "," + item
        else:
            specs.append(item)
    return specs
