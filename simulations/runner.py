"""The simulation runner: one federated training run under a chosen attack and defence.

A round: every participating client computes its honest update with local training; the
Byzantine clients then replace theirs with the attack's crafted rows (model poisoning) or train
on poisoned data (data poisoning); the server aggregates with the configured defence (plaintext,
or through the secure-aggregation protocol with ``secure=True``) and applies the result.

Per round the runner records test accuracy and loss, the clients accepted and rejected, and in
particular the honest clients wrongly rejected: an unfair exclusion users need to see.

A run never dies of what it measures
------------------------------------
An attack that destroys the model is an outcome, not a crash. The runner checks every round,
in the order the values appear, for the first place a model's divergence shows (see
:data:`DIVERGENCE_KINDS`): a non-finite training loss or honest update (local training from
the current model blew up), a non-finite aggregate, non-finite parameters after applying a
finite aggregate (float32 overflow), and a non-finite test loss (the parameters are finite but
the logits overflow). The first one found marks the run *diverged* (:class:`Divergence`: the
round, the kind, the reason), the round is recorded at chance accuracy (``1 / num_classes``)
and the remaining rounds are not run.

Any other exception raised while a run trains is recorded as a *failure*
(:class:`Failure`, with the traceback) and ends that run only, unless ``raise_errors=True``.
Configuration errors are raised before any training: :func:`preflight` checks a config against
its dataset (names, partition, trainer options, the attack on a sample of the data, and the
defence checked against robust's stage registry with every client present).

Errors
------
Everything the runner raises on purpose is a :class:`fortis.FortisError`: a
:class:`~simulations.errors.ConfigError` (or another :class:`~simulations.SimulationError`)
for a configuration that cannot run, :class:`~simulations.errors.SecureRoundError` for an
aborted secure round, :class:`~simulations.errors.SimulationStateError` for a round asked of
a finished run.
"""

from __future__ import annotations

import inspect
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import dp
import robust
from fortis import FortisError
from simulations.attacks import (
    AttackContext,
    is_data_poisoning,
    make_attack,
    needs_secure_filtering,
)
from simulations.config import SECURE_PAILLIER_BITS, SimulationConfig
from simulations.datasets import Dataset, load_dataset
from simulations.errors import (
    ConfigError,
    SecureRoundError,
    SimulationStateError,
)
from simulations.partition import PartitionError, partition
from simulations.privacy import CentralPrivacy, DistributedPrivacy, noise_multiplier
from simulations.replication import ReplicationError
from simulations.training import LocalTrainer

ProgressCallback = Callable[[int, dict[str, Any]], None]

#: Where a divergence can first show, in the order a round produces the values.
#: ``"loss"`` covers the clients' training loss (start of a round) and the test loss (end).
DIVERGENCE_KINDS: tuple[str, ...] = ("loss", "honest_updates", "aggregate", "parameters")

#: Errors that mean the user's configuration (options or data) cannot run: any typed fortis
#: error raised while a run is set up. They are raised before any training (not recorded as a
#: failed run); the CLI reports them in one line.
CONFIG_ERRORS: tuple[type[Exception], ...] = (FortisError,)


@dataclass(frozen=True)
class Divergence:
    """Where a run's model diverged: the round (from 0), one of :data:`DIVERGENCE_KINDS`, and
    a one-line reason naming the values (and clients) that were non-finite."""

    round: int
    kind: str
    reason: str

    def describe(self) -> str:
        return f"diverged in round {self.round + 1} ({self.kind}): {self.reason}"


@dataclass(frozen=True)
class Failure:
    """An unexpected error that ended one run: the round it happened in (``None`` while the
    run was being set up), ``"Type: message"``, and the formatted traceback."""

    round: int | None
    error: str
    traceback: str = ""

    def describe(self) -> str:
        where = "during setup" if self.round is None else f"in round {self.round + 1}"
        return f"failed {where}: {self.error}"


@dataclass
class RoundRecord:
    round: int
    accuracy: float | None
    loss: float | None
    participants: int
    byzantine_participants: int
    accepted: int
    honest_rejected: int
    byzantine_rejected: int
    backdoor_asr: float | None = None
    skipped: str | None = None
    aggregate_norm: float = 0.0
    seconds: float = 0.0
    bytes_sent: int = 0
    diverged: str | None = None
    #: With ``--reputation``: every client's trust after this round (index = client id;
    #: clients absent this round keep their score), the participants weighed 0 this round
    #: because their trust was below the floor, and how many of those were honest/Byzantine.
    #: ``accepted``/``honest_rejected``/``byzantine_rejected`` count who is (not) in the
    #: aggregate, so they include these exclusions.
    reputation: list[float] | None = None
    reputation_excluded: list[int] | None = None
    honest_excluded: int = 0
    byzantine_excluded: int = 0
    #: Secure filtering: ``"passed"`` or ``"failed"`` (the unmasked sum against the committed
    #: sketches; ``None`` when the round ran no verification), and the protocol's reason when
    #: the round aborted. An aborted round is not applied: the model is unchanged, ``accepted``
    #: is 0 and the rejected counts are the filter's own rejections.
    verification: str | None = None
    aborted: str | None = None
    #: With ``--dp-epsilon``: the epsilon spent so far after this round (central and
    #: before_filter: the run's accountant, client level; local: the largest client's
    #: sample-level epsilon), and the std of the noise on the released mean this round
    #: (central: ``z * C / m``; before_filter: each honest row's noise share).
    dp_epsilon: float | None = None
    dp_noise_std: float | None = None


class _RoundNotApplied(Exception):
    """A secure-filtering round aborted (its verification failed, or the filter left too
    few clients): the round is recorded and not applied, and the run goes on."""

    def __init__(self, reason: str, filter_rejected: np.ndarray) -> None:
        super().__init__(reason)
        self.reason = reason
        self.filter_rejected = filter_rejected


@dataclass
class RunResult:
    """What one run produced.

    ``history`` has one record per round that ran: all ``config.rounds`` of them for a
    completed run, fewer when the run diverged (its last record is the divergence round, at
    chance accuracy) or failed. ``status`` tells which.
    """

    config: SimulationConfig
    history: list[RoundRecord] = field(default_factory=list)
    byzantine_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    divergence: Divergence | None = None
    failure: Failure | None = None
    chance_accuracy: float | None = None
    #: With ``--dp-epsilon``: mode, target, delta, sampling rate, the noise multiplier and
    #: std, epsilon per round and at the end, the accountant's state (central) or every
    #: client's epsilon (local). ``None`` without DP.
    privacy: dict[str, Any] | None = None

    @property
    def epsilon_per_round(self) -> list[float | None]:
        """Epsilon spent after each round (``None`` entries before the first release)."""
        return [r.dp_epsilon for r in self.history]

    @property
    def final_epsilon(self) -> float | None:
        """Epsilon spent at the end of the run; ``None`` without DP."""
        if self.privacy is None:
            return None
        return self.privacy.get("epsilon")

    @property
    def status(self) -> str:
        """``"failed"``, ``"diverged"`` or ``"completed"``."""
        if self.failure is not None:
            return "failed"
        if self.divergence is not None:
            return "diverged"
        return "completed"

    def describe_status(self) -> str:
        """One line: ``completed``, ``diverged in round 7 (parameters): ...`` or ``failed ...``."""
        if self.failure is not None:
            return self.failure.describe()
        if self.divergence is not None:
            return self.divergence.describe()
        return "completed"

    @property
    def accuracies(self) -> list[float]:
        return [r.accuracy for r in self.history if r.accuracy is not None]

    @property
    def final_accuracy(self) -> float:
        """The last measured accuracy; chance for a diverged run, NaN for a failed one."""
        if self.failure is not None:
            return float("nan")
        accs = self.accuracies
        return accs[-1] if accs else float("nan")

    @property
    def best_accuracy(self) -> float:
        """The best accuracy measured (a divergence round's chance score is not a measurement)."""
        accs = [r.accuracy for r in self.history if r.accuracy is not None and not r.diverged]
        return max(accs) if accs else float("nan")

    @property
    def honest_rejected_per_round(self) -> float:
        if not self.history:
            return 0.0
        return float(np.mean([r.honest_rejected for r in self.history]))

    @property
    def final_backdoor_asr(self) -> float | None:
        values = [r.backdoor_asr for r in self.history if r.backdoor_asr is not None]
        return values[-1] if values else None

    def trust_history(self) -> np.ndarray | None:
        """``--reputation``: every client's trust after each round that updated it, as a
        (rounds, clients) array (a round without an update repeats the previous scores;
        rounds before the first update are at the prior mean). ``None`` without reputation."""
        if self.config.reputation is None:
            return None
        p = self.config.reputation
        prior = p["a0"] / (p["a0"] + p["b0"])
        rows, last = [], [prior] * self.config.clients
        for r in self.history:
            if r.reputation is not None:
                last = r.reputation
            rows.append(last)
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), self.config.clients)

    def reputation_summary(self) -> dict[str, Any]:
        """``--reputation``: the final trust of the honest and Byzantine clients (lowest,
        mean, highest) and the exclusions per round; empty without reputation."""
        T = self.trust_history()
        if T is None or len(T) == 0:
            return {}
        final = T[-1]
        byz = np.zeros(self.config.clients, dtype=bool)
        byz[self.byzantine_ids] = True
        out: dict[str, Any] = {
            "honest_trust_min": float(final[~byz].min()),
            "honest_trust_mean": float(final[~byz].mean()),
            "byzantine_trust_max": float(final[byz].max()) if byz.any() else None,
            "byzantine_trust_mean": float(final[byz].mean()) if byz.any() else None,
            "honest_excluded_per_round": float(np.mean([r.honest_excluded for r in self.history])),
            "byzantine_excluded_per_round": float(
                np.mean([r.byzantine_excluded for r in self.history])
            ),
        }
        return out

    def summary(self) -> dict[str, Any]:
        """The run in one flat dict (strict JSON: a value that is not a number is ``None``).
        With ``--reputation`` it also has :meth:`reputation_summary`'s keys."""
        return {
            **self.reputation_summary(),
            "label": self.config.label(),
            "final_accuracy": _number_or_none(self.final_accuracy),
            "best_accuracy": _number_or_none(self.best_accuracy),
            "honest_rejected_per_round": self.honest_rejected_per_round,
            "byzantine_rejected_per_round": float(
                np.mean([r.byzantine_rejected for r in self.history]) if self.history else 0.0
            ),
            "backdoor_asr": self.final_backdoor_asr,
            "rounds_not_applied": sum(r.aborted is not None for r in self.history),
            "dp_epsilon": self.final_epsilon,
            "seconds": self.seconds,
            "rounds_run": len(self.history),
            "status": self.status,
            "diverged_round": None if self.divergence is None else self.divergence.round,
            "reason": None if self.status == "completed" else self.describe_status(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "summary": self.summary(),
            "byzantine_ids": self.byzantine_ids,
            "history": [vars(r) for r in self.history],
            "notes": self.notes,
            "divergence": None if self.divergence is None else vars(self.divergence),
            "failure": None if self.failure is None else vars(self.failure),
            "chance_accuracy": self.chance_accuracy,
            "privacy": self.privacy,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        """Inverse of :meth:`to_dict`; also reads results written before divergence and
        failures were recorded."""
        divergence, failure = d.get("divergence"), d.get("failure")
        return cls(
            config=SimulationConfig.from_dict(d["config"]),
            history=[RoundRecord(**r) for r in d["history"]],
            byzantine_ids=list(d["byzantine_ids"]),
            seconds=float(d["summary"]["seconds"]),
            notes=list(d.get("notes", [])),
            divergence=None if divergence is None else Divergence(**divergence),
            failure=None if failure is None else Failure(**failure),
            chance_accuracy=d.get("chance_accuracy"),
            privacy=d.get("privacy"),
        )


def secure_filtering(config: SimulationConfig) -> bool:
    """Whether ``config`` runs secure filtering: ``--secure`` with a distance rule other than
    the mean, or with an attack that lies about its sketch (the mean then runs with the norm
    bound and the verification of the sum, so the lie has something to fool). The plain
    secure mean needs no sketches and no Paillier key."""
    return config.secure and (
        config.defence != "mean"
        or needs_secure_filtering(config.attack)
        or (config.dp_epsilon is not None and config.dp_mode == "distributed")
    )


#: Why a pre-aggregator cannot run under ``--secure``, by name (the default: it needs rows).
_SECURE_PRE_WHY = {
    "clip": "clipping runs on each client before masking: use --clip C instead (in secure "
    "filtering C is also the filter's norm bound)",
}


def _check_secure_supported(config: SimulationConfig) -> None:
    """``--secure`` runs the protocol's mean of the survivors, or secure filtering with a
    distance rule of :data:`protocol.SECURE_RULES` on encrypted sketches. A rule that needs
    coordinates, or a pre-aggregator, is refused here rather than dropped silently; so is an
    attack that lies about sketches outside secure filtering."""
    if not config.secure:
        if needs_secure_filtering(config.attack):
            raise ConfigError(
                f"attack {config.attack!r} masks one update and sketches another: it exists "
                "only under secure filtering (--secure with --defence "
                f"{'|'.join(protocol_rules())} and --clip); without --secure no client commits "
                "a sketch"
            )
        return
    from protocol import check_secure_rule

    refused = []
    try:
        check_secure_rule(config.defence)
    except FortisError as exc:
        refused.append(f"the defence {config.defence!r}: {' '.join(str(exc).split())}")
    if config.pre:
        for name, _ in config.pre:
            why = _SECURE_PRE_WHY.get(
                name, "it needs every client's update (rows), which secure aggregation hides"
            )
            refused.append(f"the pre-aggregator {name!r}: {why}")
    if refused:
        raise ConfigError(
            f"--secure cannot run {'; nor '.join(refused)}. fortis never falls back silently: "
            "drop --secure to run it in plaintext (pre-aggregators included)."
        )
    if config.replication > 1:
        raise ConfigError("--secure cannot be combined with --replication (needs plaintext rows)")
    if secure_filtering(config) and config.clip is None:
        raise ConfigError(
            f"--secure with the defence {config.defence!r} (secure filtering) needs --clip C: "
            "every client clips its update to C before masking, and the filter rejects a "
            "sketch longer than C*(1+eps)"
        )


def protocol_rules() -> tuple[str, ...]:
    """The rules ``--secure`` runs (:data:`protocol.SECURE_RULES`)."""
    from protocol import SECURE_RULES

    return tuple(SECURE_RULES)


def attack_kwargs(config: SimulationConfig, num_classes: int) -> dict[str, Any]:
    """The attack's parameters, with the dataset's class count filled in for label flipping."""
    params = dict(config.attack_params)
    if config.attack == "label_flip":
        params.setdefault("num_classes", num_classes)
    return params


def check_components(config: SimulationConfig) -> None:
    """Fail fast, before any training, on an attack or defence that cannot run.

    Checks the attack's name and parameters, the defence (:func:`check_defence`) and the
    secure-mode restrictions. Raises :class:`ConfigError` (or the attack library's
    ``AttackConfigError`` for bad attack parameters), naming the option and the valid choices.
    """
    # num_classes only completes label_flip's parameters here; the real value comes from the
    # dataset when the simulation is built.
    make_attack(config.attack, **attack_kwargs(config, num_classes=2))
    _check_secure_supported(config)
    check_defence(config)
    if config.reputation is not None:
        from simulations.reputation import check_reputation

        check_reputation(config.reputation, config.defence, secure=config.secure)


#: The keywords of :func:`robust.check_pipeline` (and so of :func:`robust.aggregate`): a rule
#: parameter of one of these names would be given twice.
_PIPELINE_KEYWORDS = frozenset(
    name
    for name, p in inspect.signature(robust.check_pipeline).parameters.items()
    if p.kind is not inspect.Parameter.VAR_KEYWORD
)
#: What to use instead of a pipeline keyword given as a rule parameter.
_INSTEAD = {
    "f": "the defence's f is the number of Byzantine clients (-f) or the f it assumes "
    "(--defence-f)",
    "pre": "pre-aggregators go in --pre or before the rule: --defence PRE+RULE",
}


def check_defence(config: SimulationConfig) -> list[tuple[str, dict[str, Any]]]:
    """Check the defence against robust's stage registry, without data: the rule's and the
    pre-aggregators' names, their parameters (type and bound), and that each stage can run
    on the rows it would get with every client present and the configured f.

    Returns :func:`robust.check_pipeline`'s plan (stage names with their parameters, defaults
    filled in). Raises :class:`ConfigError` naming the defence and what is wrong.
    """
    clash = sorted(_PIPELINE_KEYWORDS & set(config.defence_params))
    if clash:
        instead = _INSTEAD.get(clash[0], f"`fortis defences {config.defence}` lists its parameters")
        raise ConfigError(
            f"defence {config.defence!r}: {clash[0]} is not a rule parameter; {instead}"
        )
    # With replication or the plain secure mean the rule never runs on the clients' rows (a
    # majority vote or the protocol's mean does): its names and parameters are checked, not
    # its bound on the number of clients. Secure filtering runs it on every client's sketch.
    plain_secure = config.secure and not secure_filtering(config)
    n = None if config.replication > 1 or plain_secure else config.clients
    try:
        return robust.check_pipeline(
            config.defence,
            f=config.f_for_defence,
            n=n,
            pre=list(config.pre),
            **config.defence_params,
        )
    except robust.RobustError as exc:
        raise _defence_error(config, exc) from exc


def _defence_error(config: SimulationConfig, exc: robust.RobustError) -> ConfigError:
    """The one-line :class:`ConfigError` for a defence robust refused."""
    if isinstance(exc, robust.InsufficientClientsError):
        return ConfigError(
            f"defence {config.defence_label()!r} cannot run with {config.clients} clients and "
            f"f={config.f_for_defence}: {exc}"
        )
    hint = "; `fortis defences` describes each" if isinstance(exc, robust.UnknownRuleError) else ""
    return ConfigError(f"defence {config.defence_label()!r}: {exc}{hint}")


def _client_shards(config: SimulationConfig, dataset: Dataset) -> list[np.ndarray]:
    """Index arrays of the ``clients // replication`` data shards; :class:`ConfigError` when
    the split is impossible for this dataset (e.g. more clients than samples)."""
    try:
        return partition(
            dataset.y_train,
            config.clients // config.replication,
            config.partition,
            alpha=config.alpha,
            gamma=config.gamma,
            seed=config.seed,
        )
    except PartitionError as exc:
        raise ConfigError(f"{exc} (dataset {dataset.name!r}, {config.clients} clients)") from exc


def _trainer(config: SimulationConfig, dataset: Dataset) -> LocalTrainer:
    local_dp: dict[str, Any] = {}
    if config.dp_epsilon is not None and config.dp_mode == "local":
        local_dp = dict(
            dp_epsilon=config.dp_epsilon,
            dp_delta=config.dp_delta,
            dp_grad_norm=config.dp_grad_norm,
            dp_rounds=config.rounds,
        )
    return LocalTrainer(
        config.model,
        dataset.input_shape,
        dataset.num_classes,
        mode=config.training,
        lr=config.lr,
        local_epochs=config.local_epochs,
        batch_size=config.batch_size,
        mu=config.mu,
        momentum=config.momentum,
        seed=config.seed,
        **local_dp,
    )


def preflight(config: SimulationConfig, dataset: Dataset) -> None:
    """Check that ``config`` can run on ``dataset`` without training anything.

    Checks the component names and parameters, the defence against robust's registry
    (:func:`check_components`), the attack with the dataset's class count, the data split and
    the trainer's options. Raises a :class:`fortis.FortisError` naming the option at fault; a
    config that passes fails later only for reasons that are not its own (reported as a
    :class:`Failure` by :func:`run_simulation`) or diverges (a measured outcome).
    """
    check_components(config)
    attack = make_attack(config.attack, **attack_kwargs(config, dataset.num_classes))
    if is_data_poisoning(attack) and config.byzantine:
        # Poison a few samples: an option that does not fit the data (a label_flip
        # num_classes below the dataset's labels) fails here, not in setup after other runs.
        sample = slice(0, min(len(dataset.y_train), 64))
        attack.poison(dataset.x_train[sample], dataset.y_train[sample], np.random.default_rng(0))
    _client_shards(config, dataset)
    _trainer(config, dataset)
    if config.dp_needs_clip:
        # the calibration itself: a target no noise multiplier reaches is refused here
        noise_multiplier(
            float(config.dp_epsilon), config.dp_delta, config.rounds, config.dp_sampling_rate
        )


class Simulation:
    """A resumable-by-construction run: all randomness is derived from ``config.seed``."""

    def __init__(self, config: SimulationConfig, dataset: Dataset | None = None) -> None:
        check_components(config)
        self.config = config
        self.dataset = (
            dataset
            if dataset is not None
            else load_dataset(config.dataset, config.data_dir, seed=config.seed)
        )
        ds = self.dataset
        rng = np.random.default_rng(config.seed)
        r = config.replication
        self.shards = _client_shards(config, ds)
        # Client i trains shard i // r (replicas of a shard are consecutive ids).
        self.client_shard = [i // r for i in range(config.clients)]
        self.byzantine_ids = sorted(
            int(i) for i in rng.choice(config.clients, size=config.byzantine, replace=False)
        )
        self.is_byzantine = np.zeros(config.clients, dtype=bool)
        self.is_byzantine[self.byzantine_ids] = True
        self.attack = make_attack(config.attack, **attack_kwargs(config, ds.num_classes))
        self.data_poisoning = is_data_poisoning(self.attack)
        self.client_data: list[tuple[np.ndarray, np.ndarray]] = []
        poison_rng = np.random.default_rng([config.seed, 1])
        for i in range(config.clients):
            idx = self.shards[self.client_shard[i]]
            x, y = ds.x_train[idx], ds.y_train[idx]
            if self.data_poisoning and self.is_byzantine[i]:
                x, y = self.attack.poison(x, y, poison_rng)
            self.client_data.append((x, y))
        self.trainer = _trainer(config, ds)
        self.params = self.trainer.initial_params()
        self.rng = np.random.default_rng([config.seed, 2])
        self.previous_aggregate: np.ndarray | None = None
        self.param_history: deque[np.ndarray] = deque(maxlen=config.max_staleness + 1)
        self.notes: list[str] = []
        #: Set by the first round whose values are non-finite; no round runs after it.
        self.divergence: Divergence | None = None
        #: What a destroyed model scores: a uniform guess over the classes.
        self.chance_accuracy = 1.0 / ds.num_classes
        if r > 1:
            from simulations.replication import replication_cost

            self.notes.append(replication_cost(config.clients, r).describe())
        self._round_bytes = 0
        self._round_idx = 0
        #: ``--reputation``: the scores, kept across rounds, and this round's step.
        self.reputation: robust.Reputation | None = None
        if config.reputation is not None:
            from simulations.reputation import tracker

            self.reputation = tracker(config.reputation)
        self._rep_step: Any = None
        #: Secure filtering: the key holder's Paillier key (one per run, reused every round),
        #: what the Byzantine clients sketch this round (lying_sketch), and the last round's
        #: :class:`protocol.RoundResult` (filter decision, verification, transcript).
        self._paillier: Any = None
        self._filtering = secure_filtering(config)
        if self._filtering and config.paillier_bits < SECURE_PAILLIER_BITS:
            self.notes.append(
                f"{config.paillier_bits}-bit Paillier test key: not secure, for tests and "
                "demos only"
            )
        self._sketched: dict[int, np.ndarray] = {}
        self.last_secure_round: Any = None
        #: A driver that runs each round's secure aggregation elsewhere (``fortis server``:
        #: the clients are processes that train and mask their own updates). It has
        #: ``aggregate(sim, ids, round_idx) -> (vector, accepted mask over ids)`` and raises as
        #: :meth:`_aggregate_secure` does. ``None``: the updates are computed and aggregated here.
        self.remote: Any = None
        #: ``--dp-epsilon`` (central, before_filter): the noise and the accountant; client
        #: sampling (``--dp-sampling-rate``) draws from its own stream, so runs without it
        #: keep their random choices.
        self.privacy: CentralPrivacy | DistributedPrivacy | None = None
        self._dp_rng = np.random.default_rng([config.seed, 3])
        if config.dp_needs_clip and config.dp_mode == "distributed":
            self.privacy = DistributedPrivacy(config, int(np.asarray(self.params).size))
        elif config.dp_needs_clip:
            self.privacy = CentralPrivacy(config)
            if config.dp_mode == "before_filter":
                self.notes.append(
                    "--dp-mode before_filter: HARMFUL placement, for demonstration: the noise "
                    "enters the rows the defence reads, and Byzantine clients skip theirs"
                )

    # -- one round -------------------------------------------------------------------------
    def _participants(self) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        n = c.clients
        active = np.ones(n, dtype=bool)
        if c.dp_epsilon is not None and c.dp_sampling_rate < 1:
            # Poisson sampling, as the accountant assumes: each client independently with q.
            active &= self._dp_rng.random(n) < c.dp_sampling_rate
        if c.dropout > 0:
            active &= self.rng.random(n) >= c.dropout
        staleness = np.zeros(n, dtype=int)
        if c.stragglers > 0:
            late = self.rng.random(n) < c.stragglers
            staleness[late] = self.rng.integers(1, c.max_staleness + 1, size=int(late.sum()))
        return np.flatnonzero(active), staleness

    def _honest_updates(
        self, ids: np.ndarray, staleness: np.ndarray, round_idx: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every participant's locally trained update (rows of ``ids``) and its mean training
        loss. A data-poisoning Byzantine client trains on its poisoned data here."""
        rows = []
        losses = np.empty(len(ids), dtype=np.float64)
        for row, i in enumerate(ids):
            k = min(int(staleness[i]), len(self.param_history) - 1)
            start = self.param_history[-1 - k]
            x, y = self.client_data[i]
            # Replicas of one shard share the RNG key, so honest replicas are bit-identical.
            key = self.client_shard[i] if self.config.replication > 1 else int(i)
            rows.append(self.trainer.compute_update(int(i), start, x, y, round_idx, rng_key=key))
            losses[row] = self.trainer.last_train_loss
        return np.stack(rows).astype(np.float32, copy=False), losses

    def _craft(
        self,
        X: np.ndarray,
        byz_mask: np.ndarray,
        round_idx: int,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """The rows with the Byzantine ones replaced by the attack's; ``rng``: the attack's
        randomness (default: the run's stream)."""
        c = self.config
        if self.data_poisoning or not byz_mask.any() or c.attack == "none":
            return X
        honest = X[~byz_mask]
        ctx = AttackContext(
            honest_updates=honest,
            byzantine_updates=X[byz_mask],
            n_clients=len(X),
            round_idx=round_idx,
            rng=self.rng if rng is None else rng,
            aggregate=self._defence_callable(),
            previous_aggregate=self.previous_aggregate,
            knowledge=c.knowledge,
            collusion=c.collusion,
        )
        X = X.copy()
        X[byz_mask] = self.attack.craft(ctx)
        if needs_secure_filtering(self.attack):
            # masked: the crafted rows; sketched: the benign rows (row index -> vector)
            sketched = self.attack.last_sketched
            self._sketched = {int(r): sketched[k] for k, r in enumerate(np.flatnonzero(byz_mask))}
        return X

    @staticmethod
    def _clip_finite(X: np.ndarray, max_norm: float) -> np.ndarray:
        """Every client's L2 clip to ``max_norm``; non-finite rows are left for the defence."""
        finite = np.isfinite(X).all(axis=1)
        if finite.all():
            return robust.clip(X, max_norm)
        X = X.copy()
        X[finite] = robust.clip(X[finite], max_norm)
        return X

    def _pre(self) -> list[tuple[str, dict[str, Any]]]:
        """The configured pre-aggregators; bucketing gets a per-round seed from the run's
        seed so that runs are reproducible."""
        out = []
        for name, params in self.config.pre:
            params = dict(params)
            if name == "bucketing" and "seed" not in params and "rng" not in params:
                params["seed"] = int(self.config.seed * 1_000_003 + self._round_idx)
            out.append((name, params))
        return out

    def _defence_params(self) -> dict[str, Any]:
        params = dict(self.config.defence_params)
        if self.config.defence == "centered_clipping" and "center" not in params:
            center = self.previous_aggregate
            params["center"] = center if center is not None else np.zeros_like(self.params)
        return params

    def _defence_callable(self) -> Callable[[np.ndarray], np.ndarray]:
        def aggregate(X: np.ndarray) -> np.ndarray:
            return robust.aggregate(
                X,
                self.config.defence,
                f=self.config.f_for_defence,
                pre=self._pre(),
                **self._defence_params(),
            )

        return aggregate

    def _aggregate(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (aggregate vector, accepted mask over the rows of X)."""
        c = self.config
        if c.replication > 1:
            return self._aggregate_replicated(X)
        if c.secure:
            return self._aggregate_secure(X)
        if self.reputation is not None:
            from simulations.reputation import reputation_step

            step = reputation_step(
                self.reputation,
                c.reputation,
                self._round_ids,
                c.defence,
                f=c.f_for_defence,
                X=X,
                pre=self._pre(),
                **self._defence_params(),
            )
            self._rep_step = step
            return step.result.vector, step.contributes
        res = robust.aggregate_detailed(
            X, c.defence, f=c.f_for_defence, pre=self._pre(), **self._defence_params()
        )
        return res.vector, np.asarray(res.accepted, dtype=bool)

    def _aggregate_secure(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean over the survivors of one in-memory secure-aggregation round; with secure
        filtering, over the clients the distance rule accepted on the sketch distances.

        A row that cannot be encoded (non-finite) is a client that never manages to send a
        masked input: it drops out at that stage and the round goes on without it. With
        ``--reputation`` the clients below the floor drop out the same way. A filtering round
        that aborts (failed verification) raises :class:`_RoundNotApplied`.
        """
        from protocol import run_round

        c = self.config
        finite = np.isfinite(X).all(axis=1)
        dropped = ~finite
        excluded = np.zeros(len(X), dtype=bool)
        trust = None
        if self.reputation is not None:
            from simulations.reputation import round_weights

            # Below the floor: dropped from the masked sum like a client that never sent.
            _, excluded, trust = round_weights(
                self.reputation, self._round_ids, c.reputation, f=c.f_for_defence
            )
            dropped = dropped | excluded
            if dropped.all():
                raise SecureRoundError(
                    f"secure round {self._round_idx + 1}: every client is excluded or non-finite"
                )
        filtering: dict[str, Any] = {}
        rows = np.where(finite[:, None], X, 0.0)
        if self._filtering:
            assert c.clip is not None  # checked by _check_secure_supported
            rows = _within_norm(rows, c.clip)
            sketched, self._sketched = self._sketched, {}
            filtering = dict(
                rule=c.defence,
                f=c.f_for_defence,
                rule_params=dict(c.defence_params),
                sketch_dim=c.sketch_dim,
                clip_norm=c.clip,
                paillier_key=self._keyholder_key(),
                sketched={
                    i: _within_norm(v[None, :], c.clip)[0]
                    for i, v in sketched.items()
                    if not dropped[i]
                }
                or None,
            )
            if isinstance(self.privacy, DistributedPrivacy):
                filtering["noise"] = self.privacy.noise
        try:
            result = run_round(
                rows,
                value_range=c.clip,
                bits=c.secure_bits,
                graph=c.secure_graph,
                mean=True,
                seed=int(self.rng.integers(2**31)),
                round_id=self._round_idx,
                dropouts={"masked_input": np.flatnonzero(dropped).tolist()},
                **filtering,
            )
        except FortisError as exc:
            raise SecureRoundError(f"secure round {self._round_idx + 1}: {exc}") from exc
        return self.secure_outcome(result, finite, excluded, trust, filtered=bool(filtering))

    def _keyholder_key(self) -> Any:
        """The in-memory key holder's Paillier key: made on first use (one per run, reused
        every round), so a run whose rounds happen elsewhere never makes one."""
        if self._paillier is None:
            self._paillier = paillier_key(self.config.paillier_bits)
        return self._paillier

    def secure_outcome(
        self,
        result: Any,
        finite: np.ndarray,
        excluded: np.ndarray,
        trust: np.ndarray | None,
        *,
        filtered: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(vector, accepted)`` of a secure round's :class:`protocol.RoundResult` whose
        client ids are the rows of this round, with its bytes and reputation recorded. Raises
        :class:`SecureRoundError` if an unfiltered round aborted, :class:`_RoundNotApplied`
        if a filtered one did."""
        n = len(finite)
        self.last_secure_round = result
        t = result.transcript
        self._round_bytes = (
            t.server_bytes_sent + sum(t.client_bytes_sent.values()) + t.keyholder_bytes_sent
        )
        if not filtered:
            if result.aborted:
                raise SecureRoundError(
                    f"secure round {self._round_idx + 1} aborted: {result.abort_reason}"
                )
            accepted = _mask(n, result.survivors)
            if self.reputation is not None:
                self._record_secure_reputation(finite, excluded, accepted)
            return np.asarray(result.aggregate, dtype=np.float32), accepted
        filter_rejected = _mask(n, result.rejected)
        if self.reputation is not None and result.filter is not None:
            assert trust is not None
            self._record_filter_reputation(result, finite, excluded, trust)
        if result.aborted:
            raise _RoundNotApplied(str(result.abort_reason), filter_rejected)
        return np.asarray(result.aggregate, dtype=np.float32), _mask(n, result.survivors)

    def _record_filter_reputation(
        self, result: Any, finite: np.ndarray, excluded: np.ndarray, trust: np.ndarray
    ) -> None:
        """Secure filtering: the filter's verdicts update the scores. A client the filter
        judged gets ``accepted`` or its rejection (the norm bound counts as a rejection),
        a non-finite input ``rejected:non_finite``; a client excluded by its low trust was
        not in the round and keeps its score. The verdicts are exactly the rule's on the
        sketch distances (``robust.aggregate_detailed(None, rule, distances=D_sketch)``)."""
        from simulations.reputation import ReputationStep

        rep, ids = self.reputation, self._round_ids
        assert rep is not None
        judged = set(result.filter.judged)
        rows, verdicts = [], []
        for row in range(len(ids)):
            if not finite[row]:
                verdict = robust.result.NON_FINITE
            elif row not in judged:
                continue
            elif row in result.rejected:
                reason = result.rejected[row]
                verdict = (
                    reason.split(" ")[0]
                    if reason.startswith("rejected")
                    else ("rejected:norm_bound")
                )
            else:
                verdict = robust.result.ACCEPTED
            rows.append(row)
            verdicts.append(verdict)
        rep.update([int(ids[r]) for r in rows], verdicts)
        contributes = _mask(len(ids), () if result.aborted else result.survivors)
        self._rep_step = ReputationStep(
            result=result.filter,
            weights=None,
            excluded=excluded,
            contributes=contributes,
            trust=trust,
            trust_after=rep.weights([int(i) for i in ids]),
        )

    def _record_secure_reputation(
        self, finite: np.ndarray, excluded: np.ndarray, accepted: np.ndarray
    ) -> None:
        """The plain secure mean, whose verdict is "accepted" for every finite input
        (the excluded clients' too, as for a zero-weight row in plaintext) and
        ``rejected:non_finite`` for an input that could not be encoded."""
        from simulations.reputation import record_verdicts, round_weights

        rep, ids = self.reputation, self._round_ids
        assert rep is not None
        _, _, trust = round_weights(rep, ids, self.config.reputation, f=0)
        verdicts = tuple(
            robust.result.ACCEPTED if ok else robust.result.NON_FINITE for ok in finite
        )
        result = robust.AggregationResult(
            vector=None, accepted=finite.copy(), scores=None, verdicts=verdicts, f=0, rule="mean"
        )
        self._rep_step = record_verdicts(
            rep, ids, result, weights=None, excluded=excluded, trust=trust, contributes=accepted
        )

    def _aggregate_replicated(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from simulations.replication import majority_filter

        ids = self._round_ids
        shard_of = [self.client_shard[i] for i in ids]
        groups: dict[int, list[int]] = {}
        for row, shard in enumerate(shard_of):
            groups.setdefault(shard, []).append(row)
        majority, accepted, _caught = majority_filter(X, list(groups.values()))
        if len(majority) == 0:
            raise ReplicationError(
                f"round {self._round_idx + 1}: no replication group reached a majority"
            )
        vector = robust.aggregate(majority, "mean")
        return vector, np.asarray(accepted, dtype=bool)

    def _diverge(self, record: RoundRecord, kind: str, reason: str) -> None:
        """Mark the run diverged in ``record``'s round: chance accuracy, no loss, no more rounds."""
        self.divergence = Divergence(round=record.round, kind=kind, reason=reason)
        record.diverged = kind
        record.accuracy = self.chance_accuracy
        record.loss = None
        record.backdoor_asr = None
        self.notes.append(self.divergence.describe())

    def _check_training(
        self,
        record: RoundRecord,
        ids: np.ndarray,
        byz_mask: np.ndarray,
        X: np.ndarray,
        losses: np.ndarray,
    ) -> bool:
        """Divergence in local training: a non-finite loss or update from a client that
        trained honestly (every client under model poisoning, whose Byzantine rows are
        crafted only afterwards; the honest ones under data poisoning). True if diverged."""
        trained = ~byz_mask if self.data_poisoning else np.ones(len(ids), dtype=bool)
        bad = trained & ~np.isfinite(losses)
        if bad.any():
            self._diverge(
                record,
                "loss",
                f"training loss {losses[bad][0]} of client(s) {_ids(ids[bad])} from the "
                "current global model",
            )
            return True
        bad = trained & ~np.isfinite(X).all(axis=1)
        if bad.any():
            self._diverge(
                record,
                "honest_updates",
                f"honestly trained update(s) of client(s) {_ids(ids[bad])} are non-finite",
            )
            return True
        return False

    def step(self, round_idx: int) -> RoundRecord:
        """Run round ``round_idx`` and return its record.

        Never raises for a diverging model (see the module docstring): the record then has
        ``diverged`` set and :attr:`divergence` says where. Raises
        :class:`~simulations.errors.SimulationStateError` if called after the run diverged,
        :class:`ConfigError` if the defence cannot run even with every client present,
        :class:`~simulations.errors.SecureRoundError` if a secure round aborts, and whatever
        an unexpected failure raises.
        """
        if self.divergence is not None:
            raise SimulationStateError(f"the run already {self.divergence.describe()}")
        c = self.config
        t0 = time.perf_counter()
        self.param_history.append(self.params.copy())
        ids, staleness = self._participants()
        self._round_ids = ids
        self._round_idx = round_idx
        byz_mask = self.is_byzantine[ids]
        record = RoundRecord(
            round=round_idx,
            accuracy=None,
            loss=None,
            participants=len(ids),
            byzantine_participants=int(byz_mask.sum()),
            accepted=0,
            honest_rejected=0,
            byzantine_rejected=0,
        )
        if len(ids) < 2:
            record.skipped = f"only {len(ids)} client(s) participated"
        else:
            if self.remote is None:
                X, losses = self._honest_updates(ids, staleness, round_idx)
                if self._check_training(record, ids, byz_mask, X, losses):
                    record.seconds = time.perf_counter() - t0
                    return record
            try:
                if self.remote is not None:  # the clients train, craft and mask remotely
                    vector, accepted = self.remote.aggregate(self, ids, round_idx)
                else:
                    # an adaptive attack runs the defence on the same rows, so it hits the same
                    # too-few-clients bound as the aggregation: both skip the round alike
                    X = self._craft(X, byz_mask, round_idx)
                    if c.clip is not None:
                        X = self._clip_finite(X, c.clip)
                    if self.privacy is not None and c.dp_mode == "before_filter":
                        X, record.dp_noise_std = self.privacy.noise_rows(X, ~byz_mask)
                    vector, accepted = self._aggregate(X)
            except robust.InsufficientClientsError as exc:
                if len(ids) == c.clients:
                    # Not a benign fault: the defence cannot run even with every client present.
                    raise _defence_error(c, exc) from exc
                record.skipped = f"aggregation skipped: {exc}"
            except _RoundNotApplied as exc:
                # Secure filtering: a failed verification (or a filter that left too few) is
                # reported and never applied; the model stays as it is and the run goes on.
                record.aborted = exc.reason
                record.skipped = f"secure round not applied: {exc.reason}"
                record.honest_rejected = int((exc.filter_rejected & ~byz_mask).sum())
                record.byzantine_rejected = int((exc.filter_rejected & byz_mask).sum())
                self._record_secure_round(record)
                self._record_reputation(record, ids, byz_mask)
                self.notes.append(f"round {round_idx + 1}: {record.skipped}")
            else:
                self._record_secure_round(record)
                record.accepted = int(accepted.sum())
                record.honest_rejected = int((~accepted & ~byz_mask).sum())
                record.byzantine_rejected = int((~accepted & byz_mask).sum())
                self._record_reputation(record, ids, byz_mask)
                if not np.all(np.isfinite(vector)):
                    # Only an undefended rule lets this happen: the model is destroyed, which is
                    # the measured outcome of the run, not a crash.
                    self._diverge(
                        record,
                        "aggregate",
                        f"{c.defence_label()!r} produced an aggregate with "
                        f"{int((~np.isfinite(vector)).sum())} non-finite entries",
                    )
                else:
                    vector = self._privatise(record, vector, accepted)
                    record.aggregate_norm = float(np.linalg.norm(np.asarray(vector, np.float64)))
                    with np.errstate(over="ignore", invalid="ignore"):
                        # float32, as the model holds them: the cast itself may overflow.
                        step = np.float32(c.server_lr) * np.asarray(vector).astype(np.float32)
                        new_params = self.params + step
                    if not np.all(np.isfinite(new_params)):
                        self._diverge(
                            record,
                            "parameters",
                            f"applying the finite aggregate (norm {record.aggregate_norm:.3g}) "
                            f"overflowed {int((~np.isfinite(new_params)).sum())} float32 "
                            "parameters",
                        )
                    else:
                        self.params = new_params
                        self.previous_aggregate = vector
        if c.dp_epsilon is not None and c.dp_mode == "local":
            record.dp_epsilon = max(self.trainer.client_epsilons().values(), default=0.0)
        elif self.privacy is not None:
            record.dp_epsilon = self.privacy.epsilons[-1] if self.privacy.epsilons else 0.0
        if self.divergence is None and (
            (round_idx + 1) % c.eval_every == 0 or round_idx == c.rounds - 1
        ):
            self._evaluate(record)
        record.seconds = time.perf_counter() - t0
        return record

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What a resumed run needs, as ``(JSON-able meta, arrays)``: the model, the
        previous aggregate and parameter history, both random streams, the reputation
        scores, the privacy ledger and the trainer's per-client momentum. The central DP noise
        itself comes from the OS CSPRNG and is not reproducible (by design)."""
        meta: dict[str, Any] = {
            "rng": self.rng.bit_generator.state,
            "dp_rng": self._dp_rng.bit_generator.state,
            "notes": list(self.notes),
            "history_len": len(self.param_history),
            "has_previous": self.previous_aggregate is not None,
            "reputation": None if self.reputation is None else self.reputation.to_dict(),
            "privacy": None,
            "trainer_keys": [],
        }
        if self.privacy is not None:
            meta["privacy"] = {
                "accountant": self.privacy.accountant.to_dict(),
                "epsilons": list(self.privacy.epsilons),
            }
        arrays: dict[str, np.ndarray] = {"params": np.asarray(self.params)}
        if self.previous_aggregate is not None:
            arrays["previous_aggregate"] = np.asarray(self.previous_aggregate)
        for k, p in enumerate(self.param_history):
            arrays[f"history_{k}"] = np.asarray(p)
        trainer = self.trainer.state_dict()
        for key, value in trainer.items():
            arrays[f"trainer_{key}"] = value
            meta["trainer_keys"].append(key)
        return meta, arrays

    def load_state_dict(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` output. Raises :class:`SimulationStateError` naming what
        does not fit this run (model size, a missing array)."""
        try:
            params = np.asarray(arrays["params"], dtype=np.float32)
            if params.shape != np.shape(self.params):
                raise SimulationStateError(
                    f"checkpoint model has {params.size} parameters, this run {np.size(self.params)}"
                )
            history = [
                np.asarray(arrays[f"history_{k}"], np.float32) for k in range(meta["history_len"])
            ]
            trainer = {key: arrays[f"trainer_{key}"] for key in meta["trainer_keys"]}
            self.rng.bit_generator.state = meta["rng"]
            self._dp_rng.bit_generator.state = meta["dp_rng"]
        except (KeyError, TypeError, ValueError) as exc:
            raise SimulationStateError(f"checkpoint does not fit this run: {exc}") from None
        self.params = params
        self.previous_aggregate = (
            np.asarray(arrays["previous_aggregate"], np.float32) if meta["has_previous"] else None
        )
        self.param_history.clear()
        self.param_history.extend(history)
        self.notes = list(meta["notes"])
        if self.reputation is not None and meta["reputation"] is not None:
            self.reputation = robust.Reputation.from_dict(meta["reputation"], source="checkpoint")
        if self.privacy is not None and meta["privacy"] is not None:
            self.privacy.accountant = dp.Accountant.from_dict(meta["privacy"]["accountant"])
            self.privacy.epsilons = [float(e) for e in meta["privacy"]["epsilons"]]
        if trainer:
            self.trainer.load_state_dict(trainer)

    def _privatise(self, record: RoundRecord, vector: np.ndarray, accepted: np.ndarray) -> Any:
        """Central DP: the released aggregate, noised after the defence (std ``z C / m`` on the
        mean of the ``m`` accepted clients); the accountant advances by this release. The
        before_filter placement noised the rows already and only accounts here."""
        if self.privacy is None:
            return vector
        if self.config.dp_mode == "central":
            vector, record.dp_noise_std = self.privacy.release(vector, int(accepted.sum()))
        elif self.config.dp_mode == "distributed":  # the shares came with the secure sum
            record.dp_noise_std = self.privacy.noise_std_on_mean(int(accepted.sum()))
        self.privacy.account()
        return vector

    def privacy_summary(self) -> dict[str, Any] | None:
        """What :attr:`RunResult.privacy` holds; ``None`` without DP."""
        c = self.config
        if c.dp_epsilon is None:
            return None
        if self.privacy is not None:
            return self.privacy.summary()
        per_client = self.trainer.client_epsilons()
        return {
            "mode": "local",
            "target_epsilon": float(c.dp_epsilon),
            "delta": float(c.dp_delta),
            "sampling_rate": float(c.dp_sampling_rate),
            "grad_norm": float(c.dp_grad_norm),
            "unit": "sample-level, per client (Opacus RDP accountant)",
            "client_epsilon": {str(k): v for k, v in per_client.items()},
            "epsilon": max(per_client.values(), default=0.0),
        }

    def _record_secure_round(self, record: RoundRecord) -> None:
        """Copy this round's secure-filtering outcome (bytes, verification) into the record."""
        result = self.last_secure_round
        record.bytes_sent, self._round_bytes = self._round_bytes, 0
        if self._filtering and result is not None:
            v = result.verification
            record.verification = None if v is None else ("passed" if v.passed else "failed")

    def _record_reputation(
        self, record: RoundRecord, ids: np.ndarray, byz_mask: np.ndarray
    ) -> None:
        """Copy this round's reputation step (if any) into the record."""
        step, self._rep_step = self._rep_step, None
        if step is None or self.reputation is None:
            return
        record.reputation = [float(t) for t in self.reputation.weights(range(self.config.clients))]
        record.reputation_excluded = [int(i) for i in ids[step.excluded]]
        record.honest_excluded = int((step.excluded & ~byz_mask).sum())
        record.byzantine_excluded = int((step.excluded & byz_mask).sum())

    def _evaluate(self, record: RoundRecord) -> None:
        ds = self.dataset
        acc, loss = self.trainer.evaluate(self.params, ds.x_test, ds.y_test)
        if not np.isfinite(loss):
            self._diverge(
                record,
                "loss",
                f"test loss {loss} although the parameters are finite (largest |w| "
                f"{float(np.abs(self.params).max()):.3g}): the model's outputs overflow",
            )
            return
        record.accuracy, record.loss = float(acc), float(loss)
        if self.data_poisoning and hasattr(self.attack, "success_rate"):
            record.backdoor_asr = float(
                self.attack.success_rate(self.predict, ds.x_test, ds.y_test)
            )

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels of the current global model."""
        return self.trainer.predict(self.params, x)

    def run(
        self, progress: ProgressCallback | None = None, *, raise_errors: bool = False
    ) -> RunResult:
        """Run every round until the end, the round the model diverges, or a failure.

        Divergence ends the run with ``result.divergence`` set. Any exception raised by a
        round is recorded in ``result.failure`` (with its traceback) and ends the run, unless
        ``raise_errors`` is true, in which case it propagates. ``KeyboardInterrupt`` always
        propagates.
        """
        t0 = time.perf_counter()
        result = RunResult(
            config=self.config,
            byzantine_ids=list(self.byzantine_ids),
            chance_accuracy=self.chance_accuracy,
        )
        for r in range(self.config.rounds):
            try:
                record = self.step(r)
            except Exception as exc:
                if raise_errors:
                    raise
                result.failure = Failure(
                    round=r, error=_error_line(exc), traceback=traceback.format_exc()
                )
                self.notes.append(result.failure.describe())
                break
            result.history.append(record)
            if progress is not None:
                progress(r, vars(record))
            if self.divergence is not None:
                result.divergence = self.divergence
                break
        result.seconds = time.perf_counter() - t0
        result.notes = list(self.notes)
        result.privacy = self.privacy_summary()
        return result


#: Test keys (under :data:`SECURE_PAILLIER_BITS`) made in this process, by size: runs in
#: tests and demos share one; a real key is made fresh for every run.
_TEST_KEYS: dict[int, Any] = {}


def paillier_key(bits: int) -> Any:
    """A fresh Paillier private key of ``bits`` for one run's key holder. A key under
    :data:`~simulations.config.SECURE_PAILLIER_BITS` is a test key: it warns
    (``UserWarning``) and is made once per process."""
    from secagg.paillier_private import generate_paillier_keypair

    if bits >= SECURE_PAILLIER_BITS:
        return generate_paillier_keypair(bits)[1]
    warnings.warn(
        f"--paillier-bits {bits}: a test key, not secure; use {SECURE_PAILLIER_BITS} or more "
        "outside tests and quick demos",
        UserWarning,
        stacklevel=2,
    )
    if bits not in _TEST_KEYS:
        _TEST_KEYS[bits] = generate_paillier_keypair(bits, allow_insecure=True)[1]
    return _TEST_KEYS[bits]


def _within_norm(X: np.ndarray, bound: float) -> np.ndarray:
    """``X`` in float64 with every row no longer than ``bound``: the client's clip, redone in
    float64 with a margin so that the protocol's exact norm check (it never clips silently)
    does not trip on float32 rounding."""
    X = np.array(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1)
    limit = bound * (1 - 1e-9)
    over = norms > limit
    X[over] *= (limit / norms[over])[:, None]
    return X


def _mask(n: int, ids: Any) -> np.ndarray:
    """A boolean mask of length ``n`` that is true at ``ids`` (client ids are row indices)."""
    out = np.zeros(n, dtype=bool)
    out[[int(i) for i in ids]] = True
    return out


def _number_or_none(value: float) -> float | None:
    return None if value != value else value


def _ids(ids: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    return f"[{shown}{', ...' if len(ids) > limit else ''}]"


def _error_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_simulation(
    config: SimulationConfig,
    *,
    dataset: Dataset | None = None,
    progress: ProgressCallback | None = None,
    raise_errors: bool = False,
) -> RunResult:
    """Run one configured simulation to the end and return its per-round history.

    A diverging model ends the run early with ``result.status == "diverged"``. An unexpected
    error while setting up or training is recorded as ``result.status == "failed"`` (reason
    and traceback in ``result.failure``) unless ``raise_errors`` is true.

    Raises a :class:`fortis.FortisError` (:data:`CONFIG_ERRORS`) when the configuration
    cannot run: an invalid option combination (for example a robust defence with
    ``secure=True``), a defence that cannot run with these clients and f, or data that cannot
    be loaded, split or poisoned as configured.
    """
    t0 = time.perf_counter()
    try:
        sim = Simulation(config, dataset=dataset)
    except CONFIG_ERRORS:
        raise
    except Exception as exc:
        if raise_errors:
            raise
        failure = Failure(round=None, error=_error_line(exc), traceback=traceback.format_exc())
        return RunResult(
            config=config,
            seconds=time.perf_counter() - t0,
            notes=[failure.describe()],
            failure=failure,
        )
    return sim.run(progress=progress, raise_errors=raise_errors)
