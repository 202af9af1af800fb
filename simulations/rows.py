"""The rows of ``fortis simulate``: the defended run and the baselines that give it meaning.

Every row is named by :meth:`SimulationConfig.label` of the config it runs, so a row's name,
its table columns and what trained always agree.
"""

from __future__ import annotations

from simulations.config import SimulationConfig
from simulations.errors import ConfigError

__all__ = ["simulate_rows", "undefended"]


def undefended(cfg: SimulationConfig) -> SimulationConfig:
    """The same run with a plain mean, no client clipping and no reputation: the no-defence
    baseline. In secure mode the clip stays, since it is the fixed-point range the protocol
    needs; so it does with central DP, whose noise is calibrated to it."""
    return cfg.replace(
        defence="mean",
        defence_params={},
        pre=(),
        defence_f=None,
        clip=cfg.clip if cfg.secure or cfg.dp_needs_clip else None,
        reputation=None,
    )


def _clean(cfg: SimulationConfig) -> SimulationConfig:
    """No Byzantine client, no defence."""
    return undefended(cfg).replace(byzantine=0, attack="none", attack_params={})


def _what_runs(cfg: SimulationConfig) -> SimulationConfig:
    """With no Byzantine client the attack never runs: say so in the config."""
    if cfg.byzantine == 0:
        return cfg.replace(attack="none", attack_params={})
    return cfg


def simulate_rows(
    defended: SimulationConfig,
    *,
    second_attack: tuple[str, dict] | None,
    second_partition: str | None,
    baselines: bool = True,
) -> list[tuple[str, SimulationConfig]]:
    """``(name, config)`` of each distinct run of ``fortis simulate``, in the order shown.

    The rows: clean (no attack, mean) and the attack with no defence, as baselines; the attack
    against the defence; then, when ``second_attack`` is given (name and parameters), the same
    for that attack, on ``second_partition`` when it is not ``None`` (its own clean baseline
    first). Rows that would run the same config are run once. Each name is the config's
    :meth:`~SimulationConfig.label`.

    Raises :class:`ConfigError` if two different configs would share a name (which would make
    the report ambiguous).
    """
    runs: list[SimulationConfig] = []
    if baselines:
        runs += [_clean(defended), undefended(defended)]
    runs.append(defended)
    if second_attack is not None:
        name, params = second_attack
        second = defended.replace(attack=name, attack_params=params)
        if second_partition is not None:
            second = second.replace(partition=second_partition)
            if baselines:
                runs.append(_clean(second))
        runs.append(second)
        if baselines:
            runs.append(undefended(second))
    rows: dict[str, SimulationConfig] = {}
    for cfg in map(_what_runs, runs):
        name = cfg.label()
        if name in rows and rows[name].key() != cfg.key():
            raise ConfigError(f"two different simulate rows would both be named {name!r}")
        rows.setdefault(name, cfg)
    return list(rows.items())
