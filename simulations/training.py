"""Local client training for the robustness lab: FedAvg, FedProx and distributed SGD.

One :class:`LocalTrainer` is built per simulation. It owns a single torch model whose parameters
are views into one flat float32 tensor, so loading a global vector, taking SGD steps and reading
the result back are each one vectorised copy. Minibatches are gathered by indexing tensors
directly (no DataLoader).

Sign convention (important)
---------------------------
:meth:`LocalTrainer.compute_update` always returns a vector ``u`` to be *added* to the global
parameters: the server applies ``params += aggregate(u_1, ..., u_n)`` in every mode.

- ``"fedavg"`` / ``"fedprox"``: ``u = w_local - w_global`` after ``local_epochs`` of local SGD
  from ``w_global`` (so FedAvg with server learning rate 1 is ``params += mean(u_i)``).
- ``"dsgd"``: ``u = -lr * m_i`` where ``m_i`` is client i's momentum (see below), so plain
  averaging gives ``params -= lr * mean(m_i)``: SGD with (client) momentum.

Modes
-----
- ``"fedavg"``: minibatch SGD with heavy-ball momentum in the PyTorch form
  ``b = momentum * b + g; w -= lr * b``, ``g`` including ``weight_decay * w``. The buffer starts
  at zero every round unless ``carry_momentum=True``, in which case it is kept per client and
  resumed in the client's next round.
- ``"fedprox"``: as fedavg, with the proximal term ``(mu / 2) * ||w - w_global||^2`` added to the
  local objective, i.e. ``mu * (w - w_global)`` added to every gradient (Li et al. 2020).
- ``"dsgd"``: one minibatch gradient per client per round at ``w_global`` (``batch_size`` samples
  drawn without replacement; all samples if the client has fewer), and the client momentum of
  Karimireddy, He & Jaggi 2021 ("Learning from History"): ``m_i <- momentum * m_i + (1 - momentum)
  * g_i``, starting from ``m_i = 0`` and always carried across rounds.

Determinism and replicas
------------------------
The minibatch order of a call depends only on ``(seed, rng_key, round_idx)``; ``rng_key``
defaults to ``client_id``. Two calls with the same global vector, data, ``rng_key``, round and
momentum history therefore return bit-identical updates on the same machine and thread count.
That is what DRACO-style replication (:mod:`simulations.replication`) relies on: give every
replica of shard s ``rng_key=s``. Per-client momentum is keyed by ``client_id``.

Local differential privacy (``dp_epsilon``)
-------------------------------------------
With ``dp_epsilon`` set (``fortis simulate --dp-mode local``), fedavg clients train with
Opacus' ``PrivacyEngine`` (sample-level DP-SGD: per-sample gradients clipped to
``dp_grad_norm``, Gaussian noise, Poisson-sampled minibatches of expected size
``batch_size``). Each client has its own engine, model copy and RDP accountant, made the first
time it trains: Opacus' ``get_noise_multiplier`` (as ``make_private_with_epsilon``) picks the noise multiplier that spends
``dp_epsilon`` at ``dp_delta`` over ``local_epochs x dp_rounds`` epochs of that client's data
(a client that sits out rounds spends less). :meth:`LocalTrainer.client_epsilons` reports
each client's epsilon so far. The minibatch sampling and the noise come from torch generators
seeded from ``(seed, rng_key, round_idx)``: deterministic, as the rest of the simulation.
The noise widens the spread of the honest updates the defence sees.

State
-----
:meth:`LocalTrainer.state_dict` / :meth:`LocalTrainer.load_state_dict` save and restore the
per-client momentum as numpy arrays. Because the RNG is derived from the round index rather than
advanced, that is all a resumed run needs to continue bit-identically.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from simulations.errors import SimulationError
from simulations.models import ParamsError, build_model, check_flat_params

__all__ = ["MODES", "LocalTrainer", "TrainingError"]

#: Opacus' chatter that says nothing about a simulation (its RNG is seeded on purpose here).
_OPACUS_WARNINGS = (
    ".*[Ss]ecure RNG.*",
    ".*Optimal order is the (largest|smallest) alpha.*",
    ".*Using a non-full backward hook.*",
    ".*full_backward_hook.*",
)

MODES: tuple[str, ...] = ("fedavg", "fedprox", "dsgd")

_STATE_FORMAT = "fortis.simulations.LocalTrainer/1"


class TrainingError(SimulationError):
    """Bad trainer configuration, client data, or saved state; the message names the field."""


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise TrainingError(f"trainer: {name} must be an integer >= 1, got {value!r}")
    return int(value)


def _nonneg_float(name: str, value: object, upper: float | None = None) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or float(value) < 0 or (upper is not None and float(value) >= upper):
        bound = f" and < {upper}" if upper is not None else ""
        raise TrainingError(f"trainer: {name} must be a finite number >= 0{bound}, got {value!r}")
    return float(value)


def _nonneg_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise TrainingError(f"trainer: {name} must be an integer >= 0, got {value!r}")
    return int(value)


@functools.lru_cache(maxsize=256)
def _opacus_noise_multiplier(
    epsilon: float, delta: float, sample_rate: float, epochs: int
) -> float:
    """Opacus' ``get_noise_multiplier`` (what ``make_private_with_epsilon`` uses), cached."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            epochs=epochs,
            accountant="rdp",
        )
    )


@functools.lru_cache(maxsize=1024)
def _opacus_epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """``PrivacyEngine.get_epsilon`` of an engine whose RDP accountant holds ``history``
    (``(noise multiplier, sample rate, steps)`` entries), cached: clients with the same data
    size and participation share it, and Opacus takes ~0.3 s per call."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta))


class _DPClient:
    """One client's Opacus objects (local DP-SGD)."""

    __slots__ = ("engine", "module", "optimizer", "loader", "data_gen", "noise_gen")

    def __init__(self, engine, module, optimizer, loader, data_gen, noise_gen) -> None:
        self.engine, self.module, self.optimizer = engine, module, optimizer
        self.loader, self.data_gen, self.noise_gen = loader, data_gen, noise_gen


class LocalTrainer:
    """Computes client updates for one simulation; see the module docstring for semantics.

    Parameters
    ----------
    model_name, input_shape, num_classes: passed to :func:`simulations.models.build_model`.
    mode: ``"fedavg"``, ``"fedprox"`` or ``"dsgd"``.
    lr: client learning rate (> 0).
    local_epochs: passes over the client's data per round (fedavg/fedprox).
    batch_size: minibatch size (the one batch per round in dsgd).
    mu: FedProx proximal coefficient (fedprox only).
    momentum: client momentum coefficient in [0, 1).
    weight_decay: L2 coefficient added to every gradient.
    carry_momentum: fedavg/fedprox only: keep each client's momentum buffer across rounds.
    seed: model-initialisation and minibatch seed.
    dp_epsilon, dp_delta, dp_grad_norm, dp_rounds: local DP-SGD with Opacus (fedavg only;
        see the module docstring); ``dp_epsilon=None`` (default) trains without DP.
    num_threads: torch intra-op threads, set process-wide at construction. ``None`` (default)
        chooses 1: these models are small, per-step work is a few ms at most, and on the shared
        2-core development machine a second intra-op thread made rounds 2-10x *slower* (OpenMP
        hand-off under contention), for the CNN too. Use processes to run cells in parallel
        instead. Pass 0 to leave torch's setting alone.
    """

    def __init__(
        self,
        model_name: str,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        mode: str = "fedavg",
        lr: float = 0.1,
        local_epochs: int = 1,
        batch_size: int = 32,
        mu: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        carry_momentum: bool = False,
        seed: int = 0,
        num_threads: int | None = None,
        dp_epsilon: float | None = None,
        dp_delta: float = 1e-5,
        dp_grad_norm: float = 1.0,
        dp_rounds: int = 1,
    ) -> None:
        if not isinstance(mode, str) or mode not in MODES:
            raise TrainingError(f"trainer: unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        self.mode = mode
        self.lr = _nonneg_float("lr", lr)
        if self.lr == 0:
            raise TrainingError("trainer: lr must be > 0, got 0")
        self.local_epochs = _positive_int("local_epochs", local_epochs)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.mu = _nonneg_float("mu", mu)
        self.momentum = _nonneg_float("momentum", momentum, upper=1.0)
        self.weight_decay = _nonneg_float("weight_decay", weight_decay)
        self.carry_momentum = bool(carry_momentum)
        self.seed = _nonneg_int("seed", seed)
        self.model_name = model_name
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)

        if num_threads is None:
            num_threads = 1
        if num_threads:
            torch.set_num_threads(_positive_int("num_threads", num_threads))

        self.model = build_model(model_name, self.input_shape, self.num_classes, seed=self.seed)
        self.model.train()
        self._params = list(self.model.parameters())
        # Re-home every parameter as a view into one flat tensor.
        self._w = torch.cat([p.detach().reshape(-1) for p in self._params]).clone()
        offset = 0
        for p in self._params:
            n = p.numel()
            p.data = self._w[offset : offset + n].view_as(p)
            offset += n
        self.num_params = int(self._w.numel())
        self._initial = self._w.numpy().copy()
        self._momenta: dict[int, torch.Tensor] = {}
        #: Mean minibatch training loss of the last :meth:`compute_update` call (diagnostics).
        self.last_train_loss: float = float("nan")
        self.dp_epsilon: float | None = None
        if dp_epsilon is not None:
            if mode != "fedavg":
                raise TrainingError(f"trainer: local DP-SGD runs in mode fedavg only, got {mode!r}")
            self.dp_epsilon = _nonneg_float("dp_epsilon", dp_epsilon)
            if self.dp_epsilon == 0:
                raise TrainingError("trainer: dp_epsilon must be > 0, got 0")
            self.dp_delta = _nonneg_float("dp_delta", dp_delta, upper=1.0)
            self.dp_grad_norm = _nonneg_float("dp_grad_norm", dp_grad_norm)
            self.dp_rounds = _positive_int("dp_rounds", dp_rounds)
        self._dp_clients: dict[int, _DPClient] = {}

    # ---------------------------------------------------------------------------------------
    def initial_params(self) -> np.ndarray:
        """The deterministic initial global parameters (a fresh float32 copy)."""
        return self._initial.copy()

    def has_momentum(self, client_id: int) -> bool:
        """Whether a momentum buffer is stored for ``client_id``."""
        return int(client_id) in self._momenta

    # ---------------------------------------------------------------------------------------
    def _check_data(
        self, client_id: int, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        who = f"trainer: client {client_id}"
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim < 1 or x.shape[1:] != self.input_shape:
            raise TrainingError(
                f"{who}: x must have shape (n, {', '.join(map(str, self.input_shape))}), got {x.shape}"
            )
        if y.shape != (x.shape[0],):
            raise TrainingError(f"{who}: y must have shape ({x.shape[0]},), got {y.shape}")
        if x.shape[0] == 0:
            raise TrainingError(f"{who}: has no samples")
        if not np.issubdtype(y.dtype, np.integer):
            raise TrainingError(f"{who}: labels must be integers, got dtype {y.dtype}")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= self.num_classes:
            raise TrainingError(
                f"{who}: labels must be in [0, {self.num_classes}), found range [{lo}, {hi}]"
            )
        return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64, copy=False)

    def _grad(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = F.cross_entropy(self.model(xb), yb)
        grads = torch.autograd.grad(loss, self._params)
        return torch.cat([g.reshape(-1) for g in grads]), loss.detach()

    def compute_update(
        self,
        client_id: int,
        global_params: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        round_idx: int,
        rng_key: int | None = None,
    ) -> np.ndarray:
        """Train client ``client_id`` on ``(x, y)`` from ``global_params``; return its update.

        Returns a fresh float32 vector of length :attr:`num_params` meant to be *added* to the
        global parameters (see the module docstring). It can be non-finite only if local
        training itself diverges (e.g. a far too large ``lr``).

        ``rng_key`` (default ``client_id``) seeds the minibatch sampling together with ``seed``
        and ``round_idx``; replicas of one data shard should share it.

        Raises :class:`~simulations.models.ParamsError` if ``global_params`` has the wrong
        length or is non-finite, and :class:`TrainingError` for malformed ``x``/``y`` (shape,
        empty, labels out of range) or negative ids/round.
        """
        client_id = _nonneg_int("client_id", client_id)
        round_idx = _nonneg_int("round_idx", round_idx)
        key = client_id if rng_key is None else _nonneg_int("rng_key", rng_key)
        w_global = check_flat_params(
            global_params, self.num_params, party=f"trainer: client {client_id}"
        )
        x, y = self._check_data(client_id, x, y)
        rng = np.random.default_rng([self.seed, key, round_idx])
        w0 = torch.from_numpy(np.ascontiguousarray(w_global, dtype=np.float32))
        n = x.shape[0]
        with torch.no_grad():
            self._w.copy_(w0)

        if self.dp_epsilon is not None:
            return self._dp_update(client_id, w0, x, y, rng)

        if self.mode == "dsgd":
            take = min(self.batch_size, n)
            idx = np.sort(rng.choice(n, size=take, replace=False))
            g, loss = self._grad(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))
            with torch.no_grad():
                if self.weight_decay:
                    g.add_(self._w, alpha=self.weight_decay)
                m = self._momenta.get(client_id)
                if m is None:
                    m = torch.zeros(self.num_params, dtype=torch.float32)
                    self._momenta[client_id] = m
                m.mul_(self.momentum).add_(g, alpha=1.0 - self.momentum)
                self.last_train_loss = float(loss)
                return (m * -self.lr).numpy()

        xt = torch.from_numpy(x)
        yt = torch.from_numpy(y)
        buf = self._momenta.get(client_id) if self.carry_momentum else None
        if buf is None and self.momentum > 0:
            buf = torch.zeros(self.num_params, dtype=torch.float32)
        loss_sum = torch.zeros((), dtype=torch.float32)
        steps = 0
        for _ in range(self.local_epochs):
            perm = torch.from_numpy(rng.permutation(n))
            for start in range(0, n, self.batch_size):
                bidx = perm[start : start + self.batch_size]
                g, loss = self._grad(xt[bidx], yt[bidx])
                with torch.no_grad():
                    if self.weight_decay:
                        g.add_(self._w, alpha=self.weight_decay)
                    if self.mode == "fedprox" and self.mu:
                        g.add_(self._w - w0, alpha=self.mu)
                    if buf is not None:
                        buf.mul_(self.momentum).add_(g)
                        g = buf
                    self._w.add_(g, alpha=-self.lr)
                loss_sum += loss
                steps += 1
        if self.carry_momentum and buf is not None:
            self._momenta[client_id] = buf
        self.last_train_loss = float(loss_sum) / steps
        with torch.no_grad():
            return (self._w - w0).numpy()

    # -- local DP-SGD (Opacus) ----------------------------------------------------------------
    def _dp_client(self, client_id: int, x: np.ndarray, y: np.ndarray) -> _DPClient:
        """Client ``client_id``'s Opacus engine, model and loader, made on first use."""
        client = self._dp_clients.get(client_id)
        if client is not None:
            return client
        import warnings

        from opacus import PrivacyEngine
        from torch.utils.data import DataLoader, TensorDataset

        model = build_model(self.model_name, self.input_shape, self.num_classes, seed=self.seed)
        optimizer = torch.optim.SGD(
            model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        data_gen, noise_gen = torch.Generator(), torch.Generator()
        loader = DataLoader(
            TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
            batch_size=min(self.batch_size, x.shape[0]),
            generator=data_gen,
        )
        with warnings.catch_warnings():
            for pattern in _OPACUS_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            engine = PrivacyEngine(accountant="rdp")
            # make_private_with_epsilon's own calibration, done once per sampling rate (the
            # clients of an IID split share it): sample rate 1/len(loader), as Opacus takes it
            z = _opacus_noise_multiplier(
                self.dp_epsilon, self.dp_delta, 1 / len(loader), self.local_epochs * self.dp_rounds
            )
            module, dp_optimizer, dp_loader = engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=z,
                max_grad_norm=self.dp_grad_norm,
                noise_generator=noise_gen,
                poisson_sampling=True,
            )
        client = _DPClient(engine, module, dp_optimizer, dp_loader, data_gen, noise_gen)
        self._dp_clients[client_id] = client
        return client

    def _dp_update(
        self,
        client_id: int,
        w0: torch.Tensor,
        x: np.ndarray,
        y: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """One round of DP-SGD for ``client_id`` from ``w0``: ``w_local - w0``."""
        import warnings

        client = self._dp_client(client_id, x, y)
        params = [p for p in client.module.parameters() if p.requires_grad]
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(w0.clone(), params)
        client.optimizer.original_optimizer.state.clear()  # momentum restarts every round
        data_seed, noise_seed = (int(v) for v in rng.integers(0, 2**62, size=2))
        client.data_gen.manual_seed(data_seed)
        client.noise_gen.manual_seed(noise_seed)
        loss_sum, steps = 0.0, 0
        with warnings.catch_warnings():
            for pattern in _OPACUS_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            for _ in range(self.local_epochs):
                for xb, yb in client.loader:
                    client.optimizer.zero_grad(set_to_none=True)
                    if len(yb):
                        loss = F.cross_entropy(client.module(xb), yb)
                        loss.backward()
                        loss_sum += float(loss.detach())
                    steps += 1
                    # An empty Poisson batch still takes its (noise-only) step: the accountant
                    # counts every step, and skipping one would tell that the batch was empty.
                    client.optimizer.step()
        self.last_train_loss = loss_sum / max(1, steps)
        with torch.no_grad():
            w = torch.nn.utils.parameters_to_vector(params)
            return (w - w0).numpy().astype(np.float32, copy=False)

    def client_epsilons(self) -> dict[int, float]:
        """Local DP: each client's sample-level epsilon spent so far (Opacus' RDP accountant,
        at ``dp_delta``), for the clients that have trained; empty without local DP."""
        if self.dp_epsilon is None:
            return {}
        return {
            cid: _opacus_epsilon(tuple(map(tuple, c.engine.accountant.history)), self.dp_delta)
            for cid, c in sorted(self._dp_clients.items())
        }

    # ---------------------------------------------------------------------------------------
    def evaluate(
        self, params: np.ndarray, x: np.ndarray, y: np.ndarray, batch_size: int = 1024
    ) -> tuple[float, float]:
        """Return ``(accuracy, mean cross-entropy loss)`` of ``params`` on ``(x, y)``.

        A diverged (non-finite) parameter vector is accepted, since measuring a collapsed global
        model is legitimate: a sample whose logits are not all finite counts as misclassified,
        and the loss is then NaN or inf. Raises :class:`~simulations.models.ParamsError` for a
        wrong-length vector and :class:`TrainingError` for malformed or empty data.
        """
        arr = np.asarray(params)
        if arr.ndim != 1 or arr.shape[0] != self.num_params:
            raise ParamsError(
                f"trainer: evaluate: parameter vector must have shape ({self.num_params},), got {arr.shape}"
            )
        batch_size = _positive_int("batch_size", batch_size)
        x, y = self._check_eval(x, y)
        self.model.eval()
        correct = 0
        loss_sum = 0.0
        try:
            with torch.inference_mode():
                self._w.copy_(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)))
                for start in range(0, x.shape[0], batch_size):
                    xb = torch.from_numpy(x[start : start + batch_size])
                    yb = torch.from_numpy(y[start : start + batch_size])
                    logits = self.model(xb)
                    ok = torch.isfinite(logits).all(dim=1) & (logits.argmax(dim=1) == yb)
                    correct += int(ok.sum())
                    loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
        finally:
            self.model.train()
        n = x.shape[0]
        return correct / n, loss_sum / n

    def predict(self, params: np.ndarray, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Predicted labels (int64) of the model with ``params`` on ``x``.

        Raises :class:`~simulations.models.ParamsError` for a wrong-length vector. A sample
        whose logits are not all finite is predicted as label -1 (never a real class).
        """
        arr = np.asarray(params)
        if arr.ndim != 1 or arr.shape[0] != self.num_params:
            raise ParamsError(
                f"trainer: predict: parameter vector must have shape ({self.num_params},), got {arr.shape}"
            )
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty(x.shape[0], dtype=np.int64)
        self.model.eval()
        try:
            with torch.inference_mode():
                self._w.copy_(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)))
                for start in range(0, x.shape[0], batch_size):
                    logits = self.model(torch.from_numpy(x[start : start + batch_size]))
                    pred = logits.argmax(dim=1)
                    pred[~torch.isfinite(logits).all(dim=1)] = -1
                    out[start : start + len(pred)] = pred.numpy()
        finally:
            self.model.train()
        return out

    def _check_eval(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            return self._check_data(0, x, y)
        except TrainingError as exc:
            raise TrainingError(str(exc).replace("client 0", "evaluate")) from None

    # ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Per-client momentum as numpy arrays (savable with ``np.savez``).

        Keys: ``format`` and ``mode`` (0-d str arrays), ``num_params`` (0-d int64),
        ``client_ids`` (int64, shape (k,)), ``momentum`` (float32, shape (k, num_params)).
        """
        ids = sorted(self._momenta)
        mom = (
            np.stack([self._momenta[i].numpy() for i in ids]).astype(np.float32)
            if ids
            else np.zeros((0, self.num_params), dtype=np.float32)
        )
        return {
            "format": np.array(_STATE_FORMAT),
            "mode": np.array(self.mode),
            "num_params": np.array(self.num_params, dtype=np.int64),
            "client_ids": np.array(ids, dtype=np.int64),
            "momentum": mom,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` produced, replacing all stored client momentum.

        Raises :class:`TrainingError` (naming the key) if the state is from another format,
        mode or model size, or is malformed or non-finite; the trainer is unchanged on error.
        """
        for key in ("format", "mode", "num_params", "client_ids", "momentum"):
            if key not in state:
                raise TrainingError(f"trainer state: missing key {key!r}")
        if str(np.asarray(state["format"])) != _STATE_FORMAT:
            raise TrainingError(
                f"trainer state: format {str(np.asarray(state['format']))!r}, expected {_STATE_FORMAT!r}"
            )
        if str(np.asarray(state["mode"])) != self.mode:
            raise TrainingError(
                f"trainer state: saved for mode {str(np.asarray(state['mode']))!r}, this trainer is {self.mode!r}"
            )
        if int(np.asarray(state["num_params"])) != self.num_params:
            raise TrainingError(
                f"trainer state: saved for {int(np.asarray(state['num_params']))} parameters, "
                f"this model has {self.num_params}"
            )
        ids = np.asarray(state["client_ids"])
        mom = np.asarray(state["momentum"])
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise TrainingError(
                f"trainer state: client_ids must be a 1-D int array, got {ids.shape}"
            )
        if ids.size and (ids.min() < 0 or np.unique(ids).size != ids.size):
            raise TrainingError("trainer state: client_ids must be distinct and >= 0")
        if mom.shape != (ids.size, self.num_params):
            raise TrainingError(
                f"trainer state: momentum must have shape ({ids.size}, {self.num_params}), got {mom.shape}"
            )
        if not np.all(np.isfinite(mom)):
            raise TrainingError("trainer state: momentum holds non-finite values")
        self._momenta = {
            int(i): torch.from_numpy(np.array(mom[k], dtype=np.float32)) for k, i in enumerate(ids)
        }
