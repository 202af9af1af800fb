"""A simulation run for real: server, key holder and clients as separate processes over TLS.

The same :class:`~simulations.config.SimulationConfig` as ``fortis simulate`` drives every
process. The server process keeps the model, picks each round's participants, evaluates, keeps
reputation and the privacy ledger, and writes the same report; each round's aggregation is one
round of the network protocol (:class:`protocol.network.NetworkServer`). Each client process
loads the same data split, trains its own update on the model the server sends, and masks
it (a Byzantine client crafts its attack first; see :class:`ClientWorkload`). The key holder
process holds the Paillier key of secure filtering.

Configuration is one TOML file shared by every process (``[network]`` below, ``[simulation]``
any :class:`SimulationConfig` field)::

    [network]
    federation = "demo"          # names the CA and every certificate
    host = "127.0.0.1"
    port = 47400
    certs = "certs"              # relative paths are relative to the TOML file
    state = "server-state.npz"   # the server's crash-safe state
    out = "report"               # the report (results.json, summary.md, accuracy.png)
    hardened = true              # signed keys and the consistency check (active adversary)
    join_timeout = 120           # how long the server waits for the clients to connect
    first_timeout = 120          # per round: from RoundOpen until the clients' first answer
    stage_timeout = 30           # per later stage

    [simulation]
    dataset = "digits"
    clients = 20
    rounds = 5
    secure = true
    defence = "multi_krum"
    clip = 5.0

Crash safety: the server writes its state after every completed round
(:func:`protocol.network.state.save_state`: model, round, random streams, reputation,
privacy ledger, the report's history) and records every round id it opens before opening it;
``fortis server --resume`` continues after the last completed round, re-running a round that
was in flight under a fresh round id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simulations.config import ConfigError, SimulationConfig

__all__ = [
    "NetworkSettings",
    "DeployConfigError",
    "load_deploy_config",
    "write_deploy_config",
    "ClientWorkload",
    "NetworkRounds",
    "serve",
    "run_client",
    "run_keyholder",
    "make_credentials",
    "deploy_local",
]

_PAILLIER = "keyholder.paillier"


class DeployConfigError(ConfigError):
    """A deployment file or setting that cannot be used (names the key)."""


@dataclass(frozen=True)
class NetworkSettings:
    """The ``[network]`` section (see the module docstring); paths are absolute."""

    certs: Path
    state: Path
    out: Path
    federation: str = "fortis"
    host: str = "127.0.0.1"
    port: int = 47400
    hardened: bool = True
    join_timeout: float = 120.0
    first_timeout: float = 120.0
    stage_timeout: float = 30.0
    max_frame_mb: int = 256

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def ledger(self, client: int) -> Path:
        """Where client ``client`` keeps its round ledger."""
        return self.certs / f"client-{client}.ledger.json"

    def rid_file(self) -> Path:
        """The write-ahead record of the last round id the server opened."""
        return self.state.with_name(self.state.name + ".rid")


_NETWORK_KEYS = {f.name for f in dataclasses.fields(NetworkSettings)}


def load_deploy_config(
    path: str | os.PathLike,
    *,
    network: Mapping[str, Any] | None = None,
    simulation: Mapping[str, Any] | None = None,
) -> tuple[NetworkSettings, SimulationConfig]:
    """Read a deployment TOML file; ``network`` / ``simulation`` override its keys (flags).

    Raises :class:`DeployConfigError` naming the file and key for anything unusable, and
    :class:`ConfigError` for a bad simulation setting.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except OSError as exc:
        raise DeployConfigError(f"cannot read {p}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DeployConfigError(f"{p} is not valid TOML: {exc}") from None
    unknown = set(doc) - {"network", "simulation"}
    if unknown:
        raise DeployConfigError(f"{p}: unknown sections {sorted(unknown)} (network, simulation)")
    net = {**doc.get("network", {}), **{k: v for k, v in (network or {}).items() if v is not None}}
    bad = set(net) - _NETWORK_KEYS
    if bad:
        raise DeployConfigError(f"{p}: unknown [network] keys {sorted(bad)}")
    base = p.resolve().parent
    for key, default in (("certs", "certs"), ("state", "server-state.npz"), ("out", "report")):
        net[key] = (base / Path(net.get(key, default))).resolve()
    try:
        settings = NetworkSettings(**net)
    except TypeError as exc:
        raise DeployConfigError(f"{p}: [network]: {exc}") from None
    sim = {**doc.get("simulation", {}), **dict(simulation or {})}
    if "pre" in sim:
        sim["pre"] = [list(item) for item in sim["pre"]]
    try:
        config = SimulationConfig.from_dict(sim)
    except TypeError as exc:
        raise DeployConfigError(f"{p}: [simulation]: {exc}") from None
    check_deployable(config)
    return settings, config


def _toml_value(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_toml_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _toml_value(v) for k, v in value.items() if v is not None}
    return value


def write_deploy_config(
    path: str | os.PathLike, settings: NetworkSettings, config: SimulationConfig
) -> Path:
    """Write ``settings`` and ``config`` as a deployment TOML file (``None`` fields are left
    out, so they keep their defaults). Raises :class:`DeployConfigError` if a field whose
    default is not ``None`` is ``None`` (TOML has no null)."""
    import tomli_w

    defaults = SimulationConfig()
    sim = {}
    for name, value in config.to_dict().items():
        if value is None:
            if getattr(defaults, name) is not None:
                raise DeployConfigError(f"[simulation] {name} = None cannot be written in TOML")
            continue
        sim[name] = _toml_value(value)
    net = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()
    }
    from fortis.files import atomic_write

    atomic_write(path, tomli_w.dumps({"network": net, "simulation": sim}).encode())
    return Path(path)


def check_deployable(config: SimulationConfig) -> None:
    """Refuse what a deployment cannot run, with the reason.

    Raises :class:`DeployConfigError`.
    """
    if not config.secure:
        raise DeployConfigError("deployment runs the secure protocol: set secure = true (--secure)")
    if config.clip is None:
        raise DeployConfigError(
            "deployment needs clip (--clip C): the fixed-point range and norm bound must be "
            "agreed before the round, not derived from the data"
        )
    if config.replication > 1:
        raise DeployConfigError("replication is a plaintext-only simulation feature")
    if config.stragglers > 0:
        raise DeployConfigError("stragglers are simulated staleness; deployed clients are live")
    if config.attack.startswith("lying_sketch"):
        raise DeployConfigError("lying_sketch is an in-memory threat-model attack")
    if config.dp_mode == "before_filter" and config.dp_epsilon is not None:
        raise DeployConfigError(
            "dp_mode before_filter is a harmful placement shown in simulate only"
        )


# -- clients ----------------------------------------------------------------------------------


class ClientWorkload:
    """One client's part of a simulation: ``workload(opening) -> update``.

    The client loads the same split as the server (everything derives from the config's seed),
    trains on the model in ``opening.payload`` (the round's training step is
    ``opening.step``) and clips its update to ``clip``. A Byzantine client under a model-
    poisoning attack crafts its row as the simulation does: under the simulation's threat
    model the attacker knows the participants' data (omniscient), so it computes their
    updates itself (every Byzantine client arrives at the same crafted rows, from randomness
    derived from the seed and the step) and sends its own. The model and, when there is
    one, the previous aggregate travel in the payload (``[params]`` or
    ``[params, previous]``).
    """

    def __init__(self, config: SimulationConfig, client_id: int, dataset=None) -> None:
        from simulations.runner import Simulation

        self.sim = Simulation(config, dataset)
        if not 0 <= client_id < config.clients:
            raise DeployConfigError(f"client id {client_id} is not in 0..{config.clients - 1}")
        self.id = int(client_id)
        self.size = int(np.asarray(self.sim.params).size)

    @property
    def byzantine(self) -> bool:
        return bool(self.sim.is_byzantine[self.id])

    def _update(self, i: int, params: np.ndarray, step: int) -> np.ndarray:
        x, y = self.sim.client_data[i]
        return self.sim.trainer.compute_update(i, params, x, y, step, rng_key=i)

    def __call__(self, opening) -> np.ndarray:
        import robust

        sim, c = self.sim, self.sim.config
        payload = np.asarray(opening.payload, dtype=np.float32)
        if payload.size not in (self.size, 2 * self.size):
            raise DeployConfigError(
                f"payload of {payload.size} values; the model has {self.size} parameters"
            )
        params = payload[: self.size]
        sim.previous_aggregate = payload[self.size :] if payload.size == 2 * self.size else None
        step = int(opening.step)
        ids = np.asarray(opening.config.population)
        crafting = self.byzantine and not sim.data_poisoning and c.attack != "none"
        if not crafting:
            row = self._update(self.id, params, step)
        else:
            X = np.stack([self._update(int(i), params, step) for i in ids]).astype(np.float32)
            byz = sim.is_byzantine[ids]
            sim.params = params
            X = sim._craft(X, byz, step, rng=np.random.default_rng([c.seed, step, 7]))
            row = X[int(np.flatnonzero(ids == self.id)[0])]
        row = np.asarray(row, dtype=np.float64)
        if np.isfinite(row).all():
            row = robust.clip(row[None, :], c.clip)[0]
        return row  # a non-finite row makes the client abort: it drops out of the round


def _client_policy(config: SimulationConfig, settings: NetworkSettings, size: int):
    from protocol.network import ClientPolicy

    return ClientPolicy(
        dim=size,
        require_hardened=settings.hardened,
        require_filtering=_filtering(config),
        min_paillier_bits=min(2048, config.paillier_bits),
    )


def _filtering(config: SimulationConfig) -> bool:
    from simulations.runner import secure_filtering

    return secure_filtering(config)


async def run_client(
    settings: NetworkSettings,
    config: SimulationConfig,
    client_id: int,
    *,
    log: Callable[[str], None] | None = None,
    workload: Callable | None = None,
) -> list:
    """Run client ``client_id`` until the server shuts the federation down; returns its round
    reports. Reconnects after a lost connection (a restarted server)."""
    from protocol.network import NetworkClient, party_files

    work = workload or ClientWorkload(config, client_id)
    size = getattr(work, "size", None)
    client = NetworkClient(
        party_files(settings.certs, client_id),
        federation=settings.federation,
        address=settings.address,
        compute_update=work,
        policy=_client_policy(config, settings, size),
        ledger=settings.ledger(client_id),
        rng_for=lambda step: np.random.default_rng([config.seed, step, client_id, 13]),
        log=log,
    )
    return await client.serve(connect_timeout=settings.join_timeout)


async def run_keyholder(
    settings: NetworkSettings, *, log: Callable[[str], None] | None = None
) -> list[int]:
    """Run the key holder until the server shuts the federation down; returns the round ids
    it served. Its Paillier key must be an owner-only file (``fortis certs --paillier-bits``)."""
    from protocol import KEYHOLDER_ID
    from protocol.network import NetworkKeyHolder, load_paillier_key, party_files

    key = load_paillier_key(settings.certs / _PAILLIER, allow_insecure=True)
    kh = NetworkKeyHolder(
        party_files(settings.certs, KEYHOLDER_ID),
        federation=settings.federation,
        address=settings.address,
        paillier_key=key,
        log=log,
    )
    return await kh.serve(connect_timeout=settings.join_timeout)


def make_credentials(
    settings: NetworkSettings,
    clients: int,
    *,
    paillier_bits: int | None = None,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    overwrite: bool = False,
) -> dict:
    """The CA, every party's certificate and key, and (with ``paillier_bits``) the key
    holder's Paillier key pair (private part 0600, public modulus in ``.pub``)."""
    from protocol.network import save_paillier_key, write_federation
    from secagg.paillier_private import generate_paillier_keypair

    files = write_federation(
        settings.certs, clients, federation=settings.federation, hosts=hosts, overwrite=overwrite
    )
    if paillier_bits:
        public, private = generate_paillier_keypair(
            paillier_bits, allow_insecure=paillier_bits < 2048
        )
        save_paillier_key(settings.certs / _PAILLIER, private)
        from fortis.files import atomic_write

        atomic_write(settings.certs / (_PAILLIER + ".pub"), format(int(public.n), "x").encode())
    return files


def _paillier_public(settings: NetworkSettings):
    from secagg.paillier_public import PaillierPublicKey

    path = settings.certs / (_PAILLIER + ".pub")
    try:
        n = int(path.read_text().strip(), 16)
    except (OSError, ValueError) as exc:
        raise DeployConfigError(
            f"secure filtering needs the key holder's public key {path} "
            f"(fortis certs --paillier-bits): {exc}"
        ) from None
    return PaillierPublicKey(n, allow_insecure=True)


# -- the server -------------------------------------------------------------------------------


def _rows_view(result, ids: np.ndarray):
    """``result`` with client ids replaced by their rows in ``ids`` (what the simulation's
    round bookkeeping indexes by)."""
    pos = {int(cid): row for row, cid in enumerate(ids)}

    def rows(seq):
        return tuple(sorted(pos[i] for i in seq if i in pos))

    def rowmap(d):
        return {pos[i]: v for i, v in d.items() if i in pos}

    filt = result.filter
    if filt is not None:
        filt = dataclasses.replace(
            filt,
            judged=tuple(pos[i] for i in filt.judged),
            accepted=rows(filt.accepted),
            rejected=rowmap(filt.rejected),
        )
    return dataclasses.replace(
        result,
        survivors=rows(result.survivors),
        dropped=rows(result.dropped),
        rejected=rowmap(result.rejected),
        excluded=rowmap(result.excluded),
        pruned=rowmap(result.pruned),
        filter=filt,
    )


class NetworkRounds:
    """The :attr:`simulations.runner.Simulation.remote` driver of ``fortis server``: each
    round's aggregation is a network round with the connected participants."""

    def __init__(
        self,
        server,
        loop: asyncio.AbstractEventLoop,
        settings: NetworkSettings,
        *,
        next_round_id: int,
        paillier_public=None,
    ) -> None:
        self.server, self.loop, self.settings = server, loop, settings
        self.next_round_id = int(next_round_id)
        self.paillier_public = paillier_public
        self.results: list = []

    def _take_round_id(self) -> int:
        from fortis.files import atomic_write

        rid = self.next_round_id
        self.next_round_id += 1
        # write-ahead: a restarted server never opens this id again
        atomic_write(self.settings.rid_file(), json.dumps({"next_round_id": rid + 1}).encode())
        return rid

    def round_config(self, sim, members: Sequence[int]):
        from protocol import RoundConfig
        from protocol.filtering import FilterConfig

        c = sim.config
        filtering = None
        if sim._filtering:
            filtering = FilterConfig(
                self.paillier_public,
                c.clip,
                rule=c.defence,
                f=c.f_for_defence,
                rule_params=dict(c.defence_params),
                sketch_dim=c.sketch_dim,
            )
        noise = getattr(sim.privacy, "noise", None) if c.dp_mode == "distributed" else None
        return RoundConfig(
            round_id=self._take_round_id(),
            population=tuple(int(i) for i in members),
            dim=int(np.asarray(sim.params).size),
            value_range=float(c.clip),
            bits=c.secure_bits,
            graph=c.secure_graph,
            hardened=self.settings.hardened,
            federation=self.settings.federation,
            filtering=filtering,
            noise=noise,
        )

    def aggregate(self, sim, ids: np.ndarray, round_idx: int):
        from simulations.errors import SecureRoundError

        c = sim.config
        excluded = np.zeros(len(ids), dtype=bool)
        trust = None
        if sim.reputation is not None:
            from simulations.reputation import round_weights

            _, excluded, trust = round_weights(sim.reputation, ids, c.reputation, f=c.f_for_defence)
        connected = self.server.connected
        members = [int(i) for row, i in enumerate(ids) if not excluded[row] and int(i) in connected]
        if len(members) < 2:
            raise SecureRoundError(
                f"round {round_idx + 1}: only {len(members)} of {len(ids)} participants are "
                "connected and trusted"
            )
        cfg = self.round_config(sim, members)
        payload = np.asarray(sim.params, dtype=np.float64)
        if sim.previous_aggregate is not None:
            payload = np.concatenate([payload, np.asarray(sim.previous_aggregate, np.float64)])
        future = asyncio.run_coroutine_threadsafe(
            self.server.run_round(cfg, step=round_idx, payload=payload, mean=True), self.loop
        )
        result = future.result()
        self.results.append(result)
        finite = np.ones(len(ids), dtype=bool)
        return sim.secure_outcome(
            _rows_view(result, ids), finite, excluded, trust, filtered=cfg.filtered
        )


def _save(settings, sim, result, round_done: int, next_round_id: int) -> None:
    from protocol.network.state import save_state

    meta, arrays = sim.state_dict()
    save_state(
        settings.state,
        {
            "federation": settings.federation,
            "config_key": sim.config.key(),
            "round": round_done,
            "next_round_id": next_round_id,
            "sim": meta,
            "history": [dataclasses.asdict(r) for r in result.history],
        },
        arrays,
    )


def _next_round_id(settings: NetworkSettings, from_state: int) -> int:
    try:
        recorded = json.loads(settings.rid_file().read_text())["next_round_id"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = 1
    return max(int(recorded), int(from_state), 1)


async def serve(
    settings: NetworkSettings,
    config: SimulationConfig,
    *,
    resume: bool = False,
    progress: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] | None = None,
    on_round_start: Callable[[int], None] | None = None,
    rounds_out: list | None = None,
):
    """Run the federation's server: wait for the clients, run every round over the network,
    persist the state after each, shut the federation down; returns the
    :class:`~simulations.runner.RunResult` (the same as ``fortis simulate``'s).
    ``rounds_out`` collects each network round's :class:`protocol.RoundResult`.

    Raises :class:`DeployConfigError` if a state file exists and ``resume`` is false, or
    (with ``resume``) if it belongs to another configuration.
    """
    import traceback

    from protocol import SERVER_ID
    from protocol.network import Limits, NetworkServer, StageTimeouts, party_files
    from protocol.network.state import load_state
    from simulations.runner import Failure, RoundRecord, RunResult, Simulation, _error_line

    check_deployable(config)
    log = log or (lambda line: None)
    sim = Simulation(config)
    result = RunResult(
        config=config, byzantine_ids=list(sim.byzantine_ids), chance_accuracy=sim.chance_accuracy
    )
    start, next_rid = 0, _next_round_id(settings, 1)
    if resume:
        meta, arrays = load_state(settings.state, federation=settings.federation)
        if meta.get("config_key") != config.key():
            raise DeployConfigError(
                f"{settings.state} was written by another configuration (key "
                f"{meta.get('config_key')}, this one {config.key()}); resume with the same config"
            )
        sim.load_state_dict(meta["sim"], arrays)
        start = int(meta["round"])
        result.history = [RoundRecord(**r) for r in meta["history"]]
        next_rid = _next_round_id(settings, meta["next_round_id"])
        log(f"server: resuming after round {start} (next round id {next_rid})")
    elif settings.state.exists():
        raise DeployConfigError(
            f"{settings.state} exists: pass --resume to continue that run, or remove it"
        )
    public = _paillier_public(settings) if sim._filtering else None
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    async with NetworkServer(
        party_files(settings.certs, SERVER_ID),
        federation=settings.federation,
        host=settings.host,
        port=settings.port,
        limits=Limits(max_frame_bytes=settings.max_frame_mb << 20),
        timeouts=StageTimeouts(
            first=settings.first_timeout,
            stage=settings.stage_timeout,
            keyholder=max(settings.first_timeout, 60.0),
        ),
        log=log,
    ) as server:
        joined = await server.wait_for(
            config.clients, keyholder=public is not None, timeout=settings.join_timeout
        )
        log(f"server: {len(joined)} of {config.clients} clients connected")
        remote = NetworkRounds(
            server, loop, settings, next_round_id=next_rid, paillier_public=public
        )
        sim.remote = remote
        for r in range(start, config.rounds):
            if on_round_start is not None:
                on_round_start(r)
            if len(server.connected) < config.clients:
                await server.wait_for(config.clients, keyholder=public is not None, timeout=2.0)
            try:
                record = await loop.run_in_executor(None, sim.step, r)
            except Exception as exc:  # noqa: BLE001 - recorded like simulate's failures
                result.failure = Failure(
                    round=r, error=_error_line(exc), traceback=traceback.format_exc()
                )
                sim.notes.append(result.failure.describe())
                log(f"server: {result.failure.describe()}")
                break
            result.history.append(record)
            _save(settings, sim, result, r + 1, remote.next_round_id)
            if progress is not None:
                progress(r, vars(record))
            if sim.divergence is not None:
                result.divergence = sim.divergence
                break
        await server.shutdown("federation finished" if result.failure is None else "server stopped")
    result.seconds = time.perf_counter() - t0
    result.notes = list(sim.notes)
    result.privacy = sim.privacy_summary()
    if rounds_out is not None:
        rounds_out.extend(remote.results)  # each round's protocol.RoundResult (costs, faults)
    return result


# -- deploy-local -----------------------------------------------------------------------------


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def spawn(command: str, toml: Path, *args: str, log_path: Path) -> subprocess.Popen:
    """Start ``fortis <command> --config toml args...`` as a separate process, output to
    ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "simulations", command, "--config", str(toml), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )


def deploy_local(
    config: SimulationConfig,
    workdir: str | os.PathLike,
    *,
    kill: Mapping[int, int] | None = None,
    progress: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] | None = None,
    settings: Mapping[str, Any] | None = None,
    rounds_out: list | None = None,
):
    """Run ``config`` as a federation of processes on loopback: credentials in
    ``workdir/certs``, the key holder (secure filtering) and every client as ``fortis
    keyholder`` / ``fortis client`` processes, the server in this process. ``kill`` maps a
    client id to the round (0-based) at whose start its process gets SIGKILL. Returns
    ``(RunResult, settings, toml path)``; logs are in ``workdir/logs``.
    """
    check_deployable(config)
    root = Path(workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    host = "127.0.0.1"
    net = NetworkSettings(
        certs=root / "certs",
        state=root / "server-state.npz",
        out=root / "report",
        port=_free_port(host),
        **dict(settings or {}),
    )
    (root / "logs").mkdir(parents=True, exist_ok=True)
    server_log = open(root / "logs" / "server.log", "w")  # noqa: SIM115 - closed below
    shown = log or (lambda line: None)

    def log(line: str) -> None:
        server_log.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        server_log.flush()
        shown(line)

    filtering = _filtering(config)
    if net.state.exists():
        net.state.unlink()
    net.rid_file().unlink(missing_ok=True)
    make_credentials(
        net,
        config.clients,
        paillier_bits=config.paillier_bits if filtering else None,
        overwrite=True,
    )
    for ledger in net.certs.glob("client-*.ledger.json"):
        ledger.unlink()
    toml = write_deploy_config(root / "federation.toml", net, config)
    procs: dict[str, subprocess.Popen] = {}
    if filtering:
        procs["keyholder"] = spawn("keyholder", toml, log_path=root / "logs" / "keyholder.log")
    for i in range(config.clients):
        procs[f"client-{i}"] = spawn(
            "client", toml, "--id", str(i), log_path=root / "logs" / f"client-{i}.log"
        )
    log(f"deploy-local: started {len(procs)} processes; logs in {root / 'logs'}")
    kill = dict(kill or {})

    def on_round_start(r: int) -> None:
        for cid, at in kill.items():
            proc = procs.get(f"client-{cid}")
            if at == r and proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                log(f"deploy-local: killed client {cid} (SIGKILL) at the start of round {r + 1}")

    try:
        result = asyncio.run(
            serve(
                net,
                config,
                progress=progress,
                log=log,
                on_round_start=on_round_start,
                rounds_out=rounds_out,
            )
        )
    finally:
        deadline = time.monotonic() + 20
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server_log.close()
    return result, net, toml
