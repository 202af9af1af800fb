"""Torch models for the robustness lab and flat-vector access to their parameters.

The federated code works on flat float32 parameter vectors (what robust rules and secure
aggregation see); :func:`get_flat_params` and :func:`set_flat_params` translate between a module
and that vector, in ``model.parameters()`` order. The models have no buffers (no batch norm), so
the parameter vector is the whole model state.

Models (``MODELS``):

- ``"logreg"``: flatten + linear (multinomial logistic regression).
- ``"mlp"``: flatten, Linear(d, 128), ReLU, Linear(128, num_classes).
- ``"cnn"``: for ``(C, H, W)`` inputs: conv5x5/stride 2 (16 channels)-ReLU, conv3x3/stride 2
  (32 channels)-ReLU, adaptive max pooling to 3x3, Linear(288, 64), ReLU,
  Linear(64, num_classes). About 24k parameters at 10 classes; works for 28x28 MNIST
  (14x14 -> 7x7 -> 3x3) and for 8x8 digits (4x4 -> 2x2 -> 3x3). Strided convolutions instead of
  conv + max-pool stages: measured 2.5x faster per step on one CPU thread with equal or better
  MNIST accuracy (0.970 vs 0.958 after 1500 SGD steps of batch 32).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

from simulations.errors import SimulationError

__all__ = [
    "MODELS",
    "ModelError",
    "ParamsError",
    "build_model",
    "check_flat_params",
    "get_flat_params",
    "num_params",
    "set_flat_params",
]

MODELS: tuple[str, ...] = ("logreg", "mlp", "cnn")

_MLP_HIDDEN = 128


class ModelError(SimulationError):
    """A model cannot be built for the requested name, input shape or class count."""


class ParamsError(SimulationError):
    """A flat parameter vector does not fit the model (wrong shape/length, or non-finite)."""


def _check_shape(input_shape: object) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"model: input_shape must be a tuple of ints, got {input_shape!r}"
        ) from exc
    if not shape or any(s < 1 for s in shape):
        raise ModelError(f"model: input_shape must be non-empty and positive, got {shape}")
    return shape


def _cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ModelError(
            f"model 'cnn': needs an image input_shape (channels, height, width), got {input_shape}"
        )
    channels, height, width = input_shape
    if height < 4 or width < 4:
        raise ModelError(f"model 'cnn': images must be at least 4x4, got {height}x{width}")
    return nn.Sequential(
        nn.Conv2d(channels, 16, kernel_size=5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(3),
        nn.Flatten(),
        nn.Linear(32 * 9, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, seed: int = 0
) -> nn.Module:
    """Build model ``name`` (one of :data:`MODELS`) with deterministic initialisation.

    The initial weights depend only on ``(name, input_shape, num_classes, seed)``; torch's global
    RNG state is left untouched. The model is returned in float32 on the CPU.

    Raises :class:`ModelError` for an unknown name, a malformed ``input_shape``, fewer than two
    classes, or an input shape the model cannot take (``"cnn"`` needs ``(C, H, W)``).
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ModelError(f"model: unknown name {name!r}; choose one of {', '.join(MODELS)}")
    shape = _check_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise ModelError(f"model: num_classes must be an integer, got {num_classes!r}")
    if num_classes < 2:
        raise ModelError(f"model: num_classes must be >= 2, got {num_classes}")
    d = math.prod(shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if name == "logreg":
            model: nn.Module = nn.Sequential(nn.Flatten(), nn.Linear(d, num_classes))
        elif name == "mlp":
            model = nn.Sequential(
                nn.Flatten(),
                nn.Linear(d, _MLP_HIDDEN),
                nn.ReLU(),
                nn.Linear(_MLP_HIDDEN, num_classes),
            )
        else:
            model = _cnn(shape, int(num_classes))
    return model.float()


def num_params(model: nn.Module) -> int:
    """Length of the model's flat parameter vector."""
    return sum(p.numel() for p in model.parameters())


def get_flat_params(model: nn.Module) -> np.ndarray:
    """A fresh 1-D float32 numpy copy of all parameters, in ``model.parameters()`` order."""
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return flat.to(torch.float32).cpu().numpy().copy()


def check_flat_params(vec: object, expected: int, *, party: str = "model") -> np.ndarray:
    arr = np.asarray(vec)
    if arr.ndim != 1:
        raise ParamsError(f"{party}: parameter vector must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != expected:
        raise ParamsError(
            f"{party}: parameter vector has length {arr.shape[0]}, the model has {expected} parameters"
        )
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise ParamsError(f"{party}: parameter vector must be numeric, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr))
        raise ParamsError(
            f"{party}: parameter vector has {bad.size} non-finite entries (first at index {bad[0]})"
        )
    return arr


def set_flat_params(model: nn.Module, vec: np.ndarray) -> None:
    """Copy a flat vector (as produced by :func:`get_flat_params`) into the model in place.

    Raises :class:`ParamsError` if ``vec`` is not 1-D, has the wrong length, is not numeric, or
    holds NaN/Inf. On error the model is left unchanged.
    """
    arr = check_flat_params(vec, num_params(model))
    src = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(src[offset : offset + n].view_as(p))
            offset += n
