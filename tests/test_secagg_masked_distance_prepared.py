"""The offline/online masked distance protocol (secagg.masked_distance, ``*_prepared``): exact
distances for S over any subset of the prepared slots, masked or blinded values only for K and
for S, out-of-range rows set aside, every prepared state used once."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from scipy.stats import ks_2samp

from secagg import masked_distance as md
from secagg.errors import SecAggError, SecAggParameterError
from secagg.paillier_pack import SlotLayout
from secagg.paillier_private import generate_paillier_keypair

ALPHA = 1e-4


@pytest.fixture(scope="module")
def keys():
    return generate_paillier_keypair(1024, allow_insecure=True)


def _prepare(keys, lay, rows):
    pub, priv = keys
    columns, kst = md.prepare_keyholder_columns(priv, lay, rows)
    blinded, sst = md.prepare_server_products(pub, columns, lay, rows)
    md.prepare_keyholder_finish(priv, blinded, kst)
    return kst, sst


def _online(keys, lay, kst, sst, s, slots, tamper=None):
    pub, priv = keys
    rows = [[pub.encrypt(m) for m in lay.row.pack(s[r])] for r in slots]
    if tamper is not None:
        rows = tamper(pub, lay, rows)
    masked = md.server_mask_rows_prepared(pub, rows, slots, sst)
    opened = md.keyholder_open_rows_prepared(priv, masked, slots, kst)
    d = md.server_distances_prepared(opened.w, opened.z, opened.accepted, sst)
    return d, opened


@pytest.mark.parametrize(
    "rows, k, bound, slots",
    [
        (2, 1, 1, [0, 1]),
        (5, 7, 3, [0, 1, 2, 3, 4]),
        (13, 9, 2**20, [0, 2, 3, 7, 12]),
        (20, 33, 2**31, list(range(1, 20, 2))),
        (9, 4, 2**8, [4]),
    ],
)
def test_server_gets_the_exact_squared_distances_of_any_subset(keys, rows, k, bound, slots):
    lay = md.DistanceLayouts(keys[0], k, bound)
    kst, sst = _prepare(keys, lay, rows)
    # the offline phase: U = N M^T + R exactly
    assert (kst.u - sst.blinds == md._exact_products(kst.n, sst.masks)).all()
    s = np.random.default_rng(rows * k).integers(-bound, bound + 1, (rows, k))
    s[slots[0]] = bound  # extremes of the range
    s[slots[-1]] = -bound
    d, opened = _online(keys, lay, kst, sst, s, slots)
    assert opened.accepted == tuple(slots) and opened.out_of_range == {}
    keep = s[slots]
    assert (d == md.exact_squared_distances(keep)).all()
    assert all(
        int(d[a, b]) == int(((keep[a] - keep[b]).astype(object) ** 2).sum())
        for a in range(len(slots))
        for b in range(len(slots))
    )
    # the wire widths hold every value K sends, and the bounds they come from are met
    assert all(abs(int(v)) <= lay.w_max for v in opened.w.reshape(-1))
    assert all(abs(int(v)) <= lay.z_max for v in opened.z.reshape(-1))
    for v in opened.w.reshape(-1):
        int(v).to_bytes(lay.w_bytes, "big", signed=True)
    for v in opened.z.reshape(-1):
        int(v).to_bytes(lay.z_bytes, "big", signed=True)


def test_wire_widths_are_tight_enough_to_be_checked(keys):
    lay = md.DistanceLayouts(keys[0], 128, 2**25)
    assert lay.prep_bits == lay.mask_bits + lay.sigma + 2
    assert lay.w_max < 1 << (8 * lay.w_bytes - 1) <= 256 * lay.w_max
    assert lay.z_max < 1 << (8 * lay.z_bytes - 1) <= 256 * lay.z_max
    with pytest.raises(OverflowError):
        (-lay.w_max - 1 - (1 << (8 * lay.w_bytes - 1))).to_bytes(lay.w_bytes, "big", signed=True)


def test_out_of_range_rows_are_reported_by_slot_and_the_rest_is_exact(keys):
    bound = 2**12
    lay = md.DistanceLayouts(keys[0], 5, bound)
    kst, sst = _prepare(keys, lay, 10)
    s = np.random.default_rng(3).integers(-bound, bound + 1, (10, 5))
    slots = [0, 1, 3, 4, 6, 9]

    def inflate(pub, lay, rows):
        # slot 3: arbitrary plaintexts, not a packing of a sketch bounded by B
        rows[2] = [pub.encrypt(secrets.randbelow(int(pub.n))) for _ in rows[2]]
        # slot 6: a well-formed packing whose coordinate 0 is far above B
        (plain,) = SlotLayout(pub, max_abs=lay.t_max, slot_bits=lay.row.slot_bits).pack(
            [lay.t_max - 1] + [0] * 4
        )
        rows[4] = [pub.encrypt(plain)]
        return rows

    d, opened = _online(keys, lay, kst, sst, s, slots, tamper=inflate)
    assert set(opened.out_of_range) == {3, 6} and opened.accepted == (0, 1, 4, 9)
    assert opened.w.shape == (4, 5) and opened.z.shape == (4, 4)
    assert (d == md.exact_squared_distances(s[[0, 1, 4, 9]])).all()


def test_every_prepared_state_is_used_once(keys):
    pub, priv = keys
    bound = 2**10
    lay = md.DistanceLayouts(pub, 3, bound)
    columns, kst = md.prepare_keyholder_columns(priv, lay, 4)
    blinded, sst = md.prepare_server_products(pub, columns, lay, 4)
    s = np.zeros((4, 3), dtype=np.int64)
    rows = [[pub.encrypt(m) for m in lay.row.pack(r)] for r in s]
    with pytest.raises(SecAggParameterError, match="prepare_keyholder_finish must run"):
        md.keyholder_open_rows_prepared(priv, rows, range(4), kst)
    with pytest.raises(SecAggParameterError, match="server_mask_rows_prepared must run"):
        md.server_distances_prepared(np.zeros((0, 3)), np.zeros((0, 0)), [], sst)
    md.prepare_keyholder_finish(priv, blinded, kst)
    with pytest.raises(SecAggParameterError, match="already finished"):
        md.prepare_keyholder_finish(priv, blinded, kst)
    masked = md.server_mask_rows_prepared(pub, rows, range(4), sst)
    with pytest.raises(SecAggParameterError, match="already used.*fresh"):
        md.server_mask_rows_prepared(pub, rows, range(4), sst)
    opened = md.keyholder_open_rows_prepared(priv, masked, range(4), kst)
    with pytest.raises(SecAggParameterError, match="already used.*fresh"):
        md.keyholder_open_rows_prepared(priv, masked, range(4), kst)
    d = md.server_distances_prepared(opened.w, opened.z, opened.accepted, sst)
    assert (d == 0).all()
    with pytest.raises(SecAggError, match="already used"):
        md.server_distances_prepared(opened.w, opened.z, opened.accepted, sst)


def test_bad_arguments_are_refused(keys):
    pub, priv = keys
    lay = md.DistanceLayouts(pub, 3, 2**10)
    rows = lay.prep_column.slots + 1  # two blocks
    columns, kst = md.prepare_keyholder_columns(priv, lay, rows)
    assert len(columns) == lay.prep_blocks(rows) == 2 and all(len(b) == 3 for b in columns)
    with pytest.raises(SecAggParameterError, match="column blocks"):
        md.prepare_server_products(pub, columns[:1], lay, rows)
    with pytest.raises(SecAggParameterError, match="k=3"):
        md.prepare_server_products(pub, [columns[0], columns[1][:2]], lay, rows)
    with pytest.raises(SecAggParameterError, match="rows must be"):
        md.prepare_keyholder_columns(priv, lay, 0)
    blinded, sst = md.prepare_server_products(pub, columns, lay, rows)
    with pytest.raises(SecAggParameterError, match="blinded blocks"):
        md.prepare_keyholder_finish(priv, blinded[:1], kst)
    md.prepare_keyholder_finish(priv, blinded, kst)
    row = [pub.encrypt(m) for m in lay.row.pack([0, 0, 0])]
    with pytest.raises(SecAggParameterError, match="strictly increasing"):
        md.server_mask_rows_prepared(pub, [row, row], [1, 1], sst)
    with pytest.raises(SecAggParameterError, match=r"\[0, "):
        md.server_mask_rows_prepared(pub, [row], [rows], sst)
    with pytest.raises(SecAggParameterError, match="rows for"):
        md.server_mask_rows_prepared(pub, [row], [0, 1], sst)
    assert sst.masked_slots is None  # refused calls do not use the state
    masked = md.server_mask_rows_prepared(pub, [row, row], [0, 2], sst)
    with pytest.raises(SecAggParameterError, match="masked rows for"):
        md.keyholder_open_rows_prepared(priv, masked, [0], kst)
    with pytest.raises(SecAggParameterError, match="ciphertexts each"):
        md.keyholder_open_rows_prepared(priv, [masked[0], masked[1] * 2], [0, 2], kst)
    assert not kst.used
    opened = md.keyholder_open_rows_prepared(priv, masked, [0, 2], kst)
    with pytest.raises(SecAggParameterError, match="among the masked slots"):
        md.server_distances_prepared(opened.w, opened.z, [0, 1], sst)
    with pytest.raises(SecAggParameterError, match="W must be"):
        md.server_distances_prepared(opened.w[:1], opened.z, [0, 2], sst)
    assert (md.server_distances_prepared(opened.w, opened.z, [0, 2], sst) == 0).all()


def test_secrets_are_not_in_the_repr(keys):
    lay = md.DistanceLayouts(keys[0], 2, 2**10)
    kst, sst = _prepare(keys, lay, 3)
    for state, secret in ((kst, kst.n), (sst, sst.masks), (sst, sst.blinds), (kst, kst.u)):
        assert str(int(secret[0, 0])) not in repr(state)


def _views(keys, lay, s):
    kst, sst = _prepare(keys, lay, s.shape[0])
    _, opened = _online(keys, lay, kst, sst, s, list(range(s.shape[0])))
    as_float = lambda a: np.array(a.reshape(-1), dtype=float)  # noqa: E731
    return as_float(opened.t), as_float(opened.w), as_float(kst.u)


def test_what_k_and_s_see_does_not_depend_on_the_sketches(keys):
    """Two opposite sets of sketches (every coordinate +B, every coordinate -B) give K's ``t``
    and ``U`` and S's ``W`` the same distribution: a two-sample Kolmogorov-Smirnov test at
    alpha = 1e-4 does not tell them apart, while the same test separates the sketches
    themselves (and each view differs from the sketches)."""
    bound = 2**10
    lay = md.DistanceLayouts(keys[0], 8, bound)
    a = np.full((40, 8), bound)
    b = np.full((40, 8), -bound)
    views_a = _views(keys, lay, a)
    views_b = _views(keys, lay, b)
    for name, va, vb in zip(("t", "W", "U"), views_a, views_b):
        assert ks_2samp(va, vb).pvalue > ALPHA, name
    # the test has power: on the sketches themselves, and between views and sketches
    assert ks_2samp(a.reshape(-1).astype(float), b.reshape(-1).astype(float)).pvalue < ALPHA
    for va in views_a[:2]:
        assert ks_2samp(va, a.reshape(-1).astype(float)).pvalue < ALPHA
    # W is spread over the whole width of N (not just that of the sketches or of S's masks)
    assert np.ptp(views_a[1]) > 2.0 ** (lay.prep_bits - 1)
