"""The whole secure round with filtering, through the public path ``protocol.run_round``,
against the same round without filtering and against plaintext FedAvg / Multi-Krum.

Per (n, k): the filtered round's wall time (every party in one process, one after another, so
the wall time is the sum of their compute); from its transcript, the mean client time of the
sketch phase (sketch + Paillier encryption, with r**n computed on the spot as run_round does)
and the client's upload; the preparation with the key holder (no client involved: between
rounds in a deployment; both parties' r**n come from pools filled before it); the online
*filtering step* (the server's and the key holder's "distances" phases: masking the rows, one
round trip, the norm bound and the rule); the verification (both parties' "verify" phases);
the key holder's total time and the bytes between server and key holder;
then the same round without filtering, and plaintext numpy FedAvg and robust Multi-Krum on the
same updates. Every filtered round is checked: it verifies, and its aggregate equals the
plaintext mean of its accepted clients to the fixed-point resolution.

    python benchmarks/secure_round_bench.py --n 20 50 100 --k 64 128 256 --d 100000
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import protocol
import robust
from secagg.paillier_pool import ObfuscationPool
from secagg.paillier_private import generate_paillier_keypair


def _updates(n: int, d: int, f: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=d) + rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[:f] *= -1  # f sign-flipped clients for the filter to find
    return x


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run(n: int, k: int, d: int, key, repeat: int) -> dict:
    f = max(1, n // 10)
    x = _updates(n, d, f, seed=n * 7919 + k)
    lay_rows = n + 1
    pool = ObfuscationPool(key)  # K's, filled with the factorisation
    server_pool = ObfuscationPool(key.public_key)
    kwargs = dict(value_range=1.0, rule="multi_krum", f=f, clip_norm=1.0, paillier_key=key)

    def filtered():
        # r**n for the preparation, filled in idle time between rounds (not timed below)
        pool.fill(lay_rows * k // 4 + 64, workers=2)
        server_pool.fill(lay_rows * lay_rows // 4 + 64, workers=2)
        t0 = time.perf_counter()
        r = protocol.run_round(
            x, sketch_dim=k, keyholder_pool=pool, server_pool=server_pool, **kwargs
        )
        return time.perf_counter() - t0, r

    runs = [filtered() for _ in range(repeat)]
    wall, r = min(runs, key=lambda p: p[0])
    assert not r.aborted and r.verification.passed, r.abort_reason
    accepted = list(r.survivors)
    want = x[accepted].sum(axis=0)
    assert np.abs(r.aggregate - want).max() < 1e-5 * len(accepted)
    t = r.transcript
    sketch_s = [c.get("sketch", 0.0) for c in t.client_seconds.values()]
    plain_wall, _ = _best(lambda: protocol.run_round(x, value_range=1.0), repeat)
    fedavg, _ = _best(lambda: x.mean(axis=0), max(3, repeat))
    mkrum, _ = _best(lambda: robust.aggregate(x, "multi_krum", f=f), max(3, repeat))
    upload = float(np.mean(list(t.client_bytes_sent.values())))
    filtering = t.server_seconds.get("distances", 0.0) + t.keyholder_seconds.get("distances", 0.0)
    prepare = t.server_seconds.get("prepare", 0.0) + t.keyholder_seconds.get("prepare", 0.0)
    verify = t.server_seconds.get("verify", 0.0) + t.keyholder_seconds.get("verify", 0.0)
    return {
        "n": n,
        "k": k,
        "d": d,
        "f": f,
        "rejected": sorted(r.rejected),
        "round_s": wall,
        "client_sketch_ms": 1e3 * float(np.mean(sketch_s)),
        "client_upload_kb": upload / 1e3,
        "filtering_s": filtering,
        "prepare_s": prepare,
        "server_distances_s": t.server_seconds.get("distances", 0.0),
        "keyholder_distances_s": t.keyholder_seconds.get("distances", 0.0),
        "verify_s": verify,
        "keyholder_s": sum(t.keyholder_seconds.values()),
        "s_k_mb": (t.keyholder_bytes_sent + t.keyholder_bytes_received) / 1e6,
        "plain_secure_round_s": plain_wall,
        "fedavg_s": fedavg,
        "multi_krum_s": mkrum,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[20, 50, 100])
    ap.add_argument("--k", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--d", type=int, default=100_000)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    _, key = generate_paillier_keypair(args.key_bits)
    rows = []
    head = (
        "| n | k | round s | client sketch ms | upload KB | preparation s | online filtering s "
        "(S + K) | verify s "
        "| K s | S<->K MB | unfiltered round s | FedAvg ms | Multi-Krum ms | filtered / "
        "unfiltered | load |"
    )
    print(head)
    print("|" + "--:|" * 15)
    for n in args.n:
        for k in args.k:
            row = run(n, k, args.d, key, args.repeat)
            rows.append(row)
            print(
                f"| {n} | {k} | {row['round_s']:.2f} | {row['client_sketch_ms']:.1f} | "
                f"{row['client_upload_kb']:.0f} | {row['prepare_s']:.2f} | "
                f"{row['filtering_s']:.2f} "
                f"({row['server_distances_s']:.2f} + {row['keyholder_distances_s']:.2f}) | "
                f"{row['verify_s']:.2f} | {row['keyholder_s']:.2f} | {row['s_k_mb']:.2f} | "
                f"{row['plain_secure_round_s']:.2f} | {1e3 * row['fedavg_s']:.2f} | "
                f"{1e3 * row['multi_krum_s']:.1f} | "
                f"{row['round_s'] / row['plain_secure_round_s']:.2f}x | {row['load']:.2f} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
