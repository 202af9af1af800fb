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


def status_cell(res: RunResult) -> str:
    """The run's status in a few words: ``ok``, ``diverged r7 (parameters)``, ``failed r3``
    (rounds counted from 1; the full reason is in the report's notes)."""
    if res.failure is not None:
        where = "setup" if res.failure.round is None else f"r{res.failure.round + 1}"
        return f"**failed** {where}"
    if res.divergence is not None:
        return f"**diverged** r{res.divergence.round + 1} ({res.divergence.kind})"
    return "ok"


def summary_table(results: Sequence[tuple[str, RunResult]]) -> str:
    """A Markdown table with one row per run; a diverged run's final accuracy is chance.

    The columns show what the row ran, from its config: the attack with its parameters and
    f, the defence with its pre-aggregators and the clients' clip, and the aggregation mode
    (plaintext or secure)."""
    with_rep = any(res.config.reputation is not None for _, res in results)
    with_dp = any(res.config.dp_epsilon is not None for _, res in results)
    lines = [
        "| run | split | attack | defence | aggregation | final acc | best acc "
        "| honest rejected / round | Byzantine rejected / round | backdoor ASR | status | time |"
        + (" final trust: honest min / Byzantine max |" if with_rep else "")
        + (" epsilon spent |" if with_dp else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
        + ("---|" if with_rep else "")
        + ("---|" if with_dp else ""),
    ]
    for name, res in results:
        s = res.summary()
        c = res.config
        attack = f"{c.attack_label()} (f={c.byzantine})" if c.byzantine else "none (all honest)"
        final = _fmt(s["final_accuracy"]) + (" (chance)" if res.divergence is not None else "")
        lines.append(
            f"| {name} | {c.partition} | {attack} | {c.defence_label(client_clip=True)} "
            f"| {c.aggregation_label()} | {final} "
            f"| {_fmt(s['best_accuracy'])} | {s['honest_rejected_per_round']:.2f} "
            f"| {s['byzantine_rejected_per_round']:.2f} | {_fmt(s['backdoor_asr'])} "
            f"| {status_cell(res)} | {s['seconds']:.1f}s |"
            + (f" {_trust_cell(s)} |" if with_rep else "")
            + (f" {_epsilon_cell(res)} |" if with_dp else "")
        )
    return "\n".join(lines)


def _epsilon_cell(res: RunResult) -> str:
    eps = res.final_epsilon
    if eps is None:
        return "– (no DP)"
    return f"{eps:.3g} (target {res.config.dp_epsilon:g})"


def privacy_markdown(results: Sequence[tuple[str, RunResult]]) -> str:
    """The ``--dp-epsilon`` section: per DP run, the placement, the target and what was
    spent, the noise, and epsilon after each round; '' when no run used DP."""
    runs = [(name, res) for name, res in results if res.privacy is not None]
    if not runs:
        return ""
    parts = [
        "| run | mode | target (epsilon, delta) | client sampling q | noise multiplier z "
        "| noise std on the sum (z*C) | noise std on the mean (last round) | epsilon spent |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, res in runs:
        p = res.privacy
        assert p is not None
        stds = [r.dp_noise_std for r in res.history if r.dp_noise_std is not None]
        z = p.get("noise_multiplier")
        z_text = "–" if z is None else f"{z:.4g}"
        sum_text = "–" if z is None else f"{p['noise_std_sum']:.4g}"
        mean_std = "–" if not stds else f"{stds[-1]:.4g}"
        if p["mode"] == "before_filter" and stds:
            mean_std = f"{stds[-1]:.4g} per honest row (before the filter)"
        parts.append(
            f"| {name} | {p['mode']} | ({p['target_epsilon']:g}, {p['delta']:g}) "
            f"| {p['sampling_rate']:g} | {z_text} | {sum_text} | {mean_std} "
            f"| {p['epsilon']:.4g} |"
        )
    parts += ["", "Epsilon spent after each round:", ""]
    for name, res in runs:
        eps = ", ".join("–" if e is None else f"{e:.3g}" for e in res.epsilon_per_round)
        parts.append(f"- *{name}*: {eps}")
    local = [(name, res) for name, res in runs if res.privacy["mode"] == "local"]
    for name, res in local:
        per = res.privacy["client_epsilon"]
        shown = ", ".join(f"{cid}: {eps:.3g}" for cid, eps in per.items())
        parts += ["", f"Per-client sample-level epsilon of *{name}*: {shown}"]
    parts += [
        "",
        "*distributed* (--secure): every client adds a seeded discrete Gaussian or Skellam "
        "share before masking, the key holder regenerates the accepted shares so the "
        "verification covers the noisy sum, and the filter reads noise-free sketches; the noise "
        "std on the sum is counted over the m_min = n - 2f honest shares the sum surely "
        "carries, and the accountant is the discrete mechanism's at the round's fixed-point "
        "scale. "
        "*central*: every client clips to C, the defence runs on the noise-free clipped "
        "updates (in secure mode the filter reads noise-free sketches), then the server adds "
        "Gaussian noise of std z*C to the sum of the m aggregated updates (z*C/m on their "
        "mean); z is `dp.noise_multiplier_for(epsilon, delta, rounds, q)` and the accountant "
        "(`dp.Accountant`, Google's dp-accounting, client level, add/remove one client) "
        "advances once per released round. q = 1: every client takes part in every round; "
        "q < 1: Poisson client sampling, as the accountant assumes. The noise comes from a "
        "ChaCha20 `dp.NoiseSource` keyed by the run seed: deterministic, for reproducible "
        "simulations only. *local*: clients train with Opacus DP-SGD; the epsilon is each "
        "client's sample-level epsilon (largest shown), and the noise widens the honest spread "
        "the defence sees. *before_filter*: harmful by design -- the noise is in the rows the "
        "defence reads (each honest row carries a share z*C/sqrt(m)), and Byzantine clients "
        "skip theirs. The accounting treats a round as the Gaussian mechanism on a sum of "
        "updates of norm <= C; the filter's data-dependent selection is not analysed.",
    ]
    return "\n".join(parts)


def _trust_cell(s: dict[str, Any]) -> str:
    if "honest_trust_min" not in s:
        return "–"
    byz = s.get("byzantine_trust_max")
    return f"{s['honest_trust_min']:.2f} / {'–' if byz is None else f'{byz:.2f}'}"


def reputation_rows(res: RunResult) -> list[dict[str, Any]]:
    """Per client of a ``--reputation`` run, lowest final trust first: id, Byzantine or not,
    final and lowest trust, the rounds (from 1) it was excluded in. Empty without reputation."""
    T = res.trust_history()
    if T is None or len(T) == 0:
        return []
    byz = set(res.byzantine_ids)
    excluded: dict[int, list[int]] = {}
    for r in res.history:
        for cid in r.reputation_excluded or ():
            excluded.setdefault(cid, []).append(r.round + 1)
    rows = [
        {
            "client": cid,
            "byzantine": cid in byz,
            "final_trust": float(T[-1, cid]),
            "lowest_trust": float(T[:, cid].min()),
            "excluded_rounds": excluded.get(cid, []),
        }
        for cid in range(T.shape[1])
    ]
    return sorted(rows, key=lambda row: (row["final_trust"], row["client"]))


def _rounds_text(rounds: list[int]) -> str:
    if not rounds:
        return "never"
    shown = ", ".join(str(r) for r in rounds[:8])
    return f"{len(rounds)}: {shown}{', ...' if len(rounds) > 8 else ''}"


def reputation_markdown(results: Sequence[tuple[str, RunResult]]) -> str:
    """One table per ``--reputation`` run: every client's final and lowest trust and the
    rounds reputation excluded it in, lowest trust first; '' when no run kept reputation."""
    parts = []
    for name, res in results:
        rows = reputation_rows(res)
        if not rows:
            continue
        floor = res.config.reputation["floor"]
        honest_out = [r for r in rows if not r["byzantine"] and r["excluded_rounds"]]
        byz_out = [r for r in rows if r["byzantine"] and r["excluded_rounds"]]
        parts += [
            f"### {name}",
            "",
            f"Floor {floor:g}: {len(honest_out)} honest and {len(byz_out)} of "
            f"{len(res.byzantine_ids)} Byzantine clients were excluded at least once.",
            "",
            "| client | role | final trust | lowest trust | rounds excluded |",
            "|---|---|---|---|---|",
        ]
        for r in rows:
            role = "**Byzantine**" if r["byzantine"] else "honest"
            parts.append(
                f"| {r['client']} | {role} | {r['final_trust']:.3f} | {r['lowest_trust']:.3f} "
                f"| {_rounds_text(r['excluded_rounds'])} |"
            )
        parts.append("")
    return "\n".join(parts)


def plot_reputation(
    results: Sequence[tuple[str, RunResult]], path: str | os.PathLike[str]
) -> Path | None:
    """Trust per client over rounds, one panel per ``--reputation`` run: honest clients in
    blue, Byzantine ones in red (dashed), the floor as a grey line, an x where reputation
    excluded a client from that round. ``None`` (nothing written) when no run kept it."""
    runs = [(name, res) for name, res in results if res.trust_history() is not None]
    runs = [(name, res) for name, res in runs if len(res.history)]
    if not runs:
        return None
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(
        len(runs), 1, figsize=(8, 3.2 * len(runs)), squeeze=False, sharex=False
    )
    for ax, (name, res) in zip(axes[:, 0], runs):
        T = res.trust_history()
        assert T is not None
        rounds = [r.round + 1 for r in res.history]
        byz = set(res.byzantine_ids)
        p = res.config.reputation
        prior = p["a0"] / (p["a0"] + p["b0"])
        for cid in range(T.shape[1]):
            is_byz = cid in byz
            ax.plot(
                [0, *rounds],
                [prior, *T[:, cid]],
                color="tab:red" if is_byz else "tab:blue",
                linestyle="--" if is_byz else "-",
                linewidth=1.8 if is_byz else 0.9,
                alpha=0.9 if is_byz else 0.55,
                zorder=3 if is_byz else 2,
            )
        for r in res.history:
            for cid in r.reputation_excluded or ():
                ax.plot(
                    r.round + 1,
                    T[rounds.index(r.round + 1), cid],
                    marker="x",
                    color="tab:red" if cid in byz else "tab:blue",
                    markersize=6,
                    zorder=4,
                )
        floor = res.config.reputation["floor"]
        if floor > 0:
            ax.axhline(floor, color="0.4", linestyle=":", linewidth=1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("trust (0: prior)")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel("round")
    handles = [
        Line2D([], [], color="tab:blue", label="honest client"),
        Line2D([], [], color="tab:red", linestyle="--", linewidth=1.8, label="Byzantine client"),
        Line2D([], [], color="0.4", linestyle=":", label="floor (excluded below)"),
        Line2D([], [], color="0.3", marker="x", linestyle="", label="excluded that round"),
    ]
    axes[0, 0].legend(handles=handles, fontsize=7, loc="lower left")
    return _save_figure(fig, path)


def plot_accuracy(results: Sequence[tuple[str, RunResult]], path: str | os.PathLike[str]) -> Path:
    """Test accuracy per round, one line per run, plus honest clients wrongly rejected; with
    a ``--dp-epsilon`` run, the privacy spent (epsilon after each round) beside them."""
    plt = _pyplot()
    with_dp = any(res.privacy is not None for _, res in results)
    from matplotlib.ticker import MaxNLocator

    if with_dp:
        fig = plt.figure(figsize=(13, 6.5))
        grid = fig.add_gridspec(2, 2, height_ratios=[3, 1.3], width_ratios=[2, 1])
        ax = fig.add_subplot(grid[0, 0])
        ax2 = fig.add_subplot(grid[1, 0], sharex=ax)
        ax_eps = fig.add_subplot(grid[:, 1])
    else:
        fig, (ax, ax2) = plt.subplots(
            2, 1, figsize=(8, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
        )
        ax_eps = None

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
        label = name
        if res.status != "completed":
            label += f" [{status_cell(res).replace('*', '')}]"
        ax.plot(rounds, accs, linestyle=style, color=colour, marker="o", markersize=3, label=label)
        if res.divergence is not None and accs:
            # The divergence round, scored at chance: a cross where the line stops.
            ax.plot(rounds[-1], accs[-1], marker="X", markersize=11, color=colour, zorder=5)
            ax.annotate(
                f"diverged ({res.divergence.kind})",
                (rounds[-1], accs[-1]),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=7,
                color=colour,
            )
        elif res.failure is not None and accs:
            ax.plot(rounds[-1], accs[-1], marker="s", markersize=8, color="black", zorder=5)
        if ax_eps is not None and res.privacy is not None:
            points = [(r.round + 1, r.dp_epsilon) for r in res.history if r.dp_epsilon is not None]
            if points:
                ax_eps.plot(
                    *zip(*points),
                    linestyle=style,
                    color=colour,
                    marker="o",
                    markersize=3,
                    label=name,
                )
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
        "solid: defended   dashed: no defence   dotted: no attack   X: diverged (chance)",
        fontsize=10,
    )
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax2.set_ylabel("honest clients\nrejected")
    ax2.set_xlabel("round")
    ax2.grid(alpha=0.3)
    if ax_eps is not None:
        targets = sorted({res.config.dp_epsilon for _, res in results if res.privacy is not None})
        for target in targets:
            ax_eps.axhline(target, color="0.4", linestyle=":", linewidth=1)
        ax_eps.set_title("privacy spent (dotted: target epsilon)", fontsize=10)
        ax_eps.set_xlabel("round")
        ax_eps.set_ylabel("epsilon spent")
        ax_eps.set_ylim(bottom=0)
        ax_eps.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_eps.grid(alpha=0.3)
        ax_eps.legend(fontsize=7, loc="lower right")
    return _save_figure(fig, path)


def write_simulation_report(
    results: Sequence[tuple[str, RunResult]], out_dir: str | os.PathLike[str]
) -> dict[str, Path]:
    """Write ``results.json``, ``summary.md`` and ``accuracy.png`` into ``out_dir``, and
    ``reputation.png`` when a run kept ``--reputation`` (the per-round scores of every client
    are in ``results.json``, each round's ``reputation``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": atomic_write_json(
            out / "results.json", {name: res.to_dict() for name, res in results}
        ),
    }
    paths["png"] = plot_accuracy(results, out / "accuracy.png")
    rep_png = plot_reputation(results, out / "reputation.png")
    if rep_png is not None:
        paths["reputation_png"] = rep_png
    cfg = max((res.config for _, res in results), key=lambda c: c.byzantine)
    md = [
        "# fortis simulate",
        "",
        f"Dataset **{cfg.dataset}**, {cfg.clients} clients of which {cfg.byzantine} Byzantine "
        f"in attacked runs, model {cfg.model}, training {cfg.training}, "
        f"{cfg.rounds} rounds, seed {cfg.seed}, {cfg.aggregation_label()} aggregation.",
        "",
        summary_table(results),
        "",
        "*honest rejected / round*: honest clients the defence excluded, averaged over rounds "
        "(unfair exclusions). *diverged*: the model became non-finite in that round (the "
        "kind says where it first showed: loss, honest_updates, aggregate or parameters); the "
        "run is scored at chance accuracy from then on and its remaining rounds are not run. "
        "*failed*: an unexpected error ended that run only; the reason is below and the "
        "traceback in results.json. ![accuracy](accuracy.png)",
        "",
    ]
    dp_md = privacy_markdown(results)
    if dp_md:
        md += ["## Privacy", "", dp_md, ""]
    rep_md = reputation_markdown(results)
    if rep_md:
        md += [
            "## Reputation",
            "",
            "Trust of each client after the last round (the posterior mean of its accepted "
            "and rejected verdicts, older rounds forgotten by the decay). A client below the "
            "floor is weighed 0 in the next round (at most f per round); an honest client "
            "low in this table is one the defence keeps rejecting, e.g. for its skewed data. "
            "Per-round scores: `reputation` of each round in results.json. "
            "![reputation](reputation.png)",
            "",
            rep_md,
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
        g = grids.setdefault(key, {"attacks": [], "defences": [], "acc": {}, "status": {}})
        if cell["attack"] not in g["attacks"]:
            g["attacks"].append(cell["attack"])
        if cell["defence"] not in g["defences"]:
            g["defences"].append(cell["defence"])
        status = cell.get("status", "completed")
        g["status"][(cell["defence"], cell["attack"])] = status
        # A failed cell has no accuracy: it is left out of the grid and the worst case.
        if status != "failed":
            g["acc"][(cell["defence"], cell["attack"])] = cell["final_accuracy"]
    return grids


def _cell_text(g: dict[str, Any], key: tuple[str, str], cells_by_key: dict) -> str:
    status = g["status"].get(key)
    if status == "failed":
        return "**failed**"
    text = _fmt(g["acc"].get(key))
    if status == "diverged":
        cell = cells_by_key[key]
        text += f" (diverged r{int(cell['diverged_round']) + 1})"
    return text


def matrix_markdown(cells: Sequence[dict[str, Any]]) -> str:
    """One attack × defence table per (partition, f), with a worst-case column, then the
    reasons of every diverged and failed cell. A diverged cell scores chance accuracy and
    counts in the worst case; a failed cell has no accuracy and does not."""
    parts = []
    for (part, f), g in matrix_tables(cells).items():
        attacks = g["attacks"]
        by_key = {
            (c["defence"], c["attack"]): c
            for c in cells
            if c["partition"] == part and int(c["f"]) == f
        }
        secure = any(c.get("secure") for c in by_key.values())
        parts.append(f"### partition {part}, f = {f}{', secure aggregation' if secure else ''}\n")
        parts.append("| defence | " + " | ".join(attacks) + " | worst case |")
        parts.append("|---|" + "---|" * (len(attacks) + 1))
        for d in g["defences"]:
            accs = [g["acc"].get((d, a)) for a in attacks]
            present = [a for a in accs if a is not None]
            worst = min(present) if present else None
            texts = [_cell_text(g, (d, a), by_key) for a in attacks]
            parts.append(f"| {d} | " + " | ".join(texts) + f" | **{_fmt(worst)}** |")
        parts.append("")
    with_rep = [c for c in cells if "honest_trust_min" in c]
    if with_rep:
        parts += [
            "### reputation at the end of each run\n",
            "| partition | f | defence | attack | honest trust min / mean | Byzantine trust "
            "max / mean | honest excluded / round | Byzantine excluded / round |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in with_rep:
            byz = (
                "–"
                if c.get("byzantine_trust_max") is None
                else f"{c['byzantine_trust_max']:.2f} / {c['byzantine_trust_mean']:.2f}"
            )
            parts.append(
                f"| {c['partition']} | {c['f']} | {c['defence']} | {c['attack']} "
                f"| {c['honest_trust_min']:.2f} / {c['honest_trust_mean']:.2f} | {byz} "
                f"| {c['honest_excluded_per_round']:.2f} "
                f"| {c['byzantine_excluded_per_round']:.2f} |"
            )
        parts.append("")
    marked = [c for c in cells if c.get("status", "completed") != "completed"]
    if marked:
        parts.append("Diverged cells are scored at chance accuracy; failed cells have none.\n")
        for c in marked:
            parts.append(
                f"- {c['defence']} vs {c['attack']} (partition {c['partition']}, f = {c['f']}): "
                f"{c['reason']}"
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
                status = g["status"].get((defences[i], attacks[j])) if j < len(attacks) else None
                if status == "failed":
                    ax.text(j, i, "failed", ha="center", va="center", fontsize=7)
                elif np.isfinite(M[i, j]):
                    text = f"{M[i, j]:.0f}" + ("\ndiverged" if status == "diverged" else "")
                    ax.text(
                        j, i, text, ha="center", va="center", fontsize=8 if "\n" not in text else 6
                    )
        ax.set_title(f"test accuracy (%) — partition {part}, f = {f}")
        fig.colorbar(im, ax=ax, fraction=0.03)
    return _save_figure(fig, path)


def _save_figure(fig, path: str | Path) -> Path:
    """Lay out, write atomically (temporary file, then rename) and close ``fig``; return the
    path. Every plot of the reports (accuracy, reputation, the matrix heatmap) goes through it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path
