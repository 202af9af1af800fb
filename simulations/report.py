"""Reports: JSON for machines, Markdown tables for people, PNG plots for comparing at a glance."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulations.io import atomic_write_json, atomic_write_text
from simulations.runner import RunResult


def _fmt(value: float | None, pct: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.1f}%" if pct else f"{value:.2f}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def summary_table(results: Sequence[tuple[str, RunResult]]) -> str:
    """A Markdown table with one row per run."""
    lines = [
        "| run | split | attack | defence | final acc | best acc | honest rejected / round "
        "| Byzantine rejected / round | backdoor ASR | time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results:
        s = res.summary()
        c = res.config
        defence = c.defence_label()
        attack = c.attack if c.byzantine else "none (all honest)"
        lines.append(
            f"| {name} | {c.partition} | {attack} | {defence} | {_fmt(s['final_accuracy'])} "
            f"| {_fmt(s['best_accuracy'])} | {s['honest_rejected_per_round']:.2f} "
            f"| {s['byzantine_rejected_per_round']:.2f} | {_fmt(s['backdoor_asr'])} "
            f"| {s['seconds']:.1f}s |"
        )
    return "\n".join(lines)


def plot_accuracy(results: Sequence[tuple[str, RunResult]], path: str | os.PathLike[str]) -> Path:
    """Test accuracy per round, one line per run, plus honest clients wrongly rejected."""
    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(8, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    from matplotlib.ticker import MaxNLocator

    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    attack_colour: dict[str, str] = {}
    for name, res in results:
        c = res.config
        attacked = c.byzantine > 0 and c.attack != "none"
        if attacked:
            colour = attack_colour.setdefault(c.attack, palette[len(attack_colour) % len(palette)])
        else:
            colour = "0.45"
        undefended = c.defence == "mean" and not c.pre
        style = "-" if attacked and not undefended else ("--" if attacked else ":")
        rounds = [r.round + 1 for r in res.history if r.accuracy is not None]
        accs = [100 * r.accuracy for r in res.history if r.accuracy is not None]
        ax.plot(rounds, accs, linestyle=style, color=colour, marker="o", markersize=3, label=name)
        if attacked and not undefended:
            ax2.plot(
                [r.round + 1 for r in res.history],
                [r.honest_rejected for r in res.history],
                color=colour,
                linestyle=style,
                drawstyle="steps-mid",
                label=name,
            )
    cfg = max((res.config for _, res in results), key=lambda c: c.byzantine)
    partitions = ", ".join(dict.fromkeys(res.config.partition for _, res in results))
    ax.set_title(
        f"{cfg.dataset}, {cfg.clients} clients ({cfg.byzantine} Byzantine), "
        f"{partitions} split, {cfg.model}, {cfg.training}\n"
        "solid: defended   dashed: no defence   dotted: no attack",
        fontsize=10,
    )
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax2.set_ylabel("honest clients\nrejected")
    ax2.set_xlabel("round")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_simulation_report(
    results: Sequence[tuple[str, RunResult]], out_dir: str | os.PathLike[str]
) -> dict[str, Path]:
    """Write ``results.json``, ``summary.md`` and ``accuracy.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": atomic_write_json(
            out / "results.json", {name: res.to_dict() for name, res in results}
        ),
    }
    paths["png"] = plot_accuracy(results, out / "accuracy.png")
    cfg = max((res.config for _, res in results), key=lambda c: c.byzantine)
    md = [
        "# fortis simulate",
        "",
        f"Dataset **{cfg.dataset}**, {cfg.clients} clients of which {cfg.byzantine} Byzantine "
        f"in attacked runs, model {cfg.model}, training {cfg.training}, "
        f"{cfg.rounds} rounds, seed {cfg.seed}.",
        "",
        summary_table(results),
        "",
        "*honest rejected / round*: honest clients the defence excluded, averaged over rounds "
        "(unfair exclusions). ![accuracy](accuracy.png)",
        "",
    ]
    notes = [(name, note) for name, res in results for note in res.notes]
    if notes:
        md += ["## Notes", ""] + [f"- *{name}*: {note}" for name, note in notes] + [""]
    paths["md"] = atomic_write_text(out / "summary.md", "\n".join(md))
    return paths


# -- matrix -----------------------------------------------------------------------------------
def matrix_tables(cells: Sequence[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Group matrix cells by (partition, f) into defence × attack accuracy grids."""
    grids: dict[tuple[str, int], dict[str, Any]] = {}
    for cell in cells:
        key = (cell["partition"], int(cell["f"]))
        g = grids.setdefault(key, {"attacks": [], "defences": [], "acc": {}})
        if cell["attack"] not in g["attacks"]:
            g["attacks"].append(cell["attack"])
        if cell["defence"] not in g["defences"]:
            g["defences"].append(cell["defence"])
        g["acc"][(cell["defence"], cell["attack"])] = cell["final_accuracy"]
    return grids


def matrix_markdown(cells: Sequence[dict[str, Any]]) -> str:
    parts = []
    for (part, f), g in matrix_tables(cells).items():
        attacks = g["attacks"]
        parts.append(f"### partition {part}, f = {f}\n")
        parts.append("| defence | " + " | ".join(attacks) + " | worst case |")
        parts.append("|---|" + "---|" * (len(attacks) + 1))
        for d in g["defences"]:
            accs = [g["acc"].get((d, a)) for a in attacks]
            present = [a for a in accs if a is not None]
            worst = min(present) if present else None
            parts.append(
                f"| {d} | " + " | ".join(_fmt(a) for a in accs) + f" | **{_fmt(worst)}** |"
            )
        parts.append("")
    return "\n".join(parts)


def plot_matrix(cells: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """One heatmap per (partition, f): defences × (attacks + worst case), accuracy in %."""
    import numpy as np

    plt = _pyplot()
    grids = matrix_tables(cells)
    k = len(grids)
    first = next(iter(grids.values()))
    width = 1.2 * (len(first["attacks"]) + 1) + 3
    height = 0.45 * len(first["defences"]) + 1.6
    fig, axes = plt.subplots(k, 1, figsize=(width, height * k), squeeze=False)
    for ax, ((part, f), g) in zip(axes[:, 0], grids.items()):
        attacks, defences = g["attacks"], g["defences"]
        M = np.full((len(defences), len(attacks) + 1), np.nan)
        for i, d in enumerate(defences):
            for j, a in enumerate(attacks):
                v = g["acc"].get((d, a))
                if v is not None:
                    M[i, j] = 100 * v
            row = M[i, : len(attacks)]
            if np.isfinite(row).any():
                M[i, -1] = np.nanmin(row)
        im = ax.imshow(M, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(attacks) + 1), [*attacks, "worst"], rotation=30, ha="right")
        ax.set_yticks(range(len(defences)), defences)
        ax.axvline(len(attacks) - 0.5, color="black", linewidth=2)
        for i in range(M.shape[0]):
            for j in range(M.shape[1]):
                if np.isfinite(M[i, j]):
                    ax.text(j, i, f"{M[i, j]:.0f}", ha="center", va="center", fontsize=8)
        ax.set_title(f"test accuracy (%) — partition {part}, f = {f}")
        fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path
