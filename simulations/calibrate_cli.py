"""``fortis calibrate``: the noise for a privacy target and the detection margin it leaves.

Prints :func:`dp.calibrate`'s answer as a table (or JSON with ``--json``): the noise, the epsilon
achieved, the placement, the detection margin per attack class and the refusal, if any. A refused
configuration (the noise would hide the named ``--attack``) still prints its numbers, says why it
is refused and exits 1; ``--override`` accepts it (exit 0, with the warning).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_calibrate_parser", "cmd_calibrate", "format_calibration"]


def add_calibrate_parser(sub: Any) -> argparse.ArgumentParser:
    """Register the ``calibrate`` subcommand on ``sub`` (argparse subparsers)."""
    from dp.calibration import ATTACKS, DEFENCES, MECHANISMS, PLACEMENTS

    p = sub.add_parser(
        "calibrate",
        help="noise for (epsilon, delta) and the detection margin it leaves the filter",
        description="Calibrates DP noise for a client-level (epsilon, delta) target and reports "
        "the smallest scaling, sign-flip and ALIE deviation the configured filter still "
        "catches, given the honest spread and where the noise enters. Refuses (exit 1) when the "
        "noise would hide the --attack named, unless --override. The model is in dp.calibrate's "
        "docstring.",
    )
    p.add_argument("--epsilon", type=float, required=True, help="target epsilon over all rounds")
    p.add_argument("--delta", type=float, required=True, help="target delta")
    p.add_argument("--rounds", type=int, required=True, help="training rounds")
    p.add_argument("--sampling-rate", type=float, required=True, help="client sampling rate")
    p.add_argument("--clip", type=float, required=True, help="L2 clip norm C of an update")
    p.add_argument("--dim", type=int, required=True, help="update dimension d")
    p.add_argument("--clients", type=int, required=True, help="clients per round n")
    p.add_argument("--f", type=int, required=True, help="Byzantine clients per round")
    p.add_argument("--defence", "--defense", default="multi_krum", choices=DEFENCES)
    p.add_argument("--mechanism", default="gaussian", choices=MECHANISMS)
    p.add_argument("--placement", default="central", choices=PLACEMENTS)
    p.add_argument("--attack", default=None, choices=ATTACKS, help="the attack class to stop")
    p.add_argument("--fpr", type=float, default=0.01, help="false-positive rate (default 0.01)")
    p.add_argument("--power", type=float, default=0.95, help="detection probability (0.95)")
    p.add_argument("--honest-spread", type=float, default=None, help="per-coordinate std s")
    p.add_argument("--honest-mean-norm", type=float, default=None, help="norm of the honest mean")
    p.add_argument("--sketch-dim", type=int, default=None, help="secure filtering's sketch k")
    p.add_argument("--bits", type=int, default=20, help="SecAgg bits (ddg, skellam; 20)")
    p.add_argument("--override", action="store_true", help="accept a refused configuration")
    p.add_argument("--json", action="store_true", help="print the calibration as JSON")
    return p


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def format_calibration(cal: Any) -> str:
    """The calibration as a plain-text table."""
    rows = [
        ("mechanism / placement", f"{cal.mechanism} / {cal.placement}"),
        ("noise multiplier (sigma / C)", _fmt(cal.noise_multiplier)),
        ("sigma on the sum", _fmt(cal.sigma)),
        ("per-client sigma", _fmt(cal.client_sigma)),
        ("integer scale / bits", f"{_fmt(cal.scale)} / {_fmt(cal.bits)}"),
        ("epsilon achieved (target)", f"{cal.epsilon:.4g} ({cal.epsilon_target:g})"),
        ("delta", f"{cal.delta:g}"),
        ("filter reads", cal.filter_reads),
        ("defence", f"{cal.defence} (n={cal.n}, f={cal.f})"),
        ("honest spread s (effective)", f"{cal.honest_spread:.4g} ({cal.effective_spread:.4g})"),
        ("honest mean norm", _fmt(cal.honest_mean_norm)),
        ("norm bound C(1+eps)", _fmt(cal.norm_bound)),
        ("threshold (max_norm)", _fmt(cal.threshold)),
        ("false-positive rate", _fmt(cal.false_positive_rate)),
        ("detection power", _fmt(cal.power)),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += ["", f"{'attack':<10} {'deviation':>10} {'dev. norm':>10} {'reachable':>9}  margin"]
    for name, m in cal.margins.items():
        mark = "*" if name == cal.attack else " "
        lines.append(
            f"{name + mark:<10} {m.deviation:>10.4g} {m.deviation_norm:>10.4g} "
            f"{'yes' if m.reachable else 'no':>9}  {m.note}"
        )
    if cal.refused:
        lines += ["", f"REFUSED: {cal.refused}"]
    for w in cal.warnings:
        if not w.startswith("OVERRIDDEN"):
            lines.append(f"warning: {w}")
    return "\n".join(lines)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Run :func:`dp.calibrate` and print it. Exit 1 when refused without ``--override``;
    other errors (bad parameters) propagate as :class:`fortis.FortisError`."""
    import dp

    kwargs = dict(
        rounds=args.rounds,
        sampling_rate=args.sampling_rate,
        clip_norm=args.clip,
        dim=args.dim,
        n=args.clients,
        f=args.f,
        defence=args.defence,
        mechanism=args.mechanism,
        placement=args.placement,
        attack=args.attack,
        false_positive_rate=args.fpr,
        power=args.power,
        honest_spread=args.honest_spread,
        honest_mean_norm=args.honest_mean_norm,
        sketch_dim=args.sketch_dim,
        bits=args.bits,
    )
    try:
        cal = dp.calibrate(args.epsilon, args.delta, override=args.override, **kwargs)
        status = 0
    except dp.DetectionRefusedError:
        cal = dp.calibrate(args.epsilon, args.delta, override=True, **kwargs)
        status = 1
    if args.json:
        print(json.dumps({**cal.to_dict(), "exit_status": status}, indent=2))
    else:
        print(format_calibration(cal))
        if status:
            print("(refused: exit 1; --override accepts it)")
    return status
