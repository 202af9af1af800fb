"""A round over the network against the same round in memory (issue 11).

For each n: a federation of n clients (and, with ``--filtered``, a key holder), each a
separate ``python -m protocol.network.synthetic`` process that dials the server over mutual
TLS 1.3 on loopback; the server (:class:`protocol.network.NetworkServer`) runs in this
process. Once every client is connected, one warm-up round runs per mode, then ``--rounds``
timed rounds. Each timed network round is followed by the in-memory driver,
``protocol.run_round``, on the same updates in the same mode (interleaved, so both see the
same load), and the two aggregates are compared.

What is timed is only the call a user makes: ``await server.run_round(config, step=...)``
(the round from ``RoundOpen`` to the decoded sum, clients and key holder working in their own
processes) and ``protocol.run_round(updates, ...)`` (every party in this process, one after
another, so its wall time is the sum of all parties' compute). Reported per (mode, n), as
medians over the timed rounds:

- wall seconds of both, and network / in-memory (target of issue 11: <= 1.5 at n = 50);
- bytes: the in-memory transcript's server bytes sent + received (every message goes
  through the server), the network transcript's (the same round messages plus the session
  messages ``RoundOpen``/``Endorse``/``RoundClose``, frame payloads without the 5-byte frame
  headers), and the TCP payload bytes the server's sockets sent and received (the kernel's
  ``TCP_INFO`` counters: TLS records, frame headers included; TCP/IP headers not);
- where the time goes: the server party's compute (``transcript.server_seconds``), this
  process's CPU seconds during the round (server party, event loop, TLS), the clients' and
  the key holder's CPU seconds (``/proc/PID/stat``), the cores used (CPU / wall), the CPU the
  rest of the machine used meanwhile (``/proc/stat`` minus ours: other people's work), and the
  same for the in-memory round;
- exactness: the updates are on a 2**-10 grid (``synthetic_update``), so both aggregates must
  equal the plaintext sum bit for bit. Filtering with ``--rule multi_krum`` draws its sketch
  from the (random) masked inputs, so the two drivers may reject different honest clients;
  then each aggregate is checked against the exact sum of its own survivors instead.

    python benchmarks/deploy_bench.py --n 10 50 100 --d 10000 --rounds 3 --filtered \
        --json benchmarks/results/deploy_bench.json --markdown benchmarks/results/deploy_bench.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import protocol
from protocol import SERVER_ID, RoundConfig
from protocol.filtering import FilterConfig
from protocol.network import NetworkServer, StageTimeouts, save_paillier_key, write_federation
from protocol.network.synthetic import synthetic_update
from secagg.paillier_private import PaillierPrivateKey

ROOT = Path(__file__).resolve().parent.parent
FED = "deploybench"
VALUE_RANGE = 1.0
TARGET_N, TARGET_RATIO = 50, 1.5
_TICK = os.sysconf("SC_CLK_TCK")
_CHILD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# -- the peer processes ------------------------------------------------------------------------


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, **_CHILD_ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "protocol.network.synthetic", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine_busy() -> float:
    """CPU seconds every process of the machine has used so far (``/proc/stat``: all but idle
    and iowait), to tell how much of a round's wall time went to other people's work."""
    f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / _TICK


def _snapshot(procs: dict[str, list[subprocess.Popen]]) -> dict[str, float]:
    return {role: sum(_proc_cpu(p.pid) for p in ps) for role, ps in procs.items()}


def _tcp_bytes(server: NetworkServer) -> int:
    """TCP payload bytes (TLS records) the server's live connections have sent (and had
    acknowledged) plus received, from the kernel's ``TCP_INFO`` (``tcpi_bytes_acked`` and
    ``tcpi_bytes_received``, Linux >= 4.2). Reads the server's private connection table: a
    benchmark's measurement, not an API."""
    total = 0
    for conn in list(server._conns.values()):
        sock = conn.writer.get_extra_info("socket")
        if sock is None:
            continue
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        except OSError:
            continue
        if len(info) >= 136:
            acked, received = struct.unpack_from("<QQ", info, 120)
            total += acked + received
    return total


def _delta(a: dict, b: dict) -> dict:
    return {role: b[role] - a[role] for role in a}


# -- one (mode, n) -----------------------------------------------------------------------------


def _updates(seed: int, n: int, step: int, d: int) -> np.ndarray:
    return np.stack([synthetic_update(seed, i, step, d) for i in range(n)])


def _clip_norm(d: int) -> float:
    """A power of two about 4x the updates' norm (0.01 * sqrt(d)): nothing is norm-rejected."""
    return 2.0 ** math.ceil(math.log2(4 * 0.01 * math.sqrt(d)))


def _filter_f(args, n: int) -> int:
    return max(1, n // 10) if args.f is None else args.f


def _net_config(args, mode: str, n: int, rid: int, key) -> RoundConfig:
    filtering = None
    if mode == "filtered":
        filtering = FilterConfig(
            key.public_key,
            _clip_norm(args.d),
            rule=args.rule,
            f=_filter_f(args, n) if args.rule != "mean" else 0,
            sketch_dim=args.k,
        )
    return RoundConfig(
        rid,
        tuple(range(n)),
        args.d,
        VALUE_RANGE,
        federation=FED,
        hardened=True,
        filtering=filtering,
    )


def _in_memory(args, mode: str, x: np.ndarray, rid: int, key):
    kw = dict(value_range=VALUE_RANGE, hardened=True, round_id=rid, seed=args.seed)
    if mode == "filtered":
        kw.update(
            rule=args.rule,
            f=_filter_f(args, len(x)) if args.rule != "mean" else 0,
            clip_norm=_clip_norm(args.d),
            paillier_key=key,
            sketch_dim=args.k,
        )
    busy0, cpu0, t0 = _machine_busy(), time.process_time(), time.perf_counter()
    res = protocol.run_round(x, **kw)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return res, wall, cpu, _machine_busy() - busy0 - cpu


def _check(net, mem, x: np.ndarray) -> tuple[bool, str]:
    """Both aggregates exact; equal to each other when the survivors are the same."""
    for name, r in (("network", net), ("in-memory", mem)):
        if r.aborted:
            return False, f"{name} aborted: {r.abort_reason}"
        if r.verification is not None and not r.verification.passed:
            return False, f"{name} failed its verification"
        if not np.array_equal(r.aggregate, x[list(r.survivors)].sum(axis=0)):
            return False, f"{name} aggregate != exact sum of its survivors"
    if tuple(net.survivors) == tuple(mem.survivors):
        if np.array_equal(net.aggregate, mem.aggregate):
            return True, "equal"
        return False, "same survivors, different aggregates"
    return True, (
        f"different filter choices ({len(net.survivors)} vs {len(mem.survivors)} survivors), "
        "each exact"
    )


def _bytes(t) -> int:
    return t.server_bytes_sent + t.server_bytes_received


async def _bench_n(args, n: int, modes: list[str], key, key_file: Path | None, out) -> None:
    with tempfile.TemporaryDirectory(prefix="deploy_bench_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        files = write_federation(root, n, federation=FED)
        certs_s = time.perf_counter() - t0
        server = NetworkServer(
            files[SERVER_ID],
            federation=FED,
            timeouts=StageTimeouts(first=args.timeout, stage=args.timeout, keyholder=args.timeout),
        )
        await server.start()
        common = ["--certs", str(root), "--federation", FED, "--port", str(server.port)]
        common += ["--seed", str(args.seed), "--connect-timeout", str(args.timeout)]
        procs: dict[str, list[subprocess.Popen]] = {"clients": [], "keyholder": []}
        try:
            t0 = time.perf_counter()
            if key_file is not None:
                procs["keyholder"].append(
                    _spawn(
                        [*common, "--keyholder", "--paillier", str(key_file)],
                        root / "keyholder.log",
                    )
                )
            for i in range(n):
                extra = ["--id", str(i), "--dim", str(args.d)]
                extra += ["--min-paillier-bits", str(args.paillier_bits)]
                procs["clients"].append(_spawn([*common, *extra], root / f"client{i}.log"))
            joined = await server.wait_for(n, keyholder=key_file is not None, timeout=args.timeout)
            connect_s = time.perf_counter() - t0
            if len(joined) < n or (key_file is not None and not server.keyholder_connected):
                raise RuntimeError(f"only {len(joined)} of {n} clients connected")
            print(
                f"n={n}: {n} client processes connected in {connect_s:.1f} s "
                f"(certificates {certs_s:.1f} s)",
                flush=True,
            )
            rid = 0
            step = 0
            for mode in modes:
                rid += 1
                warm = await server.run_round(_net_config(args, mode, n, rid, key), step=step)
                if warm.aborted:
                    raise RuntimeError(f"warm-up round aborted: {warm.abort_reason}")
                step += 1
                load0 = os.getloadavg()
                runs = []
                for _ in range(args.rounds):
                    rid += 1
                    cfg = _net_config(args, mode, n, rid, key)
                    before, tcp0 = _snapshot(procs), _tcp_bytes(server)
                    busy0 = _machine_busy()
                    cpu0, t0 = time.process_time(), time.perf_counter()
                    net = await server.run_round(cfg, step=step)
                    net_s = time.perf_counter() - t0
                    net_cpu = time.process_time() - cpu0
                    busy = _machine_busy() - busy0
                    peers = _delta(before, _snapshot(procs))
                    await asyncio.sleep(0.3)  # let RoundClose be acknowledged (not timed)
                    wire = _tcp_bytes(server) - tcp0
                    x = _updates(args.seed, n, step, args.d)
                    mem, mem_s, mem_cpu, mem_others = _in_memory(args, mode, x, rid, key)
                    ok, note = _check(net, mem, x)
                    if net.dropped:
                        ok, note = False, f"network dropped {list(net.dropped)}"
                    runs.append(
                        dict(
                            net_s=net_s,
                            mem_s=mem_s,
                            ratio=net_s / mem_s,
                            net_bytes=_bytes(net.transcript),
                            mem_bytes=_bytes(mem.transcript),
                            wire_bytes=wire,
                            net_server_party_s=net.transcript.server_total_seconds,
                            mem_server_party_s=mem.transcript.server_total_seconds,
                            mem_clients_party_s=sum(
                                sum(v.values()) for v in mem.transcript.client_seconds.values()
                            ),
                            mem_keyholder_party_s=sum(mem.transcript.keyholder_seconds.values()),
                            net_server_cpu_s=net_cpu,
                            mem_cpu_s=mem_cpu,
                            clients_cpu_s=peers["clients"],
                            keyholder_cpu_s=peers["keyholder"],
                            net_others_cpu_s=busy - net_cpu - sum(peers.values()),
                            mem_others_cpu_s=mem_others,
                            exact=ok,
                            check=note,
                        )
                    )
                    print(
                        f"  {mode} n={n} round {rid}: network {net_s:.2f} s, in-memory "
                        f"{mem_s:.2f} s ({net_s / mem_s:.2f}x); {note}",
                        flush=True,
                    )
                    step += 1
                out(_row(args, mode, n, runs, load0, connect_s))
            await server.shutdown()
            for ps in procs.values():
                for p in ps:
                    try:
                        await asyncio.get_running_loop().run_in_executor(None, p.wait, 30)
                    except subprocess.TimeoutExpired:
                        pass
        finally:
            for ps in procs.values():
                for p in ps:
                    if p.poll() is None:
                        p.kill()
                    p.wait()
            await server.close()


def _row(args, mode: str, n: int, runs: list[dict], load0, connect_s: float) -> dict:
    for r in runs:
        r["net_cpu_s"] = r["net_server_cpu_s"] + r["clients_cpu_s"] + r["keyholder_cpu_s"]
        r["cpu_ratio"] = r["net_cpu_s"] / r["mem_cpu_s"]
        r["net_cores"] = r["net_cpu_s"] / r["net_s"]
        r["mem_cores"] = r["mem_cpu_s"] / r["mem_s"]
    keys = [k for k in runs[0] if k not in ("exact", "check")]
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    return dict(
        mode=mode,
        n=n,
        d=args.d,
        rounds=len(runs),
        **med,
        ratio_min=min(r["ratio"] for r in runs),
        ratio_max=max(r["ratio"] for r in runs),
        exact=all(r["exact"] for r in runs),
        checks=sorted({r["check"] for r in runs}),
        runs=runs,
        connect_s=connect_s,
        load_start=list(load0),
        load_end=list(os.getloadavg()),
    )


# -- reporting ---------------------------------------------------------------------------------

_HEAD = (
    "| mode | n | in-memory s | network s | network / in-memory | in-memory MB | network MB "
    "| wire MB (TLS) | exact | load |\n"
    "|---|--:|--:|--:|--:|--:|--:|--:|---|--:|"
)
_HEAD_CPU = (
    "| mode | n | network: server party s | this process CPU s | clients CPU s "
    "| key holder CPU s | cores used | others' CPU s | in-memory: server party s | CPU s "
    "| cores used | others' CPU s | CPU network / in-memory |\n"
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
)


def _line(r: dict) -> str:
    target = f" (target <= {TARGET_RATIO})" if r["n"] == TARGET_N else ""
    return (
        f"| {r['mode']} | {r['n']} | {r['mem_s']:.2f} | {r['net_s']:.2f} | "
        f"**{r['ratio']:.2f}x** [{r['ratio_min']:.2f}-{r['ratio_max']:.2f}]{target} | "
        f"{r['mem_bytes'] / 1e6:.3f} | {r['net_bytes'] / 1e6:.3f} | "
        f"{r['wire_bytes'] / 1e6:.3f} | {'yes' if r['exact'] else 'NO'} | "
        f"{r['load_start'][0]:.1f}-{r['load_end'][0]:.1f} |"
    )


def _line_cpu(r: dict) -> str:
    return (
        f"| {r['mode']} | {r['n']} | {r['net_server_party_s']:.2f} | "
        f"{r['net_server_cpu_s']:.2f} | {r['clients_cpu_s']:.2f} | {r['keyholder_cpu_s']:.2f} | "
        f"{r['net_cores']:.2f} | {r['net_others_cpu_s']:.2f} | {r['mem_server_party_s']:.2f} | "
        f"{r['mem_cpu_s']:.2f} | {r['mem_cores']:.2f} | {r['mem_others_cpu_s']:.2f} | "
        f"{r['cpu_ratio']:.2f}x |"
    )


def _table(rows: list[dict]) -> str:
    return "\n".join([_HEAD, *(_line(r) for r in rows)])


def _table_cpu(rows: list[dict]) -> str:
    return "\n".join([_HEAD_CPU, *(_line_cpu(r) for r in rows)])


def _verdict(rows: list[dict]) -> str:
    hits = [r for r in rows if r["n"] == TARGET_N]
    if not hits:
        return f"(no n = {TARGET_N} row: the target was not measured)"
    out = []
    for r in hits:
        met = r["ratio"] <= TARGET_RATIO
        out.append(
            f"{r['mode']}, n = {TARGET_N}: network / in-memory = {r['ratio']:.2f}x "
            f"(median of {r['rounds']} paired rounds): target <= {TARGET_RATIO}x "
            + ("met" if met else f"NOT met (by {r['ratio'] / TARGET_RATIO:.2f}x)")
        )
    return "\n".join(out)


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "protocol", "secagg"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + (" (protocol/ or secagg/ modified)" if dirty else "")
    except OSError:
        return "?"


def _markdown(meta: dict, rows: list[dict]) -> str:
    end = meta.get("load_end")
    end = f"{end[0]:.2f}" if end else "(run in progress)"
    ls = meta["load_start"]
    return f"""# Networked round against the in-memory driver (issue 11)

Command: `{meta["command"]}`

{meta["date"]}, commit {meta["commit"]}, Python {meta["python"]}; {meta["cores"]} cores, load
average {ls[0]:.2f} / {ls[1]:.2f} / {ls[2]:.2f} at the start and {end} at the end.
d = {meta["d"]}, hardened mode (signed keys, consistency check), complete graph, 32-bit ring;
"filtered" adds secure filtering with the key holder ({meta["paillier_bits"]}-bit Paillier
key, k = {meta["k"]}, rule {meta["rule"]}). Per row: one warm-up network round, then
{meta["rounds"]} timed network rounds, each followed by the in-memory round on the same updates;
medians of the timed rounds (the ratio is the median of the paired per-round ratios, with
their range in brackets).

{_table(rows)}

**{_verdict(rows)}**

Where the time goes (medians per round; CPU seconds during the round):

{_table_cpu(rows)}

Columns: **in-memory s** `protocol.run_round` (every party in this process, one after
another); **network s** `await NetworkServer.run_round`, the server in this process and every
client (and the key holder) a separate process on loopback over mutual TLS 1.3; **MB** the
server's bytes sent + received from each transcript (network: the round messages plus the
session messages `RoundOpen`, which carries the certificates of the whole population,
`Endorse` and `RoundClose`; frame payloads without the 5-byte frame headers); **wire MB (TLS)**
the TCP payload bytes the server's sockets sent (acknowledged) and received during the round
(`TCP_INFO` `tcpi_bytes_acked` + `tcpi_bytes_received`: TLS records and frame headers
included, TCP/IP headers not); **exact** every round's network aggregate equals the in-memory
one and the plaintext sum bit for bit; **load** the 1-minute load average at the start and
end of the row (it counts this benchmark's own client processes too). **server party s** the
server party's compute (`transcript.server_seconds`); **this process CPU s** the benchmark
process during the network round (server party, event loop, TLS); **clients / key holder CPU
s** summed over their processes; **cores used** the round's CPU seconds / wall seconds (at
most 2); **others' CPU s** CPU seconds the rest of the machine (another engineer's tests) used
during the round (`/proc/stat` minus ours); **CPU network / in-memory** the network round's
CPU seconds (all processes) over the in-memory round's.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[10, 50, 100])
    p.add_argument("--d", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per row (median)")
    p.add_argument("--filtered", action="store_true", help="also rounds with secure filtering")
    p.add_argument(
        "--filtered-n", type=int, nargs="+", default=None, help="n for filtered rows (all)"
    )
    p.add_argument("--no-plain", action="store_true", help="only the filtered rows")
    p.add_argument("--paillier-bits", type=int, default=2048)
    p.add_argument("--k", type=int, default=128, help="sketch dimension")
    p.add_argument(
        "--rule",
        default="mean",
        help="filter rule: mean (f = 0; nobody rejected, so the aggregates must be equal) or "
        "multi_krum / krum (f = --f, default n // 10)",
    )
    p.add_argument("--f", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0, help="connect and stage timeouts")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")

    meta = dict(
        command="python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        date=datetime.date.today().isoformat(),
        commit=_commit(),
        cores=os.cpu_count(),
        python=sys.version.split()[0],
        load_start=list(os.getloadavg()),
        d=args.d,
        k=args.k,
        rule=args.rule,
        rounds=args.rounds,
        paillier_bits=args.paillier_bits,
        child_env=_CHILD_ENV,
    )
    key = None
    rows: list[dict] = []

    def out(row: dict) -> None:
        rows.append(row)
        if args.json:
            Path(args.json).write_text(json.dumps(dict(meta=meta, rows=rows), indent=1) + "\n")
        if args.markdown:
            Path(args.markdown).write_text(_markdown(meta, rows))

    with tempfile.TemporaryDirectory(prefix="deploy_bench_key_") as keydir:
        key_file = None
        if args.filtered:
            t0 = time.perf_counter()
            key = PaillierPrivateKey.generate(
                args.paillier_bits, allow_insecure=args.paillier_bits < 2048
            )
            key_file = Path(keydir) / "keyholder.paillier"
            save_paillier_key(key_file, key)
            print(f"{args.paillier_bits}-bit Paillier key: {time.perf_counter() - t0:.2f} s")
        # warm the in-memory driver up once (imports, first-call costs) before anything is timed
        protocol.run_round(_updates(args.seed, 4, 0, 64), value_range=VALUE_RANGE, hardened=True)
        for n in args.n:
            modes = [] if args.no_plain else ["hardened"]
            if args.filtered and (args.filtered_n is None or n in args.filtered_n):
                modes.append("filtered")
            if modes:
                asyncio.run(
                    _bench_n(args, n, modes, key, key_file if "filtered" in modes else None, out)
                )
    meta["load_end"] = list(os.getloadavg())
    if args.markdown:
        Path(args.markdown).write_text(_markdown(meta, rows))
    print()
    print(_table(rows))
    print()
    print(_table_cpu(rows))
    print()
    print(_verdict(rows))
    return 0 if all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
