"""The ``fortis`` command line: ``fortis simulate``, ``fortis matrix``, ``fortis defences`` and
``fortis doctor``.

The options that describe a run come from :class:`~simulations.config.SimulationConfig`'s
fields (:mod:`simulations.options`); this module adds only what is about the command itself
(the rows or grid to run, the output folder, progress).

Errors: every :class:`fortis.FortisError` (a bad option, data that cannot load, a defence
that cannot run with these clients ...) ends the command with one line on stderr and exit
status 2, before anything trains. A row or cell that fails while training is reported and
the rest run on; the command then exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fortis import FortisError, __version__
from simulations.calibrate_cli import add_calibrate_parser, cmd_calibrate
from simulations.deploy_cli import DEPLOY_COMMANDS, add_deploy_parsers
from simulations.options import add_config_arguments, config_kwargs

DEFAULT_HARD_ATTACK = "alie"
DEFAULT_SECOND_PARTITION = "dirichlet"
MATRIX_ATTACKS = "sign_flip,scaling,alie,ipm"
MATRIX_DEFENCES = "mean,median,trimmed_mean,krum,multi_krum"
#: ``fortis matrix --secure`` without ``--defences``: the rules secure filtering runs.
MATRIX_SECURE_DEFENCES = "mean,multi_krum,distance_filter"


def _add_run_output(p: argparse.ArgumentParser, out: str) -> None:
    g = p.add_argument_group("command output")
    g.add_argument("--out", "-o", default=out, help=f"output folder (default: {out})")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    """The ``fortis`` parser; the run options of simulate and matrix come from the config."""
    parser = argparse.ArgumentParser(
        prog="fortis",
        description="Private and Byzantine-robust federated aggregation: simulations and "
        "threat-model runs.",
    )
    parser.add_argument("--version", action="version", version=f"fortis {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser(
        "simulate",
        help="one training run under attack, with and without a defence",
        description="Federated training under a Byzantine attack. By default runs: clean (no "
        "attack), the attack with no defence (plain mean), the attack with the defence, and a "
        "second attack that is hard for the defence. Each row is named by what it ran. Writes "
        "results.json, summary.md and accuracy.png to --out.",
    )
    add_config_arguments(sim, "simulate")
    g = sim.add_argument_group("rows")
    g.add_argument(
        "--second-attack",
        default=DEFAULT_HARD_ATTACK,
        metavar="NAME[:K=V,...]",
        help="an attack hard for the defence, shown as more rows ('none' to skip; "
        f"default: {DEFAULT_HARD_ATTACK})",
    )
    g.add_argument(
        "--second-partition",
        default=DEFAULT_SECOND_PARTITION,
        help="partition for the second attack's rows: ALIE-style attacks hide best in non-IID "
        f"spread ('same' to reuse --partition; default: {DEFAULT_SECOND_PARTITION})",
    )
    g.add_argument(
        "--no-baselines",
        action="store_true",
        help="run only the defended rows (skip clean and undefended)",
    )
    _add_run_output(sim, "fortis-out/simulate")
    mat = sub.add_parser(
        "matrix",
        help="attacks × defences × f × partitions, with a table and a heatmap",
        description="Runs every combination; completed cells are stored and resumed.",
    )
    add_config_arguments(mat, "matrix")
    g = mat.add_argument_group("grid")
    g.add_argument(
        "--attacks",
        default=MATRIX_ATTACKS,
        help="comma-separated attack specs, each with its own parameters, e.g. "
        f"adaptive:base=ipm,adaptive:base=alie,alie:z=1.5 (default: {MATRIX_ATTACKS})",
    )
    g.add_argument(
        "--defences",
        "--defenses",
        default=None,
        help="comma-separated defence specs, e.g. krum,bucketing+krum (`fortis defences` "
        f"lists the rules, pre-aggregators and their parameters; default: {MATRIX_DEFENCES}, "
        f"with --secure {MATRIX_SECURE_DEFENCES})",
    )
    g.add_argument(
        "--f",
        dest="fs",
        default=None,
        help="comma-separated Byzantine counts (default: 20%% of clients, at least 1)",
    )
    g.add_argument("--partitions", default="iid", help="comma-separated partitions (default: iid)")
    _add_run_output(mat, "fortis-out/matrix")
    dfn = sub.add_parser(
        "defences",
        aliases=["defenses"],
        help="the rules and pre-aggregators --defence and --pre take, with their parameters",
        description="Lists the stages of robust's registry that a defence is built from: the "
        "pre-aggregators (--pre NAME[:K=V,...], or PRE+ before the rule in --defence), applied "
        "in order, then the rules (--defence RULE[:K=V,...]), each with its parameters, their "
        "bounds and defaults, and the number of clients it needs.",
    )
    dfn.add_argument("names", nargs="*", metavar="NAME", help="only these stages (default: all)")
    dfn.add_argument("--json", action="store_true", help="print the stages' schemas as JSON")
    doc = sub.add_parser(
        "doctor",
        help="versions, compiled kernels and data folders of this installation",
        description="Shows fortis' and its dependencies' versions, whether torch imports, "
        "whether robust's compiled kernels are in use, and where MNIST would be read from. "
        "Exits 1 when a required dependency is missing.",
    )
    doc.add_argument(
        "--data-dir", default=None, help="MNIST folder to check instead of the defaults"
    )
    doc.add_argument("--json", action="store_true", help="print the facts as JSON")
    add_calibrate_parser(sub)
    add_deploy_parsers(sub)
    return parser


class _RoundBar:
    """A tqdm bar over rounds that shows accuracy and rejections as it goes."""

    def __init__(self, total: int, desc: str, quiet: bool, position: int = 0) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=total,
            desc=desc,
            disable=quiet,
            leave=True,
            unit="round",
            dynamic_ncols=True,
            position=position,
            file=sys.stderr,
        )

    def __call__(self, _round: int, rec: dict[str, Any]) -> None:
        post = {}
        if rec.get("diverged"):
            post["DIVERGED"] = rec["diverged"]
        if rec.get("aborted"):
            post["NOT APPLIED"] = rec.get("verification") or "aborted"
        if rec.get("accuracy") is not None:
            post["acc"] = f"{100 * rec['accuracy']:.1f}%"
        post["rej honest"] = rec["honest_rejected"]
        post["rej byz"] = rec["byzantine_rejected"]
        if rec.get("reputation_excluded"):
            post["excl"] = len(rec["reputation_excluded"])
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _base_config(args: argparse.Namespace, command: str, **overrides: Any):
    from simulations.config import SimulationConfig

    return SimulationConfig(**{**config_kwargs(args, command), **overrides})


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run the rows of ``fortis simulate`` and write the report.

    Every row is checked before any trains (configuration errors raise). A row that diverges
    or fails is reported and the next row runs; returns 1 if any row failed, else 0.
    """
    from simulations.datasets import load_dataset
    from simulations.report import summary_table, write_simulation_report
    from simulations.rows import simulate_rows
    from simulations.runner import check_components, preflight, run_simulation
    from simulations.specs import parse_attack

    defended = _base_config(args, "simulate")
    second = (
        None
        if args.second_attack == "none"
        else parse_attack(args.second_attack, "--second-attack")
    )
    where = None if args.second_partition == "same" else args.second_partition
    runs = simulate_rows(
        defended, second_attack=second, second_partition=where, baselines=not args.no_baselines
    )
    for _, cfg in runs:
        check_components(cfg)  # names and the defence first: before a dataset loads
    dataset = load_dataset(defended.dataset, defended.data_dir, seed=defended.seed)
    for _, cfg in runs:
        preflight(cfg, dataset)
    if not args.quiet:
        print(
            f"fortis simulate: {dataset.name} ({len(dataset.x_train)} train / "
            f"{len(dataset.x_test)} test), {defended.clients} clients, f={defended.byzantine}, "
            f"{defended.partition} split, {defended.model}, {defended.training}, "
            f"{defended.rounds} rounds, {len(runs)} runs"
            + (f", secure aggregation ({defended.secure_graph} graph)" if defended.secure else ""),
            file=sys.stderr,
        )
    t0 = time.perf_counter()
    results = []
    for i, (name, cfg) in enumerate(runs):
        bar = _RoundBar(cfg.rounds, f"[{i + 1}/{len(runs)}] {name}", args.quiet)
        try:
            result = run_simulation(cfg, dataset=dataset, progress=bar)
        finally:
            bar.close()
        results.append((name, result))
        if result.status != "completed":
            # Shown even with --quiet: it explains the report's marked row.
            print(f"[{i + 1}/{len(runs)}] {name}: {result.describe_status()}", file=sys.stderr)
    paths = write_simulation_report(results, args.out)
    print(summary_table(results))
    written = ", ".join(
        str(paths[k]) for k in ("json", "md", "png", "reputation_png") if k in paths
    )
    print(f"\nwrote {written} ({time.perf_counter() - t0:.1f}s)")
    failed = [name for name, res in results if res.status == "failed"]
    if failed:
        print(
            f"{len(failed)} of {len(results)} runs failed ({', '.join(failed)}); "
            f"the tracebacks are in {paths['json']}",
            file=sys.stderr,
        )
        return 1
    return 0


def _int_list(text: str, option: str) -> list[int]:
    from simulations.errors import ConfigError

    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated integers, got {text!r}") from None


def cmd_matrix(args: argparse.Namespace) -> int:
    """Run the ``fortis matrix`` grid and write its report.

    Configuration errors raise before any cell trains. A diverging or failing cell is marked
    and the grid goes on; returns 1 if any cell failed, else 0.
    """
    from tqdm.auto import tqdm

    from simulations.config import default_byzantine
    from simulations.errors import ConfigError
    from simulations.matrix import matrix_configs, run_matrix
    from simulations.report import matrix_markdown
    from simulations.specs import split_specs

    attacks = split_specs(args.attacks)
    default = MATRIX_SECURE_DEFENCES if args.secure else MATRIX_DEFENCES
    defences = split_specs(args.defences if args.defences is not None else default)
    partitions = [p.strip() for p in args.partitions.split(",") if p.strip()]
    fs = _int_list(args.fs, "--f") if args.fs else [default_byzantine(args.clients)]
    for option, values in (
        ("--attacks", attacks),
        ("--defences", defences),
        ("--partitions", partitions),
        ("--f", fs),
    ):
        if not values:
            raise ConfigError(f"{option} must name at least one value")
    base = _base_config(args, "matrix", byzantine=fs[0], partition=partitions[0])
    total = len(matrix_configs(base, attacks, defences, fs, partitions))
    outer = tqdm(
        total=total,
        desc="cells",
        unit="cell",
        disable=args.quiet,
        file=sys.stderr,
        position=0,
        dynamic_ncols=True,
    )
    inner: dict[str, Any] = {"bar": None}

    def on_round(r: int, rec: dict[str, Any]) -> None:
        if inner["bar"] is None:
            inner["bar"] = _RoundBar(base.rounds, "  rounds", args.quiet, position=1)
        inner["bar"](r, rec)

    def on_cell(i: int, n: int, summary: dict[str, Any], resumed: bool) -> None:
        if inner["bar"] is not None:
            inner["bar"].close()
            inner["bar"] = None
        tag = "resumed" if resumed else "done"
        where = f"{summary['defence']} vs {summary['attack']} (f={summary['f']})"
        acc = summary["final_accuracy"]
        shown = (
            "failed"
            if summary["status"] == "failed"
            else "–"
            if acc is None
            else f"{100 * acc:.1f}%"
        )
        outer.set_postfix_str(f"{where}: {shown} [{tag}]")
        outer.update(1)
        if summary["status"] != "completed":
            outer.write(
                f"{where}, partition {summary['partition']}: {summary['reason']}",
                file=sys.stderr,
            )

    cells = run_matrix(
        base,
        attacks=attacks,
        defences=defences,
        fs=fs,
        partitions=partitions,
        out_dir=args.out,
        on_cell=on_cell,
        on_round=on_round,
    )
    outer.close()
    print(matrix_markdown(cells))
    out = Path(args.out)
    print(f"wrote {out / 'matrix.json'}, {out / 'matrix.md'}, {out / 'matrix.png'}")
    failed = sum(c["status"] == "failed" for c in cells)
    if failed:
        print(
            f"{failed} of {len(cells)} cells failed (reasons above and in matrix.md); "
            "they are not stored and rerun next time",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print :func:`simulations.doctor.diagnose`; 1 if a required dependency is missing."""
    from simulations.doctor import diagnose, format_report, missing_required

    facts = diagnose(args.data_dir)
    print(json.dumps(facts, indent=2) if args.json else format_report(facts))
    return 1 if missing_required(facts) else 0


#: The kinds of robust stage a defence spec takes, with the heading ``fortis defences`` gives
#: each (post-rule stages have no option yet).
DEFENCE_KINDS = {
    "pre": "Pre-aggregators (--pre NAME[:K=V,...], or NAME[:K=V,...]+RULE), applied in order",
    "rule": "Rules (--defence RULE[:K=V,...], --defence-param K=V)",
}

#: The per-call state a simulation supplies (``fortis defences`` marks it "per-call state").
RUN_STATE = (
    "In a simulation, centered_clipping's center is the previous round's aggregate (zeros at "
    "first)."
)


def cmd_defences(args: argparse.Namespace) -> int:
    """Print :func:`robust.stage_help` (or, with ``--json``, :func:`robust.stage_schema`) of
    the stages named, or of every pre-aggregator and rule. An unknown name is a
    :class:`~simulations.errors.ConfigError` listing the known ones."""
    import robust
    from simulations.errors import ConfigError

    by_kind = {kind: robust.stages(kind) for kind in DEFENCE_KINDS}
    known = [name for names in by_kind.values() for name in names]
    for name in args.names:
        if name not in known:
            raise ConfigError(f"unknown defence stage {name!r}; known: {', '.join(known)}")
    if args.json:
        print(json.dumps([robust.stage_schema(n) for n in args.names or known], indent=2))
    elif args.names:
        print("\n\n".join(robust.stage_help(n) for n in args.names))
    else:
        print(
            "\n\n".join(
                f"{DEFENCE_KINDS[kind]}:\n\n" + "\n".join(robust.stage_help(n) for n in names)
                for kind, names in by_kind.items()
            )
        )
    if not args.json and (not args.names or "centered_clipping" in args.names):
        print(f"\n{RUN_STATE}")
    return 0


COMMANDS = {
    "simulate": cmd_simulate,
    "matrix": cmd_matrix,
    "defences": cmd_defences,
    "defenses": cmd_defences,
    "doctor": cmd_doctor,
    "calibrate": cmd_calibrate,
    **DEPLOY_COMMANDS,
}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``fortis`` command; returns its exit status.

    A :class:`fortis.FortisError` from any command exits with status 2 and one line
    ``fortis COMMAND: error: MESSAGE`` on stderr (``SystemExit``, as argparse does for a bad
    option). Ctrl-C exits 130 and keeps what was stored.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FortisError as exc:
        parser.exit(2, f"fortis {args.command}: error: {_one_line(exc)}\n")
    except KeyboardInterrupt:
        print(
            "\ninterrupted; completed matrix cells are kept and resumed next time", file=sys.stderr
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
