"""Cost of secure filtering's building blocks: a client's sketch and encryption, and the masked
distance protocol between the server S and the key holder K (``secagg.masked_distance``).

Per (n, k, backend): client ms (sketch of a d-dimensional fixed-point update plus Paillier
encryption of the packed sketch with a pooled ``r**n``, the online work) and upload bytes; S
seconds and K's online seconds for the distance protocol (K's ``r**n`` for its column
encryptions come from a pool filled beforehand, as between rounds; the time to fill it is shown
separately); bytes between S and K; and the plaintext floor (squared distances of the same
sketches with numpy). ``backend`` is S's multi-exponentiation: ``compiled`` (secagg._multiexp,
threads) or ``python`` (gmpy2, processes). Every run checks that S's distances equal the
plaintext ones exactly.

This times the secagg functions the protocol will call; when the key holder party lands, the
whole secure round is timed through ``protocol.run_round`` instead (issue 9).

    python benchmarks/sketch_bench.py --n 20 50 100 --k 64 128 256 --d 1000000 \
        --backend compiled python
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import contextmanager

import numpy as np

from secagg import masked_distance as md
from secagg.paillier_pool import ObfuscationPool
from secagg.paillier_private import generate_paillier_keypair
from secagg.sketch import sketch


def _client(pub, lay, x, seed, k, pool):
    t0 = time.perf_counter()
    s = sketch(x, seed, k)
    cts = [pub.encrypt(m, pool=pool) for m in lay.row.pack(s)]
    return s, cts, time.perf_counter() - t0


def _setup(n: int, k: int, d: int, key_bits: int, backend: str, pub, priv) -> tuple:
    """S's backend; the keys (new ones if not given); layouts, 3 timed clients (sketch +
    encryption), and n encrypted rows with their sketches (random vectors of the sketches'
    size, encrypted the same way)."""
    os.environ["FORTIS_KERNELS"] = "numpy" if backend == "python" else "compiled"
    if pub is None:
        pub, priv = generate_paillier_keypair(key_bits)
    rng = np.random.default_rng(n * 1000 + k)
    seed = os.urandom(32)
    scale = 2**12  # fixed-point updates with |x_j| <= 2**12, norm well under the bound below
    x0 = rng.integers(-scale, scale + 1, d)
    bound = int(np.abs(sketch(x0, seed, k)).max()) * 4
    lay = md.DistanceLayouts(pub, k, bound)
    pool = ObfuscationPool(pub)
    pool.fill(lay.row_ciphertexts() + 1, workers=2)
    _client(pub, lay, x0, seed, k, pool)  # warm-up (sketcher buffers)
    xs = [rng.integers(-scale, scale + 1, d) for _ in range(3)]
    client_s, sketches, rows = [], [], []
    for x in xs:
        pool.fill(lay.row_ciphertexts(), workers=2)
        s, cts, secs = _client(pub, lay, x, seed, k, pool)
        client_s.append(secs)
    # the other rows: sketches of random vectors of the same size, encrypted the same way
    for _ in range(n):
        s = rng.integers(-bound // 4, bound // 4 + 1, k)
        sketches.append(s)
        rows.append([pub.encrypt(m) for m in lay.row.pack(s)])
    return pub, priv, lay, client_s, sketches, rows


def _timer() -> tuple[dict[str, float], dict[str, float], object]:
    """(wall seconds per stage, CPU seconds of all threads per stage, the context manager)."""
    t: dict[str, float] = {}
    cpu: dict[str, float] = {}  # CPU seconds of all threads: less sensitive to other load

    @contextmanager
    def timed(name: str):
        t0, c0 = time.perf_counter(), time.process_time()
        yield
        t[name], cpu[name] = time.perf_counter() - t0, time.process_time() - c0

    return t, cpu, timed


def _common(protocol, n, k, backend, d, key_bits, client_s, upload_bytes) -> dict:
    return {
        "protocol": protocol,
        "n": n,
        "k": k,
        "backend": backend,
        "d": d,
        "key_bits": key_bits,
        "client_ms": 1e3 * float(np.median(client_s)),
        "upload_bytes": upload_bytes,
    }


def run(
    n: int, k: int, d: int, key_bits: int, workers: int, backend: str, pub=None, priv=None
) -> dict:
    """The four-message protocol (server_mask_rows ... server_distances)."""
    pub, priv, lay, client_s, sketches, rows = _setup(n, k, d, key_bits, backend, pub, priv)
    width = (pub.nsquare.bit_length() + 7) // 8
    t, cpu, timed = _timer()
    with timed("S mask"):
        masked, masks = md.server_mask_rows(pub, rows, lay)
    with timed("K r^n (poolable)"):
        k_pool = ObfuscationPool(priv)  # K's r**n for its column encryptions, between rounds
        k_pool.fill(lay.k * -(-n // lay.column.slots), workers=workers)
    with timed("K open"):
        columns, kh = md.keyholder_open_rows(priv, masked, lay, pool=k_pool, workers=workers)
    assert k_pool.online_draws == 0
    with timed("S cross"):
        blinded = md.server_cross_terms(
            pub,
            columns,
            masks,
            kh.accepted,
            workers=workers,
            processes=workers if backend == "python" else 1,
        )
    with timed("K combine"):
        z = md.keyholder_combine(priv, blinded, kh, workers=workers)
    with timed("S distances"):
        dist = md.server_distances(z, masks, kh.accepted)
    with timed("plaintext floor"):
        floor = md.exact_squared_distances(np.array(sketches))
    exact = bool((dist == floor).all())
    s_to_k = width * (sum(len(r) for r in masked) + sum(len(b) for b in blinded))
    k_to_s = width * sum(len(b) for b in columns) + sum(
        (int(v).bit_length() + 8) // 8 for v in z.reshape(-1)
    )
    return {
        **_common(
            "interactive", n, k, backend, d, key_bits, client_s, width * lay.row_ciphertexts()
        ),
        "server_s": t["S mask"] + t["S cross"] + t["S distances"],
        "keyholder_s": t["K open"] + t["K combine"],
        "filtering_cpu_s": sum(
            v for name, v in cpu.items() if name[0] in "SK" and "poolable" not in name
        ),
        "stages_cpu_s": cpu,
        "filtering_s": sum(
            v for name, v in t.items() if name[0] in "SK" and "poolable" not in name
        ),
        "keyholder_poolable_s": t["K r^n (poolable)"],
        "bytes_s_to_k": s_to_k,
        "bytes_k_to_s": k_to_s,
        "stages_s": t,
        "exact": exact,
        "slots_row": lay.row.slots,
        "slots_column": lay.column.slots,
        "load": os.getloadavg()[0],
    }


def run_prepared(
    n: int, k: int, d: int, key_bits: int, workers: int, backend: str, pub=None, priv=None
) -> dict:
    """The offline/online variant (prepare_* before the round; *_prepared online), R = n row
    slots, all present. Offline: K's columns (its own r**n, CRT), S's products (multi-exps and
    a fresh public r**n per product), K's decryptions. Online: S masks, K opens, S finishes."""
    pub, priv, lay, client_s, sketches, rows = _setup(n, k, d, key_bits, backend, pub, priv)
    width = (pub.nsquare.bit_length() + 7) // 8
    t, cpu, timed = _timer()
    slots = list(range(n))
    with timed("K prep columns"):
        columns, kst = md.prepare_keyholder_columns(priv, lay, n, workers=workers)
    with timed("S prep products"):
        blinded, sst = md.prepare_server_products(pub, columns, lay, n, workers=workers)
    with timed("K prep finish"):
        md.prepare_keyholder_finish(priv, blinded, kst, workers=workers)
    with timed("S mask"):
        masked = md.server_mask_rows_prepared(pub, rows, slots, sst)
    with timed("K open"):
        opened = md.keyholder_open_rows_prepared(priv, masked, slots, kst, workers=workers)
    with timed("S distances"):
        dist = md.server_distances_prepared(opened.w, opened.z, opened.accepted, sst)
    floor = md.exact_squared_distances(np.array(sketches))
    m = len(opened.accepted)
    online = ("S mask", "K open", "S distances")
    return {
        **_common("prepared", n, k, backend, d, key_bits, client_s, width * lay.row_ciphertexts()),
        "offline_server_s": t["S prep products"],
        "offline_keyholder_s": t["K prep columns"] + t["K prep finish"],
        "server_s": t["S mask"] + t["S distances"],
        "keyholder_s": t["K open"],
        "filtering_s": sum(t[name] for name in online),
        "filtering_cpu_s": sum(cpu[name] for name in online),
        "stages_s": t,
        "stages_cpu_s": cpu,
        "offline_bytes_k_to_s": width * sum(len(b) for b in columns),
        "offline_bytes_s_to_k": width * sum(len(b) for b in blinded),
        "bytes_s_to_k": width * sum(len(r) for r in masked),
        "bytes_k_to_s": m * lay.k * lay.w_bytes + m * m * lay.z_bytes,
        "exact": bool((dist == floor).all()),
        "slots_row": lay.row.slots,
        "slots_column": lay.prep_column.slots,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[20, 50, 100])
    ap.add_argument("--k", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--d", type=int, default=1_000_000)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2, help="threads (processes for python)")
    ap.add_argument("--backend", nargs="+", default=["compiled"], choices=["compiled", "python"])
    ap.add_argument(
        "--protocol",
        nargs="+",
        default=["interactive", "prepared"],
        choices=["interactive", "prepared"],
        help="interactive: the four-message protocol; prepared: the offline/online variant",
    )
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    pub, priv = generate_paillier_keypair(args.key_bits)
    rows = []
    print(
        f"{'n':>4} {'k':>4} {'protocol':>11} {'backend':>8} | client ms | offline S s | "
        "offline K s | S s    | K s    (pool) | S+K s  (cpu) | slots | offline S->K/K->S MB "
        "| S->K MB | K->S MB | exact | load"
    )
    runners = {"interactive": run, "prepared": run_prepared}
    for n in args.n:
        for k in args.k:
            for backend in args.backend:  # peers side by side, interleaved
                for protocol in args.protocol:
                    r = runners[protocol](
                        n, k, args.d, args.key_bits, args.workers, backend, pub, priv
                    )
                    rows.append(r)
                    off_s = r.get("offline_server_s", 0.0)
                    off_k = r.get("offline_keyholder_s", 0.0)
                    off_mb = (
                        f"{r['offline_bytes_s_to_k'] / 2**20:6.2f}/"
                        f"{r['offline_bytes_k_to_s'] / 2**20:5.2f}"
                        if protocol == "prepared"
                        else f"{'-':>12}"
                    )
                    print(
                        f"{n:>4} {k:>4} {protocol:>11} {backend:>8} | {r['client_ms']:9.1f} "
                        f"| {off_s:11.2f} | {off_k:11.2f} | {r['server_s']:6.2f} "
                        f"| {r['keyholder_s']:6.2f} ({r.get('keyholder_poolable_s', 0.0):5.2f}) "
                        f"| {r['filtering_s']:6.2f} ({r['filtering_cpu_s']:5.2f}) "
                        f"| {r['slots_row']:2d}/{r['slots_column']:2d} | {off_mb:>20} "
                        f"| {r['bytes_s_to_k'] / 2**20:7.2f} | {r['bytes_k_to_s'] / 2**20:7.2f} "
                        f"| {'yes' if r['exact'] else 'NO'}   | {r['load']:.2f}",
                        flush=True,
                    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
