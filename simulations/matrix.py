"""``fortis matrix``: attacks × defences × f × partitions, resumable cell by cell."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from simulations.config import SimulationConfig
from simulations.datasets import Dataset, load_dataset
from simulations.errors import ConfigError
from simulations.io import atomic_write_json, atomic_write_text, read_json
from simulations.options import merge_params
from simulations.report import matrix_markdown, plot_matrix
from simulations.runner import RunResult, check_components, preflight, run_simulation
from simulations.specs import component_label, parse_attack, parse_defence


def matrix_configs(
    base: SimulationConfig,
    attacks: Sequence[str],
    defences: Sequence[str],
    fs: Sequence[int],
    partitions: Sequence[str],
) -> list[tuple[dict[str, Any], SimulationConfig]]:
    """Expand the grid into (cell coordinates, config) pairs, in a stable order.

    ``attacks`` are specs ``NAME[:K=V,...]`` and ``defences`` specs ``[PRE+]RULE[:K=V,...]``;
    each carries its own parameters. ``base``'s pre-aggregators and defence parameters apply to
    every defence (the spec's add to them). ``base.attack_params`` (``--attack-param``) apply
    only to a grid of one attack: with several, which attack they belong to is ambiguous, and
    that is a :class:`ConfigError`. The cell coordinates name each attack and defence with its
    parameters, so variants of one attack or defence get their own row or column.
    """
    parsed_attacks = [parse_attack(spec, "--attacks") for spec in attacks]
    if base.attack_params and len(parsed_attacks) > 1:
        given = ",".join(f"{k}={v}" for k, v in base.attack_params.items())
        raise ConfigError(
            f"--attack-param {given} is ambiguous with {len(parsed_attacks)} attacks; give each "
            "attack its parameters in --attacks instead, e.g. --attacks alie:z=1.5,ipm:eps=0.5"
        )
    cells = []
    for part in partitions:
        for f in fs:
            for spec in defences:
                pre, rule, params = parse_defence(spec)
                for attack, attack_params in parsed_attacks:
                    cfg = base.replace(
                        partition=part,
                        byzantine=int(f),
                        attack=attack,
                        attack_params=merge_params(
                            f"attack {attack!r}", base.attack_params, attack_params
                        ),
                        defence=rule,
                        defence_params={**base.defence_params, **params},
                        pre=(*base.pre, *pre),
                    )
                    coords = {
                        "partition": part,
                        "f": int(f),
                        "defence": cfg.defence_label(),
                        "attack": component_label(attack, cfg.attack_params),
                        "secure": cfg.secure,
                    }
                    cells.append((coords, cfg))
    return cells


def run_matrix(
    base: SimulationConfig,
    *,
    attacks: Sequence[str],
    defences: Sequence[str],
    fs: Sequence[int],
    partitions: Sequence[str],
    out_dir: str | os.PathLike[str],
    on_cell: Callable[[int, int, dict[str, Any], bool], None] | None = None,
    on_round: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every cell not already stored under ``out_dir/cells`` and write the report.

    Every cell's configuration is checked first (:func:`~simulations.runner.preflight`), so a
    configuration error raises a :class:`fortis.FortisError` before any
    training. After that no cell can stop the grid: a cell whose model diverges is a result
    (stored, scored at chance, marked in the report), and a cell that fails for another reason
    is recorded as failed, with its reason, and not stored, so that a later run retries it.

    A completed or diverged cell is stored atomically, keyed by the hash of its full config, so
    an interrupted matrix resumes where it stopped and a changed option recomputes only what it
    affects. Returns one summary dict per cell (coordinates, ``final_accuracy``, ``status``,
    ``reason``, ...).
    """
    out = Path(out_dir)
    grid = matrix_configs(base, attacks, defences, fs, partitions)
    if not grid:
        raise ConfigError(
            "matrix: the grid is empty; give at least one attack, defence, f and partition"
        )
    for _, cfg in grid:
        check_components(cfg)
    datasets: dict[tuple[str, str | None, int], Dataset] = {}
    for _, cfg in grid:
        key = (cfg.dataset, cfg.data_dir, cfg.seed)
        if key not in datasets:
            datasets[key] = load_dataset(cfg.dataset, cfg.data_dir, seed=cfg.seed)
        preflight(cfg, datasets[key])
    cell_dir = out / "cells"
    cell_dir.mkdir(parents=True, exist_ok=True)
    summaries: list[dict[str, Any]] = []
    for index, (coords, cfg) in enumerate(grid):
        path = cell_dir / f"{cfg.key()}.json"
        resumed = path.exists()
        if resumed:
            result = RunResult.from_dict(read_json(path))
        else:
            dataset = datasets[(cfg.dataset, cfg.data_dir, cfg.seed)]
            result = run_simulation(cfg, dataset=dataset, progress=on_round)
            if result.status != "failed":
                atomic_write_json(path, result.to_dict())
        summary = {**coords, **result.summary(), "cell": path.name}
        summaries.append(summary)
        if on_cell is not None:
            on_cell(index, len(grid), summary, resumed)
    write_matrix_report(summaries, out, base)
    return summaries


def _privacy_lines(cells: Sequence[dict[str, Any]]) -> list[str]:
    """With DP: the epsilon the cells spent (each cell's accountant; per-round values are in
    its stored result)."""
    spent = [c["dp_epsilon"] for c in cells if c.get("dp_epsilon") is not None]
    if not spent:
        return []
    return [
        f"Epsilon spent per cell: {min(spent):.3g} to {max(spent):.3g} (each cell's own "
        "accountant; per round in the cell's results under `history[].dp_epsilon`).",
        "",
    ]


def write_matrix_report(
    cells: Sequence[dict[str, Any]], out: Path, base: SimulationConfig
) -> dict[str, Path]:
    paths = {
        "json": atomic_write_json(out / "matrix.json", {"base": base.to_dict(), "cells": cells})
    }
    paths["png"] = plot_matrix(cells, out / "matrix.png")
    md = [
        "# fortis matrix",
        "",
        f"Dataset **{base.dataset}**, model {base.model}, training {base.training}, "
        f"{base.clients} clients, {base.rounds} rounds, seed {base.seed}, "
        f"{base.aggregation_label()} aggregation"
        + (f", {base.privacy_label()}" if base.dp_epsilon is not None else "")
        + ". Final test accuracy; *worst case* is the minimum over attacks.",
        "",
        matrix_markdown(cells),
        *_privacy_lines(cells),
        "![matrix](matrix.png)",
        "",
    ]
    paths["md"] = atomic_write_text(out / "matrix.md", "\n".join(md))
    return paths
