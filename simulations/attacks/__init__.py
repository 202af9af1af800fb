"""The attack library: Byzantine threat models for federated aggregation, pure numpy.

Model poisoning (``attack.craft(ctx) -> (f, d)`` rows; see :class:`AttackContext`):

=============  ==============================================================================
``none``       the Byzantine clients behave honestly.
``sign_flip``  ``scale * mean`` with ``scale = -1`` (own update negated when limited); the
               sign-flipping fault of Li et al., "RSA: Byzantine-Robust Stochastic Aggregation
               Methods for Distributed Learning", AAAI 2019.
``scaling``    boosting: ``factor * mean``, ``factor = -20`` (explicit boosting, Bhagoji et al.,
               "Analyzing Federated Learning through an Adversarial Lens", ICML 2019).
``gaussian``   ``N(0, sigma^2)`` rows, ``sigma = 200 x`` the RMS coordinate std of the view (the
               Gaussian Byzantine vectors of Blanchard et al., "Machine Learning with
               Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017).
``alie``       ``mean - z * std``, ``z`` from ``n`` and ``f``: Baruch, Baruch & Goldberg, "A Little
               Is Enough: Circumventing Defenses for Distributed Learning", NeurIPS 2019.
``ipm``        ``-eps * mean``, ``eps = 0.1``: Xie, Koyejo & Gupta, "Fall of Empires: Breaking
               Byzantine-tolerant SGD by Inner Product Manipulation", UAI 2020.
``min_max``    ``mean + gamma * p``, largest ``gamma`` keeping the max distance to honest updates
               within their max pairwise distance: Shejwalkar & Houmansadr, "Manipulating the
               Byzantine: Optimizing Model Poisoning Attacks and Defenses for Federated
               Learning", NDSS 2021.
``min_sum``    as ``min_max`` with summed squared distances (same paper).
``mimic``      copy the honest client most extreme along the direction of maximum variance:
               Karimireddy, He & Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets
               via Bucketing", ICLR 2022.
``nan``        NaN rows (crash fault / input-validation probe).
``inf``        ``+inf`` rows.
``adaptive``   tune a base attack's strength (``z``, ``eps``, ``factor``...) to maximise the
               damage ``||aggregate - mean(honest)||`` against the configured defence.
``lying_sketch`` secure filtering only: mask a base attack's rows but sketch a benign vector
               (the honest mean, or the client's own honest update); the protocol's
               verification of the sum against the sketches fails the round.
=============  ==============================================================================

Data poisoning (``attack.poison(x, y, rng) -> (x', y')``):

=============  ==============================================================================
``label_flip`` ``y -> num_classes - 1 - y`` on a fraction of the samples (Tolpegin et al.,
               "Data Poisoning Attacks Against Federated Learning Systems", ESORICS 2020).
``backdoor``   trigger patch (bottom-right square, or last features) + relabel to ``target``
               (Gu et al., "BadNets", 2017; Bagdasaryan et al., "How To Backdoor Federated
               Learning", AISTATS 2020); measure with :func:`attack_success_rate`.
=============  ==============================================================================

Switches (every model-poisoning attack): ``ctx.knowledge`` ``"omniscient"`` (statistics of the
honest updates) or ``"limited"`` (statistics of the Byzantine clients' own honest updates only);
``ctx.collusion`` ``True`` (one shared crafted vector) or ``False`` (each attacker crafts its own
from its own view with its own random stream). See :mod:`simulations.attacks.base`.

Benign faults (:mod:`simulations.attacks.faults`): :class:`DropoutFault`,
:class:`StragglerFault`.

Build attacks by name with :func:`make_attack`; unknown names or parameters raise
:class:`AttackConfigError` listing the valid ones.
"""

from __future__ import annotations

import inspect
from typing import Any

from .adaptive import AdaptiveAttack, damage
from .base import (
    AttackConfigError,
    AttackContext,
    AttackError,
    AttackInputError,
    DataPoisoningAttack,
    ModelPoisoningAttack,
    PerViewAttack,
)
from .data_poisoning import BackdoorAttack, LabelFlipAttack, apply_trigger, attack_success_rate
from .faults import DropoutFault, FaultConfigError, StragglerFault
from .lying_sketch import LyingSketchAttack
from .min_max import MinMaxAttack, MinSumAttack
from .model_poisoning import (
    ALIEAttack,
    GaussianAttack,
    InfAttack,
    IPMAttack,
    MimicAttack,
    NaNAttack,
    NoAttack,
    ScalingAttack,
    SignFlipAttack,
    alie_z_max,
)

__all__ = [
    "ATTACKS",
    "ALIEAttack",
    "AdaptiveAttack",
    "AttackConfigError",
    "AttackContext",
    "AttackError",
    "AttackInputError",
    "BackdoorAttack",
    "DataPoisoningAttack",
    "DropoutFault",
    "FaultConfigError",
    "GaussianAttack",
    "IPMAttack",
    "InfAttack",
    "LabelFlipAttack",
    "LyingSketchAttack",
    "MimicAttack",
    "MinMaxAttack",
    "MinSumAttack",
    "ModelPoisoningAttack",
    "PerViewAttack",
    "NaNAttack",
    "NoAttack",
    "ScalingAttack",
    "SignFlipAttack",
    "StragglerFault",
    "alie_z_max",
    "apply_trigger",
    "attack_params",
    "attack_success_rate",
    "damage",
    "is_data_poisoning",
    "make_attack",
    "needs_secure_filtering",
]

ATTACKS: dict[str, type] = {
    cls.name: cls
    for cls in (
        NoAttack,
        SignFlipAttack,
        ScalingAttack,
        GaussianAttack,
        ALIEAttack,
        IPMAttack,
        MinMaxAttack,
        MinSumAttack,
        MimicAttack,
        NaNAttack,
        InfAttack,
        AdaptiveAttack,
        LyingSketchAttack,
        LabelFlipAttack,
        BackdoorAttack,
    )
}


def _lookup(name: Any) -> type:
    if not isinstance(name, str) or name not in ATTACKS:
        raise AttackConfigError(f"unknown attack {name!r}; valid attacks: {', '.join(ATTACKS)}")
    return ATTACKS[name]


def attack_params(name: str) -> dict[str, Any]:
    """Constructor parameters of attack ``name`` and their defaults
    (``inspect.Parameter.empty`` for required ones)."""
    sig = inspect.signature(_lookup(name).__init__)
    return {p.name: p.default for p in list(sig.parameters.values())[1:]}


def make_attack(name: str, **params: Any) -> ModelPoisoningAttack | DataPoisoningAttack:
    """Instantiate the attack registered as ``name`` with ``params``.

    Raises:
        AttackConfigError: unknown name (the message lists the valid names), unknown or
            missing parameter (the message lists the attack's parameters), or an invalid value
            (the message names the parameter).
    """
    cls = _lookup(name)
    valid = attack_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        listed = ", ".join(valid) if valid else "(none)"
        raise AttackConfigError(
            f"attack {name!r} got unknown parameter(s) {', '.join(unknown)}; "
            f"valid parameters: {listed}"
        )
    missing = [p for p, d in valid.items() if d is inspect.Parameter.empty and p not in params]
    if missing:
        raise AttackConfigError(
            f"attack {name!r} needs parameter(s) {', '.join(missing)}; "
            f"valid parameters: {', '.join(valid)}"
        )
    return cls(**params)


def is_data_poisoning(attack: Any) -> bool:
    """Whether ``attack`` (an instance, a class or a registry name) poisons training data.

    Raises:
        AttackConfigError: ``attack`` is a string that is not a registered name.
    """
    if isinstance(attack, str):
        attack = _lookup(attack)
    if isinstance(attack, type):
        return issubclass(attack, DataPoisoningAttack)
    return isinstance(attack, DataPoisoningAttack)


def needs_secure_filtering(attack: Any) -> bool:
    """Whether ``attack`` (an instance, a class or a registry name) lies about its sketch and
    so only runs under secure filtering (``--secure`` with a distance rule).

    Raises:
        AttackConfigError: ``attack`` is a string that is not a registered name.
    """
    if isinstance(attack, str):
        attack = _lookup(attack)
    return bool(getattr(attack, "needs_secure_filtering", False))
