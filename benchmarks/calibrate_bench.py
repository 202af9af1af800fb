"""How long ``dp.calibrate`` takes to answer (target: <= 2 s).

Each configuration runs in a fresh interpreter (``cold``: importing ``dp`` and ``dp-accounting``
and the first call, i.e. what ``fortis calibrate`` pays) and then again in the same process with
new detection parameters but the same privacy target (``warm``: the accountant's work cached)
and with everything cached (``cached``). Writes ``benchmarks/results/calibrate_bench.md``.

    python benchmarks/calibrate_bench.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
t = time.perf_counter(); dp.calibrate(4.0, 1e-5, **{**kw, "power": 0.9}); warm = time.perf_counter() - t
t = time.perf_counter(); dp.calibrate(4.0, 1e-5, **kw); cached = time.perf_counter() - t
print(json.dumps(dict(cold=cold, warm=warm, cached=cached, z=c.noise_multiplier, eps=c.epsilon,
                      refused=c.refused is not None, margin=c.margins["scaling"].deviation)))
"""


def main() -> None:
    rows = []
    for cfg in CONFIGS:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(cfg)],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append((cfg["name"], r))
        print(cfg["name"], r, flush=True)
    load = os.getloadavg()[0]
    lines = [
        "# dp.calibrate: time to answer",
        "",
        "`python benchmarks/calibrate_bench.py`; (epsilon, delta) = (4, 1e-5), 100 rounds, q = 0.1,",
        f"C = 1, attack = scaling. {os.cpu_count()}-core machine, load average {load:.1f} at the end",
        "(shared with other jobs: timings are noisy). *cold*: fresh interpreter, import of `dp` and",
        "`dp-accounting` included (what `fortis calibrate` pays); *warm*: same privacy target, new",
        "detection parameters (accountant cached, Monte Carlo re-run); *cached*: repeated call.",
        "Target: <= 2 s.",
        "",
        "| configuration | cold (s) | warm (s) | cached (s) | noise multiplier | epsilon | rho* |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['cold']:.2f} | {r['warm']:.2f} | {r['cached']:.4f} | {r['z']:.3f} "
            f"| {r['eps']:.3f} | {r['margin']:.3f} |"
        )
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT.read_text())


if __name__ == "__main__":
    main()
