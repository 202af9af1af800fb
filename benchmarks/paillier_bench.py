"""Packed-Paillier primitives of ``secagg.paillier*``: what each costs at 2048 and 3072 bits.

What is timed (per operation: the fastest of several batches, wall time and process CPU time
with all threads included; ratios between single-thread rows use CPU time, which another process
on the machine does not inflate; multi-exponentiations also state their cost in multiplications
modulo n**2 measured just before, a unit that does not move with the machine's speed)
    * ``phe encrypt``: ``phe.paillier.PaillierPublicKey.encrypt(m)`` (phe computes ``r**n``
      online), against ``pooled encrypt``: ``PaillierPublicKey.encrypt(m, pool=pool)`` with the
      pool filled beforehand (the fill is not in the timing), and their ratio.
    * ``pool fill``: the cost per value of ``ObfuscationPool.fill``, with the public key (one
      ``r**n mod n**2``) and with the private key (CRT, ``a**p mod p**2`` and ``b**q mod q**2``),
      on one and on two threads (throughput: wall time / values).
    * ``decrypt``: ``PaillierPrivateKey.decrypt`` (CRT, validation included), phe's
      ``raw_decrypt`` for reference, and ``decrypt_many`` on one and two threads.
    * ``mulmod``: ``a * b % n**2`` with gmpy2 ``mpz`` operands and with Python ints.
    * ``multi-exp``: ``prod_l c_l**e_l mod n**2`` over k = 64/128/256 ciphertexts with e-bit
      exponents (e = 40, 56, 70): naive (one ``powmod`` per base), :func:`multi_exp` (shared
      squarings, buckets), and a :class:`MultiExpTable` call (bases fixed, tables reused across
      exponent vectors; its one-off precomputation is reported separately). ``table x2``:
      ``MultiExpTable.many`` on two threads, wall time per product.
    * ``validate``: per ciphertext, ``validate`` (one gcd each), ``validate_many`` (range checks,
      one product modulo n and one gcd for the batch) and ``ciphertexts_from_bytes`` (decoding
      plus ``validate_many``), on batches of 1000 valid ciphertexts.

    * ``cross terms``: the masked distance protocol's dominant step at n = 100, k = 128 with
      64-bit masks and 24-bit sketch entries (2048 bits only): one :class:`MultiExpTable` per
      block of clients packed across clients, and ``n`` products per table, checked exact.

Threads: gmpy2 releases the GIL inside ``powmod_base_list`` and, under
``gmpy2.context(allow_release_gil=True)``, inside every mpz multiplication, division and gcd;
the "2 threads" rows use that. Their note gives the wall-time speedup over the one-thread row,
the speedup over the one-thread CPU time (what an uncontended single thread costs), and the
CPU/wall ratio (about 2 when both cores were ours). The load average at the start and end of
each key size is printed because the machine may be shared.

Usage::

    python benchmarks/paillier_bench.py                       # 2048 and 3072 bits
    python benchmarks/paillier_bench.py --quick               # smoke run (2048 bits, few repeats)
    python benchmarks/paillier_bench.py --markdown benchmarks/results/paillier_bench.md
    python benchmarks/paillier_bench.py --bits 2048 --sections multiexp,protocol \
        --markdown benchmarks/results/paillier_bench.md --append --title "rerun: threads"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gmpy2  # noqa: E402
from gmpy2 import mpz  # noqa: E402
from phe import paillier as phe_paillier  # noqa: E402

from secagg.paillier import PaillierPrivateKey  # noqa: E402
from secagg.paillier_multiexp import (  # noqa: E402
    MultiExpTable,
    _window_cost,
    multi_exp,
    multi_exp_naive,
)
from secagg.paillier_pool import ObfuscationPool  # noqa: E402


class Timing(NamedTuple):
    """Per-operation wall seconds and process CPU seconds (all threads). With one thread,
    ``cpu < wall`` means another process took the core for a while, and ``cpu`` is then the
    better estimate of the work; with two threads, ``cpu / wall`` near 2 means both cores were
    really ours."""

    wall: float
    cpu: float

    @property
    def ratio(self) -> float:
        return self.cpu / self.wall if self.wall > 0 else 0.0


def per_op(fn: Callable[[], object], ops: int, repeats: int) -> Timing:
    """The fastest of ``repeats`` calls of ``fn`` (timeit's convention: on a shared machine the
    least disturbed call is the best estimate of the cost), wall and CPU time divided by
    ``ops``."""
    runs = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        runs.append(((time.perf_counter() - t0) / ops, (time.process_time() - c0) / ops))
    return Timing(*min(runs))


def mulmod_time(nsq: mpz, a: mpz, b: mpz) -> float:
    """The current cost of one ``a * b % n**2`` (fastest of 5 batches of 2000): the unit in
    which the multi-exponentiation rows state their cost, so that a slower moment of a shared
    machine does not read as a slower algorithm."""
    return per_op(lambda: [a * b % nsq for _ in range(2000)], 2000, 5).cpu


def speedup(one: Timing, two: Timing) -> str:
    """Two threads against one: wall/wall, and against the one-thread CPU time (the speed of an
    uncontended single thread)."""
    return (
        f"x{one.wall / two.wall:.2f} wall, x{one.cpu / two.wall:.2f} vs 1-thread cpu; "
        f"cpu/wall {two.ratio:.2f}"
    )


def fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} µs"


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


SECTIONS = ("encrypt", "pool", "decrypt", "mulmod", "multiexp", "validate", "pack", "protocol")


def bench_key(bits: int, quick: bool, rows: list[dict], sections: set[str]) -> None:
    rnd = random.Random(bits)
    reps = 3 if quick else 5

    def row(group: str, what: str, t: Timing, note: str = "") -> None:
        rows.append(
            {"bits": bits, "group": group, "what": what, "wall": t.wall, "cpu": t.cpu, "note": note}
        )
        print(f"  {group:<9} {what:<56} {fmt(t.wall):>10} {fmt(t.cpu):>10}  {note}", flush=True)

    print(f"\n== {bits}-bit keys (load average {loadavg()}) ==", flush=True)
    t0 = time.perf_counter()
    phe_pub, phe_priv = phe_paillier.generate_paillier_keypair(n_length=bits)
    print(f"  keygen (phe) {time.perf_counter() - t0:.1f} s", flush=True)
    sk = PaillierPrivateKey.from_phe(phe_priv)
    pk = sk.public_key
    n, nsq = pk.n, pk.nsquare
    m = mpz(rnd.randrange(int(n) // 3))  # phe encodes integers up to n/3

    pool = ObfuscationPool(sk)
    dec_n = 16 if quick else 64
    pool.fill(dec_n, workers=2)
    cs = pk.encrypt_many([rnd.randrange(int(n)) for _ in range(dec_n)], pool=pool)

    # -- encryption ---------------------------------------------------------------------------
    if "encrypt" in sections:
        batch = 4 if quick else 10
        t_phe = per_op(lambda: [phe_pub.encrypt(int(m)) for _ in range(batch)], batch, reps)
        row("encrypt", "phe encrypt (r**n online)", t_phe)
        enc_batch = 500
        pool.fill(enc_batch * reps, workers=2)
        t_pool = per_op(
            lambda: [pk.encrypt(m, pool=pool) for _ in range(enc_batch)], enc_batch, reps
        )
        assert pool.online_draws == 0
        row(
            "encrypt",
            "pooled encrypt (r**n precomputed)",
            t_pool,
            f"phe/pooled = {t_phe.cpu / t_pool.cpu:,.0f}x (cpu)",
        )
        t_online = per_op(lambda: [pk.encrypt(m) for _ in range(batch)], batch, reps)
        row("encrypt", "fortis encrypt, r**n online", t_online)
    if "pool" in sections:
        bench_pool(pk, sk, 8 if quick else 32, reps, row)
    if "decrypt" in sections:
        bench_decrypt(sk, phe_priv, cs, reps, row)
    if "mulmod" in sections:
        bench_mulmod(nsq, cs[0], cs[1], reps, row)
    if "multiexp" in sections:
        bases_all = cs * (256 // len(cs) + 1)
        ks = (64, 128) if quick else (64, 128, 256)
        ebits_list = (40, 56) if quick else (40, 56, 70)
        for k in ks:
            for ebits in ebits_list:
                bench_multi_exp(bases_all[:k], ebits, nsq, rnd, 1 if quick else 3, row)
    if "validate" in sections:
        bench_validate(pk, cs, reps, row)
    if "pack" in sections:
        bench_pack(pk, 12800, reps, row)
    if "protocol" in sections:
        if bits == 2048 and not quick:
            bench_cross_terms(sk, 100, 128, 64, 24, row)
        elif quick:
            bench_cross_terms(sk, 20, 64, 64, 24, row)
    print(f"  (load average now {loadavg()})", flush=True)


def bench_pool(pk: object, sk: PaillierPrivateKey, fill: int, reps: int, row: Callable) -> None:
    t_fill_pub = per_op(lambda: ObfuscationPool(pk).fill(fill), fill, reps)
    row("pool", "fill, public key (r**n mod n**2)", t_fill_pub)
    t_fill_crt = per_op(lambda: ObfuscationPool(sk).fill(fill), fill, reps)
    row(
        "pool",
        "fill, private key (CRT)",
        t_fill_crt,
        f"{t_fill_pub.cpu / t_fill_crt.cpu:.1f}x cheaper",
    )
    t_fill_pub2 = per_op(lambda: ObfuscationPool(pk).fill(2 * fill, workers=2), 2 * fill, reps)
    row(
        "pool",
        "fill, public key, 2 threads (per value)",
        t_fill_pub2,
        speedup(t_fill_pub, t_fill_pub2),
    )
    t_fill_crt2 = per_op(lambda: ObfuscationPool(sk).fill(2 * fill, workers=2), 2 * fill, reps)
    row(
        "pool",
        "fill, private key, 2 threads (per value)",
        t_fill_crt2,
        speedup(t_fill_crt, t_fill_crt2),
    )


def bench_decrypt(
    sk: PaillierPrivateKey, phe_priv: object, cs: list[mpz], reps: int, row: Callable
) -> None:
    dec_n = len(cs)
    t_dec = per_op(lambda: [sk.decrypt(c) for c in cs], dec_n, reps)
    row("decrypt", "decrypt (CRT, validated)", t_dec)
    t_phe_dec = per_op(lambda: [phe_priv.raw_decrypt(int(c)) for c in cs], dec_n, reps)
    row(
        "decrypt",
        "phe raw_decrypt (reference)",
        t_phe_dec,
        f"phe/fortis = {t_phe_dec.cpu / t_dec.cpu:.2f}x (cpu)",
    )
    t_dec1 = per_op(lambda: sk.decrypt_many(cs), dec_n, reps)
    row("decrypt", "decrypt_many, 1 thread (per ciphertext)", t_dec1)
    t_dec2 = per_op(lambda: sk.decrypt_many(cs, workers=2), dec_n, reps)
    row("decrypt", "decrypt_many, 2 threads (per ciphertext)", t_dec2, speedup(t_dec1, t_dec2))


def bench_mulmod(nsq: mpz, a: mpz, b: mpz, reps: int, row: Callable) -> None:
    ia, ib, insq = int(a), int(b), int(nsq)
    mm = 20000
    t_mpz = per_op(lambda: [a * b % nsq for _ in range(mm)], mm, reps)
    row("mulmod", "a*b % n**2, gmpy2 mpz", t_mpz)
    t_int = per_op(lambda: [ia * ib % insq for _ in range(mm // 10)], mm // 10, reps)
    row("mulmod", "a*b % n**2, Python int", t_int, f"int/mpz = {t_int.cpu / t_mpz.cpu:.1f}x (cpu)")


def bench_validate(pk: object, cs: list[mpz], reps: int, row: Callable) -> None:
    n = pk.n
    vn = 1000
    vcs = (cs * (vn // len(cs) + 1))[:vn]
    data = pk.ciphertexts_to_bytes(vcs)
    t_v1 = per_op(lambda: [pk.validate(c) for c in vcs], vn, reps)
    row("validate", "validate, one gcd each (per ciphertext)", t_v1)
    t_vm = per_op(lambda: pk.validate_many(vcs), vn, reps)
    row(
        "validate",
        "validate_many, batched (per ciphertext)",
        t_vm,
        f"{t_v1.cpu / t_vm.cpu:.1f}x (cpu)",
    )
    t_gcd = per_op(lambda: [gmpy2.gcd(c, n) for c in vcs], vn, reps)
    row("validate", "bare gmpy2.gcd(c, n) (per ciphertext)", t_gcd)
    t_vb = per_op(lambda: pk.ciphertexts_from_bytes(data), vn, reps)
    row("validate", "ciphertexts_from_bytes (per ciphertext)", t_vb)


def bench_multi_exp(
    bases: list[mpz], ebits: int, nsq: mpz, rnd: random.Random, r: int, row: Callable
) -> None:
    k = len(bases)
    exps = [rnd.randrange(1 << ebits) for _ in range(k)]
    ref = multi_exp_naive(bases, exps, nsq)
    t_naive = per_op(lambda: multi_exp_naive(bases, exps, nsq), 1, r)
    t_multi = per_op(lambda: multi_exp(bases, exps, nsq), 1, r)
    assert multi_exp(bases, exps, nsq) == ref
    tables: list[MultiExpTable] = []
    t_pre = per_op(lambda: tables.append(MultiExpTable(bases, nsq, exp_bits=ebits)), 1, 1)
    table = tables[0]
    assert table(exps) == ref
    rows_e = [[rnd.randrange(1 << ebits) for _ in range(k)] for _ in range(8)]
    t_table = per_op(lambda: [table(e) for e in rows_e], len(rows_e), r)
    t_table2 = per_op(lambda: table.many(rows_e, workers=2), len(rows_e), r)
    tag = f"k={k}, {ebits}-bit exps"
    unit = mulmod_time(nsq, bases[0], bases[1])
    per_base = t_naive.cpu / k * 1e3
    row("multi-exp", f"{tag}: naive powmod per base", t_naive, f"{per_base:.3f} ms/base (cpu)")
    row(
        "multi-exp",
        f"{tag}: multi_exp (buckets)",
        t_multi,
        f"naive/this = {t_naive.cpu / t_multi.cpu:.1f}x (cpu); ~{t_multi.cpu / unit:.0f} mulmods",
    )
    row(
        "multi-exp",
        f"{tag}: MultiExpTable product (w={table.window})",
        t_table,
        f"naive/this = {t_naive.cpu / t_table.cpu:.1f}x (cpu); ~{t_table.cpu / unit:.0f} mulmods "
        f"(model {_window_cost(k, ebits, table.window, False):.0f}); one-off table "
        f"{fmt(t_pre.cpu)}",
    )
    row("multi-exp", f"{tag}: MultiExpTable.many, 2 threads", t_table2, speedup(t_table, t_table2))


def bench_pack(pk: object, count: int, reps: int, row: Callable) -> None:
    """SlotLayout.pack/unpack per value: int64 values (vectorised bit path) and 65-bit Python
    ints (exact per-value path, e.g. masked sketches t = s + M)."""
    import numpy as np  # noqa: PLC0415

    from secagg.paillier_pack import SlotLayout  # noqa: PLC0415

    rng = np.random.default_rng(3)
    narrow = SlotLayout.for_sums(pk, input_bound=2**31, additions=100)
    v64 = rng.integers(-(2**31), 2**31, count)
    plain = narrow.pack(v64)
    t_p = per_op(lambda: narrow.pack(v64), count, reps)
    t_u = per_op(lambda: narrow.unpack(plain, count), count, reps)
    tag = f"{count} values, {narrow.slot_bits}-bit slots"
    row("pack", f"pack int64 ({tag})", t_p, f"{len(plain)} plaintexts")
    row("pack", f"unpack to int64 ({tag})", t_u)
    wide = SlotLayout(pk, max_abs=128 * 2**65 * 2**64, input_bound=2**65)
    vobj = np.array([int(x) * 2**34 for x in rng.integers(-(2**31), 2**31, count)], dtype=object)
    plain_w = wide.pack(vobj)
    t_pw = per_op(lambda: wide.pack(vobj), count, reps)
    t_uw = per_op(lambda: wide.unpack(plain_w, count), count, reps)
    tag = f"{count} values, {wide.slot_bits}-bit slots"
    row("pack", f"pack Python ints ({tag})", t_pw, f"{len(plain_w)} plaintexts")
    row("pack", f"unpack to Python ints ({tag})", t_uw)


def bench_cross_terms(
    sk: PaillierPrivateKey, n_clients: int, k: int, mask_bits: int, sketch_bits: int, row: Callable
) -> None:
    """The distance protocol's dominant step, as DESIGN.md describes it: K packs the masked
    sketches t_i across clients (coordinate l of a block of clients in one ciphertext), and S
    computes for every client j and block b the product over l of Enc(column_l)**M_jl, one
    multi-exponentiation over k bases per (j, block). Timed: table precomputation plus the
    n * ceil(n/slots) products, on 1 and 2 threads (alternately, twice each, the faster run
    reported); checked exact on one block."""
    import numpy as np  # noqa: PLC0415

    from secagg.paillier_pack import SlotLayout  # noqa: PLC0415

    pk = sk.public_key
    rnd = random.Random(1)
    t_bound = (1 << mask_bits) + (1 << sketch_bits)  # |s + M| for |s| < 2**sketch_bits
    layout = SlotLayout(pk, max_abs=k * t_bound * ((1 << mask_bits) - 1), input_bound=t_bound)
    t = np.array(
        [[rnd.randrange(-t_bound, t_bound + 1) for _ in range(k)] for _ in range(n_clients)],
        dtype=object,
    )
    pool = ObfuscationPool(sk)
    blocks_plain = layout.pack_columns(t)
    pool.fill(len(blocks_plain) * k, workers=2)
    blocks = [pk.encrypt_many(b, pool=pool) for b in blocks_plain]
    masks = [[rnd.randrange(1 << mask_bits) for _ in range(k)] for _ in range(n_clients)]
    tag = (
        f"n={n_clients}, k={k}, {mask_bits}-bit masks: {len(blocks)} blocks of {layout.slots} "
        f"slots x {n_clients} clients = {len(blocks) * n_clients} products"
    )
    # one and two threads alternately, twice each; the faster run of each is reported
    runs: dict[int, list[Timing]] = {1: [], 2: []}
    out: list[list[mpz]] = []
    for workers in (1, 2, 1, 2):
        out.clear()

        def run(workers: int = workers) -> None:
            for cols in blocks:
                table = MultiExpTable(cols, pk.nsquare, exp_bits=mask_bits, workers=workers)
                out.append(table.many(masks, workers=workers))

        runs[workers].append(per_op(run, 1, 1))
    unit = mulmod_time(pk.nsquare, blocks[0][0], blocks[0][1])
    one, two = min(runs[1]), min(runs[2])
    for workers, timing in ((1, one), (2, two)):
        per_product = timing.cpu / (len(blocks) * n_clients)
        note = f"tables included; ~{per_product / unit:.0f} mulmods of cpu per product"
        if workers == 2:
            note += "; " + speedup(one, two)
        row("protocol", f"cross terms, {workers} thread(s): {tag}", timing, note)
    got = layout.unpack(sk.decrypt_many(out[0][:1]), layout.slots)
    want = [
        sum(int(a) * b for a, b in zip(t[i], masks[0])) for i in range(min(layout.slots, n_clients))
    ]
    assert got[: len(want)].tolist() == want, "cross terms are not exact"


def markdown(rows: list[dict], command: str, title: str) -> str:
    out = [
        f"# {title}",
        "",
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"Python {platform.python_version()}, gmpy2 {gmpy2.version()}, {gmpy2.mp_version()}, "
        f"{os.cpu_count()} CPUs; load average at the end {loadavg()}.",
        "",
        "Per-operation wall time and process CPU time (all threads), the fastest of repeated "
        "batches (see the script's docstring).",
        "",
    ]
    for bits in sorted({r["bits"] for r in rows}):
        out += [
            f"## {bits}-bit keys",
            "",
            "| group | operation | wall | cpu | note |",
            "|---|---|---:|---:|---|",
        ]
        for r in rows:
            if r["bits"] == bits:
                out.append(
                    f"| {r['group']} | {r['what']} | {fmt(r['wall'])} | {fmt(r['cpu'])} "
                    f"| {r['note']} |"
                )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bits", type=int, nargs="+", default=None, help="key sizes (2048 3072)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2048 bits, few repeats")
    parser.add_argument("--json", type=Path, default=None, help="write the raw rows here")
    parser.add_argument("--markdown", type=Path, default=None, help="write a Markdown table here")
    parser.add_argument("--append", action="store_true", help="append to --markdown")
    parser.add_argument("--title", default="Paillier primitives (`secagg.paillier*`)")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    args = parser.parse_args(argv)
    sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    bits_list = args.bits or ([2048] if args.quick else [2048, 3072])
    command = "python benchmarks/paillier_bench.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    print(f"# {command.strip()}  ({os.cpu_count()} CPUs, load average {loadavg()})")
    rows: list[dict] = []
    for bits in bits_list:
        bench_key(bits, args.quick, rows, sections)
    if args.json:
        args.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    if args.markdown:
        text = markdown(rows, command.strip(), args.title) + "\n"
        if args.append and args.markdown.exists():
            deeper = "\n".join("#" + ln if ln.startswith("#") else ln for ln in text.splitlines())
            text = args.markdown.read_text() + "\n" + deeper + "\n"
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
