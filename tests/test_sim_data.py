"""Datasets (IDX parser, sklearn sets, real MNIST) and partitions."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulations.datasets import (
    DATASETS,
    MNIST_ENV_VAR,
    DatasetError,
    default_mnist_dirs,
    load_dataset,
    read_idx,
)
from simulations.partition import PARTITIONS, PartitionError, label_histogram, partition

# The same folders the loader tries by default ($FORTIS_MNIST_DIR, then ../shared/data/mnist
# beside the repository), so the real-data test runs wherever the data is, CI included.
SHARED_MNIST = next(
    (d for d in default_mnist_dirs() if d.is_dir()), Path("/work/shared/data/mnist")
)


# ------------------------------------------------------------------------------------------
# IDX files
# ------------------------------------------------------------------------------------------


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[
        type_code
    ]
    header = bytes([0, 0, type_code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(dtype).tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("type_code", [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E])
def test_idx_roundtrip_all_types(tmp_path, gz, type_code):
    rng = np.random.default_rng(type_code)
    arr = rng.integers(0, 100, size=(3, 4, 5))
    got = read_idx(write(tmp_path / "a.idx", idx_bytes(arr, type_code), gz))
    assert got.shape == (3, 4, 5)
    np.testing.assert_array_equal(got, arr)
    assert got.dtype.isnative


def test_idx_big_endian_values(tmp_path):
    arr = np.array([1, 256, 70000, -5], dtype=np.int64)
    got = read_idx(write(tmp_path / "b.idx", idx_bytes(arr, 0x0C)))
    assert got.tolist() == [1, 256, 70000, -5]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"\x01" + b[1:], "bad magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "unknown element type"),
        (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
        (lambda b: b[:-1], "truncated payload"),
        (lambda b: b + b"\x00\x00", "trailing bytes"),
        (lambda b: b[:9], "truncated header"),
        (lambda b: b[:2], "shorter than the 4-byte magic"),
    ],
)
def test_idx_malformed(tmp_path, mutate, message):
    good = idx_bytes(np.arange(24).reshape(2, 3, 4))
    path = write(tmp_path / "bad-file.idx", mutate(good))
    with pytest.raises(DatasetError, match=message) as info:
        read_idx(path)
    assert "bad-file.idx" in str(info.value)


def test_idx_corrupt_gzip(tmp_path):
    data = gzip.compress(idx_bytes(np.arange(1000)))
    path = write(tmp_path / "cut.gz", data[: len(data) // 2])
    with pytest.raises(DatasetError, match="gzip") as info:
        read_idx(path)
    assert "cut.gz" in str(info.value)


def test_idx_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="cannot read"):
        read_idx(tmp_path / "nope")


def make_mnist_dir(folder: Path, n_train=12, n_test=5, gz=True, bad=None) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    if bad:
        files.update(bad)
    for name, arr in files.items():
        write(folder / (name + (".gz" if gz else "")), idx_bytes(np.asarray(arr)), gz)
    return folder


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_synthetic_folder(tmp_path, gz):
    ds = load_dataset("mnist", data_dir=make_mnist_dir(tmp_path / "m", gz=gz))
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.y_train.tolist() == [i % 10 for i in range(12)]
    # normalised with train statistics
    assert abs(float(ds.x_train.mean())) < 1e-4 and abs(float(ds.x_train.std()) - 1) < 1e-3
    lo, hi = ds.value_range
    assert ds.x_train.min() >= lo - 1e-5 and ds.x_train.max() <= hi + 1e-5


def test_mnist_count_mismatch(tmp_path):
    folder = make_mnist_dir(tmp_path / "m", bad={"t10k-labels-idx1-ubyte": np.arange(4)})
    with pytest.raises(DatasetError, match="count mismatch"):
        load_dataset("mnist", data_dir=folder)


def test_mnist_wrong_image_size(tmp_path):
    folder = make_mnist_dir(tmp_path / "m", bad={"train-images-idx3-ubyte": np.zeros((12, 27, 28))})
    with pytest.raises(DatasetError, match=r"train-images.*\(28, 28\)"):
        load_dataset("mnist", data_dir=folder)


def test_mnist_label_out_of_range(tmp_path):
    folder = make_mnist_dir(tmp_path / "m", bad={"train-labels-idx1-ubyte": np.full(12, 11)})
    with pytest.raises(DatasetError, match="label 11"):
        load_dataset("mnist", data_dir=folder)


def test_mnist_missing_file(tmp_path):
    folder = make_mnist_dir(tmp_path / "m")
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="test images"):
        load_dataset("mnist", data_dir=folder)


def test_mnist_missing_dir_lists_tried_paths(tmp_path, monkeypatch):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", data_dir=missing)
    assert str(missing) in str(info.value) and "--data-dir" in str(info.value)

    env_dir = tmp_path / "env-dir-missing"
    monkeypatch.setenv(MNIST_ENV_VAR, str(env_dir))
    import simulations.datasets as mod

    monkeypatch.setattr(mod, "default_mnist_dirs", lambda: [env_dir, tmp_path / "repo-default"])
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist")
    msg = str(info.value)
    assert str(env_dir) in msg and "repo-default" in msg and MNIST_ENV_VAR in msg


def test_mnist_env_var_used(tmp_path, monkeypatch):
    folder = make_mnist_dir(tmp_path / "envm")
    monkeypatch.setenv(MNIST_ENV_VAR, str(folder))
    assert load_dataset("mnist").n_train == 12


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="shared MNIST folder not present")
def test_real_mnist():
    ds = load_dataset("mnist", data_dir=SHARED_MNIST)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert np.bincount(ds.y_train, minlength=10).min() > 5000
    assert abs(float(ds.x_train.mean())) < 1e-3


# ------------------------------------------------------------------------------------------
# scikit-learn sets
# ------------------------------------------------------------------------------------------


def test_digits_default():
    ds = load_dataset()
    assert ds.name == "digits" and "digits" in DATASETS
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.x_train.shape[1:] == (1, 8, 8) and ds.x_train.dtype == np.float32
    assert ds.n_train + ds.n_test == 1797 and ds.n_test == 450
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    # stratified: every class present in test in ~equal proportion
    counts = np.bincount(ds.y_test, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47


def test_digits_split_deterministic_in_seed():
    a, b, c = (
        load_dataset("digits", seed=1),
        load_dataset("digits", seed=1),
        load_dataset("digits", seed=2),
    )
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.y_train, c.y_train)


def test_breast_cancer_standardised():
    ds = load_dataset("breast_cancer", seed=3, test_fraction=0.2)
    assert ds.input_shape == (30,) and ds.num_classes == 2
    assert ds.x_train.shape == (455, 30) and ds.x_test.shape == (114, 30)
    np.testing.assert_allclose(ds.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(0), 1, atol=1e-4)
    assert set(np.unique(ds.y_train)) == {0, 1}


@pytest.mark.parametrize("bad", ["cifar", "", None])
def test_unknown_dataset(bad):
    with pytest.raises(DatasetError, match="unknown name"):
        load_dataset(bad)


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1, 1.5])
def test_bad_test_fraction(frac):
    with pytest.raises(DatasetError, match="test_fraction"):
        load_dataset("digits", test_fraction=frac)


# ------------------------------------------------------------------------------------------
# Partitions
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_labels():
    return load_dataset("digits").y_train


def check_partition(parts, n, n_clients, min_size):
    assert len(parts) == n_clients
    allidx = np.concatenate(parts)
    assert allidx.shape[0] == n  # disjoint + covering
    np.testing.assert_array_equal(np.sort(allidx), np.arange(n))
    assert min(p.shape[0] for p in parts) >= min_size
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0)


@pytest.mark.parametrize("scheme", PARTITIONS)
@pytest.mark.parametrize("n_clients", [1, 7, 20, 100])
def test_partition_cover_disjoint(digit_labels, scheme, n_clients):
    parts = partition(digit_labels, n_clients, scheme, alpha=0.1, gamma=0.3, seed=5, min_size=3)
    check_partition(parts, digit_labels.shape[0], n_clients, 3)


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_partition_deterministic(digit_labels, scheme):
    a = partition(digit_labels, 10, scheme, seed=4)
    b = partition(digit_labels, 10, scheme, seed=4)
    c = partition(digit_labels, 10, scheme, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("scheme", ["iid", "label_sorted"])
def test_even_sizes(digit_labels, scheme):
    sizes = [p.shape[0] for p in partition(digit_labels, 20, scheme, gamma=0.37)]
    assert max(sizes) - min(sizes) <= 1


def test_tight_min_size_dirichlet_repairs():
    # n == n_clients * min_size: only a perfectly even split works; tiny alpha makes every draw
    # fail, so the repair path must produce it.
    labels = np.repeat(np.arange(4), 10)
    parts = partition(labels, 8, "dirichlet", alpha=0.01, min_size=5, seed=1)
    check_partition(parts, 40, 8, 5)
    assert all(p.shape[0] == 5 for p in parts)


def mean_label_entropy(labels, parts, num_classes=10):
    h = label_histogram(labels, parts, num_classes).astype(float)
    p = h / h.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    return float(ent.mean())


def test_dirichlet_skew_increases_as_alpha_shrinks(digit_labels):
    ent = {
        a: np.mean(
            [
                mean_label_entropy(
                    digit_labels, partition(digit_labels, 20, "dirichlet", alpha=a, seed=s)
                )
                for s in range(3)
            ]
        )
        for a in (100.0, 1.0, 0.1)
    }
    assert ent[100.0] > ent[1.0] > ent[0.1]
    assert ent[100.0] > 0.95 * np.log(10)  # near-uniform label mix
    assert ent[0.1] < 0.5 * np.log(10)


def test_label_sorted_gamma0_few_labels(digit_labels):
    parts = partition(digit_labels, 20, "label_sorted", gamma=0.0, seed=0)
    labels_per_client = (label_histogram(digit_labels, parts, 10) > 0).sum(1)
    assert labels_per_client.max() <= 2
    iid = partition(digit_labels, 20, "label_sorted", gamma=1.0, seed=0)
    assert (label_histogram(digit_labels, iid, 10) > 0).sum(1).min() >= 7
    mixed = partition(digit_labels, 20, "label_sorted", gamma=0.5, seed=0)
    assert (
        mean_label_entropy(digit_labels, parts)
        < mean_label_entropy(digit_labels, mixed)
        < mean_label_entropy(digit_labels, iid)
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_clients=2000), "cannot give 2000 clients"),
        (dict(n_clients=700, min_size=2), "at least 2 sample"),
        (dict(n_clients=0), "n_clients must be >= 1"),
        (dict(n_clients=2.5), "n_clients must be an integer"),
        (dict(n_clients=5, scheme="shards"), "unknown scheme"),
        (dict(n_clients=5, scheme="dirichlet", alpha=0.0), "alpha"),
        (dict(n_clients=5, scheme="dirichlet", alpha=float("nan")), "alpha"),
        (dict(n_clients=5, scheme="label_sorted", gamma=1.5), "gamma"),
        (dict(n_clients=5, min_size=-1), "min_size"),
    ],
)
def test_partition_errors(digit_labels, kwargs, message):
    with pytest.raises(PartitionError, match=message):
        partition(digit_labels, **kwargs)


def test_partition_bad_labels():
    with pytest.raises(PartitionError, match="1-D"):
        partition(np.zeros((4, 2), dtype=int), 2)
    with pytest.raises(PartitionError, match="integers"):
        partition(np.zeros(4), 2)
    with pytest.raises(PartitionError, match=">= 0"):
        partition(np.array([0, -1, 2, 3]), 2)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    n_classes=st.integers(1, 12),
    n_clients=st.integers(1, 40),
    min_size=st.integers(0, 5),
    scheme=st.sampled_from(PARTITIONS),
    alpha=st.floats(0.01, 50.0),
    gamma=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31),
)
def test_partition_invariants_property(
    n, n_classes, n_clients, min_size, scheme, alpha, gamma, seed
):
    labels = np.random.default_rng(seed).integers(0, n_classes, size=n)
    if n < n_clients * min_size:
        with pytest.raises(PartitionError, match="cannot give"):
            partition(
                labels, n_clients, scheme, alpha=alpha, gamma=gamma, seed=seed, min_size=min_size
            )
        return
    parts = partition(
        labels, n_clients, scheme, alpha=alpha, gamma=gamma, seed=seed, min_size=min_size
    )
    check_partition(parts, n, n_clients, min_size)
