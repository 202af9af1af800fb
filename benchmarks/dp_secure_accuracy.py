"""Accuracy against epsilon under secure filtering: central noise against distributed,
verifiable noise shares, with and without attack.

Both placements run the whole protocol every round (``--secure``, Multi-Krum on encrypted
sketches with a key holder, verification of the sum):

* **central (secure)** -- the filter reads noise-free sketches, the server adds Gaussian noise
  of std z*C to the verified sum;
* **distributed (secure)** -- every client adds a seeded discrete Gaussian share before masking
  (``--dp-mode distributed``); the key holder regenerates the accepted shares so the
  verification covers the noisy sum; the shares are sized for the n - 2f honest ones, and z
  meets the target with the discrete mechanism's accountant under replace-one adjacency
  (sensitivity 2C: about twice the central z at q = 1).

Secure rounds cost seconds each, so the populations are smaller than in
``benchmarks/dp_accuracy.py`` (40 clients, 8 Byzantine; digits: C = 0.1, 10 rounds; MNIST: C = 1,
8 rounds, a random 12000/2000 train/test subset) and the accuracy at small epsilon is lower for
both placements alike: the comparison is between placements at equal settings. A 1024-bit
Paillier test key keeps it fast; the distances, the selection and the sum are exact whatever the
key size.

    python benchmarks/dp_secure_accuracy.py [--dataset digits|mnist] [--seeds 0 1]
    nice -n 19 python benchmarks/dp_secure_accuracy.py --dataset mnist --clients 40

Writes benchmarks/results/dp_secure_accuracy.json (one entry per dataset: the run's settings and
rows; a run replaces only its own dataset's entry) and the Markdown table of every dataset in it,
benchmarks/results/dp_secure_accuracy.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from secure_filter_accuracy import subset  # noqa: E402

from simulations.config import SimulationConfig  # noqa: E402
from simulations.datasets import load_dataset  # noqa: E402
from simulations.runner import run_simulation  # noqa: E402

EPSILONS = (math.inf, 8.0, 4.0, 1.0)
PLACEMENTS = (("central (secure)", "central"), ("distributed (secure)", "distributed"))
ATTACKS = ("none", "scaling")
#: per dataset: rounds, clip C and the train/test subset (None: all of it)
SETTINGS = {
    "digits": {"rounds": 10, "clip": 0.1, "train": None, "test": None},
    "mnist": {"rounds": 8, "clip": 1.0, "train": 12000, "test": 2000},
}


#: What changed between measurements (rendered under "Changes", newest first).
CHANGES = (
    "**2026-12-03: distributed rows re-measured under replace-one accounting.** The "
    "distributed accounting was made sound (commits 6ecad5c, 48406d1; dp/NOTES.md): a "
    "client's own noise share changes the noise variance between add/remove neighbours, so "
    "distributed noise is now accounted for replace-one neighbours (sensitivity 2 C, Poisson "
    "amplification by joint convexity) instead of add/remove with Zhu-Wang. At q = 1 this "
    "doubles the multiplier at equal epsilon (z above; before, the distributed z was about "
    "the central one), so the noise on the mean is now about 2.3 times the central one "
    "(sqrt(32/24) for the shares counted) instead of about 1.15 times. The previous "
    "distributed rows (same settings, old calibration, whose epsilon was not a sound "
    "bound) were, "
    "at eps 8 / 4 / 1: digits 31.1 / 32.4 / 16.7 without attack and 27.6 / 17.3 / 19.6 "
    "under scaling, MNIST 81.7 / 61.2 / 29.9 and 75.8 / 55.9 / 23.9; now digits 24.4 / "
    "11.1 / 10.7 and 13.3 / 18.7 / 12.4 (near chance, 10%, from eps 4 on), MNIST 52.5 / "
    "43.0 / 20.8 and 64.8 / 27.1 / 15.2 (eps 8 distributed is below eps 4 central). The "
    "central rows were re-run in the same runs and moved without any change to their code "
    "path (digits up to 5.8 points, MNIST up to 1.2): the sketch projection is a hash of "
    "the committed masked inputs, whose masks come from the OS CSPRNG, so Multi-Krum's "
    "choices vary between runs at one seed, and the distributed shares are fresh draws "
    "(each client's seed from the OS CSPRNG) on top of that. One seed does not resolve "
    "differences of a few points, nor the non-monotone distributed rows (digits scaling "
    "eps 4 above eps 8, MNIST scaling 12 points above no attack at eps 8); more seeds "
    "would be needed to rank them. Both datasets ran concurrently under "
    "nice -n 19 while other jobs used the machine (1-minute load 1.3-72, median 30, during "
    "the runs), hence the longer times.",
)


def _eps(e: float) -> str:
    return "inf" if math.isinf(e) else f"{e:g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", choices=sorted(SETTINGS), default="digits")
    ap.add_argument("--data-dir", default=None, help="MNIST IDX folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--rounds", type=int, default=None, help="default: the dataset's")
    ap.add_argument("--clients", type=int, default=40)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "dp_secure_accuracy"))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*test key.*")
    s = SETTINGS[args.dataset]
    rounds = args.rounds or s["rounds"]
    ds = subset(load_dataset(args.dataset, args.data_dir, seed=0), s["train"], s["test"])
    f = args.clients // 5
    rows = []
    t_all = time.perf_counter()
    plan = [
        (label, mode, attack, eps, seed)
        for label, mode in PLACEMENTS
        for attack in ATTACKS
        for eps in EPSILONS
        for seed in args.seeds
        if not (mode == "distributed" and math.isinf(eps))  # no noise: same as central
    ]
    for k, (label, mode, attack, eps, seed) in enumerate(plan, start=1):
        cfg = SimulationConfig(
            dataset=args.dataset,
            clients=args.clients,
            byzantine=f,
            attack=attack,
            defence="multi_krum",
            rounds=rounds,
            clip=s["clip"],
            secure=True,
            paillier_bits=1024,
            seed=seed,
            eval_every=rounds,
            dp_epsilon=None if math.isinf(eps) else eps,
            dp_mode=mode,
        )
        t0 = time.perf_counter()
        res = run_simulation(cfg, dataset=ds)
        summary = res.summary()
        rows.append(
            {
                "placement": label,
                "attack": attack,
                "epsilon": None if math.isinf(eps) else eps,
                "seed": seed,
                "accuracy": summary["final_accuracy"],
                "epsilon_spent": summary.get("dp_epsilon"),
                "byzantine_rejected": summary["byzantine_rejected_per_round"],
                "rounds_not_applied": summary["rounds_not_applied"],
                "noise_multiplier": res.privacy["noise_multiplier"] if res.privacy else None,
                "adjacency": res.privacy.get("adjacency", "add_remove") if res.privacy else None,
                "seconds": time.perf_counter() - t0,
            }
        )
        print(
            f"[{k}/{len(plan)}] {label:22s} {attack:8s} eps={_eps(eps):4s} seed={seed}: "
            f"{100 * summary['final_accuracy']:.1f}% ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    niceness = os.nice(0)
    meta = {
        "command": (f"nice -n {niceness} " if niceness else "")
        + "python benchmarks/dp_secure_accuracy.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "clients": args.clients,
        "byzantine": f,
        "clip": s["clip"],
        "rounds": rounds,
        "train": len(ds.y_train),
        "test": len(ds.y_test),
        "seeds": args.seeds,
        "seconds": time.perf_counter() - t_all,
        "load": os.getloadavg()[0],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.with_suffix(".json")
    runs = json.loads(path.read_text()) if path.exists() else {}
    runs[args.dataset] = {"meta": meta, "rows": rows}
    path.write_text(json.dumps(runs, indent=1))
    text = render(runs)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


def _table(rows: list[dict]) -> list[str]:
    lines = [
        "| placement | attack | " + " | ".join(f"eps = {_eps(e)}" for e in EPSILONS) + " |",
        "|---|---|" + "--:|" * len(EPSILONS),
    ]
    for label, mode in PLACEMENTS:
        for attack in ATTACKS:
            cells = []
            for eps in EPSILONS:
                eps_key = None if math.isinf(eps) else eps
                if mode == "distributed" and eps_key is None:
                    cells.append("(= central)")
                    continue
                sel = [
                    r
                    for r in rows
                    if r["placement"] == label and r["attack"] == attack and r["epsilon"] == eps_key
                ]
                acc = 100 * float(np.mean([r["accuracy"] for r in sel]))
                byz = float(np.mean([r["byzantine_rejected"] for r in sel]))
                spent = sel[0]["epsilon_spent"]
                tail = f"; eps {spent:.2f}" if spent else ""
                cells.append(f"{acc:.1f} ({byz:.1f}{tail})")
            lines.append(f"| {label} | {attack} | " + " | ".join(cells) + " |")
    return lines


def _multipliers(rows: list[dict], meta: dict) -> list[str]:
    """The noise multipliers z (std of the noise on the sum over C) of the two placements."""
    if not any(r.get("noise_multiplier") for r in rows):
        return []
    cells = []
    for eps in (e for e in EPSILONS if not math.isinf(e)):
        z = {}
        for label, mode in PLACEMENTS:
            sel = [r for r in rows if r["placement"] == label and r["epsilon"] == eps]
            z[mode] = sel[0]["noise_multiplier"] if sel else float("nan")
        cells.append(f"eps {_eps(eps)}: {z['central']:.2f} / {z['distributed']:.2f}")
    m_min = meta["clients"] - 2 * meta["byzantine"]
    return [
        "",
        "Noise multiplier z, central / distributed: " + "; ".join(cells) + ". Central: "
        "add/remove, std z C on the sum of the accepted updates; distributed: replace-one "
        f"(sensitivity 2 C), std z C over the m_min = {m_min} honest shares counted, so "
        f"about z C sqrt({meta['clients'] - meta['byzantine']}/{m_min}) on a sum of "
        f"{meta['clients'] - meta['byzantine']} accepted shares.",
    ]


def render(runs: dict) -> str:
    """The Markdown of every dataset in ``runs`` (``{dataset: {"meta": ..., "rows": ...}}``)."""
    lines = [
        "# Accuracy against epsilon under secure filtering: central vs distributed noise",
        "",
        "Multi-Krum on encrypted sketches (k = 128, 1024-bit test key), IID split, logreg, every "
        "client every round (q = 1). Final test accuracy (%), mean over seeds; in brackets the "
        "Byzantine clients rejected per round and the epsilon spent.",
    ]
    for name in sorted(runs, key=lambda n: (n != "digits", n)):
        m, rows = runs[name]["meta"], runs[name]["rows"]
        subset_note = f", {m['train']} train / {m['test']} test images drawn at random" * (
            name == "mnist"
        )
        date = f"run {m['date']}, " if m.get("date") else ""
        lines += [
            "",
            f"## {name}",
            "",
            f"`{m['command']}`: {m['clients']} clients, {m['byzantine']} Byzantine, "
            f"C = {m['clip']:g}, {m['rounds']} rounds{subset_note}; "
            f"{date}{m['seconds']:.0f} s on 2 cores, load {m['load']:.1f} at the end.",
            "",
            *_table(rows),
            *_multipliers(rows, m),
        ]
    lines += [
        "",
        "Both placements keep the noise out of what the filter reads (noise-free sketches): "
        "the rejections of the scaled rows do not fall as epsilon shrinks (on digits the clip "
        "to C = 0.1 already makes a scaled row look like an honest one of norm C, so "
        "Multi-Krum misses some at every epsilon, noise or not). Distributed noise costs "
        "accuracy at the same epsilon: it is accounted under replace-one adjacency "
        "(sensitivity 2 C), since a client's own noise share would change the noise variance "
        "between add/remove neighbours (dp/NOTES.md), which at q = 1 doubles the multiplier; "
        "its shares are sized for the n - 2f honest shares the sum surely carries (the "
        "Byzantine ones cannot be counted), while a round's sum carries the n - f accepted "
        "ones; the discrete mechanism's rounding can add a little more. The small populations "
        "(40 clients, chosen so that secure rounds fit "
        "the benchmark) keep the accuracy at small epsilon low: the noise on the mean is "
        "z C / m for m ~ 32 accepted clients; benchmarks/dp_accuracy.py has the larger "
        "plaintext populations.",
    ]
    if CHANGES:
        lines += ["", "## Changes", ""]
        lines += [x for c in CHANGES for x in (c, "")][:-1]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
