"""Adaptive attacks: tune a base attack's strength against the configured defence.

Objective
---------
For a candidate strength ``s`` of the base attack (ALIE's ``z``, IPM's ``eps``, the scaling
``factor``, ...), let ``B(s)`` be the ``(f, d)`` rows it crafts and ``H`` the honest rows. The
*damage* is

    D(s) = || aggregate(H stacked on B(s)) - mean(H) ||_2,

the distance the defence's output is pushed away from what the honest clients alone would
give. The adaptive attack sends ``B(s*)`` with ``s* = argmax D(s)`` over the candidates. The
defence is inside the objective: a strength so large that the defence rejects or clips the
Byzantine rows scores little damage, a strength too small to matter scores little too, so the
maximiser is the strongest attack that still gets through. A non-finite aggregate counts as
infinite damage.

The base attack's own default strength is always among the candidates, and every candidate is
crafted with the same random seed, so the adaptive attack never does less damage than the base
attack at its default strength on the evaluated round.

Knowledge: an omniscient attacker evaluates ``D`` on the real round (``ctx.honest_updates``).
A limited attacker does not know ``H``; it evaluates ``D`` on a surrogate round in which the
``h = n - f`` honest rows are drawn from ``N(mean, std^2)`` (coordinate-wise) of its own
Byzantine clients' honest updates. With ``f == 1`` that surrogate has no spread (all rows equal
the attacker's own update).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import (
    AttackConfigError,
    AttackContext,
    AttackInputError,
    ModelPoisoningAttack,
    View,
    check_choice,
    check_int,
    check_real,
    output_dtype,
    validate_context,
)

__all__ = ["SEARCHES", "AdaptiveAttack", "damage"]

SEARCHES = ("grid", "bisection")
_MULTIPLES = (0.125, 0.25, 0.5, 2.0, 4.0, 8.0, 16.0, 32.0)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def damage(aggregate_vector: np.ndarray, honest: np.ndarray) -> float:
    """``||aggregate_vector - mean(honest)||_2`` in float64; ``inf`` if the aggregate is not finite."""
    agg = np.asarray(aggregate_vector, dtype=np.float64)
    if not np.all(np.isfinite(agg)):
        return float("inf")
    return float(np.linalg.norm(agg - np.mean(honest, axis=0, dtype=np.float64)))


class AdaptiveAttack(ModelPoisoningAttack):
    """Tune ``param`` of the ``base`` attack to maximise the damage ``D`` (module docstring).

    Args:
        base: registry name of a model-poisoning attack with a tunable strength
            (``"alie"``, ``"ipm"``, ``"scaling"``, ``"sign_flip"``, ``"gaussian"``).
        param: the strength parameter to tune; default: the base's first tunable one
            (``z``, ``eps``, ``factor``, ``scale``, ``sigma_scale``).
        search: ``"grid"`` evaluates every value of ``grid`` (default: the base's default
            strength times 1/8, 1/4, 1/2, 2, 4, ..., 32; or 0.25..16 if the default is 0).
            ``"bisection"`` scans a coarse set of points (the default grid plus 0, or 9 evenly
            spaced points of ``bounds``), then refines between the neighbours of the best one
            with a golden-section search of ``iters`` evaluations. The refinement finds the
            maximiser when the damage is unimodal near the best coarse point, the typical shape
            against a filtering defence (damage rises with strength until the defence starts
            rejecting the rows, then collapses).
        grid: explicit candidate values for ``search="grid"``.
        bounds: ``(low, high)`` scan range for ``search="bisection"``.
        iters: number of evaluations of the golden-section refinement (>= 3).
        base_params: other constructor parameters of the base attack.

    ``ctx.aggregate`` must be set. ``last_info`` records the chosen value, its damage, the
    damage at the default strength and every evaluation.
    """

    name = "adaptive"

    def __init__(
        self,
        base: str = "alie",
        param: str | None = None,
        search: str = "grid",
        grid: Sequence[float] | None = None,
        bounds: tuple[float, float] | None = None,
        iters: int = 16,
        base_params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from . import ATTACKS, make_attack  # the registry lives in the package __init__

        if base not in ATTACKS:
            raise AttackConfigError(
                f"attack 'adaptive': parameter 'base' must be one of {sorted(ATTACKS)}, got {base!r}"
            )
        base_cls = ATTACKS[base]
        if not (isinstance(base_cls, type) and issubclass(base_cls, ModelPoisoningAttack)) or not (
            base_cls.tunable
        ):
            tunable = sorted(
                n
                for n, c in ATTACKS.items()
                if issubclass(c, ModelPoisoningAttack) and c.tunable and n != self.name
            )
            raise AttackConfigError(
                f"attack 'adaptive': base {base!r} has no tunable strength; choose one of {tunable}"
            )
        self.base = base
        self.base_params = dict(base_params or {})
        self._template = make_attack(base, **self.base_params)
        self.param = base_cls.tunable[0] if param is None else param
        if self.param not in base_cls.tunable:
            raise AttackConfigError(
                f"attack 'adaptive': parameter 'param' must be one of {list(base_cls.tunable)} "
                f"for base {base!r}, got {self.param!r}"
            )
        if (
            base == "gaussian"
            and self.param == "sigma_scale"
            and self.base_params.get("sigma") is not None
        ):
            raise AttackConfigError(
                "attack 'adaptive': tuning 'sigma_scale' has no effect when base_params sets "
                "an absolute 'sigma'; drop 'sigma' from base_params"
            )
        self.search = check_choice(self.name, "search", search, SEARCHES)
        self.grid = None
        if grid is not None:
            if isinstance(grid, (str, bytes)) or not isinstance(grid, Sequence) or not grid:
                raise AttackConfigError(
                    "attack 'adaptive': parameter 'grid' must be a non-empty sequence of numbers"
                )
            self.grid = tuple(check_real(self.name, "grid", g) for g in grid)
        self.bounds = None
        if bounds is not None:
            if not isinstance(bounds, Sequence) or len(bounds) != 2:
                raise AttackConfigError(
                    "attack 'adaptive': parameter 'bounds' must be a pair (low, high)"
                )
            lo, hi = (check_real(self.name, "bounds", b) for b in bounds)
            if not lo < hi:
                raise AttackConfigError(
                    f"attack 'adaptive': parameter 'bounds' needs low < high, got ({lo}, {hi})"
                )
            self.bounds = (lo, hi)
        self.iters = check_int(self.name, "iters", iters, low=3)

    def params(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "param": self.param,
            "search": self.search,
            "grid": self.grid,
            "bounds": self.bounds,
            "iters": self.iters,
            "base_params": self.base_params,
        }

    # -- evaluation ------------------------------------------------------------------------
    def _evaluation_round(self, ctx: AttackContext, seed: int) -> np.ndarray:
        """The honest rows the damage is measured against (real or surrogate)."""
        if ctx.knowledge == "omniscient":
            return ctx.honest_updates
        view = View(ctx.byzantine_updates)
        h = int(ctx.n_clients) - ctx.n_byzantine
        if h < 1:
            raise AttackInputError(
                f"attack 'adaptive': AttackContext.n_clients={ctx.n_clients} leaves no honest "
                "client to build the surrogate round from"
            )
        noise = np.random.default_rng([seed, 1]).standard_normal((h, view.dim))
        return (view.mean + noise * view.std).astype(output_dtype(ctx), copy=False)

    def craft(self, ctx: AttackContext) -> np.ndarray:
        """Craft the base attack at the strength that maximises the damage.

        Raises:
            AttackInputError: malformed context, ``f == 0``, ``ctx.aggregate`` is None, or (limited
                knowledge) ``n_clients == f`` leaves no honest row to simulate.
        """
        validate_context(ctx, self.name, need_aggregate=True)
        seed = int(ctx.rng.integers(2**63 - 1))
        honest = self._evaluation_round(ctx, seed)
        default = self._template.default_strength(self.param, ctx)
        evaluated: dict[float, tuple[float, np.ndarray, dict[str, Any]]] = {}
        order: list[float] = []

        def evaluate(value: float) -> float:
            value = float(value)
            if value not in evaluated:
                attack = type(self._template)(**{**self.base_params, self.param: value})
                rows = attack.craft(dataclasses.replace(ctx, rng=np.random.default_rng(seed)))
                stacked = np.concatenate([honest, rows.astype(honest.dtype, copy=False)])
                evaluated[value] = (damage(ctx.aggregate(stacked), honest), rows, attack.last_info)
                order.append(value)
            return evaluated[value][0]

        evaluate(default)
        if self.search == "grid":
            for value in self.grid if self.grid is not None else self._default_grid(default):
                evaluate(value)
        else:
            coarse = self._coarse_points(default)
            for value in coarse:
                evaluate(value)
            i = max(range(len(coarse)), key=lambda j: evaluated[coarse[j]][0])
            bracket = (coarse[max(i - 1, 0)], coarse[min(i + 1, len(coarse) - 1)])
            if bracket[0] < bracket[1]:
                self._golden_section(evaluate, bracket)
        best = max(order, key=lambda v: (evaluated[v][0], -order.index(v)))
        best_damage, rows, base_info = evaluated[best]
        self.last_info = {
            "base": self.base,
            "param": self.param,
            "value": best,
            "damage": best_damage,
            "default_value": default,
            "default_damage": evaluated[default][0],
            "evaluations": [(v, evaluated[v][0]) for v in order],
            "base_info": base_info,
        }
        return rows

    @staticmethod
    def _default_grid(default: float) -> list[float]:
        if default == 0.0:
            return [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
        return [default * m for m in _MULTIPLES]

    def _coarse_points(self, default: float) -> list[float]:
        """Sorted scan points that bracket the optimum before the golden-section refinement."""
        if self.bounds is not None:
            lo, hi = self.bounds
            points = set(np.linspace(lo, hi, 9).tolist())
            if lo <= default <= hi:
                points.add(default)
        else:
            points = {default, 0.0, *self._default_grid(default)}
        return sorted(points)

    def _golden_section(self, evaluate, bracket: tuple[float, float]) -> None:  # noqa: ANN001
        """Golden-section search for the maximiser of ``evaluate`` inside ``bracket``.

        Ties (e.g. both probes on a plateau where the defence filters everything) shrink the
        bracket towards the endpoint with the larger damage.
        """
        lo, hi = bracket
        f_lo, f_hi = evaluate(lo), evaluate(hi)
        x1 = hi - _GOLDEN * (hi - lo)
        x2 = lo + _GOLDEN * (hi - lo)
        f1, f2 = evaluate(x1), evaluate(x2)
        for _ in range(self.iters - 2):
            if f1 > f2 or (f1 == f2 and f_lo >= f_hi):
                hi, f_hi, x2, f2 = x2, f2, x1, f1
                x1 = hi - _GOLDEN * (hi - lo)
                f1 = evaluate(x1)
            else:
                lo, f_lo, x1, f1 = x1, f1, x2, f2
                x2 = lo + _GOLDEN * (hi - lo)
                f2 = evaluate(x2)
