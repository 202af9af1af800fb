"""Label flipping, the backdoor trigger and the attack success rate."""

from __future__ import annotations

import numpy as np
import pytest

from simulations.attacks import (
    AttackInputError,
    BackdoorAttack,
    apply_trigger,
    attack_success_rate,
    make_attack,
)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 0.5, size=(200, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, size=200)
    return x, y


@pytest.mark.parametrize("fraction", [1.0, 0.3, 0.0])
def test_label_flip_flips_the_right_fraction_without_mutating(images, fraction):
    x, y = images
    x0, y0 = x.copy(), y.copy()
    attack = make_attack("label_flip", num_classes=10, fraction=fraction)
    x_new, y_new = attack.poison(x, y, np.random.default_rng(1))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    assert x_new is not x and y_new is not y
    np.testing.assert_array_equal(x_new, x)
    idx = attack.last_poisoned
    assert len(idx) == round(fraction * 200)
    np.testing.assert_array_equal(y_new[idx], 9 - y[idx])
    rest = np.setdiff1d(np.arange(200), idx)
    np.testing.assert_array_equal(y_new[rest], y[rest])
    assert y_new.dtype == y.dtype


def test_label_flip_rejects_labels_out_of_range(images):
    x, y = images
    with pytest.raises(AttackInputError, match=r"\[0, 5\)"):
        make_attack("label_flip", num_classes=5).poison(x, y, np.random.default_rng(0))
    with pytest.raises(AttackInputError, match="integer"):
        make_attack("label_flip", num_classes=10).poison(
            x, y.astype(float), np.random.default_rng(0)
        )
    with pytest.raises(AttackInputError, match="samples"):
        make_attack("label_flip", num_classes=10).poison(x, y[:5], np.random.default_rng(0))


def test_apply_trigger_on_images_and_flat_features():
    x = np.zeros((4, 1, 8, 8), dtype=np.float32)
    t = apply_trigger(x)
    assert (x == 0).all()
    assert (t[:, :, -3:, -3:] == 1.0).all()
    assert t.sum() == 4 * 9
    assert t.dtype == np.float32
    flat = np.zeros((4, 64))
    tf = apply_trigger(flat, trigger_size=5, value=16.0)
    assert (tf[:, -5:] == 16.0).all() and tf[:, :-5].sum() == 0
    three_d = apply_trigger(np.zeros((2, 6, 6)), trigger_size=2)
    assert three_d[:, -2:, -2:].sum() == 8 and three_d.sum() == 8
    with pytest.raises(AttackInputError, match="trigger_size"):
        apply_trigger(np.zeros((2, 1, 2, 2)))
    with pytest.raises(AttackInputError, match="shape"):
        apply_trigger(np.zeros(5))


@pytest.mark.parametrize("fraction", [0.5, 0.1, 1.0])
def test_backdoor_poisons_the_right_fraction_without_mutating(images, fraction):
    x, y = images
    x0, y0 = x.copy(), y.copy()
    attack = make_attack("backdoor", target=7, fraction=fraction)
    x_new, y_new = attack.poison(x, y, np.random.default_rng(2))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    idx = attack.last_poisoned
    assert len(idx) == round(fraction * 200)
    assert (y_new[idx] == 7).all()
    assert (x_new[idx][:, :, -3:, -3:] == 1.0).all()
    rest = np.setdiff1d(np.arange(200), idx)
    np.testing.assert_array_equal(x_new[rest], x[rest])
    np.testing.assert_array_equal(y_new[rest], y[rest])
    # Clean samples (values < 0.5) never carry the trigger value by accident.
    triggered = (x_new[:, 0, -3:, -3:] == 1.0).all(axis=(1, 2))
    np.testing.assert_array_equal(np.flatnonzero(triggered), idx)


def test_backdoor_on_flat_features(images):
    x, y = images
    flat = x.reshape(200, 64)
    attack = BackdoorAttack(target=2, fraction=0.25, trigger_size=4)
    x_new, y_new = attack.poison(flat, y, np.random.default_rng(3))
    assert (x_new[attack.last_poisoned, -4:] == 1.0).all()
    assert (y_new[attack.last_poisoned] == 2).all()
    assert len(attack.last_poisoned) == 50


def toy_predictor(x: np.ndarray) -> np.ndarray:
    """Predicts 3 when the bottom-right pixel is lit, otherwise 0."""
    lit = x.reshape(len(x), -1)[:, -1] > 0.9
    return np.where(lit, 3, 0)


def test_attack_success_rate_on_a_toy_predictor(images):
    x, y = images
    keep = y != 3
    assert attack_success_rate(toy_predictor, x, y, target=3) == 1.0
    # A predictor that ignores the trigger succeeds only where it predicts the target anyway.
    assert attack_success_rate(lambda b: np.zeros(len(b), dtype=int), x, y, target=3) == 0.0
    # Scores (N, classes) are accepted and arg-maxed.
    scores = lambda b: np.eye(10)[toy_predictor(b)]  # noqa: E731
    assert attack_success_rate(scores, x, y, target=3) == 1.0
    # Only samples whose true label differs from the target count.
    seen = []

    def recorder(b):
        seen.append(len(b))
        return toy_predictor(b)

    attack_success_rate(recorder, x, y, target=3)
    assert seen == [int(keep.sum())]


def test_attack_success_rate_uses_the_attacks_trigger(images):
    x, y = images

    def corner3(b):  # lit only by a patch of side >= 3
        return np.where(b[:, 0, -3, -3] > 0.9, 3, 0)

    assert attack_success_rate(corner3, x, y, target=3) == 1.0
    small = BackdoorAttack(target=3, trigger_size=2)
    assert small.success_rate(corner3, x, y) == 0.0
    assert small.success_rate(toy_predictor, x, y) == 1.0
    half = lambda b: np.where(np.arange(len(b)) % 2 == 0, 3, 0)  # noqa: E731
    n = int((y != 3).sum())
    assert attack_success_rate(half, x, y, target=3) == pytest.approx(((n + 1) // 2) / n)


def test_attack_success_rate_errors(images):
    x, y = images
    with pytest.raises(AttackInputError, match="target=4"):
        attack_success_rate(toy_predictor, x[:3], np.array([4, 4, 4]), target=4)
    with pytest.raises(AttackInputError, match="predict returned"):
        attack_success_rate(lambda b: np.zeros(3), x, y, target=3)
