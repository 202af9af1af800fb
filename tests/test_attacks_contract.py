"""Registry, construction errors and the craft() contract of every model-poisoning attack."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from simulations.attacks import (
    ATTACKS,
    AttackConfigError,
    AttackContext,
    AttackInputError,
    DataPoisoningAttack,
    ModelPoisoningAttack,
    attack_params,
    is_data_poisoning,
    make_attack,
)

MODEL_ATTACKS = sorted(n for n, c in ATTACKS.items() if issubclass(c, ModelPoisoningAttack))
DATA_ATTACKS = sorted(n for n, c in ATTACKS.items() if issubclass(c, DataPoisoningAttack))
EXPECTED = {
    "none",
    "sign_flip",
    "scaling",
    "gaussian",
    "alie",
    "ipm",
    "min_max",
    "min_sum",
    "mimic",
    "nan",
    "inf",
    "adaptive",
    "lying_sketch",
    "label_flip",
    "backdoor",
}


def coordinate_median(X: np.ndarray) -> np.ndarray:
    return np.median(X, axis=0)


def make_ctx(
    h: int = 12,
    f: int = 3,
    d: int = 40,
    dtype: type = np.float32,
    seed: int = 0,
    **overrides,
) -> AttackContext:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=d)
    honest = (base + 0.3 * rng.normal(size=(h, d))).astype(dtype)
    byz = (base + 0.3 * rng.normal(size=(f, d))).astype(dtype)
    fields = dict(
        honest_updates=honest,
        byzantine_updates=byz,
        n_clients=h + f,
        round_idx=0,
        rng=np.random.default_rng(seed + 1),
        aggregate=coordinate_median,
    )
    fields.update(overrides)
    return AttackContext(**fields)


def test_registry_has_every_contract_name():
    assert set(ATTACKS) == EXPECTED
    assert set(DATA_ATTACKS) == {"label_flip", "backdoor"}


@pytest.mark.parametrize("name", MODEL_ATTACKS)
@pytest.mark.parametrize("knowledge", ["omniscient", "limited"])
@pytest.mark.parametrize("collusion", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_craft_shape_dtype_and_no_mutation(name, knowledge, collusion, dtype):
    ctx = make_ctx(dtype=dtype, knowledge=knowledge, collusion=collusion)
    honest_before = ctx.honest_updates.copy()
    byz_before = ctx.byzantine_updates.copy()
    out = make_attack(name).craft(ctx)
    assert out.shape == (3, 40)
    assert out.dtype == dtype
    assert out is not ctx.byzantine_updates
    np.testing.assert_array_equal(ctx.honest_updates, honest_before)
    np.testing.assert_array_equal(ctx.byzantine_updates, byz_before)
    if name in ("nan", "inf"):
        assert not np.isfinite(out).any()
    else:
        assert np.isfinite(out).all()
    if collusion and name != "none":  # "none" sends each client's honest update
        # Colluding attackers send one crafted vector on every row.
        assert (out == out[0]).all() or np.isnan(out).all()


@pytest.mark.parametrize("name", [n for n in MODEL_ATTACKS if n not in ("none", "nan", "inf")])
def test_limited_knowledge_never_reads_honest_updates(name):
    ctx = make_ctx(knowledge="limited", seed=3)
    other = dataclasses.replace(
        ctx,
        honest_updates=ctx.honest_updates + 100.0,
        rng=np.random.default_rng(4),
    )
    ctx = dataclasses.replace(ctx, rng=np.random.default_rng(4))
    # The adaptive attack's defence evaluation uses a surrogate round, also honest-free.
    np.testing.assert_array_equal(make_attack(name).craft(ctx), make_attack(name).craft(other))


@pytest.mark.parametrize("name", ["sign_flip", "scaling", "ipm", "alie", "min_max", "mimic"])
def test_omniscient_attacks_do_read_honest_updates(name):
    ctx = make_ctx(seed=5)
    shifted = dataclasses.replace(ctx, honest_updates=ctx.honest_updates * 3.0 + 1.0)
    assert not np.allclose(make_attack(name).craft(ctx), make_attack(name).craft(shifted))


def test_independent_limited_attackers_use_their_own_update():
    ctx = make_ctx(knowledge="limited", collusion=False)
    out = make_attack("sign_flip").craft(ctx)
    np.testing.assert_allclose(out, -ctx.byzantine_updates, rtol=1e-6)
    # ALIE with a single-row view has no spread: it sends the attacker's own update.
    alie = make_attack("alie")
    np.testing.assert_allclose(alie.craft(ctx), ctx.byzantine_updates, rtol=1e-6)
    assert all(info["degenerate"] for info in alie.last_info["per_attacker"])


def test_independent_gaussian_attackers_draw_independent_noise():
    out = make_attack("gaussian").craft(make_ctx(collusion=False))
    assert len({row.tobytes() for row in out}) == 3
    colluding = make_attack("gaussian").craft(make_ctx(collusion=True))
    assert len({row.tobytes() for row in colluding}) == 1


def test_craft_is_reproducible_from_the_rng():
    a = make_attack("gaussian").craft(make_ctx(collusion=False, seed=7))
    b = make_attack("gaussian").craft(make_ctx(collusion=False, seed=7))
    np.testing.assert_array_equal(a, b)


def test_none_returns_byzantine_updates_unchanged_even_with_f_zero():
    ctx = make_ctx()
    np.testing.assert_array_equal(make_attack("none").craft(ctx), ctx.byzantine_updates)
    empty = make_ctx(f=0)
    assert make_attack("none").craft(empty).shape == (0, 40)


# --------------------------------------------------------------------------------------------
# Context validation: typed errors that name the field
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"honest_updates": np.zeros(40, dtype=np.float32)}, "honest_updates"),
        ({"byzantine_updates": np.zeros((3, 41), dtype=np.float32)}, "byzantine_updates"),
        ({"byzantine_updates": np.zeros((3, 40), dtype=np.int64)}, "byzantine_updates"),
        ({"honest_updates": [[0.0] * 40] * 12}, "honest_updates"),
        ({"n_clients": 14}, "n_clients"),
        ({"knowledge": "partial"}, "knowledge"),
        ({"rng": np.random.RandomState(0)}, "rng"),
        ({"collusion": "yes"}, "collusion"),
    ],
)
def test_bad_context_field_is_named(overrides, field):
    ctx = make_ctx(**overrides)
    with pytest.raises(AttackInputError, match=field):
        make_attack("alie").craft(ctx)


def test_non_finite_honest_row_is_reported_with_its_index():
    ctx = make_ctx()
    ctx.honest_updates[5, 2] = np.nan
    with pytest.raises(AttackInputError, match=r"honest_updates.*\[5\]"):
        make_attack("ipm").craft(ctx)


def test_attacks_need_at_least_one_byzantine_client():
    with pytest.raises(AttackInputError, match="f >= 1"):
        make_attack("alie").craft(make_ctx(f=0))


def test_omniscient_attack_needs_honest_updates_limited_does_not():
    with pytest.raises(AttackInputError, match="honest_updates"):
        make_attack("ipm").craft(make_ctx(h=0))
    ctx = make_ctx(h=0, knowledge="limited", n_clients=15)
    assert make_attack("ipm").craft(ctx).shape == (3, 40)


def test_adaptive_needs_the_defence_callable():
    with pytest.raises(AttackInputError, match="aggregate"):
        make_attack("adaptive").craft(make_ctx(aggregate=None))


def test_limited_adaptive_needs_room_for_a_surrogate_honest_round():
    ctx = make_ctx(h=0, knowledge="limited", n_clients=3)
    with pytest.raises(AttackInputError, match="no honest"):
        make_attack("adaptive", base="ipm").craft(ctx)
    ok = make_ctx(h=0, knowledge="limited", n_clients=10)
    assert make_attack("adaptive", base="ipm").craft(ok).shape == (3, 40)


# --------------------------------------------------------------------------------------------
# make_attack errors
# --------------------------------------------------------------------------------------------
def test_unknown_name_lists_valid_names():
    with pytest.raises(AttackConfigError, match="unknown attack 'alie2'") as err:
        make_attack("alie2")
    for name in EXPECTED:
        assert name in str(err.value)


def test_unknown_param_lists_valid_params():
    with pytest.raises(AttackConfigError, match="unknown parameter") as err:
        make_attack("alie", zz=1.0)
    assert "z, z_rule" in str(err.value)
    with pytest.raises(AttackConfigError, match=r"valid parameters: \(none\)"):
        make_attack("none", scale=2)


def test_missing_required_param_is_named():
    with pytest.raises(AttackConfigError, match="num_classes"):
        make_attack("label_flip")


@pytest.mark.parametrize(
    ("name", "params", "param"),
    [
        ("ipm", {"eps": -1.0}, "eps"),
        ("ipm", {"eps": "big"}, "eps"),
        ("scaling", {"factor": float("nan")}, "factor"),
        ("alie", {"z_rule": "paper"}, "z_rule"),
        ("min_max", {"perturbation": "gauss"}, "perturbation"),
        ("gaussian", {"sigma": -2.0}, "sigma"),
        ("nan", {"fraction": 0.0}, "fraction"),
        ("mimic", {"warmup": 0}, "warmup"),
        ("label_flip", {"num_classes": 1}, "num_classes"),
        ("backdoor", {"fraction": 1.5}, "fraction"),
        ("adaptive", {"base": "min_max"}, "base"),
        ("adaptive", {"base": "alie", "param": "eps"}, "param"),
        ("adaptive", {"search": "random"}, "search"),
        ("adaptive", {"bounds": (2.0, 1.0)}, "bounds"),
        ("adaptive", {"base_params": {"nope": 1}}, "nope"),
        ("adaptive", {"base": "gaussian", "base_params": {"sigma": 1.0}}, "sigma"),
        ("adaptive", {"iters": 2}, "iters"),
        ("adaptive", {"grid": []}, "grid"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_param(name, params, param):
    with pytest.raises(AttackConfigError, match=param):
        make_attack(name, **params)


def test_config_error_is_a_value_error():
    assert issubclass(AttackConfigError, ValueError)
    assert issubclass(AttackInputError, ValueError)


def test_attack_params_reports_defaults():
    assert attack_params("ipm") == {"eps": 0.1}
    assert attack_params("scaling") == {"factor": -20.0}


def test_is_data_poisoning_accepts_instances_classes_and_names():
    assert is_data_poisoning(make_attack("backdoor"))
    assert is_data_poisoning(make_attack("label_flip", num_classes=10))
    assert is_data_poisoning("label_flip")
    assert is_data_poisoning(ATTACKS["backdoor"])
    assert not is_data_poisoning(make_attack("alie"))
    assert not is_data_poisoning("none")
    with pytest.raises(AttackConfigError):
        is_data_poisoning("nonsense")


def test_attack_library_imports_neither_torch_nor_robust():
    import subprocess
    import sys

    code = (
        "import sys, simulations.attacks; "
        "bad = [m for m in ('torch', 'robust') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
