"""Simulation configuration: one frozen dataclass, validated once, serialisable to JSON.

Every option of ``fortis simulate`` maps to one field here, so the CLI, the Python API, the
matrix runner and the pytest helpers all describe a run the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from simulations.errors import ConfigError

TRAINING_MODES = ("fedavg", "fedprox", "dsgd")


def _freeze(params: dict[str, Any] | None) -> dict[str, Any]:
    return dict(sorted((params or {}).items()))


@dataclass(frozen=True)
class SimulationConfig:
    """One federated training run under attack.

    ``byzantine`` is the number f of Byzantine clients; ``defence_f`` is the f the defence is
    told (``None`` means the true f, ``"auto"`` asks the rule to estimate it).
    ``pre`` is a tuple of ``(name, params)`` pre-aggregators applied in order before the rule.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    partition: str = "iid"
    alpha: float = 0.5
    gamma: float = 0.0
    model: str = "logreg"
    clients: int = 20
    byzantine: int = 4
    attack: str = "scaling"
    attack_params: dict[str, Any] = field(default_factory=dict)
    knowledge: str = "omniscient"
    collusion: bool = True
    defence: str = "multi_krum"
    defence_params: dict[str, Any] = field(default_factory=dict)
    defence_f: int | str | None = None
    pre: tuple[tuple[str, dict[str, Any]], ...] = ()
    rounds: int = 20
    training: str = "fedavg"
    local_epochs: int = 1
    lr: float = 0.1
    server_lr: float = 1.0
    batch_size: int = 32
    momentum: float = 0.9
    mu: float = 0.01
    dropout: float = 0.0
    stragglers: float = 0.0
    max_staleness: int = 2
    replication: int = 1
    secure: bool = False
    secure_bits: int = 32
    secure_graph: str = "complete"
    clip: float | None = None
    eval_every: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "attack_params", _freeze(self.attack_params))
        object.__setattr__(self, "defence_params", _freeze(self.defence_params))
        object.__setattr__(
            self, "pre", tuple((str(name), _freeze(params)) for name, params in self.pre)
        )
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
        if self.knowledge not in ("omniscient", "limited"):
            raise ConfigError(
                f"knowledge must be 'omniscient' or 'limited', got {self.knowledge!r}"
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
        if self.secure_graph not in ("complete", "secagg+"):
            raise ConfigError(
                f"secure_graph must be 'complete' or 'secagg+', got {self.secure_graph!r}"
            )
        if self.secure:
            self._validate_secure()
        if isinstance(self.defence_f, str) and self.defence_f != "auto":
            raise ConfigError(f"defence_f must be an int, None or 'auto', got {self.defence_f!r}")

    def _validate_secure(self) -> None:
        """Secure-aggregation settings that would fail inside the first round, checked now."""
        from secagg.encoding import FixedPointEncoder
        from secagg.errors import SecAggError
        from secagg.graphs import secaggplus_parameters

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
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def defence_label(self) -> str:
        """``bucketing(s=2)+krum``: the defence with its pre-aggregators and parameters."""
        from simulations.specs import defence_label

        return defence_label(self.pre, self.defence, self.defence_params)

    def label(self) -> str:
        attack = self.attack if self.byzantine else "none"
        return f"{attack} / {self.defence_label()}"
