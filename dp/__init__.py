"""fortis.dp: clipping, noise mechanisms and privacy accounting (torch-free leaf package).

* :mod:`dp.accounting` -- client-level (epsilon, delta) across rounds with Poisson client
  sampling, through Google's ``dp-accounting`` (RDP by default, PLD as an option).
* :mod:`dp.clipping` -- per-update L2 clipping and adaptive clipping to a quantile.
* :mod:`dp.samplers` -- exact integer samplers (discrete Gaussian, discrete Laplace, Skellam) and
  vectorised table samplers with a stated, tested distance from the exact law.
* :mod:`dp.mechanisms` -- the central Gaussian mechanism and the distributed discrete Gaussian /
  Skellam mechanisms for secure aggregation (rounding, rotation, modular-wrap check).
* :mod:`dp.rng` -- the cryptographically secure noise source (ChaCha20).
* :mod:`dp.aggregators` -- clipping, filtering, noise and summation as composable stages (TFF's
  aggregation factories), each reporting what it did and to whom; :func:`check_placement`.
* :mod:`dp.calibration` -- the calibrator (:func:`dp.calibrate`): noise for a privacy target and the detection margin it
  leaves the robust filter (:func:`calibrate`).

``NOTES.md`` in this package explains how each mechanism maps onto the accountant.
"""

from dp.accounting import (
    Accountant,
    DistributedDiscreteGaussianEvent,
    GaussianEvent,
    PrivacySpent,
    SkellamEvent,
    ddg_rdp,
    noise_multiplier_for,
    skellam_rdp,
    subsampled_rdp,
)
from dp.aggregators import (
    AggregateOutput,
    Aggregator,
    adaptive_clipping,
    central_noise,
    check_placement,
    clipping,
    from_callable,
    row_noise,
)
from dp.aggregators import mean as mean  # not in __all__: see dp.aggregators
from dp.aggregators import sum as sum  # not in __all__: a star import must not shadow sum()
from dp.calibration import Calibration, DetectionMargin, calibrate, estimate_honest_model
from dp.clipping import AdaptiveClipper, ClipReport, clip_updates
from dp.errors import (
    AccountantStateError,
    AggregatorError,
    CalibrationError,
    DetectionRefusedError,
    DPError,
    ModularWrapError,
    PlacementError,
    PrivacyParameterError,
    UnsupportedDefenceError,
    UnsupportedMechanismError,
)
from dp.mechanisms import (
    CentralGaussian,
    DistributedDiscreteGaussian,
    DistributedSkellam,
    NoiseReport,
    randomized_hadamard,
)
from dp.rng import NoiseSource
from dp.samplers import (
    IntegerTableSampler,
    discrete_gaussian_pmf,
    discrete_gaussian_table,
    sample_discrete_gaussian,
    sample_discrete_laplace,
    sample_skellam,
    skellam_pmf,
    skellam_table,
)

__all__ = [
    "Accountant",
    "AccountantStateError",
    "AdaptiveClipper",
    "AggregateOutput",
    "Aggregator",
    "AggregatorError",
    "Calibration",
    "CalibrationError",
    "CentralGaussian",
    "ClipReport",
    "DPError",
    "DetectionMargin",
    "DetectionRefusedError",
    "DistributedDiscreteGaussian",
    "DistributedDiscreteGaussianEvent",
    "DistributedSkellam",
    "GaussianEvent",
    "IntegerTableSampler",
    "ModularWrapError",
    "NoiseReport",
    "NoiseSource",
    "PlacementError",
    "PrivacyParameterError",
    "PrivacySpent",
    "SkellamEvent",
    "UnsupportedDefenceError",
    "UnsupportedMechanismError",
    "adaptive_clipping",
    "calibrate",
    "central_noise",
    "check_placement",
    "clip_updates",
    "clipping",
    "ddg_rdp",
    "discrete_gaussian_pmf",
    "discrete_gaussian_table",
    "estimate_honest_model",
    "from_callable",
    "noise_multiplier_for",
    "randomized_hadamard",
    "row_noise",
    "sample_discrete_gaussian",
    "sample_discrete_laplace",
    "sample_skellam",
    "skellam_pmf",
    "skellam_rdp",
    "skellam_table",
    "subsampled_rdp",
]
