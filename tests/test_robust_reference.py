"""Straightforward reference implementations of the robust rules (loops, full sorts,
float64 everywhere), used by the other test_robust_* files, plus sanity checks of the
references themselves against numpy."""

from __future__ import annotations

import numpy as np
import pytest


def ref_sqdist(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            diff = X[i] - X[j]
            D[i, j] = float(np.dot(diff, diff))
    return D


def ref_median(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    out = np.empty(d)
    for j in range(d):
        col = sorted(X[:, j])
        out[j] = col[n // 2] if n % 2 else (col[n // 2 - 1] + col[n // 2]) / 2
    return out


def ref_trimmed_mean(X: np.ndarray, f: int) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    out = np.empty(d)
    for j in range(d):
        col = sorted(X[:, j])
        out[j] = sum(col[f : n - f]) / (n - 2 * f)
    return out


def ref_krum_scores(X: np.ndarray, f: int, k: int | None = None) -> np.ndarray:
    D = ref_sqdist(X)
    n = len(X)
    k = n - f - 2 if k is None else k
    return np.array([sum(sorted(D[i, j] for j in range(n) if j != i)[:k]) for i in range(n)])


def ref_krum(X: np.ndarray, f: int, k: int | None = None) -> int:
    s = ref_krum_scores(X, f, k)
    total = ref_sqdist(X).sum(axis=1)
    return min(range(len(X)), key=lambda i: (s[i], total[i], i))


def ref_multi_krum(X: np.ndarray, f: int, m: int | None = None) -> np.ndarray:
    s = ref_krum_scores(X, f)
    total = ref_sqdist(X).sum(axis=1)
    n = len(X)
    m = n - f if m is None else m
    sel = sorted(sorted(range(n), key=lambda i: (s[i], total[i], i))[:m])
    return np.asarray(X, dtype=np.float64)[sel].mean(axis=0), sel


def ref_bulyan(X: np.ndarray, f: int) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    remaining = list(range(n))
    chosen = []
    theta = n - 2 * f
    while len(chosen) < theta:
        R = remaining
        if len(R) == 1:
            pick = R[0]
        else:
            k = min(max(len(R) - f - 2, 1), len(R) - 1)
            sub = X[R]
            D = ref_sqdist(sub)
            scores = [
                sum(sorted(D[a, b] for b in range(len(R)) if b != a)[:k]) for a in range(len(R))
            ]
            total = D.sum(axis=1)
            pick = R[min(range(len(R)), key=lambda a: (scores[a], total[a], a))]
        chosen.append(pick)
        remaining = [i for i in remaining if i != pick]
    beta = theta - 2 * f
    S = X[sorted(chosen)]
    out = np.empty(d)
    for j in range(d):
        col = sorted(S[:, j])
        med = col[theta // 2] if theta % 2 else (col[theta // 2 - 1] + col[theta // 2]) / 2
        # the beta values closest to the median (El Mhamdi et al. 2018); on equal distance
        # the smaller value first
        closest = sorted(col, key=lambda v: (abs(v - med), v))[:beta]
        out[j] = sum(sorted(closest)) / beta
    return out, sorted(chosen)


def ref_weiszfeld(X: np.ndarray, w=None, iters: int = 5000, eps: float = 1e-12) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    w = np.ones(n) / n if w is None else np.asarray(w, float) / np.sum(w)
    z = w @ X
    for _ in range(iters):
        dist = np.array([np.linalg.norm(x - z) for x in X])
        beta = w / np.maximum(dist, eps)
        z_new = beta @ X / beta.sum()
        if np.linalg.norm(z_new - z) < 1e-14 * (1 + np.linalg.norm(z)):
            return z_new
        z = z_new
    return z


def ref_nnm(X: np.ndarray, f: int) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    D = ref_sqdist(X)
    out = np.empty_like(X)
    for i in range(n):
        order = sorted(range(n), key=lambda j: (D[i, j], j != i, j))[: n - f]
        out[i] = X[order].mean(axis=0)
    return out


def ref_centered_clipping(X: np.ndarray, v: np.ndarray, tau: float, iters: int) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    n = len(X)
    for _ in range(iters):
        acc = np.zeros_like(v)
        for x in X:
            diff = x - v
            norm = np.linalg.norm(diff)
            acc += diff * (min(1.0, tau / norm) if norm > 0 else 1.0)
        v = v + acc / n
    return v


def ref_sign_vote(X: np.ndarray, threshold: float) -> np.ndarray:
    n, d = X.shape
    out = np.zeros(d)
    for j in range(d):
        pos = sum(1 for i in range(n) if X[i, j] > 0)
        neg = sum(1 for i in range(n) if X[i, j] < 0)
        out[j] = 1 if pos > threshold * n else (-1 if neg > threshold * n else 0)
    return out


# -- sanity checks of the references ------------------------------------------------------


def test_reference_median_and_trim_match_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 6):
        X = rng.standard_normal((n, 7))
        np.testing.assert_allclose(ref_median(X), np.median(X, axis=0))
        np.testing.assert_allclose(ref_trimmed_mean(X, 0), X.mean(axis=0))


def test_reference_distances_match_numpy():
    X = np.random.default_rng(1).standard_normal((6, 9))
    D = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(ref_sqdist(X), D, rtol=1e-12, atol=1e-12)


def test_reference_weiszfeld_is_optimal():
    X = np.random.default_rng(2).standard_normal((9, 4))
    z = ref_weiszfeld(X)
    g = sum((z - x) / np.linalg.norm(z - x) for x in X)
    assert np.linalg.norm(g) < 1e-6


def _closest_mean_reference(col: list[float], beta: int) -> float:
    col = sorted(col)
    theta = len(col)
    med = col[theta // 2] if theta % 2 else (col[theta // 2 - 1] + col[theta // 2]) / 2
    return sum(sorted(col, key=lambda v: (abs(v - med), v))[:beta]) / beta


@pytest.mark.parametrize("f, beta", [(1, 3), (1, 5), (2, 3), (2, 1), (3, 6), (4, 2)])
def test_bulyan_keeps_the_values_closest_to_the_median_on_ties(f, beta):
    from robust.krum_rules import _closest_to_median_mean

    # The case that used to fail: deviations tie on both sides of the median.
    t = np.sort(
        np.array([[8.0, 8.0, 10.0, 12.0, 12.0, 12.0, 13.0, 14.0, 9.0, 10.0, 7.0][: beta + 2 * f]])
    )
    # _closest_to_median_mean takes rank-major input: row q = q-th smallest per column
    assert _closest_to_median_mean(t.T, f, beta)[0] == pytest.approx(
        _closest_mean_reference(list(t[0]), beta)
    )
    rng = np.random.default_rng(f * 10 + beta)
    t = np.sort(rng.integers(0, 5, size=(400, beta + 2 * f)).astype(np.float64), axis=1)
    got = _closest_to_median_mean(t.T, f, beta)
    want = [_closest_mean_reference(list(row), beta) for row in t]
    np.testing.assert_allclose(got, want)
