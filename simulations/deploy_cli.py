"""``fortis certs | server | keyholder | client | deploy-local``: a federation as processes.

See :mod:`simulations.deploy` for the TOML file every process reads.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from simulations.options import add_config_arguments, config_kwargs

__all__ = ["add_deploy_parsers", "DEPLOY_COMMANDS"]


def _network_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the federation's TOML file")
    g = p.add_argument_group("network (override the file's [network] keys)")
    g.add_argument("--host", default=None, help="server address")
    g.add_argument("--port", type=int, default=None, help="server port")
    g.add_argument("--certs", default=None, help="credentials folder")
    g.add_argument("--quiet", "-q", action="store_true", help="no log lines")


def add_deploy_parsers(sub: Any) -> None:
    """Add the deployment subcommands to ``fortis``' subparsers."""
    crt = sub.add_parser(
        "certs",
        help="make a federation's CA, per-party certificates and the key holder's key",
        description="Writes ca.pem/ca.key, server, keyholder and client-<i> certificates and "
        "keys (0600; each client also gets an Ed25519 signing key bound into its certificate) "
        "and, with --paillier-bits, the key holder's Paillier key (keyholder.paillier, 0600, "
        "and keyholder.paillier.pub).",
    )
    crt.add_argument("--out", required=True, help="folder to write the credentials to")
    crt.add_argument("--clients", type=int, required=True, help="number of clients (ids 0..N-1)")
    crt.add_argument("--federation", default="fortis", help="federation name (default: fortis)")
    crt.add_argument(
        "--hosts",
        default="localhost,127.0.0.1",
        help="comma-separated names/addresses in the server certificate",
    )
    crt.add_argument(
        "--paillier-bits",
        type=int,
        default=None,
        help="also make the key holder's Paillier key of this size (secure filtering)",
    )
    crt.add_argument("--force", action="store_true", help="replace an existing CA")

    srv = sub.add_parser(
        "server",
        help="run the federation's server (waits for the clients, runs every round)",
        description="Runs the [simulation] of the TOML file as a real federation: the model, "
        "evaluation and report live here, each round's aggregation is a network round. The "
        "state is saved after every round; --resume continues after the last complete round.",
    )
    _network_flags(srv)
    srv.add_argument("--resume", action="store_true", help="continue from the saved state")
    srv.add_argument(
        "--out", default=None, help="report folder (default: the file's [network] out)"
    )
    kh = sub.add_parser("keyholder", help="run the key holder of secure filtering")
    _network_flags(kh)
    cl = sub.add_parser("client", help="run one client: train locally, mask, take part")
    _network_flags(cl)
    cl.add_argument("--id", type=int, required=True, help="this client's id")

    dl = sub.add_parser(
        "deploy-local",
        help="a whole federation as separate processes on loopback, with the simulate report",
        description="Makes credentials, starts the key holder and N client processes, runs "
        "the server here over mutual TLS on 127.0.0.1, and writes the same report as fortis "
        "simulate. Takes fortis simulate's run options; --secure and --clip are required.",
    )
    add_config_arguments(dl, "simulate")
    g = dl.add_argument_group("deployment")
    g.add_argument("--workdir", default="fortis-out/deploy", help="credentials, logs, state")
    g.add_argument(
        "--kill-client",
        action="append",
        default=[],
        metavar="ID@ROUND",
        help="SIGKILL client ID's process at the start of ROUND (1-based), repeatable",
    )
    g.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def _log(args):
    if getattr(args, "quiet", False):
        return None
    return lambda line: print(line, file=sys.stderr, flush=True)


def _load(args):
    from simulations.deploy import load_deploy_config

    return load_deploy_config(
        args.config,
        network={"host": args.host, "port": args.port, "certs": args.certs},
    )


def cmd_certs(args: argparse.Namespace) -> int:
    from simulations.deploy import NetworkSettings, make_credentials

    out = Path(args.out).resolve()
    settings = NetworkSettings(certs=out, state=out / "state", out=out, federation=args.federation)
    t0 = time.perf_counter()
    make_credentials(
        settings,
        args.clients,
        paillier_bits=args.paillier_bits,
        hosts=[h for h in args.hosts.split(",") if h],
        overwrite=args.force,
    )
    extra = ", the key holder's Paillier key" if args.paillier_bits else ""
    print(
        f"wrote a CA and certificates for the server, the key holder and {args.clients} "
        f"clients{extra} to {out} ({time.perf_counter() - t0:.1f}s); keep ca.key offline"
    )
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from simulations.deploy import serve
    from simulations.report import summary_table, write_simulation_report

    settings, config = _load(args)
    bar = _bar(config.rounds, "server", args.quiet)
    try:
        result = asyncio.run(
            serve(settings, config, resume=args.resume, progress=bar, log=_log(args))
        )
    finally:
        bar.close()
    out = Path(args.out) if args.out else settings.out
    paths = write_simulation_report([("deployed", result)], out)
    print(summary_table([("deployed", result)]))
    print(f"\nwrote {paths['json']}, {paths['md']}")
    return 0 if result.status != "failed" else 1


def cmd_keyholder(args: argparse.Namespace) -> int:
    from simulations.deploy import run_keyholder

    settings, _ = _load(args)
    rounds = asyncio.run(run_keyholder(settings, log=_log(args)))
    print(f"key holder: served {len(rounds)} rounds")
    return 0


def cmd_client(args: argparse.Namespace) -> int:
    from simulations.deploy import run_client

    settings, config = _load(args)
    reports = asyncio.run(run_client(settings, config, args.id, log=_log(args)))
    included = sum(r.included for r in reports)
    print(f"client {args.id}: {len(reports)} rounds, included in {included}")
    return 0


def _kills(items: list[str]) -> dict[int, int]:
    from simulations.deploy import DeployConfigError

    out = {}
    for item in items:
        try:
            cid, at = item.split("@")
            out[int(cid)] = int(at) - 1
        except ValueError:
            raise DeployConfigError(
                f"--kill-client {item!r}: expected ID@ROUND, e.g. 3@2"
            ) from None
        if out[int(cid)] < 0:
            raise DeployConfigError(f"--kill-client {item!r}: rounds count from 1")
    return out


def _bar(total: int, desc: str, quiet: bool):
    from simulations.cli import _RoundBar

    return _RoundBar(total, desc, quiet)


def cmd_deploy_local(args: argparse.Namespace) -> int:
    from simulations.config import SimulationConfig
    from simulations.deploy import _filtering, check_deployable, deploy_local
    from simulations.report import summary_table, write_simulation_report

    config = SimulationConfig(**config_kwargs(args, "simulate"))
    check_deployable(config)
    kill = _kills(args.kill_client)
    bad = [c for c in kill if not 0 <= c < config.clients]
    if bad:
        from simulations.deploy import DeployConfigError

        raise DeployConfigError(f"--kill-client: no client {bad[0]} (ids 0..{config.clients - 1})")
    if not args.quiet:
        print(
            f"fortis deploy-local: {config.clients} client processes"
            + (" + key holder" if _filtering(config) else "")
            + f", {config.rounds} rounds, {config.dataset}, defence {config.defence_label()}, "
            f"attack {config.attack}, mutual TLS on 127.0.0.1",
            file=sys.stderr,
        )
    bar = _bar(config.rounds, "deployed", args.quiet)
    t0 = time.perf_counter()
    try:
        result, settings, toml = deploy_local(
            config, args.workdir, kill=kill, progress=bar, log=None if args.quiet else _quiet_log()
        )
    finally:
        bar.close()
    paths = write_simulation_report([("deployed", result)], settings.out)
    print(summary_table([("deployed", result)]))
    print(
        f"\nwrote {paths['json']}, {paths['md']}, {paths.get('png', '')} "
        f"({time.perf_counter() - t0:.1f}s); federation file {toml}"
    )
    return 0 if result.status != "failed" else 1


def _quiet_log():
    """deploy-local shows the progress bar; only the lines that matter go to stderr."""

    def log(line: str) -> None:
        if any(
            k in line for k in ("fault", "killed", "aborted", "resuming", "started", "connected;")
        ):
            print(line, file=sys.stderr, flush=True)

    return log


DEPLOY_COMMANDS = {
    "certs": cmd_certs,
    "server": cmd_server,
    "keyholder": cmd_keyholder,
    "client": cmd_client,
    "deploy-local": cmd_deploy_local,
}
