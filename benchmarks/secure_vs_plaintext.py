"""Secure-aggregation training vs plaintext: same run, every round through protocol.run_round.

    python benchmarks/secure_vs_plaintext.py [--rounds 20] [--clients 20] [--clip 1.0]

Prints, per masking graph, the final accuracy of both runs, the largest parameter difference
(fixed-point quantisation is the only source), wall time and bytes sent per round.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from simulations.config import SimulationConfig
from simulations.datasets import load_dataset
from simulations.runner import Simulation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--dataset", default="digits")
    args = ap.parse_args()
    ds = load_dataset(args.dataset, seed=0)
    cfg = SimulationConfig(
        dataset=args.dataset,
        clients=args.clients,
        byzantine=0,
        attack="none",
        defence="mean",
        clip=args.clip,
        rounds=args.rounds,
        secure_bits=args.bits,
    )
    plain = Simulation(cfg, dataset=ds)
    t0 = time.perf_counter()
    rp = plain.run()
    tp = time.perf_counter() - t0
    print(
        "| graph | acc plaintext | acc secure | max abs param diff | plaintext s | secure s | kB sent / round |"
    )
    print("|---|---|---|---|---|---|---|")
    for graph in ("complete", "secagg+"):
        sec = Simulation(cfg.replace(secure=True, secure_graph=graph), dataset=ds)
        t0 = time.perf_counter()
        rs = sec.run()
        ts = time.perf_counter() - t0
        diff = float(np.abs(plain.params - sec.params).max())
        kb = np.mean([r.bytes_sent for r in rs.history]) / 1e3
        print(
            f"| {graph} | {rp.final_accuracy:.4f} | {rs.final_accuracy:.4f} | {diff:.2e} "
            f"| {tp:.1f} | {ts:.1f} | {kb:.0f} |"
        )


if __name__ == "__main__":
    main()
