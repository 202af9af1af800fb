"""A synthetic client process: real credentials, real TLS, real protocol, made-up updates.

For load tests, benchmarks and end-to-end tests of a deployment without training::

    python -m protocol.network.synthetic --certs DIR --federation NAME --port P --id I --dim D

``--keyholder --paillier FILE`` runs the key holder instead (its Paillier key from an
owner-only file, :func:`~protocol.network.peer_nodes.save_paillier_key`).

A client's update in the round of training step ``s`` is :func:`synthetic_update` ``(seed, I, s, D)``:
exactly representable on a coarse binary grid, so the stochastic rounding cannot change it and
any driver's sum over the same clients is the same. ``--die-at KIND`` makes the process exit
at once (``os._exit``, as a crash or ``kill -9``) instead of sending its first message of type
``KIND`` (``AdvertiseKeys``, ``MaskedInput``, ``UnmaskResponse`` ...), in round ``--die-round``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import numpy as np

from .credentials import party_files
from .peer_nodes import ClientPolicy, NetworkClient

__all__ = ["synthetic_update", "main"]


def synthetic_update(
    seed: int, client: int, step: int, dim: int, scale: float = 0.01
) -> np.ndarray:
    """Client ``client``'s update at step ``step``: normal with std ``scale``, rounded to a
    multiple of 2**-10 (exact in any fixed-point encoding with at least 10 fractional bits)."""
    rng = np.random.default_rng([seed, client, step])
    return np.round(rng.normal(size=dim) * scale * 1024) / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m protocol.network.synthetic")
    p.add_argument("--certs", required=True)
    p.add_argument("--federation", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--id", type=int, default=None)
    p.add_argument("--dim", type=int, default=None)
    p.add_argument("--keyholder", action="store_true", help="run the key holder")
    p.add_argument("--paillier", default=None, help="the key holder's Paillier key file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--die-at", default=None, metavar="KIND")
    p.add_argument("--die-round", type=int, default=None, help="round id (default: any)")
    p.add_argument("--min-paillier-bits", type=int, default=2048)
    p.add_argument("--connect-timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    if args.keyholder:
        from ..errors import KEYHOLDER_ID
        from .peer_nodes import NetworkKeyHolder, load_paillier_key

        if args.paillier is None:
            p.error("--keyholder needs --paillier FILE")
        kh = NetworkKeyHolder(
            party_files(args.certs, KEYHOLDER_ID),
            federation=args.federation,
            address=(args.host, args.port),
            paillier_key=load_paillier_key(args.paillier, allow_insecure=True),
        )
        rounds = asyncio.run(kh.serve(connect_timeout=args.connect_timeout))
        print(f"key holder: {len(rounds)} rounds")
        return 0
    if args.id is None or args.dim is None:
        p.error("a client needs --id and --dim")
    client = NetworkClient(
        party_files(args.certs, args.id),
        federation=args.federation,
        address=(args.host, args.port),
        compute_update=lambda opening: synthetic_update(
            args.seed, args.id, opening.step, opening.config.dim
        ),
        policy=ClientPolicy(dim=args.dim, min_paillier_bits=args.min_paillier_bits),
        rng_for=lambda step: np.random.default_rng([args.seed, args.id, step, 1]),
    )
    if args.die_at is not None:
        send = client._dial.send_round

        def send_or_die(messages):
            for m in messages:
                due = args.die_round is None or m.round_id == args.die_round
                if type(m).__name__ == args.die_at and due:
                    sys.stdout.flush()
                    os._exit(9)
            send(messages)

        client._dial.send_round = send_or_die
    reports = asyncio.run(client.serve(connect_timeout=args.connect_timeout))
    print(
        f"client {args.id}: {len(reports)} rounds, included in {sum(r.included for r in reports)}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
