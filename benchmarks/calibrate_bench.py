"""How long ``dp.calibrate`` takes to answer (target: <= 2 s).

Each configuration runs ``--repeats`` times, each time in a fresh interpreter. *cold*: from
before ``import dp`` to the end of the first ``dp.calibrate`` call (importing ``dp`` and the
RDP part of ``dp-accounting``, the accountant and the Monte Carlo), i.e. what ``fortis
calibrate`` pays on top of the interpreter; *process*: from spawning the child process to the
first answer (interpreter start-up included). Then, in the same process, *warm*: same privacy
target, new detection parameters (accountant cached, Monte Carlo re-run), and *cached*: a
repeated call. Writes
``benchmarks/results/calibrate_bench.md`` (median and max over the repeats).

    python benchmarks/calibrate_bench.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "calibrate_bench.md"

CONFIGS = [
    dict(name="gaussian central, multi_krum, n=100, d=1e5", mechanism="gaussian",
         placement="central", n=100, f=10, dim=100_000, sketch_dim=None),
    dict(name="ddg distributed, multi_krum, n=100, d=1e5", mechanism="ddg",
         placement="distributed", n=100, f=10, dim=100_000, sketch_dim=None),
    dict(name="skellam distributed, multi_krum + sketch k=128, n=100", mechanism="skellam",
         placement="distributed", n=100, f=10, dim=100_000, sketch_dim=128),
    dict(name="gaussian before_filter, multi_krum, n=25, d=2000 (refused, override)",
         mechanism="gaussian", placement="before_filter", n=25, f=5, dim=2000, sketch_dim=None),
    dict(name="gaussian central, centre_distance, n=100, d=1e6", mechanism="gaussian",
         placement="central", n=100, f=10, dim=1_000_000, sketch_dim=None,
         defence="centre_distance"),
]  # fmt: skip

CHILD = r"""
import json, sys, time
cfg = json.loads(sys.argv[1])
t0 = time.perf_counter()
import dp
kw = dict(rounds=100, sampling_rate=0.1, clip_norm=1.0, dim=cfg["dim"], n=cfg["n"], f=cfg["f"],
          mechanism=cfg["mechanism"], placement=cfg["placement"], sketch_dim=cfg["sketch_dim"],
          defence=cfg.get("defence", "multi_krum"), attack="scaling", override=True)
c = dp.calibrate(4.0, 1e-5, **kw)
cold = time.perf_counter() - t0
answered = time.time()
t = time.perf_counter(); dp.calibrate(4.0, 1e-5, **{**kw, "power": 0.9}); warm = time.perf_counter() - t
t = time.perf_counter(); dp.calibrate(4.0, 1e-5, **kw); cached = time.perf_counter() - t
print(json.dumps(dict(cold=cold, answered=answered, warm=warm, cached=cached, z=c.noise_multiplier, eps=c.epsilon,
                      refused=c.refused is not None, margin=c.margins["scaling"].deviation)))
"""


def _run(cfg: dict) -> dict:
    spawned = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(cfg)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**r, "process": r["answered"] - spawned}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="fresh processes per configuration")
    args = ap.parse_args()
    rows = []
    for cfg in CONFIGS:
        runs = [_run(cfg) for _ in range(args.repeats)]
        for k in ("z", "eps", "refused", "margin"):  # deterministic: every run says the same
            assert len({r[k] for r in runs}) == 1, (cfg["name"], k, [r[k] for r in runs])
        rows.append((cfg["name"], runs))
        print(cfg["name"], [round(r["cold"], 3) for r in runs], flush=True)
    load = os.getloadavg()[0]

    def med(runs: list[dict], k: str) -> float:
        return statistics.median(r[k] for r in runs)

    def worst(runs: list[dict], k: str) -> float:
        return max(r[k] for r in runs)

    lines = [
        "# dp.calibrate: time to answer",
        "",
        f"`python benchmarks/calibrate_bench.py --repeats {args.repeats}`; (epsilon, delta) = "
        "(4, 1e-5), 100 rounds, q = 0.1,",
        f"C = 1, attack = scaling. {os.cpu_count()}-core machine, load average {load:.1f} at "
        "the end (shared with other jobs: timings are noisy).",
        f"Each configuration ran in {args.repeats} fresh interpreters; median (max) over them.",
        "*cold*: `import dp` + the first `dp.calibrate` call (what `fortis calibrate` pays on top",
        "of the interpreter); *process*: from spawning the child process to the first answer",
        "(interpreter start-up included); *warm*: same privacy target, new detection",
        "parameters (accountant cached, Monte Carlo re-run); *cached*: repeated call.",
        "Target: <= 2 s.",
        "",
        "| configuration | cold (s) | process (s) | warm (s) | cached (s) | noise multiplier "
        "| epsilon | rho* |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in rows:
        r = runs[0]
        lines.append(
            f"| {name} | {med(runs, 'cold'):.2f} ({worst(runs, 'cold'):.2f}) "
            f"| {med(runs, 'process'):.2f} ({worst(runs, 'process'):.2f}) "
            f"| {med(runs, 'warm'):.2f} ({worst(runs, 'warm'):.2f}) | {med(runs, 'cached'):.4f} "
            f"| {r['z']:.3f} | {r['eps']:.3f} | {r['margin']:.3f} |"
        )
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT.read_text())


if __name__ == "__main__":
    main()
