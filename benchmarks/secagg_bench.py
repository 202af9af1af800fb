"""Secure-aggregation round cost through fortis's public ``protocol`` API, vs Flower's SecAgg+.

What is timed (fortis)
    Whole rounds of :func:`protocol.run_round`, the call a user makes: one
    :class:`protocol.Server` and n :class:`protocol.Client` state machines with real
    cryptography, every message encoded to bytes and decoded by its receiver, default mask
    threads, a fresh Ed25519 PKI when ``hardened=True``. Nothing is re-assembled from ``secagg``
    primitives: ``run_round`` runs the parties through :class:`protocol.Router` (the one router
    the tests use too), and the numbers come from the round's own :class:`protocol.Transcript`
    (``RoundResult.transcript``), in which the router records the wall-clock seconds each party
    spends per phase (protocol logic, crypto, encoding and decoding of messages) and the bytes of
    every encoded message. Reported:

    * client time: per round, the median over the clients whose input is in the sum of each
      client's total (and, separately, of each stage). The router runs the parties one after
      another, so this is per-client compute, not a network round trip;
    * server time: total and per stage (``advertise``, ``share_keys``, ``masked_input``,
      ``consistency`` when hardened, ``unmask``);
    * bytes per client: median over the same clients of bytes sent plus bytes received;
    * exactness: ``RoundResult.encoded_sum`` must equal the plaintext sum, modulo ``2**bits``, of
      the survivors' encodings by ``result.config.encoder``, and ``aggregate`` its decoding (the
      check of ``tests/test_protocol_round.py``). The updates are random multiples of the
      fixed-point resolution in ``[-1, 1]``, so stochastic rounding is exact and the encodings
      can be replayed without knowing the clients' rounding generators; encoding does the same
      work on such values as on any others.

    Dropouts: a random fraction p of the clients (nested sets: the 30% include the 10%) drop at
    stage ``"masked_input"``, i.e. after sharing their keys and before sending their masked
    input, the case that costs the server most (it must rebuild their pairwise masks). Every row
    is repeated (``--repeats``, default 3) with a fresh round id, and each number is the median
    over the repeats; the load average is recorded per row because the machine may be shared.
    The SecAgg+ graph is sized for ``dropout_rate = max(p, 0.1)``, ``corrupt_rate = 0.1``.

What is timed (Flower, optional)
    Flower's SecAgg+ primitives (``flwr.common.secure_aggregation.*`` and
    ``flwr.supercore.primitives.asymmetric``) on the same steps of its client mod and server
    workflow, with the same n, d, graph degree and threshold as the fortis row. Flower's Shamir
    takes seconds per reconstruction of a PEM private key, so its client is timed on one
    representative client and its server cost is *extrapolated*: each server operation is timed
    on a few samples and multiplied by its count in the round (cells marked ``~``). Flower has no
    hardened mode, so hardened rows are compared with the same Flower numbers as plain rows.

Timings are wall clock; on a shared machine they are noisy. Besides the repeats and load
averages, each row records the process CPU / wall ratio of its ``run_round`` calls: a round never
waits, so that ratio is >= 1 on an idle machine and well below 1 when other work took the cores.
A round that aborts (e.g. hardened mode with too few consistency signatures) is reported as such,
with the times of the stages it ran. ``protocol`` is imported from the checkout this file sits in,
so a copy of this script placed in a clean checkout of an older commit measures that commit.

Usage::

    python benchmarks/secagg_bench.py                  # n=100, d=1e5 and 1e6, p=0/0.1/0.3
    python benchmarks/secagg_bench.py --quick          # smoke run (n=20, d=1e4, one repeat)
    python benchmarks/secagg_bench.py --json before.json --label "before security fixes"
    python benchmarks/secagg_bench.py --compare before.json after.json   # ratios after/before
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import importlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import protocol  # noqa: E402
from protocol import RoundConfig, RoundResult  # noqa: E402
from secagg import MaskingGraph  # noqa: E402
from secagg.masking import default_workers  # noqa: E402

BITS = 32
CLIP = 1.0
CORRUPT_RATE = 0.1
DROP_STAGE = "masked_input"
SCHEMA = 1


# --------------------------------------------------------------------------------------------
# fortis, through protocol.run_round


@dataclass
class Row:
    """One (graph, mode, d, p) cell: medians over ``repeats`` rounds (seconds, bytes)."""

    graph: str
    mode: str  # "plain" or "hardened"
    n: int
    d: int
    dropout: float
    degree: int = 0
    threshold: int = 0
    dropped: int = 0
    survivors: int = 0
    repeats: int = 0
    client_s: float = math.nan  # median over repeats of (median over survivors of total)
    client_max_s: float = math.nan  # median over repeats of the slowest survivor
    client_stage_s: dict[str, float] = field(default_factory=dict)
    server_s: float = math.nan
    server_stage_s: dict[str, float] = field(default_factory=dict)
    server_runs_s: list[float] = field(default_factory=list)
    client_runs_s: list[float] = field(default_factory=list)
    round_wall_s: float = math.nan  # the run_round call (all parties in turn + input checks)
    round_cpu_s: float = math.nan  # process CPU time of the same (all threads)
    bytes_per_client: float = math.nan
    bytes_sent_per_client: float = math.nan
    bytes_received_per_client: float = math.nan
    server_bytes: int = 0
    exact: bool | None = None  # None: round aborted (nothing to check)
    aborted: bool = False
    abort_reason: str | None = None
    loadavg: list[float] = field(default_factory=list)
    flower: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, str, int, int, float]:
        return (self.graph, self.mode, self.n, self.d, round(self.dropout, 4))


def _dropped_sets(n: int, levels: Sequence[float], seed: int) -> dict[float, set[int]]:
    rnd = np.random.default_rng(seed)
    perm = rnd.permutation(n)
    # nested sets: the 30% dropouts include the 10% ones
    return {p: {int(i) for i in perm[: int(round(p * n))]} for p in levels}


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else math.nan


class FortisBench:
    """Runs rounds with ``protocol.run_round``, the call a user makes, and checks their sums.

    The updates are random multiples of the round's fixed-point resolution (uniform over
    ``[-value_range, value_range]`` on that grid). Stochastic rounding of a grid value is exact whatever the
    generator, so every client's encoding is ``config.encoder.encode(x_i, any_rng)`` and the
    expected sum can be replayed without reaching into how ``run_round`` seeds its clients.
    Encoding does the same work for grid and off-grid values (it always draws the uniforms).
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.graph_seed = seed.to_bytes(8, "big") * 4  # for Flower's copy of the plain graph
        self._x: dict[int, np.ndarray] = {}
        self._enc: dict[tuple[int, str], list[np.ndarray]] = {}
        self._expected: dict[tuple[int, str, tuple[int, ...]], np.ndarray] = {}

    def config(self, graph: str, hardened: bool, d: int, p: float) -> RoundConfig:
        """The RoundConfig ``run_round`` builds for these arguments (for k, t and the grid)."""
        return RoundConfig(
            round_id=0,
            population=tuple(range(self.n)),
            dim=d,
            value_range=CLIP,
            bits=BITS,
            graph=graph,
            hardened=hardened,
            dropout_rate=self.dropout_rate(p),
            corrupt_rate=CORRUPT_RATE,
        )

    @staticmethod
    def dropout_rate(p: float) -> float:
        # the SecAgg+ graph is sized for the row's dropout fraction (at least 10%)
        return max(p, 0.1)

    def masking_graph(self, cfg: RoundConfig) -> MaskingGraph:
        """A masking graph with the round's degree and threshold (the SecAgg+ rule fixes both
        from n and the rates; only the ring order depends on the seed)."""
        return cfg.masking_graph(self.graph_seed)

    def updates(self, d: int) -> np.ndarray:
        """The (n, d) client updates (generated once per d; values on the fixed-point grid)."""
        if d not in self._x:
            self._x.clear()
            self._enc.clear()
            self._expected.clear()
            gc.collect()
            res = self.config("complete", False, d, 0.0).encoder.resolution
            k = int(math.floor(CLIP / res))
            rng = np.random.default_rng(self.seed)
            x = np.empty((self.n, d))
            for i in range(self.n):  # row by row: no (n, d) int64 temporary
                x[i] = rng.integers(-k, k, size=d, endpoint=True) * res
            self._x[d] = x
        return self._x[d]

    def round(
        self, graph: str, hardened: bool, d: int, p: float, dropped: set[int], round_id: int
    ) -> tuple[RoundResult, float, float]:
        """One ``run_round`` call; returns (result, wall seconds, process CPU seconds)."""
        x = self.updates(d)
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        result = protocol.run_round(
            x,
            value_range=CLIP,
            bits=BITS,
            graph=graph,
            dropouts={DROP_STAGE: sorted(dropped)},
            hardened=hardened,
            seed=self.seed,
            round_id=round_id,
            dropout_rate=self.dropout_rate(p),
            corrupt_rate=CORRUPT_RATE,
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return result, wall, cpu

    def check(self, result: RoundResult) -> bool | None:
        """Whether ``encoded_sum`` is the plaintext sum of the survivors' encodings (None: abort)."""
        if result.aborted or result.encoded_sum is None:
            return None
        cfg = result.config
        enc = cfg.encoder
        key = (cfg.dim, repr(enc))
        if key not in self._enc:
            x = self.updates(cfg.dim)
            rng = np.random.default_rng()  # any generator: grid values round exactly
            self._enc[key] = [enc.encode(x[i], rng) for i in cfg.population]
        survivors = tuple(result.survivors)
        ekey = (cfg.dim, repr(enc), survivors)
        if ekey not in self._expected:
            acc = np.zeros(cfg.dim, np.uint64)
            for i in survivors:
                np.add(acc, self._enc[key][i], out=acc, casting="unsafe")
            self._expected[ekey] = enc.wrap(acc)
        expected = self._expected[ekey]
        return bool(
            result.encoded_sum.dtype == enc.dtype
            and np.array_equal(result.encoded_sum, expected)
            and np.array_equal(result.aggregate, enc.decode(expected, len(survivors)))
        )


def _measure(result: RoundResult, planned_drops: set[int]) -> dict[str, Any]:
    """Per-round numbers from the round's own transcript."""
    tr = result.transcript
    if result.aborted:  # no survivors: report the clients that were not made to drop
        ids = [i for i in result.config.population if i not in planned_drops]
    else:
        ids = list(result.survivors)
    totals = [sum(tr.client_seconds[i].values()) for i in ids]
    stages = _stages(*(tr.client_seconds[i] for i in ids))
    bytes_sent = [tr.client_bytes_sent[i] for i in ids]
    bytes_recv = [tr.client_bytes_received[i] for i in ids]
    return {
        "client_s": _median(totals),
        "client_max_s": max(totals) if totals else math.nan,
        "client_stage_s": {
            s: _median([tr.client_seconds[i].get(s, 0.0) for i in ids]) for s in stages
        },
        "server_s": tr.server_total_seconds,
        "server_stage_s": dict(tr.server_seconds),
        "bytes_per_client": _median([a + b for a, b in zip(bytes_sent, bytes_recv)]),
        "bytes_sent_per_client": _median(bytes_sent),
        "bytes_received_per_client": _median(bytes_recv),
        "server_bytes": tr.server_bytes_sent + tr.server_bytes_received,
    }


#: Stage order for tables (the driver's stage names, then "done": messages after the last stage,
#: e.g. an Abort).
STAGE_ORDER = (*protocol.DROPOUT_STAGES, "done")


def _stages(*dicts: Mapping[str, Any]) -> list[str]:
    """Union of the stage names in ``dicts``, in protocol order (unknown names last)."""
    names = {k for d in dicts for k in d}
    return sorted(names, key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else 99, s))


def _median_dicts(ds: Sequence[Mapping[str, float]]) -> dict[str, float]:
    return {k: _median([d.get(k, 0.0) for d in ds]) for k in _stages(*ds)}


def run_row(
    bench: FortisBench,
    graph: str,
    mode: str,
    d: int,
    p: float,
    dropped: set[int],
    repeats: int,
    progress: str,
) -> Row:
    """Run one cell ``repeats`` times and fold the medians into a :class:`Row`."""
    row = Row(graph=graph, mode=mode, n=bench.n, d=d, dropout=p, loadavg=list(os.getloadavg()))
    per: list[dict[str, Any]] = []
    walls, cpus, exact = [], [], []
    hardened = mode == "hardened"
    g = bench.masking_graph(bench.config(graph, hardened, d, p))
    row.degree, row.threshold = g.max_degree(), g.threshold
    for r in range(repeats):
        # a fresh round id per repeat (hardened clients refuse a round id they have seen)
        result, wall, cpu = bench.round(graph, hardened, d, p, dropped, round_id=r + 1)
        ok = bench.check(result)
        m = _measure(result, dropped)
        per.append(m)
        walls.append(wall)
        cpus.append(cpu)
        exact.append(ok)
        row.aborted = row.aborted or result.aborted
        row.abort_reason = row.abort_reason or result.abort_reason
        row.dropped, row.survivors = len(result.dropped), len(result.survivors)
        row.threshold = result.threshold
        state = "ABORTED: " + str(result.abort_reason) if result.aborted else f"exact={ok}"
        print(
            f"{progress} repeat {r + 1}/{repeats}: round {wall:.2f} s wall, client "
            f"{m['client_s'] * 1e3:.1f} ms, server {m['server_s']:.3f} s, {state} "
            f"(load {os.getloadavg()[0]:.2f})",
            flush=True,
        )
        del result
    row.repeats = repeats
    row.client_runs_s = [m["client_s"] for m in per]
    row.server_runs_s = [m["server_s"] for m in per]
    row.client_s = _median(row.client_runs_s)
    row.client_max_s = _median([m["client_max_s"] for m in per])
    row.server_s = _median(row.server_runs_s)
    row.client_stage_s = _median_dicts([m["client_stage_s"] for m in per])
    row.server_stage_s = _median_dicts([m["server_stage_s"] for m in per])
    row.round_wall_s = _median(walls)
    row.round_cpu_s = _median(cpus)
    for k in ("bytes_per_client", "bytes_sent_per_client", "bytes_received_per_client"):
        setattr(row, k, _median([m[k] for m in per]))
    row.server_bytes = int(_median([m["server_bytes"] for m in per]))
    row.exact = None if any(e is None for e in exact) else all(bool(e) for e in exact)
    return row


# --------------------------------------------------------------------------------------------
# Flower (its public SecAgg+ primitives; the same code paths as the earlier primitive-level
# benchmark)


_FLOWER_API = {
    "flwr.common": ["ndarray_to_bytes"],
    "flwr.common.secure_aggregation.crypto.shamir": ["combine_shares", "create_shares"],
    "flwr.common.secure_aggregation.crypto.symmetric_encryption": [
        "decrypt",
        "encrypt",
        "generate_shared_key",
    ],
    "flwr.common.secure_aggregation.ndarrays_arithmetic": [
        "parameters_addition",
        "parameters_mod",
        "parameters_subtraction",
    ],
    "flwr.common.secure_aggregation.quantization": ["dequantize", "quantize"],
    "flwr.common.secure_aggregation.secaggplus_utils": [
        "pseudo_rand_gen",
        "share_keys_plaintext_concat",
    ],
    "flwr.supercore.primitives.asymmetric": [
        "bytes_to_private_key",
        "bytes_to_public_key",
        "generate_key_pairs",
        "private_key_to_bytes",
        "public_key_to_bytes",
    ],
}


def load_flower() -> dict | None:
    """Flower's SecAgg+ primitives by name (plus "version"), or None with a printed reason."""
    fl: dict = {}
    try:
        for module, names in _FLOWER_API.items():
            mod = importlib.import_module(module)
            for name in names:
                fl[name] = getattr(mod, name)
        fl["version"] = importlib.metadata.version("flwr")
    except Exception as exc:  # ImportError, or a broken optional dependency
        print(f"note: Flower not importable ({type(exc).__name__}: {exc}); skipping Flower.")
        return None
    return fl


class FlowerTimer:
    """Times Flower's SecAgg+ primitives on the same round shape; caches d-independent parts."""

    MOD_RANGE = 2**32
    TARGET_RANGE = 2**22  # Flower's default quantization_range

    def __init__(self, fl: dict, samples: int):
        self.fl = fl
        self.samples = max(1, samples)
        self._share_cache: dict[tuple, tuple[float, float, int, int]] = {}
        self._combine_cache: dict[tuple, tuple[float, float]] = {}
        self._keys = [fl["generate_key_pairs"]() for _ in range(2)]

    def _pk_bytes(self, k) -> bytes:
        return self.fl["public_key_to_bytes"](k[1])

    def client(self, graph: MaskingGraph, d: int, dropped: set[int]) -> tuple[float, dict, float]:
        fl = self.fl
        pc = time.perf_counter
        me = graph.ids[0]
        nb = sorted(graph.neighbours[me])
        k, t = len(nb), graph.threshold
        # neighbours' key pairs (not timed)
        peer1 = {j: fl["generate_key_pairs"]() for j in nb}
        peer2 = {j: fl["generate_key_pairs"]() for j in nb}
        pk1 = {j: fl["public_key_to_bytes"](peer1[j][1]) for j in nb}
        pk2 = {j: fl["public_key_to_bytes"](peer2[j][1]) for j in nb}
        parts = {}
        t0 = pc()
        sk1, p1 = fl["generate_key_pairs"]()
        sk2, p2 = fl["generate_key_pairs"]()
        sk1b, pk1b = fl["private_key_to_bytes"](sk1), fl["public_key_to_bytes"](p1)
        sk2b, pk2b = fl["private_key_to_bytes"](sk2), fl["public_key_to_bytes"](p2)
        parts["keys"] = pc() - t0
        key_id = (graph.kind, k, t)
        if key_id not in self._share_cache:
            t0 = pc()
            rd_seed = os.urandom(32)
            b_shares = fl["create_shares"](rd_seed, t, k + 1)
            s_shares = fl["create_shares"](sk1b, t, k + 1)
            cts = {}
            ss2 = {}
            t_share = pc() - t0
            t0 = pc()
            for j in nb:
                ss2[j] = fl["generate_shared_key"](
                    fl["bytes_to_private_key"](sk2b), fl["bytes_to_public_key"](pk2[j])
                )
            t_agree = pc() - t0
            t0 = pc()
            for idx, j in enumerate(nb, start=1):
                pt = fl["share_keys_plaintext_concat"](me, j, b_shares[idx], s_shares[idx])
                cts[j] = fl["encrypt"](ss2[j], pt)
            t_seal = pc() - t0
            # shares received from neighbours: same sizes; decrypt them (timed)
            t0 = pc()
            for j in nb:
                fl["decrypt"](ss2[j], cts[j])
            t_open = pc() - t0
            ct_bytes = sum(len(c) for c in cts.values())
            share_len = (len(b_shares[1]) + len(s_shares[1])) // 2
            self._share_cache[key_id] = (t_agree, t_share + t_seal + t_open, ct_bytes, share_len)
        t_agree, t_shares, ct_bytes, share_len = self._share_cache[key_id]
        parts["keys"] += t_agree
        parts["shares"] = t_shares
        x = np.random.default_rng(0).uniform(-CLIP, CLIP, d)
        t0 = pc()
        q = fl["quantize"]([x], CLIP, self.TARGET_RANGE)
        parts["encode"] = pc() - t0
        dims = [a.shape for a in q]
        t0 = pc()
        rd_seed = os.urandom(32)
        vec = fl["parameters_addition"](q, fl["pseudo_rand_gen"](rd_seed, self.MOD_RANGE, dims))
        for j in nb:
            key = fl["generate_shared_key"](
                fl["bytes_to_private_key"](sk1b), fl["bytes_to_public_key"](pk1[j])
            )
            mask = fl["pseudo_rand_gen"](key, self.MOD_RANGE, dims)
            if me > j:
                vec = fl["parameters_addition"](vec, mask)
            else:
                vec = fl["parameters_subtraction"](vec, mask)
        vec = fl["parameters_mod"](vec, self.MOD_RANGE)
        parts["mask"] = pc() - t0
        masked_bytes = sum(len(fl["ndarray_to_bytes"](a)) for a in vec)
        total = sum(parts.values())
        nbytes = len(pk1b) + len(pk2b) + ct_bytes + masked_bytes + k * share_len
        return total * 1e3, {k_: v * 1e3 for k_, v in parts.items()}, nbytes

    def server(self, graph: MaskingGraph, d: int, dropped: set[int]) -> tuple[float, dict]:
        """Extrapolated: each operation timed on ``samples`` instances, times its count."""
        fl = self.fl
        pc = time.perf_counter
        ids = graph.ids
        t = graph.threshold
        S = [i for i in ids if i not in dropped]
        S_set = set(S)
        n_pairs = sum(len(graph.neighbours[j]) for j in dropped)  # Flower loops all neighbours
        dims = [(d,)]
        rng = np.random.default_rng(1)
        parts = {}
        # sum of masked int64 vectors
        a = [rng.integers(0, self.MOD_RANGE, d, dtype=np.int64)]
        b = [rng.integers(0, self.MOD_RANGE, d, dtype=np.int64)]
        t0 = pc()
        for _ in range(self.samples):
            a = fl["parameters_addition"](a, b)
        parts["sum"] = (pc() - t0) / self.samples * len(S)
        # Shamir combines (independent of d, cached per graph and dropout set size)
        cid = (graph.kind, graph.max_degree(), t, len(dropped))
        if cid not in self._combine_cache:
            avail_b = statistics.mean(
                sum(1 for j in graph.neighbours[i] if j in S_set) + 1 for i in S
            )
            n_b = max(t, int(round(avail_b)))
            shares = fl["create_shares"](os.urandom(32), t, graph.max_degree() + 1)[:n_b]
            t0 = pc()
            for _ in range(self.samples):
                fl["combine_shares"](shares)
            per_b = (pc() - t0) / self.samples
            per_s = 0.0
            if dropped:
                avail_s = statistics.mean(
                    sum(1 for i in graph.neighbours[j] if i in S_set) for j in dropped
                )
                n_s = max(t, int(round(avail_s)))
                skb = fl["private_key_to_bytes"](self._keys[0][0])
                shares = fl["create_shares"](skb, t, graph.max_degree() + 1)[:n_s]
                t0 = pc()
                fl["combine_shares"](shares)  # one sample: seconds each
                per_s = pc() - t0
            self._combine_cache[cid] = (per_b, per_s)
        per_b, per_s = self._combine_cache[cid]
        parts["shamir"] = per_b * len(S) + per_s * len(dropped)
        # mask re-expansion: self masks of survivors, pairwise masks of dropped clients
        vec = [rng.integers(0, self.MOD_RANGE, d, dtype=np.int64)]
        seed = os.urandom(32)
        t0 = pc()
        for _ in range(self.samples):
            vec = fl["parameters_subtraction"](
                vec, fl["pseudo_rand_gen"](seed, self.MOD_RANGE, dims)
            )
        per_self = (pc() - t0) / self.samples
        skb = fl["private_key_to_bytes"](self._keys[0][0])
        pkb = self._pk_bytes(self._keys[1])
        t0 = pc()
        for _ in range(self.samples):
            key = fl["generate_shared_key"](
                fl["bytes_to_private_key"](skb), fl["bytes_to_public_key"](pkb)
            )
            vec = fl["parameters_addition"](vec, fl["pseudo_rand_gen"](key, self.MOD_RANGE, dims))
        per_pair = (pc() - t0) / self.samples
        vec = fl["parameters_mod"](vec, self.MOD_RANGE)
        t0 = pc()
        fl["dequantize"](vec, CLIP, self.TARGET_RANGE)
        parts["unmask"] = per_self * len(S) + per_pair * n_pairs + (pc() - t0)
        return sum(parts.values()), {k: v * 1e3 for k, v in parts.items()}


def flower_numbers(
    flower: FlowerTimer,
    graph: MaskingGraph,
    d: int,
    dropped: set[int],
    repeats: int,
    cache: dict[tuple, dict[str, Any]],
) -> dict[str, Any]:
    """Flower's client (one representative) and extrapolated server, medians over ``repeats``.

    The client side does not depend on the dropouts, so it is timed once per (graph, d).
    """
    ckey = (graph.kind, graph.max_degree(), graph.threshold, d)
    if ckey not in cache:
        runs = [flower.client(graph, d, dropped) for _ in range(repeats)]
        cache[ckey] = {
            "client_s": _median([ms for ms, _, _ in runs]) / 1e3,
            "client_stage_s": {
                k: v / 1e3 for k, v in _median_dicts([parts for _, parts, _ in runs]).items()
            },
            "bytes_per_client": runs[0][2],
        }
    out = dict(cache[ckey])
    sruns = [flower.server(graph, d, dropped) for _ in range(repeats)]
    out["server_s"] = _median([s for s, _ in sruns])
    out["server_stage_s"] = {
        k: v / 1e3 for k, v in _median_dicts([parts for _, parts in sruns]).items()
    }
    out["server_extrapolated"] = True
    out["repeats"] = repeats
    return out


# --------------------------------------------------------------------------------------------
# reporting


def _ratio(a: float | None, b: float | None, digits: int = 3) -> str:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return "-"
    return f"{a / b:.{digits}f}"


def _fl(row: Row, key: str) -> float | None:
    return None if row.flower is None else row.flower.get(key)


def _spread(xs: Sequence[float]) -> str:
    xs = [x for x in xs if math.isfinite(x)]
    return f"{min(xs):.3f}-{max(xs):.3f}" if xs else "-"


def _fmt_d(d: int) -> str:
    e = round(math.log10(d)) if d > 0 else 0
    return f"1e{e}" if 10**e == d else str(d)


def _opt(v: float | None, scale: float, width: int, digits: int) -> str:
    """``v * scale`` right-aligned in ``width``, or "-" when there is no value."""
    return f"{v * scale:{width}.{digits}f}" if v is not None else f"{'-':>{width}}"


def _cpu_per_wall(row: Row) -> str:
    """Process CPU / wall of the round: a contention indicator (see the table legend)."""
    return _ratio(row.round_cpu_s, row.round_wall_s, 2)


def _state(row: Row) -> str:
    if row.aborted:
        return "ABORT"
    return "yes" if row.exact else "NO"


def print_table(rows: Sequence[Row]) -> None:
    head = (
        f"{'graph':8} {'mode':8} {'k':>3} {'t':>3} {'d':>7} {'drop':>4} | {'client ms':>9} "
        f"{'Flower':>7} {'ratio':>6} | {'server s':>8} {'min-max':>11} {'Flower~':>8} "
        f"{'ratio':>7} | {'KB/cl':>6} {'Flower':>6} {'ratio':>5} | exact | load cpu/w"
    )
    print("\n" + head)
    print("-" * len(head))
    for r in rows:
        fc, fs, fb = _fl(r, "client_s"), _fl(r, "server_s"), _fl(r, "bytes_per_client")
        server = f"{r.server_s:8.3f}" if not r.aborted else f"{'abort':>8}"
        print(
            f"{r.graph:8} {r.mode:8} {r.degree:3d} {r.threshold:3d} {r.d:7d} {r.dropout:4.2f} | "
            f"{r.client_s * 1e3:9.1f} {_opt(fc, 1e3, 7, 0)} "
            f"{_ratio(r.client_s, fc):>6} | {server} {_spread(r.server_runs_s):>11} "
            f"{'~' if fs else ' '}{_opt(fs, 1, 7, 1)} "
            f"{_ratio(None if r.aborted else r.server_s, fs, 4):>7} | "
            f"{r.bytes_per_client / 1024:6.0f} {_opt(fb, 1 / 1024, 6, 0)} "
            f"{_ratio(r.bytes_per_client, fb, 2):>5} | {_state(r):5} | {r.loadavg[0]:4.2f} "
            f"{_cpu_per_wall(r):>5}"
        )
    print(
        "client ms = median over repeats of the median over surviving clients of each client's "
        "total time in the round (transcript); server s = transcript server total (min-max "
        "over the repeats); ratio = fortis / Flower (lower is better for fortis); '~' = Flower "
        "server extrapolated from sampled per-operation timings; KB/cl = bytes sent + received "
        "per client; exact = encoded_sum equals the plaintext sum of the survivors' encodings; "
        "load = 1-min load average when the row started; cpu/w = process CPU / wall of the "
        "run_round call (the round never waits and its mask expansion is threaded, so on an "
        "idle machine this is >= 1; well below 1 means other work took the cores and the "
        "times are inflated)."
    )
    print("\nper stage (medians over repeats; client ms = median over surviving clients):")
    for r in rows:
        cs = " ".join(f"{k}={v * 1e3:.1f}" for k, v in r.client_stage_s.items())
        ss = " ".join(f"{k}={v * 1e3:.0f}" for k, v in r.server_stage_s.items())
        print(f"  {r.graph:8} {r.mode:8} d={r.d:<7d} p={r.dropout:.2f} | client ms: {cs}")
        print(f"  {'':8} {'':8}   {'':7}   {'':4} | server ms: {ss}")
        if r.flower:
            fcs = " ".join(f"{k}={v * 1e3:.1f}" for k, v in r.flower["client_stage_s"].items())
            fss = " ".join(f"{k}={v * 1e3:.0f}" for k, v in r.flower["server_stage_s"].items())
            print(f"  {'':8} {'Flower':8}   {'':7}   {'':4} | client ms: {fcs} | server ms~: {fss}")
        if r.aborted:
            print(f"  {'':8} {'':8}   {'':7}   {'':4} | round aborted: {r.abort_reason}")


def print_targets(rows: Sequence[Row]) -> None:
    big = [r for r in rows if r.d == 1_000_000]
    if not big:
        return
    print()
    for mode in ("plain", "hardened"):
        sp = [r for r in big if r.graph == "secagg+" and r.mode == mode and not r.aborted]
        if sp:
            worst = max(sp, key=lambda r: r.client_s)
            print(
                f"target client <= 0.1 s at d=1e6 (SecAgg+ graph, {mode}): worst row "
                f"p={worst.dropout:.2f} {worst.client_s:.3f} s: "
                f"{'met' if worst.client_s <= 0.1 else 'NOT met'}"
            )
    for mode in ("plain", "hardened"):
        for kind in ("complete", "secagg+"):
            for r in big:
                if r.graph == kind and r.mode == mode and abs(r.dropout - 0.3) < 1e-9:
                    verdict = (
                        f"round aborted ({r.abort_reason})"
                        if r.aborted
                        else f"{r.server_s:.2f} s: {'met' if r.server_s <= 2 else 'NOT met'}"
                    )
                    print(f"target server <= 2 s at d=1e6, 30% dropout ({kind}, {mode}): {verdict}")


def markdown(meta: Mapping[str, Any], rows: Sequence[Row]) -> str:
    """The results as a markdown section (header, main table, per-stage table)."""
    la = meta.get("loadavg_start", [])
    out = [
        f"- Label: {meta.get('label') or '-'}",
        f"- Date: {meta['date_utc']}; fortis commit {meta['commit']}"
        + (" (protocol/ or secagg/ had uncommitted changes!)" if meta.get("tree_dirty") else ""),
        f"- Command: `{meta['command']}`",
        f"- Machine: {meta['cpu_count']} cores, {meta['platform']}; mask threads per party "
        f"{meta['workers']}; load average at start {la}, at end {meta.get('loadavg_end')}; "
        f"run took {meta.get('duration_s', 0) / 60:.1f} min",
        f"- Each fortis number is the median of {meta['repeats']} rounds through "
        "`protocol.run_round`, read from the round's "
        f"`Transcript`; dropouts at stage `{meta['drop_stage']}`",
        "",
        "| graph | mode | k | t | d | p | client ms | Flower ms | ratio | server s "
        "| server runs | Flower s | ratio | KB/client | Flower KB | ratio | exact | load | CPU/wall |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|--:|--:|",
    ]
    for r in rows:
        fc, fs, fb = _fl(r, "client_s"), _fl(r, "server_s"), _fl(r, "bytes_per_client")
        out.append(
            f"| {r.graph} | {r.mode} | {r.degree} | {r.threshold} | {_fmt_d(r.d)} | {r.dropout:.1f} "
            f"| {r.client_s * 1e3:.1f} | {f'{fc * 1e3:.0f}' if fc else '-'} "
            f"| {_ratio(r.client_s, fc)} "
            f"| {'abort' if r.aborted else f'{r.server_s:.3f}'} | {_spread(r.server_runs_s)} "
            f"| {f'~{fs:.1f}' if fs else '-'} | {_ratio(None if r.aborted else r.server_s, fs, 4)} "
            f"| {r.bytes_per_client / 1024:.0f} | {f'{fb / 1024:.0f}' if fb else '-'} "
            f"| {_ratio(r.bytes_per_client, fb, 2)} | {_state(r)} | {r.loadavg[0]:.2f} "
            f"| {_cpu_per_wall(r)} |"
        )
    stages_c = _stages(*(r.client_stage_s for r in rows))
    stages_s = _stages(*(r.server_stage_s for r in rows))
    out += [
        "",
        "Per stage (ms; client = median over surviving clients; medians over the repeats):",
        "",
        "| graph | mode | d | p | "
        + " | ".join(f"client {s}" for s in stages_c)
        + " | "
        + " | ".join(f"server {s}" for s in stages_s)
        + " |",
        "|---|---|--:|--:|" + "--:|" * (len(stages_c) + len(stages_s)),
    ]
    for r in rows:
        cs = " | ".join(
            f"{r.client_stage_s[s] * 1e3:.1f}" if s in r.client_stage_s else "-" for s in stages_c
        )
        ss = " | ".join(
            f"{r.server_stage_s[s] * 1e3:.0f}" if s in r.server_stage_s else "-" for s in stages_s
        )
        out.append(f"| {r.graph} | {r.mode} | {_fmt_d(r.d)} | {r.dropout:.1f} | {cs} | {ss} |")
    aborted = [r for r in rows if r.aborted]
    if aborted:
        out.append("")
        for r in aborted:
            out.append(
                f"- {r.graph} {r.mode} d={_fmt_d(r.d)} p={r.dropout:.1f}: round aborted "
                f"({r.abort_reason}); its times cover the stages run before the abort."
            )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# JSON and comparison


def _clean(obj: Any) -> Any:
    """NaN/inf -> None, so the file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, meta: Mapping[str, Any], rows: Sequence[Row]) -> None:
    data = {"schema": SCHEMA, "meta": dict(meta), "rows": [asdict(r) for r in rows]}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=1) + "\n")
    tmp.replace(path)


def load_json(path: Path) -> tuple[dict[str, Any], list[Row]]:
    data = json.loads(Path(path).read_text())
    rows = []
    for d in data["rows"]:
        d = {k: (math.nan if v is None and k.endswith("_s") else v) for k, v in d.items()}
        rows.append(Row(**{k: v for k, v in d.items() if k in Row.__dataclass_fields__}))
    return data["meta"], rows


def compare(before_path: Path, after_path: Path) -> int:
    """Print per-row after/before ratios of two JSON files written by this script."""
    mb, rb = load_json(before_path)
    ma, ra = load_json(after_path)
    for tag, m, path in (("before", mb, before_path), ("after", ma, after_path)):
        print(
            f"{tag:6}: {path} | {m.get('label') or '-'} | commit {m.get('commit')} | "
            f"{m.get('date_utc')} | load {m.get('loadavg_start')} -> {m.get('loadavg_end')} | "
            f"repeats {m.get('repeats')}"
        )
    before = {r.key: r for r in rb}
    head = (
        f"{'graph':8} {'mode':8} {'d':>7} {'drop':>4} | {'client ms':>9} {'->':>8} {'x':>6} | "
        f"{'server s':>8} {'->':>8} {'x':>6} | {'KB/cl':>6} {'->':>6} {'x':>5} | exact | cpu/w"
    )
    print("\n" + head)
    print("-" * len(head))
    matched = []
    for a in ra:
        b = before.get(a.key)
        if b is None:
            print(f"{a.graph:8} {a.mode:8} {a.d:7d} {a.dropout:4.2f} | only in after")
            continue
        matched.append((b, a))
        bs = f"{b.server_s:8.3f}" if not b.aborted else f"{'abort':>8}"
        as_ = f"{a.server_s:8.3f}" if not a.aborted else f"{'abort':>8}"
        print(
            f"{a.graph:8} {a.mode:8} {a.d:7d} {a.dropout:4.2f} | {b.client_s * 1e3:9.1f} "
            f"{a.client_s * 1e3:8.1f} {_ratio(a.client_s, b.client_s, 2):>6} | {bs} {as_} "
            f"{_ratio(None if a.aborted else a.server_s, None if b.aborted else b.server_s, 2):>6}"
            f" | {b.bytes_per_client / 1024:6.0f} {a.bytes_per_client / 1024:6.0f} "
            f"{_ratio(a.bytes_per_client, b.bytes_per_client, 2):>5} | "
            f"{_state(b)}->{_state(a)} | {_cpu_per_wall(b)}->{_cpu_per_wall(a)}"
        )
    for k in before.keys() - {r.key for r in ra}:
        print(f"{k[0]:8} {k[1]:8} {k[3]:7d} {k[4]:4.2f} | only in before")
    print(
        "x = after / before (above 1: slower or bigger after); cpu/w = process CPU / wall of "
        "the round, before->after: well below 1 means the machine was busy and times inflated."
    )
    print("\nper stage, after/before (server ms; client ms = median over surviving clients):")
    for b, a in matched:
        parts = []
        for who, sb, sa in (
            ("server", b.server_stage_s, a.server_stage_s),
            ("client", b.client_stage_s, a.client_stage_s),
        ):
            names = _stages(sb, sa)
            cells = []
            for s in names:
                vb, va = sb.get(s), sa.get(s)
                cells.append(
                    f"{s} {'-' if vb is None else f'{vb * 1e3:.1f}'}->"
                    f"{'-' if va is None else f'{va * 1e3:.1f}'}"
                    + (f" ({_ratio(va, vb, 2)})" if vb and va else "")
                )
            parts.append(f"{who}: " + ", ".join(cells))
        print(f"  {a.graph:8} {a.mode:8} d={a.d:<7d} p={a.dropout:.2f}")
        for p in parts:
            print(f"      {p}")
    return 0


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_meta(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    dirty = _git("status", "--porcelain", "--", "protocol", "secagg")
    return {
        "label": args.label,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "protocol_tree": _git("rev-parse", "HEAD:protocol"),
        "secagg_tree": _git("rev-parse", "HEAD:secagg"),
        "tree_dirty": dirty.splitlines() if dirty else [],
        "protocol_file": protocol.__file__,
        "script_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16],
        "command": "python benchmarks/secagg_bench.py " + shlex.join(argv),
        "n": args.n,
        "d": args.d,
        "dropouts": args.dropouts,
        "graphs": args.graphs,
        "modes": args.modes,
        "repeats": args.repeats,
        "seed": args.seed,
        "bits": BITS,
        "value_range": CLIP,
        "drop_stage": DROP_STAGE,
        "workers": default_workers(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cryptography": _version("cryptography"),
        "flwr": None,
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
    }


def _int(s: str) -> int:
    v = float(s)
    if v != int(v):
        raise argparse.ArgumentTypeError(f"not an integer: {s}")
    return int(v)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--n", type=_int, default=100, help="number of clients (default 100)")
    ap.add_argument(
        "--d", type=_int, nargs="+", default=[100_000, 1_000_000], help="dimensions (1e5 ok)"
    )
    ap.add_argument(
        "--dropouts", type=float, nargs="+", default=[0.0, 0.1, 0.3], help="dropout fractions"
    )
    ap.add_argument(
        "--graphs", nargs="+", default=["complete", "secagg+"], choices=["complete", "secagg+"]
    )
    ap.add_argument(
        "--modes", nargs="+", default=["plain", "hardened"], choices=["plain", "hardened"]
    )
    ap.add_argument(
        "--repeats", type=int, default=3, help="rounds per row; medians are reported (default 3)"
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: n=20, d=1e4, p=0/0.3, 1 rep")
    ap.add_argument("--no-flower", action="store_true", help="skip Flower")
    ap.add_argument(
        "--flower-samples",
        type=int,
        default=3,
        help="samples per Flower server operation before extrapolating (default 3)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="", help="free text recorded in the JSON and markdown")
    ap.add_argument("--json", type=Path, help="write the results as JSON here (after every row)")
    ap.add_argument("--markdown", type=Path, help="write the tables as a markdown section here")
    ap.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("BEFORE", "AFTER"),
        help="print per-row after/before ratios of two --json files and exit",
    )
    args = ap.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if args.quick:
        args.n, args.d, args.dropouts = 20, [10_000], [0.0, 0.3]
        args.repeats, args.flower_samples = 1, 1
    if args.n < 3:
        ap.error("--n must be >= 3")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")

    meta = run_meta(args, argv)
    fl = None if args.no_flower else load_flower()
    flower = FlowerTimer(fl, args.flower_samples) if fl else None
    meta["flwr"] = fl["version"] if fl else None
    print(
        f"secagg benchmark through protocol.run_round: n={args.n}, d={args.d}, "
        f"dropouts={args.dropouts} at {DROP_STAGE!r}, graphs={args.graphs}, modes={args.modes}, "
        f"repeats={args.repeats}, bits={BITS}, mask threads={meta['workers']}"
        + (f", Flower {fl['version']}" if fl else ", no Flower")
    )
    print(
        f"fortis commit {meta['commit']} ({meta['protocol_file']})"
        + (f"; UNCOMMITTED changes: {meta['tree_dirty']}" if meta["tree_dirty"] else "")
    )
    print(f"label: {args.label or '-'}; load average {meta['loadavg_start']}")
    print("timings are wall clock; on a shared machine they are noisy.\n", flush=True)

    bench = FortisBench(args.n, args.seed)
    dropped = _dropped_sets(args.n, args.dropouts, args.seed)
    cells = [
        (d, g, p, m) for d in args.d for g in args.graphs for p in args.dropouts for m in args.modes
    ]
    rows: list[Row] = []
    flower_cache: dict[tuple, dict[str, Any]] = {}
    start = time.perf_counter()
    for k, (d, graph, p, mode) in enumerate(cells, start=1):
        tag = f"[{k}/{len(cells)} {time.perf_counter() - start:5.0f}s] {graph} {mode} d={d} p={p}"
        try:
            row = run_row(bench, graph, mode, d, p, dropped[p], args.repeats, tag)
        except ValueError as exc:  # e.g. no SecAgg+ degree exists for this n
            print(f"{tag}: skipped ({type(exc).__name__}: {exc})", flush=True)
            continue
        if flower:
            same = next(
                (r.flower for r in rows if r.flower and (r.graph, r.d, r.dropout) == (graph, d, p)),
                None,
            )
            if same is None:
                t0 = time.perf_counter()
                cfg = bench.config(graph, False, d, p)
                same = flower_numbers(
                    flower, bench.masking_graph(cfg), d, dropped[p], args.repeats, flower_cache
                )
                print(
                    f"{tag} Flower: client {same['client_s'] * 1e3:.0f} ms, server "
                    f"~{same['server_s']:.1f} s ({time.perf_counter() - t0:.0f} s to time)",
                    flush=True,
                )
            row.flower = same
        rows.append(row)
        if args.json:
            meta["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
            meta["duration_s"] = time.perf_counter() - start
            write_json(args.json, meta, rows)
    meta["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    meta["duration_s"] = time.perf_counter() - start
    print_table(rows)
    print_targets(rows)
    print(
        f"\n{len(rows)} rows in {meta['duration_s'] / 60:.1f} min; load average "
        f"{meta['loadavg_start']} -> {meta['loadavg_end']}"
    )
    if args.json:
        write_json(args.json, meta, rows)
        print(f"wrote {args.json}")
    if args.markdown:
        args.markdown.write_text(markdown(meta, rows))
        print(f"wrote {args.markdown}")
    return 0 if all(r.exact is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
