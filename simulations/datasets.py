"""Datasets for the robustness lab: scikit-learn digits and breast-cancer, and MNIST from IDX files.

Everything here is local: scikit-learn's two sets ship inside its wheel, and MNIST is read from a
folder of the four standard IDX files. Nothing is ever downloaded.

Public API
----------
- :class:`Dataset` -- an immutable bundle of train/test arrays plus shape metadata.
- :func:`load_dataset` -- ``"digits"`` (default), ``"breast_cancer"`` or ``"mnist"``.
- :func:`read_idx` -- a validating reader for one IDX file (gzip-compressed or not).
- :class:`DatasetError` -- raised for every problem, naming the file or field at fault.

Guarantees
----------
- ``x_*`` arrays are C-contiguous ``float32`` of shape ``(N, *input_shape)``; ``y_*`` arrays are
  ``int64`` of shape ``(N,)`` with values in ``[0, num_classes)``.
- The scikit-learn splits are stratified and depend only on ``seed`` and ``test_fraction``.
- MNIST uses its official 60 000 / 10 000 split (``seed`` and ``test_fraction`` do not apply).
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulations.errors import SimulationError

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "MNIST_ENV_VAR",
    "MNIST_KEYS",
    "default_mnist_dirs",
    "load_dataset",
    "mnist_file",
    "mnist_folder",
    "read_idx",
]

DATASETS: tuple[str, ...] = ("digits", "breast_cancer", "mnist")

#: Environment variable consulted for the MNIST folder when no ``data_dir`` is given.
MNIST_ENV_VAR = "FORTIS_MNIST_DIR"


class DatasetError(SimulationError):
    """A dataset could not be loaded; the message names the dataset, file or field at fault."""


@dataclass(frozen=True)
class Dataset:
    """A train/test split ready for federated simulation.

    ``value_range`` is the (min, max) a feature can take after preprocessing for image-like sets
    (useful for drawing a backdoor trigger at full intensity); ``None`` for tabular data.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    value_range: tuple[float, float] | None = None

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


# --------------------------------------------------------------------------------------------
# IDX reader
# --------------------------------------------------------------------------------------------

# IDX type codes (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"IDX file {str(path)!r}: cannot read ({exc.strerror or exc})") from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(
                f"IDX file {str(path)!r}: corrupt or truncated gzip stream ({exc})"
            ) from exc
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed, detected by content) into a numpy array.

    The header is validated: two zero bytes, a known type code, a dimension count >= 1, and a
    payload whose size is exactly the product of the dimensions times the item size.

    Returns a native-endian array of the declared shape (uint8 for MNIST).
    Raises :class:`DatasetError` naming the file and what is wrong.
    """
    path = Path(path)
    data = _read_bytes(path)
    where = f"IDX file {str(path)!r}"
    if len(data) < 4:
        raise DatasetError(f"{where}: only {len(data)} bytes, shorter than the 4-byte magic number")
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(
            f"{where}: bad magic number 0x{data[:4].hex()} (first two bytes must be zero)"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise DatasetError(
            f"{where}: unknown element type code 0x{type_code:02x} in magic 0x{data[:4].hex()}"
            f" (known: {', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)})"
        )
    if ndim == 0:
        raise DatasetError(f"{where}: magic 0x{data[:4].hex()} declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DatasetError(
            f"{where}: truncated header: {ndim} dimensions need {header_len} bytes, file has {len(data)}"
        )
    dims = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual < expected:
        raise DatasetError(
            f"{where}: truncated payload: dims {dims} of {dtype.name} need {expected} bytes,"
            f" found {actual}"
        )
    if actual > expected:
        raise DatasetError(
            f"{where}: {actual - expected} unexpected trailing bytes after dims {dims} payload"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


# --------------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------------

_MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}

MNIST_KEYS: tuple[str, ...] = tuple(_MNIST_FILES)


def default_mnist_dirs() -> list[Path]:
    """The folders tried, in order, when ``load_dataset("mnist")`` gets no ``data_dir``."""
    dirs: list[Path] = []
    env = os.environ.get(MNIST_ENV_VAR)
    if env:
        dirs.append(Path(env))
    repo_root = Path(__file__).resolve().parent.parent
    dirs.append(repo_root.parent / "shared" / "data" / "mnist")
    return dirs


def _mnist_names(key: str) -> list[str]:
    return [name for stem in _MNIST_FILES[key] for name in (stem, stem + ".gz")]


def mnist_file(folder: Path, key: str) -> Path | None:
    """The IDX file of ``key`` (``train_images``, ``train_labels``, ``test_images``,
    ``test_labels``) in ``folder``, plain or gzipped, or ``None`` when there is none."""
    return next((folder / n for n in _mnist_names(key) if (folder / n).is_file()), None)


def mnist_folder(data_dir: str | os.PathLike | None) -> tuple[Path | None, list[Path]]:
    """The folder MNIST is read from (``data_dir``, else the first existing of
    :func:`default_mnist_dirs`; ``None`` when none exists) and the folders tried."""
    candidates = [Path(data_dir)] if data_dir is not None else default_mnist_dirs()
    return next((c for c in candidates if c.is_dir()), None), candidates


def _find_mnist_file(folder: Path, key: str) -> Path:
    path = mnist_file(folder, key)
    if path is None:
        raise DatasetError(
            f"mnist: folder {str(folder)!r} has no {key.replace('_', ' ')} file "
            f"(looked for {', '.join(_mnist_names(key))})"
        )
    return path


def _load_mnist(data_dir: str | os.PathLike | None) -> Dataset:
    folder, candidates = mnist_folder(data_dir)
    if folder is None:
        tried = ", ".join(repr(str(c)) for c in candidates)
        hint = (
            f"pass the folder holding the four MNIST IDX files with --data-dir DIR "
            f"(Python: load_dataset('mnist', data_dir=DIR)) or set {MNIST_ENV_VAR}"
        )
        raise DatasetError(f"mnist: no data folder found (tried {tried}); {hint}")

    paths = {key: _find_mnist_file(folder, key) for key in _MNIST_FILES}
    arrays = {key: read_idx(p) for key, p in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        ip, lp = paths[f"{split}_images"], paths[f"{split}_labels"]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DatasetError(
                f"mnist: {str(ip)!r} must hold uint8 images of shape (N, rows, cols), "
                f"got {images.dtype} {images.shape}"
            )
        if images.shape[1:] != (28, 28):
            raise DatasetError(
                f"mnist: {str(ip)!r} has images of {images.shape[1:]}, expected (28, 28)"
            )
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise DatasetError(
                f"mnist: {str(lp)!r} must hold uint8 labels of shape (N,), got {labels.dtype} {labels.shape}"
            )
        if labels.shape[0] != images.shape[0]:
            raise DatasetError(
                f"mnist: {split} count mismatch: {str(ip)!r} has {images.shape[0]} images, "
                f"{str(lp)!r} has {labels.shape[0]} labels"
            )
        if labels.size and int(labels.max()) > 9:
            raise DatasetError(f"mnist: {str(lp)!r} has label {int(labels.max())}, expected 0..9")

    # Scale to [0, 1], then normalise with the training set's mean and standard deviation
    # (about 0.1307 / 0.3081 on the real set). Both come exactly from the uint8 histogram, and
    # the conversion is one lookup-table gather instead of several float passes.
    hist = np.bincount(arrays["train_images"].ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64) / 255.0
    total = hist.sum()
    mean = float(hist @ levels / total) if total else 0.0
    std = float(np.sqrt(hist @ (levels - mean) ** 2 / total)) if total else 1.0
    std = std or 1.0
    lut = ((levels - mean) / std).astype(np.float32)
    x_train = lut[arrays["train_images"]][:, None, :, :]
    x_test = lut[arrays["test_images"]][:, None, :, :]
    return Dataset(
        name="mnist",
        x_train=np.ascontiguousarray(x_train, dtype=np.float32),
        y_train=arrays["train_labels"].astype(np.int64),
        x_test=np.ascontiguousarray(x_test, dtype=np.float32),
        y_test=arrays["test_labels"].astype(np.int64),
        num_classes=10,
        input_shape=(1, 28, 28),
        value_range=((0.0 - mean) / std, (1.0 - mean) / std),
    )


# --------------------------------------------------------------------------------------------
# scikit-learn sets
# --------------------------------------------------------------------------------------------


def _split(x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float, name: str):
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    except ValueError as exc:
        raise DatasetError(
            f"{name}: cannot split with test_fraction={test_fraction}: {exc}"
        ) from exc


def _load_digits(seed: int, test_fraction: float) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = _split(x, y, seed, test_fraction, "digits")
    return Dataset(
        name="digits",
        x_train=np.ascontiguousarray(x_tr, dtype=np.float32),
        y_train=y_tr,
        x_test=np.ascontiguousarray(x_te, dtype=np.float32),
        y_test=y_te,
        num_classes=10,
        input_shape=(1, 8, 8),
        value_range=(0.0, 1.0),
    )


def _load_breast_cancer(seed: int, test_fraction: float) -> Dataset:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x = bunch.data.astype(np.float64)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = _split(x, y, seed, test_fraction, "breast_cancer")
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std[std == 0] = 1.0
    return Dataset(
        name="breast_cancer",
        x_train=np.ascontiguousarray((x_tr - mean) / std, dtype=np.float32),
        y_train=y_tr,
        x_test=np.ascontiguousarray((x_te - mean) / std, dtype=np.float32),
        y_test=y_te,
        num_classes=2,
        input_shape=(30,),
    )


def load_dataset(
    name: str = "digits",
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    test_fraction: float = 0.25,
) -> Dataset:
    """Load a dataset by name (one of :data:`DATASETS`).

    - ``"digits"``: scikit-learn's 8x8 digits (1797 images), scaled to [0, 1], shape (1, 8, 8).
    - ``"breast_cancer"``: scikit-learn's Wisconsin set (569 x 30), standardised with the
      training split's mean and standard deviation, shape (30,), 2 classes.
    - ``"mnist"``: the four IDX files (``.gz`` or raw) from ``data_dir``; when ``data_dir`` is
      None, ``$FORTIS_MNIST_DIR`` and then ``<repo>/../shared/data/mnist`` are tried. Pixels are
      scaled to [0, 1] and then normalised with the training mean and standard deviation.
      The official split is used, so ``seed`` and ``test_fraction`` are ignored.

    For the scikit-learn sets the split is stratified and deterministic in ``seed``.

    Raises :class:`DatasetError` for an unknown name, a bad ``test_fraction``, a missing MNIST
    folder (the message lists the folders tried and how to pass ``--data-dir``) or a malformed
    IDX file (the message names the file).
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise DatasetError(f"dataset: unknown name {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "mnist":
        return _load_mnist(data_dir)
    if not (isinstance(test_fraction, float | int) and 0.0 < float(test_fraction) < 1.0):
        raise DatasetError(f"{name}: test_fraction must be in (0, 1), got {test_fraction!r}")
    if name == "digits":
        return _load_digits(int(seed), float(test_fraction))
    return _load_breast_cancer(int(seed), float(test_fraction))
