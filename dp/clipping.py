"""Per-update L2 clipping and adaptive clipping to a target quantile.

Adaptive clipping follows Andrew, Thakkar, McMahan & Ramaswamy, "Differentially private learning
with adaptive clipping" (NeurIPS 2021), Algorithm 1 with its noise split:

* each sampled client reports ``b_i = 1[||Delta_i|| <= C]``; the server releases the noised
  fraction ``b~ = (sum_i (b_i - 1/2) + N(0, sigma_b^2)) / m + 1/2`` where ``m`` is the expected
  number of sampled clients (the centring makes the count's sensitivity 1/2);
* the clip norm moves geometrically towards the target quantile ``gamma``:
  ``C <- C * exp(-eta_C (b~ - gamma))``;
* the privacy budget of a total noise multiplier ``z`` is split: the updates get
  ``z_Delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)`` and the count is a Gaussian query with noise
  multiplier ``2 sigma_b``. Both queries act on the same sampled clients, so one round costs
  exactly one Poisson-sampled Gaussian of multiplier ``z``; the accountant composes the pair
  (``Accountant.compose_gaussian(clipper.noise_multipliers, q)``) and ``dp-accounting`` merges
  them into that single Gaussian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dp.errors import PrivacyParameterError
from dp.rng import NoiseSource

__all__ = ["AdaptiveClipper", "ClipReport", "clip_updates"]


@dataclass(frozen=True)
class ClipReport:
    """What the clipping stage did: the norm bound, every row's norm before clipping, and which
    rows were clipped (``norm > clip_norm``)."""

    clip_norm: float
    norms: np.ndarray
    clipped: np.ndarray

    @property
    def clipped_count(self) -> int:
        return int(self.clipped.sum())

    @property
    def unclipped(self) -> np.ndarray:
        """``b_i = 1[norm_i <= clip_norm]`` as a bool array (adaptive clipping's bits)."""
        return ~self.clipped


def clip_updates(updates: np.ndarray, clip_norm: float) -> tuple[np.ndarray, ClipReport]:
    """Scale every row of an ``(n, d)`` array to L2 norm at most ``clip_norm``.

    Rows with norm ``<= clip_norm`` are returned unchanged; others are multiplied by
    ``clip_norm / norm`` (the result's norm is ``clip_norm`` up to one rounding).

    Raises:
        PrivacyParameterError: ``updates`` is not a finite 2-D float array, or ``clip_norm``
            is not finite and > 0.
    """
    x = np.asarray(updates)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise PrivacyParameterError(f"updates must be a 2-D float array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise PrivacyParameterError("updates contain non-finite values")
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise PrivacyParameterError(f"clip_norm must be finite and > 0, got {clip_norm}")
    norms = np.linalg.norm(x, axis=1)
    clipped = norms > clip_norm
    scale = np.ones_like(norms)
    scale[clipped] = clip_norm / norms[clipped]
    return x * scale[:, None].astype(x.dtype), ClipReport(float(clip_norm), norms, clipped)


class AdaptiveClipper:
    """Geometric quantile tracking of the clip norm with a privately noised count.

    Args:
        initial_clip: the first round's clip norm ``C_0 > 0``.
        noise_multiplier: the round's total noise multiplier ``z`` (what the accountant sees).
        count_stddev: ``sigma_b``, the noise on the count of unclipped clients; must satisfy
            ``2 sigma_b > z`` so that ``z_Delta`` is finite. The paper suggests
            ``sigma_b = m / 20``.
        expected_clients: ``m``, the expected number of sampled clients per round.
        target_quantile: ``gamma`` in [0, 1] (the paper's default 0.5).
        learning_rate: ``eta_C > 0`` (the paper's default 0.2).

    Raises:
        PrivacyParameterError: a parameter out of range, including ``2 sigma_b <= z``.
    """

    def __init__(
        self,
        initial_clip: float,
        noise_multiplier: float,
        count_stddev: float,
        expected_clients: float,
        target_quantile: float = 0.5,
        learning_rate: float = 0.2,
    ) -> None:
        for name, v in (
            ("initial_clip", initial_clip),
            ("noise_multiplier", noise_multiplier),
            ("count_stddev", count_stddev),
            ("expected_clients", expected_clients),
            ("learning_rate", learning_rate),
        ):
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise PrivacyParameterError(f"{name} must be finite and > 0, got {v!r}")
        if not 0 <= target_quantile <= 1:
            raise PrivacyParameterError(f"target_quantile must be in [0, 1], got {target_quantile}")
        if 2 * count_stddev <= noise_multiplier:
            raise PrivacyParameterError(
                f"count_stddev={count_stddev} leaves no budget for the updates: need "
                f"2 * count_stddev > noise_multiplier={noise_multiplier}"
            )
        self.clip_norm = float(initial_clip)
        self.noise_multiplier = float(noise_multiplier)
        self.count_stddev = float(count_stddev)
        self.expected_clients = float(expected_clients)
        self.target_quantile = float(target_quantile)
        self.learning_rate = float(learning_rate)

    @property
    def update_noise_multiplier(self) -> float:
        """``z_Delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)``: noise std on the sum is z_Delta * C."""
        return (self.noise_multiplier**-2 - (2 * self.count_stddev) ** -2) ** -0.5

    @property
    def noise_multipliers(self) -> tuple[float, float]:
        """``(z_Delta, 2 sigma_b)``: the two Gaussian queries of one round, for the accountant."""
        return (self.update_noise_multiplier, 2 * self.count_stddev)

    def update(self, unclipped: np.ndarray, source: NoiseSource) -> float:
        """Release the noised unclipped fraction and move the clip norm; returns the new norm.

        Args:
            unclipped: bool array, ``b_i`` of this round's clients (``ClipReport.unclipped``).
            source: the noise source for the count's Gaussian noise.
        """
        b = np.asarray(unclipped, dtype=bool)
        noisy = float(np.sum(b)) - b.size / 2 + float(source.normal(1, self.count_stddev)[0])
        frac = noisy / self.expected_clients + 0.5
        self.last_fraction = frac
        self.clip_norm *= math.exp(-self.learning_rate * (frac - self.target_quantile))
        return self.clip_norm
