"""Helpers for threat-model test suites.

Write assertions such as "defence D keeps accuracy >= A against attack X at f" directly::

    from simulations.testing import assert_defence_holds

    def test_median_holds_against_scaling():
        assert_defence_holds("median", "scaling", f=4, min_accuracy=0.85, rounds=10)

or use the ``fortis_threat_model`` pytest fixture (registered as a pytest plugin when fortis is
installed), which caches datasets across tests in a session.
"""

from __future__ import annotations

from typing import Any

from simulations.config import SimulationConfig
from simulations.datasets import Dataset, load_dataset
from simulations.runner import RunResult, run_simulation
from simulations.specs import parse_defence


class ThreatModel:
    """Runs threat-model simulations with shared, cached datasets."""

    def __init__(self, **defaults: Any) -> None:
        self.defaults = defaults
        self._datasets: dict[tuple[str, str | None, int], Dataset] = {}

    def config(self, defence: str, attack: str, f: int, **overrides: Any) -> SimulationConfig:
        pre, rule, params = parse_defence(defence)
        kwargs = {**self.defaults, **overrides}
        kwargs.setdefault("defence_params", params)
        kwargs["pre"] = (*pre, *kwargs.get("pre", ()))
        return SimulationConfig(defence=rule, attack=attack, byzantine=f, **kwargs)

    def run(self, defence: str, attack: str, f: int, **overrides: Any) -> RunResult:
        """Run ``attack`` with ``f`` Byzantine clients against ``defence`` (e.g. ``"bucketing+krum"``)."""
        cfg = self.config(defence, attack, f, **overrides)
        key = (cfg.dataset, cfg.data_dir, cfg.seed)
        if key not in self._datasets:
            self._datasets[key] = load_dataset(cfg.dataset, cfg.data_dir, seed=cfg.seed)
        return run_simulation(cfg, dataset=self._datasets[key])

    def assert_holds(
        self,
        defence: str,
        attack: str,
        f: int,
        min_accuracy: float,
        *,
        max_honest_rejected: float | None = None,
        **overrides: Any,
    ) -> RunResult:
        """Assert the final accuracy is >= ``min_accuracy`` (and, optionally, that on average
        at most ``max_honest_rejected`` honest clients were rejected per round)."""
        res = self.run(defence, attack, f, **overrides)
        _raise_if_failed(res, defence, attack, f)
        acc = res.final_accuracy
        if not acc >= min_accuracy:
            raise AssertionError(
                f"defence {defence!r} fell to {acc:.3f} < {min_accuracy:.3f} against "
                f"{attack!r} at f={f} (accuracy per round: "
                f"{[round(a, 3) for a in res.accuracies]})"
            )
        if max_honest_rejected is not None and res.honest_rejected_per_round > max_honest_rejected:
            raise AssertionError(
                f"defence {defence!r} rejected {res.honest_rejected_per_round:.2f} honest "
                f"clients per round against {attack!r} (limit {max_honest_rejected})"
            )
        return res

    def assert_breaks(
        self, defence: str, attack: str, f: int, max_accuracy: float, **overrides: Any
    ) -> RunResult:
        """Assert the attack drives final accuracy to <= ``max_accuracy`` (a known weakness)."""
        res = self.run(defence, attack, f, **overrides)
        _raise_if_failed(res, defence, attack, f)
        if not res.final_accuracy <= max_accuracy:
            raise AssertionError(
                f"attack {attack!r} at f={f} left {defence!r} at {res.final_accuracy:.3f} "
                f"> {max_accuracy:.3f}"
            )
        return res


def _raise_if_failed(res: RunResult, defence: str, attack: str, f: int) -> None:
    """A run that failed (an error, not a diverged model) proves nothing either way."""
    if res.failure is not None:
        raise AssertionError(
            f"the run of {defence!r} against {attack!r} at f={f} {res.failure.describe()}\n"
            f"{res.failure.traceback}"
        )


_default = ThreatModel()


def assert_defence_holds(
    defence: str, attack: str, f: int, min_accuracy: float, **overrides: Any
) -> RunResult:
    """Module-level form of :meth:`ThreatModel.assert_holds` (shares one dataset cache)."""
    return _default.assert_holds(defence, attack, f, min_accuracy, **overrides)


def assert_attack_breaks(
    defence: str, attack: str, f: int, max_accuracy: float, **overrides: Any
) -> RunResult:
    """Module-level form of :meth:`ThreatModel.assert_breaks`."""
    return _default.assert_breaks(defence, attack, f, max_accuracy, **overrides)
