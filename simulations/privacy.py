"""Differential privacy in the simulations: where the noise goes and what it costs.

``--dp-epsilon E --dp-delta D --dp-mode MODE`` (:data:`~simulations.config.DP_MODES`):

``central``
    Every client clips its update to C (``--clip``); the defence runs on the noise-free clipped
    updates (in ``--secure`` mode the filter reads noise-free sketches); the server then adds
    Gaussian noise to the aggregate. The noise has standard deviation ``z * C`` on the *sum*
    of the aggregated updates (:class:`dp.CentralGaussian`), so ``z * C / m`` on the mean of
    the ``m`` clients aggregated, which is what the model moves by. ``z`` is
    :func:`dp.noise_multiplier_for` ``(E, D, rounds, q)``: the smallest multiplier whose
    ``rounds``-fold Poisson-sampled composition is (E, D)-DP at the client level.
``before_filter``
    Harmful, for demonstration only: each honest participant adds its share
    ``N(0, (z C)^2 / m)`` of the same noise to its clipped update *before* the defence reads
    it (the sum of the m shares has the central std ``z C``), and the defence runs on the
    noisy rows. The Byzantine clients send their crafted rows without noise: nothing in this
    placement checks a noise share, so an attacker is free to skip it (or to hide an attack
    where its noise should be). The accounting is the central one, which assumes every
    participant added its share -- a Byzantine client need not, so even the privacy claim is
    weaker than stated.
``distributed``
    ``--secure`` only: every client adds a verifiable integer noise share before masking
    (:class:`DistributedPrivacy`); the filter reads noise-free sketches and the key holder
    checks the shares through the verification of the sum. Accounted under replace-one
    (sensitivity 2C), not add/remove: a client's own share would otherwise change the noise
    variance between the neighbouring runs (``dp/NOTES.md``); needs q = 1 and no dropouts.
``local``
    Every client trains with Opacus' DP-SGD (:mod:`simulations.training`); the per-client
    sample-level epsilon comes from Opacus' RDP accountant. The noise widens the honest spread
    the defence sees.

Sampling: with ``--dp-sampling-rate q`` below 1, each client takes part in a round
independently with probability q (Poisson sampling, the accountant's model). At q = 1 (the
default) every client takes part in every round and the accountant composes the unsampled
Gaussian mechanism.

The accountant (:class:`dp.Accountant`, Google's ``dp-accounting``) advances once per round
whose aggregate is released (noised and applied); a round skipped or not applied releases
nothing and costs nothing. Noise comes from :class:`dp.NoiseSource` (ChaCha20) keyed by a hash
of the run's seed: deterministic, so a simulation is reproducible -- a real release keys it
from ``os.urandom`` instead.

Caveat (documented, not hidden): the accounting treats one round as the Gaussian mechanism
on a sum of updates each of norm at most C. A robust rule's selection depends on the updates
themselves; the guarantee as computed is that of the noised sum of the accepted, clipped
updates (the standard clip -> filter -> noise placement), not a sensitivity analysis of the
filter's choice.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Any

import numpy as np

from simulations.config import SimulationConfig

__all__ = ["CentralPrivacy", "DistributedPrivacy", "noise_multiplier", "noise_seed"]

#: The domain-separation tag of the noise seed derived from a run's seed.
_SEED_TAG = b"fortis.simulations.dp-noise/1"


@functools.lru_cache(maxsize=64)
def noise_multiplier(epsilon: float, delta: float, rounds: int, sampling_rate: float) -> float:
    """:func:`dp.noise_multiplier_for` (cached: preflight and the run ask the same)."""
    import dp

    return dp.noise_multiplier_for(epsilon, delta, rounds, sampling_rate)


def noise_seed(seed: int) -> bytes:
    """The 32-byte :class:`dp.NoiseSource` key of a run with ``seed``."""
    return hashlib.sha256(_SEED_TAG + int(seed).to_bytes(16, "little", signed=True)).digest()


class CentralPrivacy:
    """The noise and the ledger of one ``central`` or ``before_filter`` run.

    :meth:`release` noises the aggregate (central), :meth:`noise_rows` the honest rows
    (before_filter); :meth:`account` advances the accountant by one released round.
    """

    def __init__(self, config: SimulationConfig) -> None:
        import dp

        assert config.dp_epsilon is not None and config.clip is not None
        self.config = config
        self.mode = config.dp_mode
        self.sampling_rate = float(config.dp_sampling_rate)
        self.z = noise_multiplier(
            float(config.dp_epsilon), float(config.dp_delta), config.rounds, self.sampling_rate
        )
        self.mechanism = dp.CentralGaussian(self.z, float(config.clip))
        self.source = dp.NoiseSource(seed=noise_seed(config.seed))
        self.accountant = dp.Accountant(float(config.dp_delta))
        #: The noise added in the last round, as it moved the model (on the mean; central),
        #: or the rows' noise (before_filter).
        self.last_noise: np.ndarray | None = None
        self.epsilons: list[float] = []

    @property
    def sigma_sum(self) -> float:
        """Noise standard deviation on the sum of the aggregated updates: ``z * C``."""
        return self.mechanism.sigma

    def release(self, vector: np.ndarray, aggregated: int) -> tuple[np.ndarray, float]:
        """``vector`` (the mean of ``aggregated`` clipped updates) plus the central noise:
        ``N(0, (z C)^2)`` on the sum, i.e. std ``z C / aggregated`` on the mean. Returns the
        noised mean (float32) and that std."""
        m = max(1, int(aggregated))
        total = np.asarray(vector, dtype=np.float64) * m
        noised, report = self.mechanism.add_noise(total, self.source)
        self.last_noise = (noised - total) / m
        return (noised / m).astype(np.float32), report.sigma / m

    def noise_rows(self, X: np.ndarray, honest: np.ndarray) -> tuple[np.ndarray, float]:
        """before_filter: each honest row plus its share ``N(0, (z C)^2 / m)`` (m = the rows
        of the round). Returns the rows and the share's std."""
        m = len(X)
        share = self.sigma_sum / math.sqrt(m)
        X = np.array(X, dtype=np.float32)
        rows = np.flatnonzero(honest)
        noise = self.source.normal(len(rows) * X.shape[1], share).reshape(len(rows), X.shape[1])
        X[rows] += noise.astype(np.float32)
        self.last_noise = noise
        return X, share

    def account(self) -> float:
        """One released round: compose the sampled Gaussian, return epsilon spent so far."""
        self.accountant.compose(self.mechanism.event(self.sampling_rate))
        eps = float(self.accountant.epsilon())
        self.epsilons.append(eps)
        return eps

    def summary(self) -> dict[str, Any]:
        c = self.config
        return {
            "mode": self.mode,
            "target_epsilon": float(c.dp_epsilon),
            "delta": float(c.dp_delta),
            "sampling_rate": self.sampling_rate,
            "noise_multiplier": self.z,
            "clip": float(c.clip),
            "noise_std_sum": self.sigma_sum,
            "epsilon_per_round": list(self.epsilons),
            "epsilon": self.epsilons[-1] if self.epsilons else 0.0,
            "accountant": self.accountant.to_dict(),
            "noise_source": "ChaCha20, keyed by sha256(tag || run seed): deterministic",
        }


def check_distributed(config: SimulationConfig) -> None:
    """Refuse a distributed-noise run the accountant cannot cover (each client's share comes
    and goes with it, so every round must carry the honest shares it was sized for).

    Raises :class:`~simulations.errors.ConfigError` naming the option.
    """
    from simulations.errors import ConfigError

    if config.dp_sampling_rate < 1:
        raise ConfigError(
            "--dp-mode distributed needs --dp-sampling-rate 1: the shares are sized for the "
            f"m_min = clients - 2f = {config.clients - 2 * (config.byzantine or 0)} honest "
            "shares of a full round, and a Poisson-sampled round may carry fewer"
        )
    if config.dropout > 0:
        raise ConfigError(
            "--dp-mode distributed cannot run with --dropout: a dropped client's noise "
            "share leaves the sum, which then carries less noise than accounted"
        )


class DistributedPrivacy:
    """The noise shares and the ledger of one ``--dp-mode distributed`` run (``--secure``).

    Every client adds a seeded integer share (:class:`protocol.NoiseConfig`: discrete
    Gaussian or Skellam) before masking; the key holder regenerates the accepted shares so the
    verification covers the noisy sum, and the filter reads the noise-free sketches. The
    released sum carries the shares of the accepted clients. Privacy counts only the honest
    ones among them, at least ``m_min = clients - 2 f`` (Multi-Krum keeps ``n - f``, up to
    ``f`` of them Byzantine), so each share has standard deviation ``sigma_total / sqrt(m_min)``
    where ``sigma_total = z' C`` and ``z'`` is the smallest multiplier (within 2%) for which the
    accountant of the *discrete* mechanism (:class:`dp.DistributedDiscreteGaussian` /
    :class:`dp.DistributedSkellam` events, at the round's fixed-point scale and with plain
    randomised rounding) meets the target over all rounds.

    Neighbouring relation: **replace-one** (:data:`ADJACENCY`): the protected client takes part
    in both runs and adds its share in both; only its update changes, by up to ``2 C``. Under
    add/remove its own share would change the noise variance as well, which no noise level
    accounts for at model dimensions (``dp/NOTES.md``), so the guarantee is not stated that way;
    at q = 1 this costs twice the central noise (sensitivity ``2 C`` instead of ``C``).

    Refused (:class:`~simulations.errors.ConfigError`), because ``m_min`` would not be a
    lower bound on the honest shares in every round: ``--dp-sampling-rate`` below 1 (Poisson
    sampling leaves any number of clients in a round) and ``--dropout`` (a dropped client's
    share leaves the sum).
    """

    #: The neighbouring relation of the ledger (:data:`dp.accounting.ADJACENCIES`).
    ADJACENCY = "replace_one"

    def __init__(self, config: SimulationConfig, dim: int) -> None:
        import dp
        from dp.accounting import smallest_meeting
        from protocol import NoiseConfig
        from secagg.encoding import FixedPointEncoder

        assert config.dp_epsilon is not None and config.clip is not None
        check_distributed(config)
        self.config = config
        self.mode = "distributed"
        self.sampling_rate = float(config.dp_sampling_rate)
        self.m_min = max(1, config.clients - 2 * config.byzantine)
        c, eps, delta = float(config.clip), float(config.dp_epsilon), float(config.dp_delta)
        cls = (
            dp.DistributedDiscreteGaussian
            if config.dp_mechanism == "ddg"
            else dp.DistributedSkellam
        )

        def build(z: float) -> tuple[Any, float, Any]:
            sigma_total = z * c
            noise = NoiseConfig(config.dp_mechanism, sigma_total / math.sqrt(self.m_min))
            finest = FixedPointEncoder(c + noise.headroom, config.clients, config.secure_bits)
            scale = float(2 ** min(finest.frac_bits, noise.max_frac_bits))
            mech = cls(
                n_clients=self.m_min,
                dim=dim,
                clip_norm=c,
                sigma=sigma_total,
                scale=scale,
                bits=config.secure_bits,
                beta=0.0,
                rotate=False,
            )
            return noise, scale, mech

        def spent(z: float) -> float:
            accountant = dp.Accountant(delta)
            event = build(z)[2].event(self.sampling_rate, config.rounds, adjacency=self.ADJACENCY)
            accountant.compose(event)
            return float(accountant.epsilon())

        # the central multiplier for sensitivity 2C is where the discrete one starts (it can
        # only need more: rounding adds to the sensitivity)
        z0 = 2 * noise_multiplier(eps, delta, config.rounds, self.sampling_rate)
        z = smallest_meeting(spent, eps, lo=z0 / 1.02, hi=z0, rel_tol=0.02)
        self.z = z
        self.noise, self.scale, self.mechanism = build(z)
        self.accountant = dp.Accountant(delta)
        self.epsilons: list[float] = []

    def account(self) -> float:
        """One released round: compose the mechanism's event, return epsilon spent so far."""
        self.accountant.compose(self.mechanism.event(self.sampling_rate, adjacency=self.ADJACENCY))
        eps = float(self.accountant.epsilon())
        self.epsilons.append(eps)
        return eps

    def noise_std_on_mean(self, aggregated: int) -> float:
        """Std of the noise on the mean of ``aggregated`` clients, each adding a share."""
        m = max(1, int(aggregated))
        return self.noise.sigma * math.sqrt(m) / m

    def summary(self) -> dict[str, Any]:
        c = self.config
        return {
            "mode": self.mode,
            "mechanism": c.dp_mechanism,
            "target_epsilon": float(c.dp_epsilon),
            "delta": float(c.dp_delta),
            "sampling_rate": self.sampling_rate,
            "noise_multiplier": self.z,
            "clip": float(c.clip),
            "honest_shares_counted": self.m_min,
            "adjacency": self.ADJACENCY,
            "sensitivity": 2 * float(c.clip),
            "share_std": self.noise.sigma,
            "fixed_point_scale": self.scale,
            "noise_std_sum": self.noise.sigma * math.sqrt(self.m_min),
            "epsilon_per_round": list(self.epsilons),
            "epsilon": self.epsilons[-1] if self.epsilons else 0.0,
            "accountant": self.accountant.to_dict(),
            "noise_source": "each client's share from a 32-byte seed (ChaCha20), verifiable by "
            "the key holder",
        }
