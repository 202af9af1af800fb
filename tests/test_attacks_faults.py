"""Benign faults: dropout masks and straggler staleness."""

from __future__ import annotations

import numpy as np
import pytest

from simulations.attacks import DropoutFault, FaultConfigError, StragglerFault


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_dropout_proportion(p):
    mask = DropoutFault(p).sample(200_000, np.random.default_rng(0))
    assert mask.dtype == bool and mask.shape == (200_000,)
    assert mask.mean() == pytest.approx(p, abs=0.005)


def test_dropout_is_reproducible_and_varies_by_round():
    rng = np.random.default_rng(5)
    a, b = DropoutFault(0.3).sample(50, rng), DropoutFault(0.3).sample(50, rng)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(DropoutFault(0.3).sample(50, np.random.default_rng(5)), a)


@pytest.mark.parametrize(("p", "max_staleness"), [(0.2, 3), (0.5, 1), (0.0, 4)])
def test_straggler_proportion_and_staleness_range(p, max_staleness):
    s = StragglerFault(p, max_staleness).sample(200_000, np.random.default_rng(1))
    assert s.shape == (200_000,) and np.issubdtype(s.dtype, np.integer)
    late = s > 0
    assert late.mean() == pytest.approx(p, abs=0.005)
    assert s.min() >= 0 and s.max() <= max_staleness
    if p > 0:
        counts = np.bincount(s[late], minlength=max_staleness + 1)[1:]
        np.testing.assert_allclose(counts / late.sum(), 1.0 / max_staleness, atol=0.01)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: DropoutFault(1.5), "p"),
        (lambda: DropoutFault(-0.1), "p"),
        (lambda: StragglerFault(0.2, 0), "max_staleness"),
        (lambda: StragglerFault(0.2, 1.5), "max_staleness"),
        (lambda: DropoutFault(0.1).sample(-1, np.random.default_rng()), "n_clients"),
        (lambda: DropoutFault(0.1).sample(3, np.random.RandomState(0)), "rng"),
    ],
)
def test_fault_errors_name_the_field(make, field):
    with pytest.raises(FaultConfigError, match=field):
        make()
