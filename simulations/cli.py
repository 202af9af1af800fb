"""The ``fortis`` command line: ``fortis simulate`` and ``fortis matrix``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fortis import FortisError

DEFAULT_ATTACK = "scaling"
DEFAULT_HARD_ATTACK = "alie"
DEFAULT_DEFENCE = "multi_krum"


def _add_common(p: argparse.ArgumentParser, *, matrix: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset", default="digits", help="digits | breast_cancer | mnist (default: digits)"
    )
    g.add_argument(
        "--data-dir",
        default=None,
        help="folder of MNIST IDX files (default: $FORTIS_MNIST_DIR or ../shared/data/mnist)",
    )
    if not matrix:
        g.add_argument(
            "--partition",
            "--split",
            default="iid",
            help="iid | dirichlet | label_sorted (default: iid)",
        )
    g.add_argument(
        "--alpha", type=float, default=0.5, help="Dirichlet concentration (default: 0.5)"
    )
    g.add_argument(
        "--gamma", type=float, default=0.0, help="label_sorted: fraction dealt IID (default: 0)"
    )
    g = p.add_argument_group("federation")
    g.add_argument("--model", default="logreg", help="logreg | mlp | cnn (default: logreg)")
    g.add_argument("--clients", type=int, default=20, help="number of clients n (default: 20)")
    if not matrix:
        g.add_argument(
            "--byzantine",
            "-f",
            type=int,
            default=None,
            help="number of Byzantine clients (default: 20%% of clients)",
        )
    g.add_argument(
        "--defence-f",
        default=None,
        help="f the defence assumes: an int or 'auto' (default: the true f)",
    )
    g.add_argument("--rounds", type=int, default=20, help="training rounds (default: 20)")
    g.add_argument("--training", default="fedavg", help="fedavg | fedprox | dsgd (default: fedavg)")
    g.add_argument("--local-epochs", type=int, default=1)
    g.add_argument(
        "--lr", type=float, default=None, help="client learning rate (default: 0.1; dsgd 0.5)"
    )
    g.add_argument("--server-lr", type=float, default=1.0)
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--momentum", type=float, default=0.9, help="client momentum (default: 0.9)")
    g.add_argument("--mu", type=float, default=0.01, help="FedProx proximal weight (default: 0.01)")
    g.add_argument("--eval-every", type=int, default=1)
    g = p.add_argument_group("threat model")
    g.add_argument(
        "--attack-param",
        action="append",
        default=[],
        metavar="K=V",
        help="attack parameter (repeatable)",
    )
    g.add_argument("--knowledge", default="omniscient", choices=["omniscient", "limited"])
    g.add_argument("--independent", action="store_true", help="Byzantine clients do not collude")
    g.add_argument(
        "--dropout", type=float, default=0.0, help="benign fault: per-round dropout probability"
    )
    g.add_argument(
        "--stragglers", type=float, default=0.0, help="benign fault: probability of a stale update"
    )
    g.add_argument("--max-staleness", type=int, default=2)
    g = p.add_argument_group("defence")
    g.add_argument(
        "--defence-param",
        action="append",
        default=[],
        metavar="K=V",
        help="rule parameter (repeatable)",
    )
    g.add_argument(
        "--pre",
        action="append",
        default=[],
        metavar="NAME[:K=V,...]",
        help="pre-aggregator, in order (repeatable): clip, nnm, bucketing",
    )
    g.add_argument(
        "--replication",
        type=int,
        default=1,
        help="DRACO-style replication factor r (default: 1 = off)",
    )
    g.add_argument(
        "--secure",
        action="store_true",
        help="aggregate through the secure-aggregation protocol (defence mean only)",
    )
    g.add_argument("--secure-bits", type=int, default=32)
    g.add_argument(
        "--secure-graph",
        default="complete",
        choices=["complete", "secagg+"],
        help="masking graph: complete (Bonawitz et al.) or SecAgg+ sparse graph (Bell et al.)",
    )
    g.add_argument(
        "--clip",
        type=float,
        default=None,
        help="every client clips its update to this L2 norm before sending (the norm bound C); "
        "in secure mode also the fixed-point range (default: no clipping; secure mode then "
        "takes the range from the data). The no-defence baseline rows do not clip.",
    )
    g = p.add_argument_group("output")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fortis",
        description="Private and Byzantine-robust federated aggregation: simulations and threat-model runs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser(
        "simulate",
        help="one training run under attack, with and without a defence",
        description="Federated training under a Byzantine attack. By default runs: clean (no "
        "attack), the attack with no defence (plain mean), the attack with the defence, and a "
        "second attack that is hard for the defence. Writes results.json, summary.md and "
        "accuracy.png to --out.",
    )
    _add_common(sim, matrix=False)
    sim.add_argument(
        "--attack", default=DEFAULT_ATTACK, help=f"attack name (default: {DEFAULT_ATTACK})"
    )
    sim.add_argument(
        "--second-attack",
        default=DEFAULT_HARD_ATTACK,
        help=f"an attack hard for the defence, shown as a second row ('none' to skip; default: {DEFAULT_HARD_ATTACK})",
    )
    sim.add_argument(
        "--defence",
        "--defense",
        default=DEFAULT_DEFENCE,
        help=f"rule, optionally with pre-aggregators: e.g. bucketing:s=2+krum (default: {DEFAULT_DEFENCE})",
    )
    sim.add_argument(
        "--second-partition",
        default="dirichlet",
        help="partition for the second attack's rows: ALIE-style attacks hide best in non-IID "
        "spread ('same' to reuse --partition; default: dirichlet)",
    )
    sim.add_argument(
        "--no-baselines",
        action="store_true",
        help="run only the defended run (skip clean and undefended)",
    )
    sim.add_argument(
        "--out",
        "-o",
        default="fortis-out/simulate",
        help="output folder (default: fortis-out/simulate)",
    )
    mat = sub.add_parser(
        "matrix",
        help="attacks × defences × f × partitions, with a table and a heatmap",
        description="Runs every combination; completed cells are stored and resumed.",
    )
    _add_common(mat, matrix=True)
    mat.add_argument(
        "--attacks", default="sign_flip,scaling,alie,ipm", help="comma-separated attacks"
    )
    mat.add_argument(
        "--defences",
        "--defenses",
        default="mean,median,trimmed_mean,krum,multi_krum",
        help="comma-separated defence specs, e.g. krum,bucketing+krum",
    )
    mat.add_argument(
        "--f",
        dest="fs",
        default=None,
        help="comma-separated Byzantine counts (default: 20%% of clients)",
    )
    mat.add_argument("--partitions", default="iid", help="comma-separated partitions")
    mat.add_argument("--out", "-o", default="fortis-out/matrix")
    return parser


def _base_config(args: argparse.Namespace, **overrides: Any):
    from simulations.config import SimulationConfig
    from simulations.specs import parse_component, parse_params, parse_value

    defence_f = None if args.defence_f is None else parse_value(args.defence_f)
    lr = args.lr if args.lr is not None else (0.5 if args.training == "dsgd" else 0.1)
    kwargs: dict[str, Any] = dict(
        dataset=args.dataset,
        data_dir=None if args.data_dir is None else os.path.abspath(args.data_dir),
        alpha=args.alpha,
        gamma=args.gamma,
        model=args.model,
        clients=args.clients,
        defence_f=defence_f,
        rounds=args.rounds,
        training=args.training,
        local_epochs=args.local_epochs,
        lr=lr,
        server_lr=args.server_lr,
        batch_size=args.batch_size,
        momentum=args.momentum,
        mu=args.mu,
        eval_every=args.eval_every,
        attack_params=parse_params(args.attack_param, "--attack-param"),
        knowledge=args.knowledge,
        collusion=not args.independent,
        dropout=args.dropout,
        stragglers=args.stragglers,
        max_staleness=args.max_staleness,
        defence_params=parse_params(args.defence_param, "--defence-param"),
        pre=tuple(parse_component(p, "--pre") for p in args.pre),
        replication=args.replication,
        secure=args.secure,
        secure_bits=args.secure_bits,
        secure_graph=args.secure_graph,
        clip=args.clip,
        seed=args.seed,
    )
    kwargs.update(overrides)
    return SimulationConfig(**kwargs)


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
        if rec.get("accuracy") is not None:
            post["acc"] = f"{100 * rec['accuracy']:.1f}%"
        post["rej honest"] = rec["honest_rejected"]
        post["rej byz"] = rec["byzantine_rejected"]
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _undefended(cfg: Any) -> Any:
    """The same run with a plain mean and no client clipping: the no-defence baseline. In
    secure mode the clip stays, since it is the fixed-point range the protocol needs."""
    return cfg.replace(
        defence="mean",
        defence_params={},
        pre=(),
        defence_f=None,
        clip=cfg.clip if cfg.secure else None,
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run the rows of ``fortis simulate`` and write the report.

    Every row is checked before any trains (configuration errors raise). A row that diverges
    or fails is reported and the next row runs; returns 1 if any row failed, else 0.
    """
    from simulations.datasets import load_dataset
    from simulations.report import summary_table, write_simulation_report
    from simulations.runner import check_components, preflight, run_simulation
    from simulations.specs import parse_defence

    f = args.byzantine if args.byzantine is not None else max(1, round(0.2 * args.clients))
    pre, rule, rule_params = parse_defence(args.defence)
    base = _base_config(args, byzantine=f, attack=args.attack, partition=args.partition)
    defended = base.replace(
        defence=rule,
        defence_params={**rule_params, **base.defence_params},
        pre=(*base.pre, *pre),
    )
    label = defended.defence_label()
    runs: list[tuple[str, Any]] = []
    if not args.no_baselines:
        runs.append(
            (
                "clean (no attack, mean)",
                _undefended(defended).replace(byzantine=0, attack="none", attack_params={}),
            )
        )
        runs.append(
            (
                f"{args.attack}, no defence (mean)",
                _undefended(defended),
            )
        )
    runs.append((f"{args.attack}, {label}", defended))
    if args.second_attack and args.second_attack != "none":
        second = defended.replace(attack=args.second_attack, attack_params={})
        where = ""
        if args.second_partition not in ("same", defended.partition):
            second = second.replace(partition=args.second_partition)
            where = f" on {args.second_partition}"
            if not args.no_baselines:
                runs.append(
                    (f"clean{where} (mean)", runs[0][1].replace(partition=args.second_partition))
                )
        runs.append((f"{args.second_attack}{where}, {label}", second))
        if not args.no_baselines:
            runs.append(
                (
                    f"{args.second_attack}{where}, no defence (mean)",
                    _undefended(second),
                )
            )
    # The second attack's rows repeat the first's when it is the same attack on the same split
    # (e.g. --attack alie --partition dirichlet): run each distinct configuration once.
    distinct: dict[str, tuple[str, Any]] = {}
    for name, cfg in runs:
        distinct.setdefault(cfg.key(), (name, cfg))
    runs = list(distinct.values())
    for _, cfg in runs:
        check_components(cfg)
    dataset = load_dataset(defended.dataset, defended.data_dir, seed=defended.seed)
    for _, cfg in runs:
        preflight(cfg, dataset)
    if not args.quiet:
        print(
            f"fortis simulate: {dataset.name} ({len(dataset.x_train)} train / "
            f"{len(dataset.x_test)} test), {defended.clients} clients, f={f}, "
            f"{defended.partition} split, {defended.model}, {defended.training}, "
            f"{defended.rounds} rounds, {len(runs)} runs",
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
    print(
        f"\nwrote {paths['json']}, {paths['md']}, {paths['png']} ({time.perf_counter() - t0:.1f}s)"
    )
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
    from simulations.config import ConfigError

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

    from simulations.config import ConfigError
    from simulations.matrix import matrix_configs, run_matrix
    from simulations.report import matrix_markdown
    from simulations.specs import split_specs

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    defences = split_specs(args.defences)
    partitions = [p.strip() for p in args.partitions.split(",") if p.strip()]
    fs = _int_list(args.fs, "--f") if args.fs else [max(1, round(0.2 * args.clients))]
    for option, values in (
        ("--attacks", attacks),
        ("--defences", defences),
        ("--partitions", partitions),
        ("--f", fs),
    ):
        if not values:
            raise ConfigError(f"{option} must name at least one value")
    base = _base_config(args, byzantine=fs[0], attack=attacks[0], partition=partitions[0])
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``fortis`` command; a :class:`fortis.FortisError` exits 2 with one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "simulate":
            return cmd_simulate(args)
        return cmd_matrix(args)
    except FortisError as exc:
        # Any typed fortis error (bad option, data, defence, secure setting): one line.
        parser.exit(2, f"fortis {args.command}: error: {' '.join(str(exc).split())}\n")
    except KeyboardInterrupt:
        print(
            "\ninterrupted; completed matrix cells are kept and resumed next time", file=sys.stderr
        )
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
