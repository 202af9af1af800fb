"""Models, flat parameter access, and LocalTrainer (FedAvg, FedProx, distributed SGD)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simulations.datasets import load_dataset
from simulations.models import (
    MODELS,
    ModelError,
    ParamsError,
    build_model,
    get_flat_params,
    num_params,
    set_flat_params,
)
from simulations.partition import partition
from simulations.training import LocalTrainer, TrainingError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def shards(digits):
    parts = partition(digits.y_train, 10, "iid", seed=0)
    return [(digits.x_train[p], digits.y_train[p]) for p in parts]


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_models_forward_shapes(name, shape):
    model = build_model(name, shape, 10)
    out = model(torch.zeros(3, *shape))
    assert out.shape == (3, 10)
    assert get_flat_params(model).shape == (num_params(model),)


def test_tabular_models_and_cnn_rejection():
    for name in ("logreg", "mlp"):
        assert build_model(name, (30,), 2)(torch.zeros(4, 30)).shape == (4, 2)
    with pytest.raises(ModelError, match="cnn.*image input_shape"):
        build_model("cnn", (30,), 2)


@pytest.mark.parametrize(
    "args, message",
    [
        (("resnet", (1, 8, 8), 10), "unknown name"),
        (("mlp", (1, 0, 8), 10), "positive"),
        (("mlp", "abc", 10), "input_shape"),
        (("mlp", (64,), 1), "num_classes must be >= 2"),
        (("cnn", (1, 2, 2), 10), "at least 4x4"),
    ],
)
def test_build_model_errors(args, message):
    with pytest.raises(ModelError, match=message):
        build_model(*args)


def test_init_deterministic_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = get_flat_params(build_model("cnn", (1, 8, 8), 10, seed=7))
    after = torch.rand(3)
    assert torch.equal(before, after)
    b = get_flat_params(build_model("cnn", (1, 8, 8), 10, seed=7))
    c = get_flat_params(build_model("cnn", (1, 8, 8), 10, seed=8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_flat_params_roundtrip_and_copy():
    model = build_model("mlp", (1, 8, 8), 10)
    vec = get_flat_params(model)
    assert vec.dtype == np.float32 and vec.ndim == 1
    vec[:] = 0.5  # a copy: the model must not change
    assert not np.all(get_flat_params(model) == 0.5)
    new = np.arange(vec.size, dtype=np.float64) * 1e-4
    set_flat_params(model, new)
    np.testing.assert_array_equal(get_flat_params(model), new.astype(np.float32))
    first = next(model.parameters())
    assert first.flatten()[1].item() == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda v: np.where(np.arange(v.size) == 3, np.nan, v), "non-finite.*index 3"),
        (lambda v: np.where(np.arange(v.size) == 9, np.inf, v), "non-finite.*index 9"),
        (lambda v: v[:-1], "length"),
        (lambda v: np.concatenate([v, v[:1]]), "length"),
        (lambda v: v.reshape(2, -1), "1-D"),
        (lambda v: v.astype(str), "numeric"),
    ],
)
def test_set_flat_params_rejects(mutate, message):
    model = build_model("logreg", (1, 8, 8), 10)
    before = get_flat_params(model)
    with pytest.raises(ParamsError, match=message):
        set_flat_params(model, mutate(before.copy()))
    np.testing.assert_array_equal(get_flat_params(model), before)


# ------------------------------------------------------------------------------------------
# FedAvg / FedProx
# ------------------------------------------------------------------------------------------


def run_rounds(trainer, shards, rounds, w=None, start=0):
    w = trainer.initial_params() if w is None else w
    for r in range(start, start + rounds):
        updates = np.stack(
            [trainer.compute_update(i, w, x, y, r) for i, (x, y) in enumerate(shards)]
        )
        assert updates.dtype == np.float32 and updates.shape == (len(shards), w.size)
        w = w + updates.mean(axis=0)
    return w


@pytest.mark.parametrize("model", ["logreg", "mlp", "cnn"])
def test_fedavg_loss_decreases(digits, shards, model):
    # The CNN needs more local work than the linear/MLP models to leave chance level on 8x8.
    epochs, rounds = (4, 4) if model == "cnn" else (2, 3)
    tr = LocalTrainer(model, digits.input_shape, 10, mode="fedavg", lr=0.1, local_epochs=epochs)
    w0 = tr.initial_params()
    acc0, loss0 = tr.evaluate(w0, digits.x_test, digits.y_test)
    w = run_rounds(tr, shards, rounds)
    acc, loss = tr.evaluate(w, digits.x_test, digits.y_test)
    assert loss < 0.8 * loss0
    assert acc > 0.5 > 0.2 > acc0


def test_fedprox_mu_zero_equals_fedavg_and_mu_limits_drift(digits, shards):
    kw = dict(lr=0.1, local_epochs=3)
    x, y = shards[0]
    avg = LocalTrainer("logreg", digits.input_shape, 10, mode="fedavg", **kw)
    w = avg.initial_params()
    u_avg = avg.compute_update(0, w, x, y, 0)
    prox0 = LocalTrainer("logreg", digits.input_shape, 10, mode="fedprox", mu=0.0, **kw)
    np.testing.assert_array_equal(prox0.compute_update(0, w, x, y, 0), u_avg)
    prox = LocalTrainer("logreg", digits.input_shape, 10, mode="fedprox", mu=1.0, **kw)
    u_prox = prox.compute_update(0, w, x, y, 0)
    assert np.linalg.norm(u_prox) < 0.8 * np.linalg.norm(u_avg)


def test_fedavg_single_step_matches_manual_sgd(digits):
    x, y = digits.x_train[:8], digits.y_train[:8]
    tr = LocalTrainer(
        "logreg", digits.input_shape, 10, lr=0.3, batch_size=8, momentum=0.9, weight_decay=0.01
    )
    w = tr.initial_params()
    u = tr.compute_update(0, w, x, y, 0)
    model = build_model("logreg", digits.input_shape, 10)
    set_flat_params(model, w)
    loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, list(model.parameters()))])
    expected = -0.3 * (g.numpy() + 0.01 * w)  # first step: momentum buffer == gradient
    np.testing.assert_allclose(u, expected, rtol=1e-4, atol=1e-6)


def test_fedavg_carry_momentum(digits, shards):
    x, y = shards[0]
    fresh = LocalTrainer("logreg", digits.input_shape, 10)
    carry = LocalTrainer("logreg", digits.input_shape, 10, carry_momentum=True)
    w = fresh.initial_params()
    np.testing.assert_array_equal(
        fresh.compute_update(0, w, x, y, 0), carry.compute_update(0, w, x, y, 0)
    )
    assert carry.has_momentum(0) and not fresh.has_momentum(0)
    assert fresh.state_dict()["momentum"].shape == (0, fresh.num_params)
    # second round: the carried buffer makes the update differ
    assert not np.array_equal(
        fresh.compute_update(0, w, x, y, 1), carry.compute_update(0, w, x, y, 1)
    )


# ------------------------------------------------------------------------------------------
# distributed SGD with client momentum
# ------------------------------------------------------------------------------------------


def manual_grad(digits, w, x, y):
    model = build_model("logreg", digits.input_shape, 10)
    set_flat_params(model, w)
    loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
    return torch.cat(
        [t.reshape(-1) for t in torch.autograd.grad(loss, list(model.parameters()))]
    ).numpy()


def test_dsgd_momentum_matches_definition(digits):
    # With batch_size >= n the minibatch is the whole client set, so g is known exactly.
    x, y = digits.x_train[:20], digits.y_train[:20]
    beta, lr = 0.9, 0.5
    tr = LocalTrainer(
        "logreg", digits.input_shape, 10, mode="dsgd", lr=lr, momentum=beta, batch_size=64
    )
    w1 = tr.initial_params()
    u1 = tr.compute_update(3, w1, x, y, 0)
    g1 = manual_grad(digits, w1, x, y)
    np.testing.assert_allclose(u1, -lr * (1 - beta) * g1, rtol=1e-4, atol=1e-7)
    w2 = w1 + u1
    u2 = tr.compute_update(3, w2, x, y, 1)
    g2 = manual_grad(digits, w2, x, y)
    m2 = beta * (1 - beta) * g1 + (1 - beta) * g2
    np.testing.assert_allclose(u2, -lr * m2, rtol=1e-4, atol=1e-7)
    # another client starts from zero momentum
    np.testing.assert_allclose(
        tr.compute_update(4, w2, x, y, 1), -lr * (1 - beta) * g2, rtol=1e-4, atol=1e-7
    )


def test_dsgd_uses_one_batch_of_batch_size(digits):
    x, y = digits.x_train[:200], digits.y_train[:200]
    tr = LocalTrainer(
        "logreg", digits.input_shape, 10, mode="dsgd", batch_size=16, momentum=0.0, lr=1.0
    )
    w = tr.initial_params()
    u = tr.compute_update(0, w, x, y, 0)
    full = -manual_grad(digits, w, x, y)
    assert not np.allclose(u, full, atol=1e-6)  # a minibatch, not the full gradient
    # the update equals the gradient of some 16-sample subset: check by brute force on the RNG
    rng = np.random.default_rng([0, 0, 0])
    idx = np.sort(rng.choice(200, size=16, replace=False))
    np.testing.assert_allclose(u, -manual_grad(digits, w, x[idx], y[idx]), rtol=1e-4, atol=1e-7)


def test_dsgd_state_save_load_equals_continuing(digits, shards, tmp_path):
    kw = dict(mode="dsgd", lr=0.5, batch_size=32, momentum=0.9, seed=3)
    a = LocalTrainer("mlp", digits.input_shape, 10, **kw)
    w_full = run_rounds(a, shards, 4)

    b = LocalTrainer("mlp", digits.input_shape, 10, **kw)
    w_half = run_rounds(b, shards, 2)
    np.savez(tmp_path / "state.npz", **b.state_dict())
    state = b.state_dict()
    assert state["momentum"].shape == (len(shards), b.num_params)
    assert state["client_ids"].tolist() == list(range(len(shards)))

    c = LocalTrainer("mlp", digits.input_shape, 10, **kw)
    with np.load(tmp_path / "state.npz") as loaded:
        c.load_state_dict(dict(loaded))
    w_resumed = run_rounds(c, shards, 2, w=w_half, start=2)
    np.testing.assert_array_equal(w_resumed, w_full)

    # and losing the state really changes the result (the momentum matters)
    d = LocalTrainer("mlp", digits.input_shape, 10, **kw)
    assert not np.array_equal(run_rounds(d, shards, 2, w=w_half, start=2), w_full)


def test_dsgd_trains(digits, shards):
    tr = LocalTrainer("logreg", digits.input_shape, 10, mode="dsgd", lr=1.0, batch_size=32)
    w0 = tr.initial_params()
    _, loss0 = tr.evaluate(w0, digits.x_test, digits.y_test)
    _, loss = tr.evaluate(run_rounds(tr, shards, 15), digits.x_test, digits.y_test)
    assert loss < 0.8 * loss0


def test_load_state_dict_errors(digits):
    tr = LocalTrainer("logreg", digits.input_shape, 10, mode="dsgd")
    tr.compute_update(0, tr.initial_params(), digits.x_train[:40], digits.y_train[:40], 0)
    good = tr.state_dict()

    other_mode = LocalTrainer("logreg", digits.input_shape, 10, mode="fedavg")
    with pytest.raises(TrainingError, match="mode 'dsgd'"):
        other_mode.load_state_dict(good)
    other_model = LocalTrainer("mlp", digits.input_shape, 10, mode="dsgd")
    with pytest.raises(TrainingError, match="parameters"):
        other_model.load_state_dict(good)
    bad = dict(good, momentum=np.full_like(good["momentum"], np.nan))
    with pytest.raises(TrainingError, match="non-finite"):
        tr.load_state_dict(bad)
    with pytest.raises(TrainingError, match="missing key 'client_ids'"):
        tr.load_state_dict({k: v for k, v in good.items() if k != "client_ids"})
    with pytest.raises(TrainingError, match="shape"):
        tr.load_state_dict(dict(good, momentum=good["momentum"][:, :-1]))
    assert tr.has_momentum(0)  # unchanged after failed loads


# ------------------------------------------------------------------------------------------
# determinism, evaluation, validation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fedavg", "fedprox", "dsgd"])
def test_deterministic_across_instances(digits, shards, mode):
    x, y = shards[1]
    outs = []
    for _ in range(2):
        tr = LocalTrainer("mlp", digits.input_shape, 10, mode=mode, seed=11)
        outs.append(tr.compute_update(1, tr.initial_params(), x, y, 5))
    np.testing.assert_array_equal(outs[0], outs[1])
    tr = LocalTrainer("mlp", digits.input_shape, 10, mode=mode, seed=11)
    other_round = tr.compute_update(1, tr.initial_params(), x, y, 6)
    assert not np.array_equal(outs[0], other_round)


def test_evaluate(digits):
    tr = LocalTrainer("logreg", digits.input_shape, 10)
    w = tr.initial_params()
    acc, loss = tr.evaluate(w, digits.x_test, digits.y_test, batch_size=7)
    acc2, loss2 = tr.evaluate(w, digits.x_test, digits.y_test)
    assert 0.0 <= acc <= 1.0 and acc == acc2 and loss == pytest.approx(loss2, rel=1e-5)
    assert loss == pytest.approx(np.log(10), rel=0.2)
    nan_acc, nan_loss = tr.evaluate(np.full_like(w, np.nan), digits.x_test, digits.y_test)
    assert nan_acc == 0.0 and not np.isfinite(nan_loss)
    with pytest.raises(ParamsError, match="shape"):
        tr.evaluate(w[:-1], digits.x_test, digits.y_test)
    with pytest.raises(TrainingError, match="evaluate"):
        tr.evaluate(w, digits.x_test, digits.y_test[:-1])


def test_compute_update_validation(digits):
    tr = LocalTrainer("logreg", digits.input_shape, 10)
    w = tr.initial_params()
    x, y = digits.x_train[:10], digits.y_train[:10]
    with pytest.raises(ParamsError, match="client 2.*non-finite"):
        tr.compute_update(2, np.where(np.arange(w.size) == 0, np.inf, w), x, y, 0)
    with pytest.raises(ParamsError, match="length"):
        tr.compute_update(2, w[:5], x, y, 0)
    with pytest.raises(TrainingError, match="client 2: x must have shape"):
        tr.compute_update(2, w, x.reshape(10, 64), y, 0)
    with pytest.raises(TrainingError, match=r"labels must be in \[0, 10\)"):
        tr.compute_update(2, w, x, y + 10, 0)
    with pytest.raises(TrainingError, match="no samples"):
        tr.compute_update(2, w, x[:0], y[:0], 0)
    with pytest.raises(TrainingError, match="round_idx"):
        tr.compute_update(2, w, x, y, -1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="sgd"), "unknown mode"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(lr=float("nan")), "lr"),
        (dict(momentum=1.0), "momentum"),
        (dict(batch_size=0), "batch_size"),
        (dict(local_epochs=1.5), "local_epochs"),
    ],
)
def test_trainer_config_errors(digits, kwargs, message):
    with pytest.raises(TrainingError, match=message):
        LocalTrainer("logreg", digits.input_shape, 10, **kwargs)
