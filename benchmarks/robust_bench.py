"""Robust aggregation rules: fortis vs ByzFL vs Flower vs the numpy floor.

Times every rule of :mod:`robust` (called directly, plus :func:`robust.aggregate` for two
rules to show the entry point's overhead) at (n, d) = (10, 10^5), (50, 10^5), (100, 10^6),
float32, and in the same run the peers' implementations where installed:

* **ByzFL** (``byzfl``): its package ``__init__`` imports torchvision, so its two aggregator
  modules (``aggregators/aggregators.py``, ``aggregators/preaggregators.py``) and the helper
  modules they use (``utils/misc.py``, ``utils/torch_tools.py``; these need torch, numpy and
  scipy) are loaded by file path under stub parent packages, so ``byzfl/__init__.py`` never
  runs. Install it with ``pip install --no-deps byzfl`` (its declared deps would replace
  torch). It is fed the same numpy float32 matrix (column ``byzfl``) and, separately, a torch
  tensor sharing that memory (column ``byzfl-torch``; ByzFL then uses torch kernels).
* **Flower** (``flwr``): the functions of ``flwr.server.strategy.aggregate``
  (``aggregate``, ``aggregate_median``, ``aggregate_trimmed_avg``, ``aggregate_krum``,
  ``aggregate_bulyan`` and the private ``_compute_distances`` their Krum uses), fed the
  list of ``([row], num_examples=1)`` tuples they take.

Only the aggregation call is timed; building the peer's input format is not. Every peer
runs in a worker subprocess with an address-space limit (``--mem-limit-gib``, default 8):
an allocation failure is recorded as OOM, a call slower than ``--peer-timeout`` as TIMEOUT
(the worker is killed and restarted for the remaining rules). The worker also computes the
largest absolute difference between the peer's output and fortis's (``max|Δ|``): peers'
definitions differ in places (see the notes printed with the table), so this is reported,
not asserted.

Floors (numpy, same data): ``X.mean(axis=0)`` for one-pass rules, ``np.sort`` of the
transposed layout (a contiguous ``X.T`` copy made beforehand, sorted along axis 1) for
median-type rules, ``X @ X.T`` for distance rules.

f = floor((n − 3) / 4) for every rule that takes f (so Bulyan's n ≥ 4f + 3 holds; Krum,
the median family and NNM need less). Bucketing uses s = 2, clip uses max_norm = median row
norm, centered clipping uses the mean of the honest rows as centre, tau = the median
distance of the rows to it, and one iteration. Geometric median and RFA run to their default
tolerances and report iterations; ByzFL's GeometricMedian runs its default T = 3 iterations.

Data: honest rows mu + 0.5·N(0, 1), the first f rows Byzantine at −3·mu + 0.5·N(0, 1)
(mu ~ N(0, 1) per coordinate), float32, fixed seed.

Timing: the median of k calls. k is adaptive: calls are repeated while they fit in
``--budget`` seconds per cell, at least 3 for fortis and the floors, at most ``--repeats``;
slow peers get fewer (at least 1). Wall-clock on a shared machine is noisy; the load average
(``os.getloadavg()``) is recorded per size.

Usage::

    python benchmarks/robust_bench.py                      # the three sizes, all peers
    python benchmarks/robust_bench.py --quick              # small smoke run
    python benchmarks/robust_bench.py --sizes 100x1000000 --rules median,krum --peers flower
    python benchmarks/robust_bench.py --json out.json --markdown benchmarks/results/robust_bench.md
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def _preset_blas_threads(argv: list[str]) -> str | None:
    """``--blas-threads N`` must reach OpenBLAS before numpy is imported: it sets
    ``OPENBLAS_NUM_THREADS`` for this process and, by inheritance, the peer workers."""
    for i, a in enumerate(argv):
        if a == "--blas-threads" and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith("--blas-threads="):
            value = a.split("=", 1)[1]
        else:
            continue
        os.environ["OPENBLAS_NUM_THREADS"] = value
        return value
    return None


_preset_blas_threads(sys.argv[1:])

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PEERS = ("byzfl", "byzfl-torch", "flower")
DEFAULT_SIZES = ((10, 100_000), (50, 100_000), (100, 1_000_000))
QUICK_SIZES = ((10, 10_000), (20, 10_000))
TARGET_SIZE = (100, 1_000_000)
GIB = 1 << 30
MIB = 1 << 20

#: rule -> (floor kind, target seconds at TARGET_SIZE or None)
RULES: dict[str, tuple[str, float | None]] = {
    "mean": ("mean", None),
    "median": ("sort", 0.15),
    "trimmed_mean": ("sort", 0.12),
    "krum": ("gram", 0.12),
    "multi_krum": ("gram", 0.12),
    "bulyan": ("sort", 0.4),
    "geometric_median": ("gram", 0.5),
    "rfa": ("mean", None),
    "centered_clipping": ("mean", None),
    "sign_vote": ("mean", None),
    "nnm": ("gram", None),  # target is memory: peak < 2 GiB
    "bucketing": ("mean", None),
    "clip": ("mean", None),
    "distances": ("gram", None),
    "aggregate:median": ("sort", None),
    "aggregate:krum": ("gram", None),
}
NNM_MEM_TARGET = 2 * GIB

#: which rules each peer implements (the worker maps them to calls)
PEER_RULES: dict[str, tuple[str, ...]] = {
    "byzfl": (
        "mean",
        "median",
        "trimmed_mean",
        "krum",
        "multi_krum",
        "geometric_median",
        "rfa",
        "centered_clipping",
        "nnm",
        "bucketing",
        "clip",
    ),
    "flower": ("mean", "median", "trimmed_mean", "krum", "multi_krum", "bulyan", "distances"),
}
PEER_RULES["byzfl-torch"] = PEER_RULES["byzfl"]

#: definitional differences that explain a non-zero max|Δ| (printed under the table)
DEFINITION_NOTES = [
    "ByzFL Krum/Multi-Krum score = mean of the n−f−1 nearest squared distances (fortis and "
    "Flower: sum over n−f−2, Blanchard et al.), so they may pick a different honest row.",
    "ByzFL GeometricMedian runs a fixed T=3 Weiszfeld steps from z=0 with nu=0.1 (not "
    "converged); fortis runs to tolerance. The same ByzFL call is listed under geometric_median "
    "and rfa (it is RFA-shaped: weighted means of the rows).",
    "torch.median returns the lower middle value for even n (fortis and numpy average the two).",
    "ByzFL CenteredClipping's constructor rejects every centre m (its type check can never pass);"
    " the benchmark sets the instance's `m` attribute to the same centre fortis gets.",
    "ByzFL Clipping writes the clipped rows into the caller's array; it gets a fresh copy per "
    "call (made outside the timer). fortis's clip writes into a preallocated `out=` buffer, "
    "so neither side allocates n×d values in the timed call; fortis also checks finiteness "
    "and takes float64 norms.",
    "Bucketing shuffles at random (different RNGs), so outputs are not compared.",
    "Flower's multi-Krum averages weighted by the clients' num_examples (all 1 here); Flower's "
    "distances are its private `_compute_distances` (direct differences, float32 rows).",
]


# ---------------------------------------------------------------------------------------
# data and parameters
# ---------------------------------------------------------------------------------------
def f_for(n: int) -> int:
    return max((n - 3) // 4, 0)


def make_data(n: int, d: int, f: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(d, dtype=np.float32)
    X = rng.standard_normal((n, d), dtype=np.float32)
    X *= np.float32(0.5)
    X[f:] += mu
    X[:f] -= np.float32(3.0) * mu
    return X


def derived_params(X: np.ndarray, f: int) -> dict[str, Any]:
    norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))
    center = X[f:].mean(axis=0, dtype=np.float64)
    dist = np.sqrt(((X.astype(np.float64) - center) ** 2).sum(axis=1)) if X.size < 5e7 else None
    if dist is None:  # chunked for the large size
        dist = np.zeros(X.shape[0])
        for a in range(0, X.shape[1], 1 << 18):
            ch = X[:, a : a + (1 << 18)].astype(np.float64) - center[a : a + (1 << 18)]
            dist += np.einsum("ij,ij->i", ch, ch)
        dist = np.sqrt(dist)
    return {
        "max_norm": float(np.median(norms)),
        "tau": float(np.median(dist)),
        "center": center,
        "bucket_s": 2,
    }


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------
def timed(fn, min_k: int, max_k: int, budget: float) -> tuple[Any, list[float]]:
    """Call ``fn`` k times (adaptive, see module docstring); return the last output and
    the list of wall-clock times."""
    t0 = time.perf_counter()
    out = fn()
    times = [time.perf_counter() - t0]
    k = max(min_k, min(max_k, int(budget // max(times[0], 1e-9))))
    for _ in range(k - 1):
        out = None
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def med(times: list[float]) -> float:
    return float(np.median(times))


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a − b| in float64, row-chunked (a, b may be (n, d) at d = 10^6)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        return float("nan")
    if a.ndim == 1:
        return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    return max(
        float(np.max(np.abs(a[i].astype(np.float64) - b[i].astype(np.float64))))
        for i in range(a.shape[0])
    )


# ---------------------------------------------------------------------------------------
# fortis calls
# ---------------------------------------------------------------------------------------
def fortis_call(rule: str, X: np.ndarray, f: int, p: dict[str, Any]):
    """Return a zero-argument callable running fortis's ``rule`` on X, and a function that
    extracts (vector, info) from its output."""
    import robust

    plain = lambda out: (out, {})  # noqa: E731
    clip_out = np.empty_like(X) if rule == "clip" else None
    with_info = lambda out: (out[0], {k: out[1][k] for k in ("iterations", "converged")})  # noqa: E731
    table = {
        "mean": (lambda: robust.mean(X), plain),
        "median": (lambda: robust.median(X, f=f), plain),
        "trimmed_mean": (lambda: robust.trimmed_mean(X, f=f), plain),
        "krum": (lambda: robust.krum(X, f=f), plain),
        "multi_krum": (lambda: robust.multi_krum(X, f=f), plain),
        "bulyan": (lambda: robust.bulyan(X, f=f), plain),
        "geometric_median": (lambda: robust.geometric_median(X, f=f, return_info=True), with_info),
        "rfa": (lambda: robust.rfa(X, f=f, return_info=True), with_info),
        "centered_clipping": (
            lambda: robust.centered_clipping(X, p["center"], p["tau"], iters=1, f=f),
            plain,
        ),
        "sign_vote": (lambda: robust.sign_vote(X, f=f), plain),
        "nnm": (lambda: robust.nnm(X, f=f), plain),
        "bucketing": (lambda: robust.bucketing(X, p["bucket_s"], seed=0), plain),
        # like ByzFL's in-place Clipping, no n×d allocation in the timed call (see notes)
        "clip": (lambda: robust.clip(X, p["max_norm"], out=clip_out), plain),
        "distances": (lambda: robust.pairwise_sq_distances(X), plain),
        "aggregate:median": (lambda: robust.aggregate(X, "median", f=f), plain),
        "aggregate:krum": (lambda: robust.aggregate(X, "krum", f=f), plain),
    }
    return table[rule]


def floor_calls(X: np.ndarray) -> dict[str, Any]:
    T = np.ascontiguousarray(X.T)
    return {
        "mean": lambda: X.mean(axis=0),
        "sort": lambda: np.sort(T, axis=1),
        "gram": lambda: X @ X.T,
    }


# ---------------------------------------------------------------------------------------
# peers (run inside the worker subprocess)
# ---------------------------------------------------------------------------------------
def _load_by_path(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name} from {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_byzfl() -> tuple[types.SimpleNamespace, str]:
    """ByzFL's aggregator modules without running ``byzfl/__init__.py`` (which imports
    torchvision through its federated framework and benchmark modules)."""
    import importlib.metadata

    spec = importlib.util.find_spec("byzfl")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("byzfl is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    for pkg, sub in (("byzfl", root), ("byzfl.utils", root / "utils")):
        stub = types.ModuleType(pkg)
        stub.__path__ = [str(sub)]
        sys.modules[pkg] = stub
    tt = _load_by_path("byzfl.utils.torch_tools", root / "utils" / "torch_tools.py")
    sys.modules["byzfl.utils"].torch_tools = tt
    _load_by_path("byzfl.utils.misc", root / "utils" / "misc.py")
    agg = _load_by_path("byzfl_aggregators", root / "aggregators" / "aggregators.py")
    pre = _load_by_path("byzfl_preaggregators", root / "aggregators" / "preaggregators.py")
    assert "torchvision" not in sys.modules, "loading ByzFL's aggregators pulled torchvision"
    names = {}
    for mod in (agg, pre):  # the aggregator and pre-aggregator classes
        names.update({k: v for k, v in vars(mod).items() if isinstance(v, type) and k[0] != "_"})
    return types.SimpleNamespace(**names), importlib.metadata.version("byzfl")


def byzfl_prepare(peer: str, rule: str, X: np.ndarray, f: int, p: dict[str, Any], bz):
    """(setup, call, to_numpy): ``setup()`` builds the instance and input outside the timer,
    ``call(state)`` is the timed aggregation."""
    use_torch = peer == "byzfl-torch"
    if use_torch:
        import torch

        def conv(a: np.ndarray):
            return torch.from_numpy(a)

        def back(o):
            return o.detach().cpu().numpy() if hasattr(o, "detach") else np.asarray(o)
    else:

        def conv(a: np.ndarray):
            return a

        def back(o):
            return np.asarray(o)

    s = p["bucket_s"]
    center = p["center"].astype(np.float32)

    def cc():
        obj = bz.CenteredClipping(L=1, tau=float(p["tau"]))
        obj.m = conv(center.copy())  # its constructor rejects any m (see notes)
        return obj

    makers = {
        "mean": lambda: bz.Average(),
        "median": lambda: bz.Median(),
        "trimmed_mean": lambda: bz.TrMean(f=f),
        "krum": lambda: bz.Krum(f=f),
        "multi_krum": lambda: bz.MultiKrum(f=f),
        "geometric_median": lambda: bz.GeometricMedian(),
        "rfa": lambda: bz.GeometricMedian(),
        "centered_clipping": cc,
        "nnm": lambda: bz.NNM(f=f),
        "bucketing": lambda: bz.Bucketing(s=s),
        "clip": lambda: bz.Clipping(c=float(p["max_norm"])),
    }
    make = makers[rule]
    if rule == "clip":  # Clipping writes into its input: a fresh copy per call

        def setup():
            return make(), conv(X.copy())
    else:
        Xc = conv(X)

        def setup():
            return make(), Xc

    def call(state):
        obj, data = state
        return obj(data)

    return setup, call, back


def flower_prepare(rule: str, X: np.ndarray, f: int, p: dict[str, Any], fl):
    n = X.shape[0]

    def results():
        return [([X[i]], 1) for i in range(n)]

    cut = f / n
    if int(cut * n) != f:  # make Flower's int(proportiontocut * n) equal f exactly
        cut = (f + 1e-9) / n
    calls = {
        "mean": lambda r: fl.aggregate(r)[0],
        "median": lambda r: fl.aggregate_median(r)[0],
        "trimmed_mean": lambda r: fl.aggregate_trimmed_avg(r, cut)[0],
        "krum": lambda r: fl.aggregate_krum(r, f, 0)[0],
        "multi_krum": lambda r: fl.aggregate_krum(r, f, n - f)[0],
        "bulyan": lambda r: fl.aggregate_bulyan(r, f, fl.aggregate_krum, to_keep=0)[0],
        "distances": lambda r: fl._compute_distances([w for w, _ in r]),
    }
    return results, calls[rule], np.asarray


def load_flower() -> tuple[types.ModuleType, str]:
    import importlib.metadata

    from flwr.server.strategy import aggregate as fl

    return fl, importlib.metadata.version("flwr")


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    msg = str(exc).lower()
    return "can't allocate memory" in msg or "unable to allocate" in msg or "out of memory" in msg


def worker_main(job_path: str) -> None:
    """Worker subprocess: run one peer (or fortis's memory probe) on a list of rules,
    printing ``START <rule>`` and ``DONE <json>`` lines."""
    job = json.loads(Path(job_path).read_text())
    limit = int(job["mem_limit"])
    if limit > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    peer = job["peer"]
    X = np.load(job["data"])
    f = int(job["f"])
    p = dict(job["params"])
    p["center"] = np.load(job["center"])
    loader_error = None
    mod = None
    try:
        if peer.startswith("byzfl"):
            mod, version = load_byzfl()
        elif peer == "flower":
            mod, version = load_flower()
        else:
            version = "fortis"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        loader_error = f"{type(exc).__name__}: {exc}"
        version = None
    print("READY " + json.dumps({"version": version}), flush=True)
    for rule in job["rules"]:
        print(f"START {rule}", flush=True)
        res: dict[str, Any] = {"rule": rule, "peer": peer}
        if loader_error:
            res.update(status="ERROR", error=loader_error)
            print("DONE " + json.dumps(res), flush=True)
            continue
        try:
            if peer == "fortis-mem":
                res.update(_fortis_memory(rule, X, f, p))
            else:
                res.update(_peer_time(peer, rule, X, f, p, mod, job))
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            res.update(
                status="OOM" if _is_oom(exc) else "ERROR",
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
            )
        res["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("DONE " + json.dumps(res), flush=True)


def _fortis_memory(rule: str, X: np.ndarray, f: int, p: dict[str, Any]) -> dict[str, Any]:
    import tracemalloc

    call, _ = fortis_call(rule, X, f, p)
    reset = _reset_peak_rss()  # so the high-water mark below belongs to this call
    base_rss = _status_bytes("VmRSS")
    tracemalloc.start()
    out = call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del out
    hwm = _status_bytes("VmHWM") if reset else None
    if hwm is None:  # no resettable high-water mark: the process-lifetime maximum
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "status": "ok",
        "traced_peak": peak,
        "process_peak_rss": hwm,
        "peak_rss_is_call_only": bool(reset),
        "rss_before_call": base_rss,
        "input_bytes": X.nbytes,
    }


def _reset_peak_rss() -> bool:
    """Reset the process's peak-RSS counter (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_bytes(key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


def _peer_time(peer, rule, X, f, p, mod, job) -> dict[str, Any]:
    if peer.startswith("byzfl"):
        setup, call, back = byzfl_prepare(peer, rule, X, f, p, mod)
    else:
        setup, call, back = flower_prepare(rule, X, f, p, mod)
    times: list[float] = []
    out = None
    budget, max_k = float(job["budget"]), int(job["repeats"])
    while True:
        state = setup()
        t0 = time.perf_counter()
        out = call(state)
        times.append(time.perf_counter() - t0)
        del state
        k = max(1, min(max_k, int(budget // max(times[0], 1e-9))))
        if len(times) >= k:
            break
    res: dict[str, Any] = {"status": "ok", "times": times}
    ref = job["refs"].get(rule)
    if ref and rule != "bucketing":
        ref_arr = np.load(ref, mmap_mode="r")
        res["max_abs_diff"] = max_abs_diff(back(out), ref_arr)
        res["ref_scale"] = float(np.max(np.abs(ref_arr)))
    if rule == "nnm" and peer == "byzfl":  # numpy allocations are traced by tracemalloc
        import tracemalloc

        state = setup()
        del out
        tracemalloc.start()
        o = call(state)
        res["traced_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del o
    return res


# ---------------------------------------------------------------------------------------
# worker management (parent side)
# ---------------------------------------------------------------------------------------
def run_worker_rules(
    peer: str, rules: list[str], job_base: dict[str, Any], timeout: float, tmp: Path
) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Run ``rules`` for ``peer`` in worker subprocesses; a rule that exceeds ``timeout``
    or kills its worker is recorded and the remaining rules continue in a fresh worker."""
    results: dict[str, dict[str, Any]] = {}
    version = None
    pending = list(rules)
    while pending:
        job = dict(job_base, peer=peer, rules=pending)
        job_path = tmp / f"job_{peer}.json"
        job_path.write_text(json.dumps(job))
        # stderr goes to a file: a chatty worker must never block on a full pipe
        err_path = tmp / f"stderr_{peer}.txt"
        with open(err_path, "wb") as err_fh:
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker", str(job_path)],
                stdout=subprocess.PIPE,
                stderr=err_fh,
                cwd=str(REPO),
            )
        # ``current`` is the rule in progress (deadline: ``timeout`` after its START); between
        # rules (worker start-up, loading the peer, building the next input) the worker gets
        # 120 s from its last message. stdout is read from the raw descriptor and split into
        # lines here: a buffered reader could hold a second line (say ``START``) that
        # select() then never reports.
        current, started, buf = None, time.monotonic(), ""
        lines: list[str] = []
        partial = b""
        try:
            while True:
                deadline = started + (timeout if current is not None else 120.0)
                wait = deadline - time.monotonic()
                if wait <= 0:
                    proc.kill()
                    proc.wait()
                    if current is not None:
                        results[current] = {"status": "TIMEOUT", "timeout": timeout}
                        pending.remove(current)
                    else:
                        for r in pending:
                            results[r] = {
                                "status": "ERROR",
                                "error": "worker stalled between rules",
                            }
                        pending = []
                    break
                if lines:
                    line = lines.pop(0)
                else:
                    ready, _, _ = select.select([proc.stdout], [], [], min(wait, 1.0))
                    if not ready:
                        continue
                    chunk = os.read(proc.stdout.fileno(), 1 << 16)
                    if chunk:
                        partial += chunk
                        *complete, partial = partial.split(b"\n")
                        lines.extend(c.decode() for c in complete)
                        continue
                    line = None  # end of file: the worker exited
                if line is None:
                    rc = proc.wait()
                    err = err_path.read_text(errors="replace").strip().splitlines()[-3:]
                    crash = {"status": "CRASH", "error": f"worker exit {rc}: {' | '.join(err)}"}
                    if current is not None:
                        results[current] = crash
                        pending.remove(current)
                    elif pending:
                        for r in pending:
                            results[r] = dict(crash)
                        pending = []
                    break
                buf = line.rstrip("\r")
                if buf.startswith("READY "):
                    version = json.loads(buf[6:])["version"]
                    started = time.monotonic()
                elif buf.startswith("START "):
                    current, started = buf[6:], time.monotonic()
                elif buf.startswith("DONE "):
                    res = json.loads(buf[5:])
                    results[res["rule"]] = res
                    pending.remove(res["rule"])
                    current, started = None, time.monotonic()
                    if not pending:
                        proc.wait(timeout=60)
                        break
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results, version


# ---------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------
@dataclass
class Row:
    rule: str
    n: int
    d: int
    f: int
    fortis_times: list[float]
    floor_kind: str
    floor_time: float
    target: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory: dict[str, Any] | None = None

    @property
    def fortis(self) -> float:
        return med(self.fortis_times)

    def status(self) -> str:
        if (self.n, self.d) != TARGET_SIZE:
            return ""
        if self.rule == "nnm" and self.memory and self.memory.get("status") == "ok":
            return "PASS" if self.memory["process_peak_rss"] < NNM_MEM_TARGET else "MISS"
        if self.target is None:
            return ""
        ok = self.fortis <= self.target
        if self.rule == "geometric_median" and not self.info.get("converged", False):
            ok = False
        return "PASS" if ok else "MISS"

    def target_text(self) -> str:
        if (self.n, self.d) != TARGET_SIZE:
            return ""
        if self.rule == "nnm":
            return "peak RSS < 2 GiB"
        return f"≤ {self.target:g} s" if self.target is not None else ""


def peer_available(peer: str) -> bool:
    mod = "byzfl" if peer.startswith("byzfl") else "flwr"
    return importlib.util.find_spec(mod) is not None


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = args.sizes
    rules = args.rules
    peers = [p for p in args.peers if peer_available(p)]
    skipped = [p for p in args.peers if p not in peers]
    tmp = Path(tempfile.mkdtemp(prefix="robust_bench_"))
    meta: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "fortis_threads": _fortis_threads(),
        "rank_backend": _rank_backend(),
        "robust_version": _robust_version(),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default (one per core)"),
        "title": args.title,
        "loadavg_start": os.getloadavg(),
        "peers_requested": list(args.peers),
        "peers_missing": skipped,
        "peer_versions": {},
        "loadavg_per_size": {},
        "mem_limit_gib": args.mem_limit_gib,
        "peer_timeout_s": args.peer_timeout,
    }
    print(
        f"# robust_bench {meta['date']}  cpus={meta['cpus']}  load={_fmt_load(meta['loadavg_start'])}"
        f"  peers={peers or 'none'}" + (f" (not installed: {skipped})" if skipped else ""),
        flush=True,
    )
    rows: list[Row] = []
    try:
        for n, d in sizes:
            rows.extend(run_size(n, d, rules, peers, args, tmp, meta))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta["loadavg_end"] = os.getloadavg()
    return {"meta": meta, "rows": rows}


def run_size(n, d, rules, peers, args, tmp: Path, meta) -> list[Row]:
    f = f_for(n)
    key = f"{n}x{d}"
    print(f"\n## n={n} d={d} f={f}  load={_fmt_load(os.getloadavg())}", flush=True)
    meta["loadavg_per_size"][key] = os.getloadavg()
    X = make_data(n, d, f, args.seed)
    p = derived_params(X, f)
    data_path, center_path = tmp / f"X_{key}.npy", tmp / f"center_{key}.npy"
    np.save(data_path, X)
    np.save(center_path, p["center"])

    floors: dict[str, float] = {}
    for kind, fn in floor_calls(X).items():
        if any(RULES[r][0] == kind for r in rules):
            _, times = timed(fn, 3, args.repeats, args.budget)
            floors[kind] = med(times)
            print(f"  floor {kind:5s} {floors[kind]:.4f} s (k={len(times)})", flush=True)
    gc_collect()

    out_rows: list[Row] = []
    refs: dict[str, str] = {}
    peer_rules = {r for pr in peers for r in PEER_RULES[pr]}
    for rule in rules:
        call, extract = fortis_call(rule, X, f, p)
        out, times = timed(call, 3, args.repeats, args.budget)
        vec, info = extract(out)
        row = Row(rule, n, d, f, times, RULES[rule][0], floors[RULES[rule][0]], RULES[rule][1])
        row.info.update(info)
        if rule in peer_rules:
            path = tmp / f"ref_{key}_{rule}.npy"
            np.save(path, np.asarray(vec))
            refs[rule] = str(path)
        del out, vec
        gc_collect()
        extra = ""
        if info:
            extra = f"  iterations={info.get('iterations')} converged={info.get('converged')}"
        print(f"  fortis {rule:18s} {row.fortis:.4f} s (k={len(times)}){extra}", flush=True)
        out_rows.append(row)
    by_rule = {r.rule: r for r in out_rows}
    for r in ("aggregate:median", "aggregate:krum"):
        base = r.split(":")[1]
        if r in by_rule and base in by_rule:
            by_rule[r].info["overhead_vs_direct"] = by_rule[r].fortis / by_rule[base].fortis - 1

    job_base = {
        "data": str(data_path),
        "center": str(center_path),
        "f": f,
        "params": {k: v for k, v in p.items() if k != "center"},
        "repeats": args.repeats,
        "budget": args.budget,
        "mem_limit": int(args.mem_limit_gib * GIB),
        "refs": refs,
    }
    del X
    gc_collect()
    if "nnm" in by_rule:
        res, _ = run_worker_rules("fortis-mem", ["nnm"], job_base, args.peer_timeout, tmp)
        by_rule["nnm"].memory = res["nnm"]
        m = res["nnm"]
        if m.get("status") == "ok":
            print(
                f"  fortis nnm memory: traced peak {m['traced_peak'] / MIB:.0f} MiB, process "
                f"peak RSS {m['process_peak_rss'] / MIB:.0f} MiB (input {m['input_bytes'] / MIB:.0f}"
                " MiB)",
                flush=True,
            )
    for peer in peers:
        todo = [r for r in rules if r in PEER_RULES[peer]]
        if not todo:
            continue
        res, version = run_worker_rules(peer, todo, job_base, args.peer_timeout, tmp)
        if version:
            meta["peer_versions"][peer.split("-")[0]] = version
        for rule, r in res.items():
            by_rule[rule].peers[peer] = r
            print(f"  {peer:11s} {rule:18s} {_peer_cell(r, by_rule[rule].fortis)}", flush=True)
    for path in list(refs.values()) + [str(data_path), str(center_path)]:
        with contextlib.suppress(OSError):
            os.remove(path)
    return out_rows


def gc_collect() -> None:
    import gc

    gc.collect()


# ---------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------
def _fmt_load(load) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def _fmt_s(t: float) -> str:
    if t >= 100:
        return f"{t:.0f}"
    if t >= 10:
        return f"{t:.1f}"
    if t >= 0.01:
        return f"{t:.3f}"
    return f"{t:.2g}"


def _fmt_diff(x: float | None) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and math.isnan(x):
        return "shape≠"
    return "0" if x == 0 else f"{x:.1e}"


def _peer_cell(r: dict[str, Any] | None, fortis: float) -> str:
    if r is None:
        return "—"
    st = r.get("status")
    if st == "ok":
        t = med(r["times"])
        return f"{_fmt_s(t)} ({t / fortis:.1f}×, k={len(r['times'])})"
    if st == "TIMEOUT":
        return f"TIMEOUT >{r['timeout']:g} s"
    return st or "?"


def _notes(row: Row) -> str:
    parts = []
    if "iterations" in row.info:
        parts.append(f"{row.info['iterations']} it, converged={row.info['converged']}")
    if "overhead_vs_direct" in row.info:
        parts.append(f"entry point {row.info['overhead_vs_direct']:+.0%} vs direct call")
    if row.memory:
        m = row.memory
        if m.get("status") == "ok":
            parts.append(
                f"fortis process peak RSS during the call {m['process_peak_rss'] / MIB:.0f} MiB "
                f"(input {m['input_bytes'] / MIB:.0f} MiB; allocated by NNM, tracemalloc: "
                f"{m['traced_peak'] / MIB:.0f} MiB)"
            )
        else:
            parts.append(f"fortis memory probe {m.get('status')}")
    for peer, r in row.peers.items():
        if row.rule == "distances" and r.get("ref_scale"):
            parts.append(
                f"{peer} max|Δ| relative to the largest distance: "
                f"{r['max_abs_diff'] / r['ref_scale']:.1e}"
            )
        if r.get("traced_peak"):
            parts.append(f"{peer} traced peak {r['traced_peak'] / MIB:.0f} MiB")
        if r.get("status") in ("OOM", "ERROR", "CRASH"):
            parts.append(f"{peer}: {r.get('error', '')[:90]}")
    return "; ".join(parts)


def table_rows(rows: list[Row], peers: list[str]) -> tuple[list[str], list[list[str]]]:
    head = ["rule", "n×d", "f", "fortis s (k)"]
    head += [f"{p} s (peer/fortis)" for p in peers]
    head += ["floor", "floor s", "fortis/floor", "target", "status"]
    head += [f"max|Δ| {p}" for p in peers]
    head += ["notes"]
    body = []
    for r in rows:
        cells = [r.rule, f"{r.n}×{r.d:.0e}".replace("e+0", "e"), str(r.f)]
        cells.append(f"{_fmt_s(r.fortis)} ({len(r.fortis_times)})")
        for p in peers:
            cells.append(_peer_cell(r.peers.get(p), r.fortis) if p in r.peers else "—")
        cells += [r.floor_kind, _fmt_s(r.floor_time), f"{r.fortis / r.floor_time:.2f}"]
        cells += [r.target_text(), r.status()]
        for p in peers:
            cells.append(_fmt_diff(r.peers.get(p, {}).get("max_abs_diff")))
        cells.append(_notes(r))
        body.append(cells)
    return head, body


def print_table(head: list[str], body: list[list[str]]) -> None:
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)] if body else []
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for b in body:
        print("  ".join(c.ljust(w) for c, w in zip(b, widths)))


def markdown(result: dict[str, Any], head: list[str], body: list[list[str]]) -> str:
    m = result["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in m["peer_versions"].items()) or "none"
    lines = [
        f"# {m['title']}",
        "",
        f"- Date: {m['date']}",
        f"- Command: `{m['command']}`",
        f"- fortis: commit {m['robust_version']}.",
        f"- Machine: {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}, numpy {m['numpy']}; "
        f"fortis column kernels on {m['fortis_threads']} threads; OpenBLAS threads: "
        f"{m['openblas_threads']}; column order statistics: {m.get('rank_backend', 'sort')}.",
        f"- Peers: {versions}"
        + (f" (not installed: {', '.join(m['peers_missing'])})" if m["peers_missing"] else "")
        + f"; each in a worker subprocess with RLIMIT_AS = {m['mem_limit_gib']:g} GiB and a "
        f"{m['peer_timeout_s']:g} s per-call timeout.",
        f"- Load average (1/5/15 min) at start {_fmt_load(m['loadavg_start'])}, per size "
        + ", ".join(f"{k}: {_fmt_load(v)}" for k, v in m["loadavg_per_size"].items())
        + f", at end {_fmt_load(m['loadavg_end'])}.",
        "- **Timings are noisy**: the machine's 2 cores were shared with other jobs during the "
        "run (see the load average); seconds are the median of k calls.",
        "",
        "| " + " | ".join(h.replace("|", "\\|") for h in head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in b) + " |" for b in body]
    lines += [
        "",
        "f = floor((n−3)/4) for every rule with an f. Floors: `mean` = `X.mean(axis=0)`, "
        "`sort` = `np.sort` of a contiguous `X.T` copy along axis 1 (copy not timed), "
        "`gram` = `X @ X.T` (float32). Targets apply at (100, 10^6) float32 only; "
        "geometric_median must also converge. `aggregate:<rule>` rows time "
        "`robust.aggregate(X, rule, f=f)` (the entry point, which also computes per-client "
        "scores and verdicts).",
        "",
        "Why a peer's output can differ from fortis's (max|Δ| is reported, not asserted):",
        "",
    ]
    lines += [f"- {t}" for t in DEFINITION_NOTES]
    return "\n".join(lines) + "\n"


def to_json(result: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for r in result["rows"]:
        rows.append(
            {
                "rule": r.rule,
                "n": r.n,
                "d": r.d,
                "f": r.f,
                "fortis_times": r.fortis_times,
                "fortis_s": r.fortis,
                "floor_kind": r.floor_kind,
                "floor_s": r.floor_time,
                "target_s": r.target if (r.n, r.d) == TARGET_SIZE else None,
                "status": r.status(),
                "info": r.info,
                "memory": r.memory,
                "peers": r.peers,
            }
        )
    return {"meta": result["meta"], "rows": rows}


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _robust_version() -> str:
    """The commit of the checkout and whether robust/ had uncommitted changes (the
    package may be under active tuning while benchmarks run)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "robust"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    if not head:
        return "unknown"
    return head + (" + uncommitted changes in robust/" if dirty else "")


def _rank_backend() -> str:
    import robust
    from robust import _ranking

    if _ranking.backend(100) == "network":
        return "compiled comparator network (robust._kernels)"
    return f"numpy sort ({robust.kernel_status()['reason']})"


def _fortis_threads() -> int:
    from robust._rows import num_threads

    return num_threads()


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        a, b = part.lower().split("x")
        out.append((int(float(a)), int(float(b))))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        worker_main(argv[1])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    ap.add_argument(
        "--sizes",
        type=parse_sizes,
        help="comma-separated NxD, e.g. 10x1e5,100x1e6 (default: 10x1e5,50x1e5,100x1e6)",
    )
    ap.add_argument("--rules", help=f"comma-separated subset of: {','.join(RULES)}")
    ap.add_argument("--repeats", type=int, default=5, help="max calls per cell (default 5)")
    ap.add_argument(
        "--budget", type=float, default=6.0, help="seconds per cell for repeats (default 6)"
    )
    ap.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated subset of {','.join(PEERS)}, or 'none'",
    )
    ap.add_argument("--peer-timeout", type=float, default=150.0, help="seconds per peer call")
    ap.add_argument("--mem-limit-gib", type=float, default=8.0, help="peer worker RLIMIT_AS")
    ap.add_argument(
        "--blas-threads",
        type=int,
        help="set OPENBLAS_NUM_THREADS (numpy/scipy BLAS) for the run and the peer workers; "
        "default: leave the environment as it is",
    )
    ap.add_argument(
        "--append", action="store_true", help="append to --markdown instead of overwriting"
    )
    ap.add_argument("--title", default="Robust aggregation benchmark", help="Markdown heading")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    ap.add_argument("--markdown", type=Path, help="write the table as Markdown here")
    args = ap.parse_args(argv)
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    args.rules = list(RULES) if not args.rules else [r.strip() for r in args.rules.split(",")]
    unknown = [r for r in args.rules if r not in RULES]
    if unknown:
        ap.error(f"unknown rules {unknown}; known: {', '.join(RULES)}")
    args.peers = [] if args.peers == "none" else [p.strip() for p in args.peers.split(",")]
    bad = [p for p in args.peers if p not in PEERS]
    if bad:
        ap.error(f"unknown peers {bad}; known: {', '.join(PEERS)}")
    if args.quick:
        args.repeats = min(args.repeats, 3)
        args.peer_timeout = min(args.peer_timeout, 60.0)
    if args.repeats < 3:
        ap.error("--repeats must be at least 3 (fortis and floors use at least 3 calls)")

    result = run(args)
    peers_run = [p for p in args.peers if p not in result["meta"]["peers_missing"]]
    head, body = table_rows(result["rows"], peers_run)
    print_table(head, body)
    print(f"\nload average at end: {_fmt_load(result['meta']['loadavg_end'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(result), indent=1, default=_json_default))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        text = markdown(result, head, body)
        if args.append and args.markdown.exists():
            text = args.markdown.read_text().rstrip("\n") + "\n\n" + text.replace("# ", "## ", 1)
        args.markdown.write_text(text)
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


if __name__ == "__main__":
    raise SystemExit(main())
