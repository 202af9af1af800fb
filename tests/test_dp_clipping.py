"""dp.clipping: per-update clipping and adaptive clipping (Andrew et al. 2021)."""

from __future__ import annotations

import numpy as np
import pytest

from dp import AdaptiveClipper, NoiseSource, PrivacyParameterError, clip_updates


def test_clip_updates_bounds_norms_and_reports():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 20)) * rng.uniform(0.1, 3, size=(50, 1))
    out, rep = clip_updates(x, 2.0)
    norms = np.linalg.norm(x, axis=1)
    assert np.all(np.linalg.norm(out, axis=1) <= 2.0 * (1 + 1e-12))
    assert rep.clipped_count == int(np.sum(norms > 2.0)) > 0
    assert np.array_equal(out[~rep.clipped], x[~rep.clipped])
    assert np.allclose(np.linalg.norm(out[rep.clipped], axis=1), 2.0)
    assert np.array_equal(rep.norms, norms)
    for bad in (np.ones(3), np.array([[np.inf, 1.0]]), np.ones((2, 2), dtype=int)):
        with pytest.raises(PrivacyParameterError):
            clip_updates(bad, 1.0)
    with pytest.raises(PrivacyParameterError):
        clip_updates(x, 0.0)


def test_noise_split_follows_the_paper():
    c = AdaptiveClipper(1.0, noise_multiplier=1.0, count_stddev=5.0, expected_clients=100)
    z_delta, z_count = c.noise_multipliers
    assert z_count == 10.0
    assert z_delta == pytest.approx((1.0 - 0.01) ** -0.5)
    assert (z_delta**-2 + z_count**-2) ** -0.5 == pytest.approx(1.0)
    with pytest.raises(PrivacyParameterError):
        AdaptiveClipper(1.0, noise_multiplier=2.0, count_stddev=1.0, expected_clients=10)
    with pytest.raises(PrivacyParameterError):
        AdaptiveClipper(1.0, 1.0, 5.0, 100, target_quantile=1.5)


def test_adaptive_clip_tracks_the_target_quantile():
    # norms ~ lognormal(0, 0.5): median 1.0, 80th percentile 1.52. 300 rounds of 200 clients,
    # sigma_b = m/20 (the paper's choice), eta = 0.2. The clip ends within 15% of the quantile.
    rng = np.random.default_rng(1)
    src = NoiseSource(b"\x01" * 32)
    for gamma, quantile in ((0.5, 1.0), (0.8, float(np.exp(0.5 * 0.8416)))):
        c = AdaptiveClipper(
            0.1,
            noise_multiplier=1.0,
            count_stddev=10.0,
            expected_clients=200,
            target_quantile=gamma,
        )
        history = []
        for _ in range(300):
            norms = rng.lognormal(0, 0.5, size=200)
            history.append(c.update(norms <= c.clip_norm, src))
        assert abs(np.mean(history[-50:]) / quantile - 1) < 0.15
