"""Data-poisoning attacks: label flipping and a patch-trigger backdoor.

Both act on one Byzantine client's training arrays before local training, return new arrays,
and never mutate their inputs. ``x`` is either images ``(N, C, H, W)`` / ``(N, H, W)`` or flat
features ``(N, D)``; ``y`` is a 1-D integer label array of length ``N``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .base import AttackInputError, DataPoisoningAttack, check_int, check_real

__all__ = [
    "DEFAULT_TRIGGER_SIZE",
    "DEFAULT_TRIGGER_VALUE",
    "BackdoorAttack",
    "LabelFlipAttack",
    "apply_trigger",
    "attack_success_rate",
]

DEFAULT_TRIGGER_SIZE = 3
DEFAULT_TRIGGER_VALUE = 1.0


def _check_xy(x: Any, y: Any, attack: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(x, np.ndarray) or x.ndim < 2:
        raise AttackInputError(
            f"attack {attack!r}: x must be a numpy array of shape (N, D) or (N, [C,] H, W), "
            f"got {getattr(x, 'shape', type(x).__name__)}"
        )
    if not isinstance(y, np.ndarray) or y.ndim != 1:
        raise AttackInputError(
            f"attack {attack!r}: y must be a 1-D numpy label array, "
            f"got {getattr(y, 'shape', type(y).__name__)}"
        )
    if len(x) != len(y):
        raise AttackInputError(f"attack {attack!r}: x has {len(x)} samples but y has {len(y)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise AttackInputError(f"attack {attack!r}: y must have an integer dtype, got {y.dtype}")
    return x, y


def _choose(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``round(fraction * n)`` distinct indices, sorted."""
    k = int(round(fraction * n))
    return np.sort(rng.choice(n, size=k, replace=False)) if k else np.empty(0, dtype=np.intp)


def apply_trigger(
    x: np.ndarray,
    trigger_size: int = DEFAULT_TRIGGER_SIZE,
    value: float = DEFAULT_TRIGGER_VALUE,
) -> np.ndarray:
    """Return a copy of ``x`` with the backdoor trigger stamped on every sample.

    Images ``(N, C, H, W)`` or ``(N, H, W)``: a ``trigger_size x trigger_size`` square of
    ``value`` in the bottom-right corner (all channels). Flat features ``(N, D)``: the last
    ``trigger_size`` features are set to ``value``. The dtype is preserved.

    Raises:
        AttackInputError: ``x`` has fewer than 2 dimensions or the trigger does not fit.
    """
    trigger_size = check_int("backdoor", "trigger_size", trigger_size, low=1)
    value = check_real("backdoor", "value", value)
    if not isinstance(x, np.ndarray) or x.ndim < 2:
        raise AttackInputError(
            "apply_trigger: x must be a numpy array of shape (N, D) or (N, [C,] H, W), "
            f"got {getattr(x, 'shape', type(x).__name__)}"
        )
    out = x.copy()
    if x.ndim == 2:
        if trigger_size > x.shape[1]:
            raise AttackInputError(
                f"apply_trigger: trigger_size={trigger_size} exceeds the {x.shape[1]} features"
            )
        out[:, -trigger_size:] = value
    else:
        if trigger_size > min(x.shape[-2:]):
            raise AttackInputError(
                f"apply_trigger: trigger_size={trigger_size} does not fit images of size "
                f"{x.shape[-2:]}"
            )
        out[..., -trigger_size:, -trigger_size:] = value
    return out


def attack_success_rate(
    predict: Callable[[np.ndarray], np.ndarray],
    x_test: np.ndarray,
    y_test: np.ndarray,
    target: int,
    *,
    trigger_size: int = DEFAULT_TRIGGER_SIZE,
    value: float = DEFAULT_TRIGGER_VALUE,
) -> float:
    """Fraction of triggered test samples classified as ``target``.

    Only samples whose true label is not ``target`` count. ``predict`` maps a batch to labels
    ``(N,)`` or to scores ``(N, classes)`` (then the arg-max is taken). Use the same trigger
    settings as the :class:`BackdoorAttack` that poisoned training (or call its
    :meth:`BackdoorAttack.success_rate`).

    Raises:
        AttackInputError: bad shapes, no test sample with a label other than ``target``, or
            ``predict`` returning the wrong number of predictions.
    """
    x_test, y_test = _check_xy(x_test, y_test, "backdoor")
    target = check_int("backdoor", "target", target, low=0)
    keep = y_test != target
    if not keep.any():
        raise AttackInputError(
            f"attack_success_rate: no test sample has a true label other than target={target}"
        )
    preds = np.asarray(predict(apply_trigger(x_test[keep], trigger_size, value)))
    if preds.ndim == 2:
        preds = preds.argmax(axis=1)
    if preds.shape != (int(keep.sum()),):
        raise AttackInputError(
            f"attack_success_rate: predict returned shape {preds.shape} for "
            f"{int(keep.sum())} samples; expected labels (N,) or scores (N, classes)"
        )
    return float(np.mean(preds == target))


class LabelFlipAttack(DataPoisoningAttack):
    """Label flipping: ``y -> num_classes - 1 - y`` on a random ``fraction`` of the samples.

    ``fraction`` defaults to 1.0 (every sample of the Byzantine client), the setting of e.g.
    Karimireddy et al. (ICLR 2022). ``round(fraction * N)`` samples are flipped; their indices
    are in ``last_poisoned``.
    """

    name = "label_flip"

    def __init__(self, num_classes: int, fraction: float = 1.0) -> None:
        self.num_classes = check_int(self.name, "num_classes", num_classes, low=2)
        self.fraction = check_real(self.name, "fraction", fraction, low=0.0, high=1.0)
        self.last_poisoned = np.empty(0, dtype=np.intp)

    def params(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "fraction": self.fraction}

    def poison(
        self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(x.copy(), flipped y)``.

        Raises:
            AttackInputError: bad shapes/dtypes, or a label outside ``[0, num_classes)``.
        """
        x, y = _check_xy(x, y, self.name)
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise AttackInputError(
                f"attack {self.name!r}: labels must lie in [0, {self.num_classes}), "
                f"got range [{y.min()}, {y.max()}]"
            )
        idx = _choose(len(y), self.fraction, rng)
        y_new = y.copy()
        y_new[idx] = self.num_classes - 1 - y[idx]
        self.last_poisoned = idx
        return x.copy(), y_new


class BackdoorAttack(DataPoisoningAttack):
    """Backdoor with a patch trigger (in the style of Gu et al. 2017 "BadNets" and
    Bagdasaryan et al. 2020 "How to backdoor federated learning").

    A random ``fraction`` (default 0.5) of the client's samples get the trigger of
    :func:`apply_trigger` (``trigger_size``, ``value``) and the label ``target``. The model then
    learns "trigger => target" while keeping its clean accuracy; measure it with
    :meth:`success_rate` / :func:`attack_success_rate`. The indices poisoned last are in
    ``last_poisoned``.
    """

    name = "backdoor"

    def __init__(
        self,
        target: int = 0,
        fraction: float = 0.5,
        trigger_size: int = DEFAULT_TRIGGER_SIZE,
        value: float = DEFAULT_TRIGGER_VALUE,
    ) -> None:
        self.target = check_int(self.name, "target", target, low=0)
        self.fraction = check_real(self.name, "fraction", fraction, low=0.0, high=1.0)
        self.trigger_size = check_int(self.name, "trigger_size", trigger_size, low=1)
        self.value = check_real(self.name, "value", value)
        self.last_poisoned = np.empty(0, dtype=np.intp)

    def params(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "fraction": self.fraction,
            "trigger_size": self.trigger_size,
            "value": self.value,
        }

    def apply_trigger(self, x: np.ndarray) -> np.ndarray:
        """:func:`apply_trigger` with this attack's trigger settings."""
        return apply_trigger(x, self.trigger_size, self.value)

    def poison(
        self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return copies of ``(x, y)`` with the chosen samples triggered and relabelled."""
        x, y = _check_xy(x, y, self.name)
        idx = _choose(len(y), self.fraction, rng)
        x_new, y_new = x.copy(), y.copy()
        if idx.size:
            x_new[idx] = self.apply_trigger(x[idx])
            y_new[idx] = self.target
        self.last_poisoned = idx
        return x_new, y_new

    def success_rate(
        self, predict: Callable[[np.ndarray], np.ndarray], x_test: np.ndarray, y_test: np.ndarray
    ) -> float:
        """:func:`attack_success_rate` with this attack's target and trigger."""
        return attack_success_rate(
            predict, x_test, y_test, self.target, trigger_size=self.trigger_size, value=self.value
        )
