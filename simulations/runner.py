"""The simulation runner: one federated training run under a chosen attack and defence.

A round: every participating client computes its honest update with local training; the
Byzantine clients then replace theirs with the attack's crafted rows (model poisoning) or train
on poisoned data (data poisoning); the server aggregates with the configured defence (plaintext,
or through the secure-aggregation protocol with ``secure=True``) and applies the result.

Per round the runner records test accuracy and loss, the clients accepted and rejected, and in
particular the honest clients wrongly rejected: an unfair exclusion users need to see.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import robust
from simulations.attacks import AttackContext, is_data_poisoning, make_attack
from simulations.config import ConfigError, SimulationConfig
from simulations.datasets import Dataset, load_dataset
from simulations.partition import partition
from simulations.training import LocalTrainer

ProgressCallback = Callable[[int, dict[str, Any]], None]


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


@dataclass
class RunResult:
    """What one run produced. ``history`` has one record per round."""

    config: SimulationConfig
    history: list[RoundRecord] = field(default_factory=list)
    byzantine_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def accuracies(self) -> list[float]:
        return [r.accuracy for r in self.history if r.accuracy is not None]

    @property
    def final_accuracy(self) -> float:
        accs = self.accuracies
        return accs[-1] if accs else float("nan")

    @property
    def best_accuracy(self) -> float:
        accs = self.accuracies
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

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.config.label(),
            "final_accuracy": self.final_accuracy,
            "best_accuracy": self.best_accuracy,
            "honest_rejected_per_round": self.honest_rejected_per_round,
            "byzantine_rejected_per_round": float(
                np.mean([r.byzantine_rejected for r in self.history]) if self.history else 0.0
            ),
            "backdoor_asr": self.final_backdoor_asr,
            "seconds": self.seconds,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "summary": self.summary(),
            "byzantine_ids": self.byzantine_ids,
            "history": [vars(r) for r in self.history],
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(
            config=SimulationConfig.from_dict(d["config"]),
            history=[RoundRecord(**r) for r in d["history"]],
            byzantine_ids=list(d["byzantine_ids"]),
            seconds=float(d["summary"]["seconds"]),
            notes=list(d.get("notes", [])),
        )


def _check_secure_supported(config: SimulationConfig) -> None:
    if not config.secure:
        return
    if config.defence != "mean" or config.pre:
        kind = "coordinate-wise" if config.defence in robust.COORDINATE_RULES else "robust"
        raise ConfigError(
            f"--secure cannot run the {kind} defence {config.defence!r}"
            + (f" with pre-aggregators {[p for p, _ in config.pre]}" if config.pre else "")
            + ": secure aggregation hides individual updates, and filtering on encrypted "
            "sketches is not implemented yet. Use --defence mean with --secure, or drop "
            "--secure to run the defence in plaintext. fortis never falls back silently."
        )
    if config.replication > 1:
        raise ConfigError("--secure cannot be combined with --replication (needs plaintext rows)")


def attack_kwargs(config: SimulationConfig, num_classes: int) -> dict[str, Any]:
    """The attack's parameters, with the dataset's class count filled in for label flipping."""
    params = dict(config.attack_params)
    if config.attack == "label_flip":
        params.setdefault("num_classes", num_classes)
    return params


def check_components(config: SimulationConfig) -> None:
    """Fail fast, before any training, on an unknown attack, rule or pre-aggregator name.

    Raises :class:`ConfigError` (or the attack library's ``AttackConfigError`` for bad attack
    parameters), naming the option and the valid choices.
    """
    # num_classes only completes label_flip's parameters here; the real value comes from the
    # dataset when the simulation is built.
    make_attack(config.attack, **attack_kwargs(config, num_classes=2))
    if config.defence not in robust.RULES:
        raise ConfigError(
            f"unknown defence {config.defence!r}; choose one of: {', '.join(sorted(robust.RULES))}"
        )
    for name, _ in config.pre:
        if name not in robust.PRE_AGGREGATORS:
            raise ConfigError(
                f"unknown pre-aggregator {name!r}; choose from: "
                f"{', '.join(sorted(robust.PRE_AGGREGATORS))}"
            )
    _check_secure_supported(config)


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
        n_shards = config.clients // r
        self.shards = partition(
            ds.y_train,
            n_shards,
            config.partition,
            alpha=config.alpha,
            gamma=config.gamma,
            seed=config.seed,
        )
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
        self.trainer = LocalTrainer(
            config.model,
            ds.input_shape,
            ds.num_classes,
            mode=config.training,
            lr=config.lr,
            local_epochs=config.local_epochs,
            batch_size=config.batch_size,
            mu=config.mu,
            momentum=config.momentum,
            seed=config.seed,
        )
        self.params = self.trainer.initial_params()
        self.rng = np.random.default_rng([config.seed, 2])
        self.previous_aggregate: np.ndarray | None = None
        self.param_history: deque[np.ndarray] = deque(maxlen=config.max_staleness + 1)
        self.notes: list[str] = []
        self.diverged = False
        if r > 1:
            from simulations.replication import replication_cost

            self.notes.append(replication_cost(config.clients, r).describe())
        self._round_bytes = 0
        self._round_idx = 0

    # -- one round -------------------------------------------------------------------------
    def _participants(self) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        n = c.clients
        active = np.ones(n, dtype=bool)
        if c.dropout > 0:
            active &= self.rng.random(n) >= c.dropout
        staleness = np.zeros(n, dtype=int)
        if c.stragglers > 0:
            late = self.rng.random(n) < c.stragglers
            staleness[late] = self.rng.integers(1, c.max_staleness + 1, size=int(late.sum()))
        return np.flatnonzero(active), staleness

    def _honest_updates(self, ids: np.ndarray, staleness: np.ndarray, round_idx: int) -> np.ndarray:
        rows = []
        for i in ids:
            k = min(int(staleness[i]), len(self.param_history) - 1)
            start = self.param_history[-1 - k]
            x, y = self.client_data[i]
            # Replicas of one shard share the RNG key, so honest replicas are bit-identical.
            key = self.client_shard[i] if self.config.replication > 1 else int(i)
            rows.append(self.trainer.compute_update(int(i), start, x, y, round_idx, rng_key=key))
        return np.stack(rows).astype(np.float32, copy=False)

    def _craft(self, X: np.ndarray, byz_mask: np.ndarray, round_idx: int) -> np.ndarray:
        c = self.config
        if self.data_poisoning or not byz_mask.any() or c.attack == "none":
            return X
        honest = X[~byz_mask]
        ctx = AttackContext(
            honest_updates=honest,
            byzantine_updates=X[byz_mask],
            n_clients=len(X),
            round_idx=round_idx,
            rng=self.rng,
            aggregate=self._defence_callable(),
            previous_aggregate=self.previous_aggregate,
            knowledge=c.knowledge,
            collusion=c.collusion,
        )
        X = X.copy()
        X[byz_mask] = self.attack.craft(ctx)
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
        res = robust.aggregate_detailed(
            X, c.defence, f=c.f_for_defence, pre=self._pre(), **self._defence_params()
        )
        return res.vector, np.asarray(res.accepted, dtype=bool)

    def _aggregate_secure(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean over the survivors of one in-memory secure-aggregation round.

        A row that cannot be encoded (non-finite) is a client that never manages to send a
        masked input: it drops out at that stage and the round goes on without it.
        """
        from protocol import run_round

        c = self.config
        finite = np.isfinite(X).all(axis=1)
        result = run_round(
            np.where(finite[:, None], X, 0.0),
            clip=c.clip,
            bits=c.secure_bits,
            graph=c.secure_graph,
            mean=True,
            seed=int(self.rng.integers(2**31)),
            round_id=self._round_idx,
            dropouts={"masked_input": np.flatnonzero(~finite).tolist()},
        )
        if result.aborted:
            raise RuntimeError(f"secure round {self._round_idx} aborted: {result.abort_reason}")
        accepted = np.zeros(len(X), dtype=bool)
        accepted[list(result.survivors)] = True
        t = result.transcript
        self._round_bytes = t.server_bytes_sent + sum(t.client_bytes_sent.values())
        return np.asarray(result.aggregate, dtype=np.float32), accepted

    def _aggregate_replicated(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from simulations.replication import majority_filter

        ids = self._round_ids
        shard_of = [self.client_shard[i] for i in ids]
        groups: dict[int, list[int]] = {}
        for row, shard in enumerate(shard_of):
            groups.setdefault(shard, []).append(row)
        majority, accepted, _caught = majority_filter(X, list(groups.values()))
        if len(majority) == 0:
            raise robust.errors.RobustError("no replication group reached a majority")
        vector = robust.aggregate(majority, "mean")
        return vector, np.asarray(accepted, dtype=bool)

    def step(self, round_idx: int) -> RoundRecord:
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
        if self.diverged:
            record.skipped = "model diverged (a non-finite aggregate was applied earlier)"
        elif len(ids) < 2:
            record.skipped = f"only {len(ids)} client(s) participated"
        else:
            X = self._honest_updates(ids, staleness, round_idx)
            X = self._craft(X, byz_mask, round_idx)
            if c.clip is not None:
                X = self._clip_finite(X, c.clip)
            try:
                vector, accepted = self._aggregate(X)
            except robust.errors.InsufficientClientsError as exc:
                if len(ids) == c.clients:
                    # Not a benign fault: the defence cannot run even with every client present.
                    raise ConfigError(
                        f"defence {c.defence_label()!r} cannot run with "
                        f"{c.clients} clients and f={c.f_for_defence}: {exc}"
                    ) from exc
                record.skipped = f"aggregation skipped: {exc}"
            else:
                if not np.all(np.isfinite(vector)):
                    # Only an undefended rule lets this happen: the model is destroyed, which is
                    # the measured outcome of the run, not a crash.
                    self.diverged = True
                    self.notes.append(
                        f"round {round_idx}: {c.defence!r} produced a non-finite aggregate; "
                        "the model diverged"
                    )
                self.params = self.params + np.float32(c.server_lr) * vector.astype(np.float32)
                self.previous_aggregate = vector
                record.accepted = int(accepted.sum())
                record.honest_rejected = int((~accepted & ~byz_mask).sum())
                record.byzantine_rejected = int((~accepted & byz_mask).sum())
                record.aggregate_norm = float(np.linalg.norm(vector))
                record.bytes_sent, self._round_bytes = self._round_bytes, 0
        if (round_idx + 1) % c.eval_every == 0 or round_idx == c.rounds - 1:
            self._evaluate(record)
        record.seconds = time.perf_counter() - t0
        return record

    def _evaluate(self, record: RoundRecord) -> None:
        ds = self.dataset
        acc, loss = self.trainer.evaluate(self.params, ds.x_test, ds.y_test)
        record.accuracy, record.loss = float(acc), float(loss)
        if self.data_poisoning and hasattr(self.attack, "success_rate"):
            record.backdoor_asr = float(
                self.attack.success_rate(self.predict, ds.x_test, ds.y_test)
            )

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels of the current global model."""
        return self.trainer.predict(self.params, x)

    def run(self, progress: ProgressCallback | None = None) -> RunResult:
        t0 = time.perf_counter()
        result = RunResult(config=self.config, byzantine_ids=list(self.byzantine_ids))
        for r in range(self.config.rounds):
            record = self.step(r)
            result.history.append(record)
            if progress is not None:
                progress(r, vars(record))
        result.seconds = time.perf_counter() - t0
        result.notes = list(self.notes)
        return result


def run_simulation(
    config: SimulationConfig,
    *,
    dataset: Dataset | None = None,
    progress: ProgressCallback | None = None,
) -> RunResult:
    """Run one configured simulation to the end and return its per-round history.

    Raises :class:`ConfigError` for option combinations that cannot run (for example a robust
    defence with ``secure=True``), and ``DatasetError`` when the data cannot be loaded.
    """
    return Simulation(config, dataset=dataset).run(progress=progress)
