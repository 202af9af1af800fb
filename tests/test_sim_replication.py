"""DRACO-style replication: groups, exact majority filtering, cost, and bit-identical replicas."""

from __future__ import annotations

import numpy as np
import pytest

from simulations.datasets import load_dataset
from simulations.partition import partition
from simulations.replication import (
    ReplicationError,
    group_index,
    majority_filter,
    replication_cost,
    replication_groups,
)
from simulations.training import LocalTrainer


def test_groups_layout():
    groups = replication_groups(9, 3)
    assert groups == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert group_index(groups).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert replication_groups(4, 1) == [[0], [1], [2], [3]]


@pytest.mark.parametrize(
    "n, r, message",
    [
        (10, 3, "does not divide"),
        (2, 3, "smaller than r"),
        (6, 0, "r must be an integer >= 1"),
        (0, 1, "n_clients"),
        (6, 1.5, "r must be an integer"),
    ],
)
def test_groups_errors(n, r, message):
    with pytest.raises(ReplicationError, match=message):
        replication_groups(n, r)


def test_group_index_rejects_non_partition():
    with pytest.raises(ReplicationError, match="partition"):
        group_index([[0, 1], [1, 2]])
    with pytest.raises(ReplicationError, match="partition"):
        group_index([[0, 1], [2, 3]], n_clients=5)


def honest_matrix(groups, d=6, seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(len(groups), d)).astype(np.float32)
    return np.stack([rows[g] for g, grp in enumerate(groups) for _ in grp]), rows


def test_all_honest_accepted():
    groups = replication_groups(12, 3)
    X, rows = honest_matrix(groups)
    before = X.copy()
    maj, accepted, caught = majority_filter(X, groups)
    np.testing.assert_array_equal(maj, rows)
    assert accepted.all() and caught == []
    np.testing.assert_array_equal(X, before)  # caller's array untouched


def test_one_liar_caught_exactly():
    groups = replication_groups(12, 3)
    X, rows = honest_matrix(groups)
    X[4, 2] = np.nextafter(X[4, 2], np.float32(np.inf))  # a one-ulp deviation is still caught
    X[9] = -100.0 * X[9]
    res = majority_filter(X, groups)
    np.testing.assert_array_equal(res.majority_updates, rows)
    assert res.caught == [4, 9]
    assert res.accepted.tolist() == [i not in (4, 9) for i in range(12)]
    assert res.tied_groups == [] and res.kept_groups == [0, 1, 2, 3]
    assert res.votes == [3, 2, 3, 2]


def test_nan_liar_and_signed_zero():
    groups = replication_groups(6, 3)
    X = np.zeros((6, 4), dtype=np.float32)
    X[1, 0] = np.nan
    X[5, 3] = -0.0  # bitwise different from +0.0
    maj, accepted, caught = majority_filter(X, groups)
    assert caught == [1, 5]
    assert np.all(np.isfinite(maj)) and not np.signbit(maj).any()
    assert accepted.sum() == 4


def test_tie_is_reported_and_dropped():
    groups = replication_groups(6, 2)
    X, rows = honest_matrix(groups)
    X[3] += 1.0  # group 1: 1 honest vs 1 liar -> no strict majority
    res = majority_filter(X, groups)
    assert res.tied_groups == [1] and res.kept_groups == [0, 2]
    np.testing.assert_array_equal(res.majority_updates, rows[[0, 2]])
    assert not res.accepted[2] and not res.accepted[3]
    assert res.caught == []  # a tie cannot say who lied

    groups3 = replication_groups(3, 3)
    Y = np.arange(9, dtype=np.float64).reshape(3, 3)  # three distinct rows
    res3 = majority_filter(Y, groups3)
    assert res3.tied_groups == [0] and res3.majority_updates.shape == (0, 3)
    assert not res3.accepted.any()


def test_colluding_majority_wins_group():
    # documented limit: if liars are a strict majority of a group and agree, they win it
    groups = replication_groups(3, 3)
    X = np.zeros((3, 2))
    X[1] = X[2] = 7.0
    maj, accepted, caught = majority_filter(X, groups)
    assert caught == [0] and maj.tolist() == [[7.0, 7.0]]


def test_majority_filter_input_errors():
    with pytest.raises(ReplicationError, match="2-D"):
        majority_filter(np.zeros(6), replication_groups(6, 3))
    with pytest.raises(ReplicationError, match="partition"):
        majority_filter(np.zeros((5, 2)), replication_groups(6, 3))


def test_replication_cost():
    cost = replication_cost(21, 3)
    assert cost.effective_updates == 7 and cost.overhead_factor == 3
    assert cost.tolerated_per_group == 1 and cost.tolerated_worst_case == 1
    text = cost.describe()
    assert "21 clients" in text and "7 distinct updates" in text
    assert replication_cost(10, 2).tolerated_per_group == 0
    assert replication_cost(10, 5).tolerated_per_group == 2
    with pytest.raises(ReplicationError):
        replication_cost(10, 3)


@pytest.mark.parametrize("mode", ["fedavg", "fedprox", "dsgd"])
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_trainer_replicas_bit_identical_and_liar_caught(mode, model):
    ds = load_dataset("digits")
    n, r = 6, 3
    groups = replication_groups(n, r)
    shard_idx = partition(ds.y_train, n // r, "iid", seed=0)
    trainer = LocalTrainer(model, ds.input_shape, 10, mode=mode, batch_size=16, seed=4)
    w = trainer.initial_params()
    gidx = group_index(groups)
    for rnd in range(2):  # two rounds so dsgd momentum is carried per client
        updates = []
        for client in range(n):
            p = shard_idx[gidx[client]]
            x, y = ds.x_train[p].copy(), ds.y_train[p].copy()  # separate copies, same content
            updates.append(trainer.compute_update(client, w, x, y, rnd, rng_key=int(gidx[client])))
        X = np.stack(updates)
        # replicas are bit-identical; different shards are not
        assert X[0].tobytes() == X[1].tobytes() == X[2].tobytes()
        assert X[3].tobytes() == X[4].tobytes() == X[5].tobytes()
        assert X[0].tobytes() != X[3].tobytes()
        X[5] = -X[5]  # a sign-flip liar in group 1
        maj, accepted, caught = majority_filter(X, groups)
        assert caught == [5] and accepted.sum() == 5
        w = w + maj.mean(axis=0)


def test_without_shared_rng_key_replicas_differ():
    ds = load_dataset("digits")
    x, y = ds.x_train[:200], ds.y_train[:200]
    tr = LocalTrainer("logreg", ds.input_shape, 10, mode="dsgd", batch_size=16)
    w = tr.initial_params()
    a = tr.compute_update(0, w, x, y, 0)
    b = tr.compute_update(1, w, x, y, 0)  # default rng_key = client_id -> different minibatch
    assert not np.array_equal(a, b)
