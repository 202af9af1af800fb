"""Simulation configuration: one frozen dataclass, validated once, serialisable to JSON.

Every option of ``fortis simulate`` maps to one field here, and the field is the one source of
the option's default: its metadata says how it appears on the command line (see
:mod:`simulations.options`, which builds the CLI from these fields). The CLI, the Python API,
the matrix runner and the pytest helpers all describe a run the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import robust
from simulations.errors import ConfigError
from simulations.options import absolute_path, option
from simulations.specs import (
    component_label,
    defence_label,
    parse_component,
    parse_params,
    parse_value,
)

__all__ = ["DEFAULT_LR", "TRAINING_MODES", "ConfigError", "SimulationConfig", "default_byzantine"]

TRAINING_MODES = ("fedavg", "fedprox", "dsgd")
KNOWLEDGE_LEVELS = ("omniscient", "limited")
SECURE_GRAPHS = ("complete", "secagg+")
#: Where ``--dp-mode`` puts the DP noise. ``central``: the server adds Gaussian noise to the
#: aggregate after the defence has run on the noise-free clipped updates. ``local``: every
#: client trains with Opacus' DP-SGD (sample-level DP). ``distributed``: under ``--secure``
#: filtering, every client adds a seeded discrete Gaussian / Skellam share that the key holder
#: can regenerate (:mod:`protocol.noise`); the filter reads noise-free sketches. ``before_filter``:
#: each honest client adds its share of the noise *before* the defence reads the updates --
#: harmful, it exists only to show the harm (the noise hides the attack from the filter).
DP_MODES = ("central", "local", "distributed", "before_filter")
#: The DP modes that add Gaussian noise calibrated to the clients' clip C (they need --clip).
DP_CLIPPED_MODES = ("central", "before_filter", "distributed")
#: Integer mechanisms of ``--dp-mode distributed``.
DP_MECHANISMS = ("ddg", "skellam")
DEFAULT_DP_DELTA = 1e-5
#: Paillier key sizes ``--paillier-bits`` takes; 1024 is for tests and quick demos only.
PAILLIER_BITS = (1024, 2048, 3072, 4096)
#: The smallest key size that is not a test key.
SECURE_PAILLIER_BITS = 2048

#: The client learning rate a training mode uses when ``lr`` is not given.
DEFAULT_LR: dict[str, float] = {"fedavg": 0.1, "fedprox": 0.1, "dsgd": 0.5}

#: The share of clients that are Byzantine when ``byzantine`` is not given.
DEFAULT_BYZANTINE_FRACTION = 0.2


def default_byzantine(clients: int) -> int:
    """The f used when ``byzantine`` is not given: 20% of ``clients``, at least 1."""
    return max(1, round(DEFAULT_BYZANTINE_FRACTION * clients))


def _freeze(params: dict[str, Any] | None) -> dict[str, Any]:
    return dict(sorted((params or {}).items()))


def _params_option(flag: str, group: str, help: str) -> Any:
    """A ``dict`` field filled by a repeatable ``flag K=V`` option."""
    return option(
        {},
        flag,
        group=group,
        action="append",
        metavar="K=V",
        to_value=lambda items: parse_params(items, flag),
        help=help,
    )


def _pre(items: list[str]) -> tuple[tuple[str, dict[str, Any]], ...]:
    return tuple(parse_component(p, "--pre") for p in items)


def _parse_reputation(text: str | None) -> dict[str, Any] | None:
    from simulations.reputation import parse_reputation

    return parse_reputation(text)


#: Fields added after results were first stored: left out of :meth:`SimulationConfig.key`
#: while at their default, so that stored matrix cells keep their keys and resume.
_KEY_OMITS_AT_DEFAULT = {
    "reputation": None,
    "sketch_dim": 128,
    "paillier_bits": 2048,
    "dp_epsilon": None,
    "dp_delta": DEFAULT_DP_DELTA,
    "dp_mode": "central",
    "dp_sampling_rate": 1.0,
    "dp_grad_norm": 1.0,
    "dp_mechanism": "ddg",
}


def _lr_default_text() -> str:
    by_rate: dict[float, list[str]] = {}
    for mode, rate in DEFAULT_LR.items():
        by_rate.setdefault(rate, []).append(mode)
    return "; ".join(f"{'/'.join(modes)} {rate}" for rate, modes in by_rate.items())


@dataclass(frozen=True)
class SimulationConfig:
    """One federated training run under attack.

    ``byzantine`` is the number f of Byzantine clients (``None``: :func:`default_byzantine`
    of ``clients``); ``defence_f`` is the f the defence is told (``None`` means the true f,
    ``"auto"`` asks the rule to estimate it). ``lr`` ``None`` means :data:`DEFAULT_LR` of the
    training mode. Both are resolved when the config is built, so :meth:`replace` keeps the
    resolved value; pass ``None`` again to derive it anew.
    ``pre`` is a tuple of ``(name, params)`` pre-aggregators applied in order before the rule.

    Each field's metadata holds its command-line option (:class:`~simulations.options.CliOption`).
    """

    dataset: str = option(
        "digits", "--dataset", group="data", help="digits | breast_cancer | mnist"
    )
    data_dir: str | None = option(
        None,
        "--data-dir",
        group="data",
        help="folder of the MNIST IDX files",
        metavar="DIR",
        to_value=absolute_path,
        default_text="$FORTIS_MNIST_DIR, else ../shared/data/mnist",
    )
    partition: str = option(
        "iid",
        "--partition",
        "--split",
        group="data",
        help="iid | dirichlet | label_sorted",
        grid="--partitions",
    )
    alpha: float = option(0.5, "--alpha", group="data", parse=float, help="Dirichlet concentration")
    gamma: float = option(
        0.0, "--gamma", group="data", parse=float, help="label_sorted: fraction dealt IID"
    )
    model: str = option("logreg", "--model", group="federation", help="logreg | mlp | cnn")
    clients: int = option(
        20, "--clients", group="federation", parse=int, help="number of clients n"
    )
    byzantine: int | None = option(
        None,
        "--byzantine",
        "-f",
        group="federation",
        parse=int,
        metavar="F",
        help="number of Byzantine clients f",
        default_text=f"{DEFAULT_BYZANTINE_FRACTION:.0%} of clients, at least 1",
        grid="--f",
    )
    attack: str = option(
        "scaling",
        "--attack",
        group="threat model",
        metavar="NAME[:K=V,...]",
        help="attack, optionally with parameters, e.g. alie:z=1.5",
        grid="--attacks",
    )
    attack_params: dict[str, Any] = _params_option(
        "--attack-param", "threat model", "parameter of the one attack run (repeatable)"
    )
    knowledge: str = option(
        "omniscient",
        "--knowledge",
        group="threat model",
        choices=KNOWLEDGE_LEVELS,
        help="what the attackers see: every honest update, or only their own",
    )
    collusion: bool = option(
        True,
        "--independent",
        group="threat model",
        action="store_false",
        help="Byzantine clients do not collude",
        default_text="they collude",
    )
    defence: str = option(
        "multi_krum",
        "--defence",
        "--defense",
        group="defence",
        metavar="[PRE[:K=V,...]+]RULE[:K=V,...]",
        help="rule, optionally with pre-aggregators and parameters, e.g. bucketing:s=2+krum; "
        f"rules: {', '.join(robust.stages('rule'))} (`fortis defences` shows their parameters)",
        grid="--defences",
    )
    defence_params: dict[str, Any] = _params_option(
        "--defence-param", "defence", "rule parameter (repeatable)"
    )
    defence_f: int | str | None = option(
        None,
        "--defence-f",
        group="defence",
        parse=parse_value,
        help="f the defence assumes: an int or 'auto'",
        default_text="the true f",
    )
    pre: tuple[tuple[str, dict[str, Any]], ...] = option(
        (),
        "--pre",
        group="defence",
        action="append",
        metavar="NAME[:K=V,...]",
        to_value=_pre,
        help=f"pre-aggregator, in order (repeatable): {', '.join(robust.stages('pre'))}",
    )
    reputation: dict[str, Any] | None = option(
        None,
        "--reputation",
        group="defence",
        metavar="beta[:K=V,...]",
        to_value=lambda text: _parse_reputation(text),
        help="per-client trust kept across rounds from the defence's verdicts; it weights "
        "and excludes clients in the next rounds and is reported per client, e.g. "
        "beta:decay=0.9,floor=0.2,weights=trust (keys: decay, a0, b0, non_finite_penalty, "
        "floor, weights=trust|equal; weighted rules only unless weights=equal,floor=0)",
        default_text="off",
    )
    rounds: int = option(20, "--rounds", group="federation", parse=int, help="training rounds")
    training: str = option(
        "fedavg",
        "--training",
        group="federation",
        choices=TRAINING_MODES,
        help="local training: FedAvg, FedProx, or distributed SGD with client momentum",
    )
    local_epochs: int = option(
        1, "--local-epochs", group="federation", parse=int, help="local epochs per round"
    )
    lr: float | None = option(
        None,
        "--lr",
        group="federation",
        parse=float,
        help="client learning rate",
        default_text=_lr_default_text(),
    )
    server_lr: float = option(
        1.0, "--server-lr", group="federation", parse=float, help="server learning rate"
    )
    batch_size: int = option(
        32, "--batch-size", group="federation", parse=int, help="local batch size"
    )
    momentum: float = option(
        0.9, "--momentum", group="federation", parse=float, help="client momentum"
    )
    mu: float = option(
        0.01, "--mu", group="federation", parse=float, help="FedProx proximal weight"
    )
    dropout: float = option(
        0.0,
        "--dropout",
        group="threat model",
        parse=float,
        help="benign fault: per-round dropout probability",
    )
    stragglers: float = option(
        0.0,
        "--stragglers",
        group="threat model",
        parse=float,
        help="benign fault: probability of a stale update",
    )
    max_staleness: int = option(
        2,
        "--max-staleness",
        group="threat model",
        parse=int,
        help="most rounds a straggler's update lags behind",
    )
    replication: int = option(
        1,
        "--replication",
        group="defence",
        parse=int,
        help="DRACO-style replication factor r (1 = off)",
    )
    secure: bool = option(
        False,
        "--secure",
        group="defence",
        action="store_true",
        help="aggregate through the secure-aggregation protocol: the mean, or a distance rule "
        "(krum, multi_krum, distance_filter) run on encrypted sketches (needs --clip)",
        default_text="plaintext",
    )
    secure_bits: int = option(
        32, "--secure-bits", group="defence", parse=int, help="secure mode: ring bits b of Z_2^b"
    )
    secure_graph: str = option(
        "complete",
        "--secure-graph",
        group="defence",
        choices=SECURE_GRAPHS,
        help="masking graph: complete (Bonawitz et al.) or SecAgg+ sparse graph (Bell et al.)",
    )
    sketch_dim: int = option(
        128,
        "--sketch-dim",
        group="defence",
        parse=int,
        help="secure filtering: rows k of the +-1 sketch the distances are measured on "
        "(relative distance error about sqrt(2/k))",
    )
    paillier_bits: int = option(
        SECURE_PAILLIER_BITS,
        "--paillier-bits",
        group="defence",
        parse=int,
        choices=PAILLIER_BITS,
        help="secure filtering: size of the key holder's Paillier key, made once per run "
        "(1024 only for tests and quick demos: it warns)",
    )
    clip: float | None = option(
        None,
        "--clip",
        group="defence",
        parse=float,
        help="every client clips its update to this L2 norm before sending (the norm bound "
        "C); in secure mode also the fixed-point range, with --dp-epsilon the DP sensitivity. "
        "The no-defence baseline rows do not clip (unless secure or central DP needs it)",
        default_text="no clipping; secure mode takes the range from the data",
    )
    dp_epsilon: float | None = option(
        None,
        "--dp-epsilon",
        group="privacy",
        parse=float,
        metavar="E",
        help="client-level differential privacy: the target epsilon over all --rounds "
        "(central: noise multiplier from dp.noise_multiplier_for; local: each client's "
        "sample-level epsilon)",
        default_text="off",
    )
    dp_delta: float = option(
        DEFAULT_DP_DELTA, "--dp-delta", group="privacy", parse=float, metavar="D", help="DP delta"
    )
    dp_mode: str = option(
        "central",
        "--dp-mode",
        group="privacy",
        choices=DP_MODES,
        help="where the noise goes: central = Gaussian noise on the aggregate after the "
        "defence ran on the noise-free clipped updates (needs --clip; std z*C on the sum, "
        "z*C/m on the mean of m); local = clients train with Opacus DP-SGD; distributed = "
        "--secure only: each client adds a verifiable integer noise share (--dp-mechanism) "
        "and the filter reads noise-free sketches; before_filter = HARMFUL, noise on each "
        "update before the defence reads it, only to show the harm",
    )
    dp_mechanism: str = option(
        "ddg",
        "--dp-mechanism",
        group="privacy",
        choices=DP_MECHANISMS,
        help="--dp-mode distributed: discrete Gaussian (ddg) or Skellam noise shares",
    )
    dp_sampling_rate: float = option(
        1.0,
        "--dp-sampling-rate",
        group="privacy",
        parse=float,
        metavar="Q",
        help="Poisson client sampling: each client takes part in a round with probability Q, "
        "as the accountant assumes (1 = every client every round)",
    )
    dp_grad_norm: float = option(
        1.0,
        "--dp-grad-norm",
        group="privacy",
        parse=float,
        help="--dp-mode local: Opacus' per-sample gradient clip norm",
    )
    eval_every: int = option(
        1, "--eval-every", group="output", parse=int, help="test the model every N rounds"
    )
    seed: int = option(0, "--seed", group="output", parse=int, help="seed of every random choice")

    def __post_init__(self) -> None:
        object.__setattr__(self, "attack_params", _freeze(self.attack_params))
        object.__setattr__(self, "defence_params", _freeze(self.defence_params))
        object.__setattr__(
            self, "pre", tuple((str(name), _freeze(params)) for name, params in self.pre)
        )
        if self.reputation is not None:
            from simulations.reputation import normalize_reputation

            object.__setattr__(self, "reputation", normalize_reputation(self.reputation))
        if self.byzantine is None and isinstance(self.clients, int):
            object.__setattr__(self, "byzantine", default_byzantine(self.clients))
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR.get(self.training, DEFAULT_LR["fedavg"]))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid option."""
        if self.clients < 2:
            raise ConfigError(f"clients must be >= 2, got {self.clients}")
        if not 0 <= self.byzantine < self.clients:
            raise ConfigError(
                f"byzantine must be in [0, clients) = [0, {self.clients}), got {self.byzantine}"
            )
        from simulations.datasets import DATASETS
        from simulations.models import MODELS
        from simulations.partition import PARTITIONS

        for name, value, choices in (
            ("dataset", self.dataset, DATASETS),
            ("model", self.model, MODELS),
            ("partition", self.partition, PARTITIONS),
        ):
            if value not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        if self.training not in TRAINING_MODES:
            raise ConfigError(f"training must be one of {TRAINING_MODES}, got {self.training!r}")
        if self.knowledge not in KNOWLEDGE_LEVELS:
            raise ConfigError(
                f"knowledge must be one of {KNOWLEDGE_LEVELS}, got {self.knowledge!r}"
            )
        for name in ("dropout", "stragglers"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1), got {value}")
        for name in ("lr", "server_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {value}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ConfigError(
                f"alpha (Dirichlet concentration) must be a finite number > 0, got {self.alpha}"
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(
                f"gamma (label_sorted IID fraction) must be in [0, 1], got {self.gamma}"
            )
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.mu) and self.mu >= 0):
            raise ConfigError(
                f"mu (FedProx proximal weight) must be a finite number >= 0, got {self.mu}"
            )
        if self.replication < 1 or self.clients % self.replication:
            raise ConfigError(
                f"replication r={self.replication} must be >= 1 and divide clients={self.clients}"
            )
        for name in ("batch_size", "local_epochs", "max_staleness"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.clip is not None and not self.clip > 0:
            raise ConfigError(f"clip must be positive, got {self.clip}")
        if self.secure_graph not in SECURE_GRAPHS:
            raise ConfigError(
                f"secure_graph must be one of {SECURE_GRAPHS}, got {self.secure_graph!r}"
            )
        if self.secure:
            self._validate_secure()
        if isinstance(self.defence_f, str) and self.defence_f != "auto":
            raise ConfigError(f"defence_f must be an int, None or 'auto', got {self.defence_f!r}")
        self._validate_dp()
        if self.reputation is not None and self.replication > 1:
            raise ConfigError(
                "--reputation cannot be combined with --replication (the majority vote "
                "takes no weights)"
            )

    def _validate_dp(self) -> None:
        """The ``--dp-*`` options: ranges, and the combinations that cannot run."""
        if self.dp_epsilon is None:
            changed = [
                f"--{name.replace('_', '-')}"
                for name in (
                    "dp_delta",
                    "dp_mode",
                    "dp_sampling_rate",
                    "dp_grad_norm",
                    "dp_mechanism",
                )
                if getattr(self, name) != _KEY_OMITS_AT_DEFAULT[name]
            ]
            if changed:
                raise ConfigError(f"{', '.join(changed)} given without --dp-epsilon: DP is off")
            return
        eps, delta, q = self.dp_epsilon, self.dp_delta, self.dp_sampling_rate
        if isinstance(eps, bool) or not (isinstance(eps, int | float) and math.isfinite(eps)):
            raise ConfigError(f"dp_epsilon must be a finite number > 0, got {eps!r}")
        if eps <= 0:
            raise ConfigError(f"dp_epsilon must be > 0, got {eps}")
        if not (isinstance(delta, int | float) and 0 < delta < 1):
            raise ConfigError(f"dp_delta must be in (0, 1), got {delta!r}")
        if not (isinstance(q, int | float) and 0 < q <= 1):
            raise ConfigError(f"dp_sampling_rate must be in (0, 1], got {q!r}")
        if not (math.isfinite(self.dp_grad_norm) and self.dp_grad_norm > 0):
            raise ConfigError(f"dp_grad_norm must be a finite number > 0, got {self.dp_grad_norm}")
        if self.dp_mode not in DP_MODES:
            raise ConfigError(f"dp_mode must be one of {', '.join(DP_MODES)}; got {self.dp_mode!r}")
        if self.dp_mode == "distributed" and not self.secure:
            raise ConfigError(
                "--dp-mode distributed needs --secure: the noise shares are added under secure "
                "aggregation and checked by the key holder of secure filtering"
            )
        if self.dp_mode == "distributed" and self.dp_epsilon is not None:
            from simulations.privacy import check_distributed

            check_distributed(self)
        if self.dp_mechanism not in DP_MECHANISMS:
            raise ConfigError(
                f"dp_mechanism must be one of {', '.join(DP_MECHANISMS)}; got {self.dp_mechanism!r}"
            )
        if self.dp_mode in DP_CLIPPED_MODES and self.clip is None:
            raise ConfigError(
                f"--dp-epsilon with --dp-mode {self.dp_mode} needs --clip C: the noise is "
                "calibrated to each client's clipped update (sensitivity C of the sum)"
            )
        if self.dp_mode == "before_filter" and self.secure:
            raise ConfigError(
                "--dp-mode before_filter runs only in plaintext: it exists to show the harm of "
                "noise the filter reads; secure mode never puts noise before the filter"
            )
        if self.dp_mode == "local" and self.training != "fedavg":
            raise ConfigError(
                f"--dp-mode local trains with Opacus DP-SGD under --training fedavg only, got "
                f"--training {self.training}"
            )
        if self.dp_mode == "local":
            absolute = []
            if dict(self.defence_params).get("max_distance") is not None:
                absolute.append(f"--defence {self.defence} with max_distance")
            absolute += [
                f"--pre {name} with max_norm"
                for name, params in self.pre
                if name == "norm_filter" and dict(params).get("max_norm") is not None
            ]
            if absolute:
                raise ConfigError(
                    f"--dp-mode local widens the honest spread (DP-SGD noise), but {absolute[0]} "
                    "is an absolute cut that does not widen with it and would reject honest "
                    "clients: use the relative cut (distance_filter's k, a multiple of the "
                    "median distance's spread) or size the cut with `fortis calibrate "
                    "--placement local`"
                )

    @property
    def dp_needs_clip(self) -> bool:
        """Whether DP is on in a mode calibrated to the clients' clip (central, before_filter)."""
        return self.dp_epsilon is not None and self.dp_mode in DP_CLIPPED_MODES

    def privacy_label(self) -> str:
        """``central DP (eps=8, delta=1e-05)``; ``''`` with DP off."""
        if self.dp_epsilon is None:
            return ""
        q = f", q={self.dp_sampling_rate:g}" if self.dp_sampling_rate < 1 else ""
        return f"{self.dp_mode} DP (eps={self.dp_epsilon:g}, delta={self.dp_delta:g}{q})"

    def _validate_secure(self) -> None:
        """Secure-aggregation settings that would fail inside the first round, checked now."""
        from secagg.encoding import FixedPointEncoder
        from secagg.errors import SecAggError
        from secagg.graphs import secaggplus_parameters
        from secagg.sketch import MAX_SKETCH_DIM

        k = self.sketch_dim
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_SKETCH_DIM:
            raise ConfigError(f"sketch_dim must be an int in [1, {MAX_SKETCH_DIM}], got {k!r}")
        if self.paillier_bits not in PAILLIER_BITS:
            raise ConfigError(
                f"paillier_bits must be one of {PAILLIER_BITS}, got {self.paillier_bits!r}"
            )
        bits = self.secure_bits
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 64:
            raise ConfigError(f"secure_bits must be an int in [2, 64], got {bits!r}")
        if self.clip is not None:
            try:
                FixedPointEncoder(self.clip, self.clients, bits)
            except (SecAggError, ValueError) as exc:
                raise ConfigError(f"secure aggregation with clip={self.clip}: {exc}") from None
        if self.secure_graph == "secagg+" and secaggplus_parameters(self.clients) is None:
            raise ConfigError(
                f"secure_graph='secagg+' has no sparse degree for {self.clients} clients; use "
                "the complete graph"
            )

    @property
    def f_for_defence(self) -> int | str:
        return self.byzantine if self.defence_f is None else self.defence_f

    def replace(self, **changes: Any) -> SimulationConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pre"] = [[name, params] for name, params in self.pre]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimulationConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(unknown)}")
        d = dict(d)
        if "pre" in d:
            d["pre"] = tuple((name, params) for name, params in d["pre"])
        return cls(**d)

    def key(self) -> str:
        """A short stable hash of everything that affects the result (used to resume)."""
        d = self.to_dict()
        for name, default in _KEY_OMITS_AT_DEFAULT.items():
            if d.get(name) == default:
                del d[name]
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def attack_label(self) -> str:
        """The attack that runs, with its parameters: ``alie(z=1.5)``; ``none`` when no
        client is Byzantine (the attack never runs then)."""
        if self.byzantine == 0:
            return "none"
        return component_label(self.attack, self.attack_params)

    def defence_label(self, *, client_clip: bool = False) -> str:
        """``bucketing(s=2)+krum(f=auto)``: the defence with its pre-aggregators, parameters
        and, when it is told one, the f it assumes. With ``client_clip``, the clients' own
        clip comes first when set: ``client_clip(5)+median``."""
        params = dict(self.defence_params)
        if self.defence_f is not None:
            params["f"] = self.defence_f
        label = defence_label(self.pre, self.defence, params)
        if self.reputation is not None:
            from simulations.reputation import reputation_label

            label = f"{label} with {reputation_label(self.reputation)}"
        if client_clip and self.clip is not None:
            label = f"client_clip({self.clip:g})+{label}"
        return label

    def aggregation_label(self) -> str:
        """``plaintext``, or ``secure (complete graph, 32-bit ring)``."""
        if not self.secure:
            return "plaintext"
        return f"secure ({self.secure_graph} graph, {self.secure_bits}-bit ring)"

    def label(self) -> str:
        """What this run is, in the words of its options: ``alie(z=1.5) on dirichlet,
        client_clip(5)+bucketing(s=2)+krum [secure]``. ``clean`` stands for no attack (f = 0);
        the client clip and the secure tag appear when set. Two configs that differ in the
        attack, its parameters, the split, the defence or the aggregation mode get different
        labels."""
        attack = "clean" if self.byzantine == 0 else self.attack_label()
        secure = " [secure]" if self.secure else ""
        dp = f" [{self.privacy_label()}]" if self.dp_epsilon is not None else ""
        return f"{attack} on {self.partition}, {self.defence_label(client_clip=True)}{secure}{dp}"
