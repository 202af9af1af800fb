"""Distributed DP noise under secure aggregation, with verifiable noise shares.

In a round with :class:`NoiseConfig`, every client adds an integer noise share ``e_i`` to its
fixed-point input before masking, so the server only ever unmasks ``sum_A (q_i + e_i)``: the
aggregate with the sum of the accepted clients' shares (discrete Gaussian, Kairouz, Liu &
Steinke 2021, or Skellam, Agarwal, Kairouz & Liu 2021; samplers of :mod:`dp.samplers`).

Why the shares are verifiable
-----------------------------
A share has norm about ``sigma * sqrt(d)``, often many times the clip norm, and the filter
never looks at it (it reads the sketches of the noise-free inputs, :mod:`protocol.filtering`):
a Byzantine client could put an attack vector where its noise should be. So a share is not
drawn freely: it is the deterministic output of :func:`noise_share` on a 32-byte seed the
client draws, and the client sends that seed to the key holder, Paillier-encrypted, with its
sketch. After the filter has fixed the accepted set ``A``, the key holder regenerates every
accepted share from its seed and returns ``Enc(P sum_A e_i)``; the server folds it into the
verification, which then checks ``P sum_A (q_i + e_i) == sum_A s_i + P sum_A e_i``. A client
that masked anything but ``q_i + noise_share(seed_i)`` -- an attack vector in place of its
noise included -- makes the check fail and the round is not applied (DESIGN.md, "Noise shares
must be verifiable too").

What each party learns
----------------------
* The server: the seeds only as Paillier ciphertexts; the noisy aggregate, as before.
* The key holder: every accepted client's noise share (it regenerates them), hence the total
  noise of the aggregate. DP therefore protects clients against the server and everyone else,
  not against the key holder combined with the released aggregate; the key holder still sees
  no client's update or sketch (the README's threat model states this).
* A client can choose its seed, so by trying ``2**g`` seeds it can shift its own share by about
  ``sigma * sqrt(2 g ln 2)`` along one direction it picked (7.4 sigma for ``g = 40``); that is
  the extent of its control, far below an attack vector of norm ``sigma * sqrt(d)``. Honest
  clients' noise is unaffected, and privacy accounting must count only honest clients' shares.

Fixed point: the noise is added in the round's integer units (``sigma * scale`` per client), and
the round's encoder leaves room for it (:meth:`NoiseConfig.headroom`). The input and the noise
must live on the same lattice -- a discrete Gaussian's privacy comes from the overlap of shifted
copies of it, and a noise coarser than the input's grid would not overlap at all -- so the
round's fixed-point scale is capped instead (:meth:`NoiseConfig.max_frac_bits`): a share's
standard deviation is at most ``2**14`` integer units, which keeps the samplers' tables small,
and the coarser resolution costs nothing next to the noise (a step of at most ``sigma / 2**13``).
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import ProtocolConfigError

__all__ = [
    "NoiseConfig",
    "noise_share",
    "NOISE_MECHANISMS",
    "NOISE_SEED_BYTES",
    "MAX_INTEGER_SIGMA",
]

NOISE_MECHANISMS = ("ddg", "skellam")
NOISE_SEED_BYTES = 32
#: The samplers' tables stop where the tail mass is 2**-64: about 9.5 standard deviations.
_TAIL_SIGMAS = 10.0


@dataclass(frozen=True)
class NoiseConfig:
    """Per-client distributed noise of a filtered round.

    Parameters
    ----------
    mechanism:
        ``"ddg"`` (discrete Gaussian) or ``"skellam"``.
    sigma:
        Standard deviation of ONE client's share, in update units (the integer share has
        standard deviation ``sigma * scale``). The total noise on a sum over ``m`` accepted
        clients has standard deviation ``sigma * sqrt(m)``; calibrate with :mod:`dp` for the
        smallest ``m`` the round can have.

    Raises :class:`ProtocolConfigError` for an unknown mechanism or a non-positive sigma.
    """

    mechanism: str
    sigma: float

    def __post_init__(self) -> None:
        if self.mechanism not in NOISE_MECHANISMS:
            raise ProtocolConfigError(
                f"noise mechanism must be one of {NOISE_MECHANISMS}, got {self.mechanism!r}"
            )
        s = self.sigma
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
            raise ProtocolConfigError(f"noise sigma must be a positive finite number, got {s!r}")
        object.__setattr__(self, "sigma", float(s))

    @property
    def headroom(self) -> float:
        """What the encoder must add to ``value_range`` so that input plus share never
        overflows: ``10 sigma`` (the samplers' support ends at about 9.5 sigma)."""
        return _TAIL_SIGMAS * self.sigma

    @property
    def digest(self) -> bytes:
        """SHA-256 of the parameters (part of the round digest)."""
        raw = self.mechanism.encode()
        return hashlib.sha256(
            b"fortis/noise-config/v1"
            + struct.pack(">I", len(raw))
            + raw
            + struct.pack(">d", self.sigma)
        ).digest()

    @property
    def max_frac_bits(self) -> int:
        """The finest fixed-point precision for this noise: ``sigma * 2**frac_bits`` at most
        :data:`MAX_INTEGER_SIGMA`.

        Raises :class:`ProtocolConfigError` if not even ``frac_bits = 0`` fits."""
        bits = math.floor(math.log2(MAX_INTEGER_SIGMA / self.sigma))
        if bits < 0:
            raise ProtocolConfigError(
                f"noise sigma={self.sigma} is above {MAX_INTEGER_SIGMA:g}: scale the updates down"
            )
        return bits

    def integer_sigma(self, scale: float) -> float:
        """The share's standard deviation in the round's integer units.

        Raises :class:`ProtocolConfigError` if it is below 1 (the integer noise would no longer
        be the stated mechanism: raise ``sigma`` or the fixed-point precision)."""
        s = self.sigma * float(scale)
        if s < 1.0:
            raise ProtocolConfigError(
                f"noise sigma={self.sigma} is {s:.3g} integer units at scale {scale}: below 1"
            )
        if s > MAX_INTEGER_SIGMA:
            raise ProtocolConfigError(
                f"noise sigma={self.sigma} is {s:.3g} integer units at scale {scale}, above "
                f"{MAX_INTEGER_SIGMA:g}: use frac_bits <= {self.max_frac_bits} (the default)"
            )
        return s


#: Largest standard deviation of a share in integer units (the samplers' tables stay small).
MAX_INTEGER_SIGMA = float(1 << 14)


@lru_cache(maxsize=8)
def _sampler(mechanism: str, integer_sigma: float):
    from dp.samplers import discrete_gaussian_table, skellam_table

    if mechanism == "ddg":
        return discrete_gaussian_table(integer_sigma)
    return skellam_table(integer_sigma**2)


def noise_share(config: NoiseConfig, seed: bytes, dim: int, scale: float) -> np.ndarray:
    """The noise share of ``seed``: ``dim`` int64 draws of the configured integer law with
    standard deviation ``config.sigma * scale``, a deterministic function of
    ``(config, seed, dim, scale)`` (the table sampler of :mod:`dp.samplers` on a ChaCha20
    stream keyed by the seed).

    Raises :class:`ProtocolConfigError` for a seed that is not 32 bytes, or a scale at which
    the share's integer standard deviation is below 1 or above :data:`MAX_INTEGER_SIGMA`.
    """
    from dp.rng import NoiseSource

    if not isinstance(seed, (bytes, bytearray)) or len(seed) != NOISE_SEED_BYTES:
        raise ProtocolConfigError(f"a noise seed is {NOISE_SEED_BYTES} bytes")
    sampler = _sampler(config.mechanism, config.integer_sigma(scale))
    return sampler.sample(int(dim), NoiseSource(seed=bytes(seed)))
