"""One in-memory router for any set of sans-I/O parties, with fault injection as layers.

The router moves *encoded bytes* between parties: what a party returns is :func:`encode`-d,
counted, passed through the fault layers, and handed to the recipient's tolerant
``receive_bytes(data, peer=sender)`` (``peer`` plays the authenticated channel of a real
transport). It knows nothing about the round's stages: a party is anything with

* ``party_id`` (its wire id), ``phase`` (the round phase its next work belongs to; used to
  label the time it spends) and ``done``;
* ``begin()`` -> messages to send when the round starts (a client's key advertisement; the
  server sends nothing);
* ``receive_bytes(data, peer=...)`` -> messages to send back; it never raises for a peer's fault;
* ``deadline()`` -> messages to send when the current stage's time is up (a party without
  timers returns ``[]``).

so the server, the clients and, later, the key holder all plug in the same way. Messages are
delivered in FIFO order. When nothing is in flight the router fires every live party's
``deadline()``, and it stops once a deadline sweep changes nothing.

Fault injection (dropouts, tampering, replays, recording) is a :class:`Layer` stacked over the
router: each layer sees every envelope before delivery and returns the envelopes to deliver
instead (none to drop it, a changed one to tamper, several to duplicate or inject).

The :class:`RouterLog` holds what the round cost, measured on the real encoded messages: bytes
sent and received per party, and the wall-clock seconds each party spent per phase (protocol
logic, crypto, decoding what it receives and encoding what it sends). Parties run one after
another, so times are per-party compute, not network round trips.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

from .errors import SERVER_ID, ProtocolConfigError, party_name
from .messages import Message, encode

__all__ = [
    "Party",
    "Envelope",
    "Layer",
    "Router",
    "RouterLog",
    "Dropouts",
    "Tamper",
    "Replay",
    "Recorder",
]


@runtime_checkable
class Party(Protocol):
    """What the router needs from a party (see the module docstring)."""

    @property
    def party_id(self) -> int: ...

    @property
    def phase(self) -> str: ...

    @property
    def done(self) -> bool: ...

    def begin(self) -> list[Message]: ...

    def receive_bytes(self, data: bytes, *, peer: int | None = None) -> list[Message]: ...

    def deadline(self) -> list[Message]: ...


@dataclass(frozen=True)
class Envelope:
    """One message in flight: who sent it to whom, its encoding, its type name, and the phase
    the sender was in when it produced it."""

    sender: int
    recipient: int
    data: bytes
    kind: str
    phase: str

    def with_data(self, data: bytes) -> Envelope:
        """The same envelope carrying other bytes (for tampering layers)."""
        return replace(self, data=bytes(data))


class Layer:
    """A fault-injection layer. The base class passes everything through unchanged."""

    def on_begin(self, router: Router, party_id: int) -> bool:
        """Whether ``party_id`` starts the round at all (``False``: it never joins)."""
        return True

    def on_send(self, router: Router, env: Envelope) -> list[Envelope]:
        """The envelopes to deliver in place of ``env`` (``[]`` drops it)."""
        return [env]


@dataclass
class RouterLog:
    """Bytes and seconds per party, measured by the router on the encoded messages."""

    bytes_sent: dict[int, int] = field(default_factory=dict)
    bytes_received: dict[int, int] = field(default_factory=dict)
    seconds: dict[int, dict[str, float]] = field(default_factory=dict)
    #: Envelopes handed to the layers (sent), and envelopes actually delivered.
    messages_sent: int = 0
    messages_delivered: int = 0

    def _add_time(self, party: int, phase: str, seconds: float) -> None:
        per = self.seconds.setdefault(party, {})
        per[phase] = per.get(phase, 0.0) + seconds

    def merge(self, other: RouterLog) -> None:
        """Add ``other``'s counts and times to this log (e.g. a preparation run before the
        round through its own router)."""
        for mine, theirs in (
            (self.bytes_sent, other.bytes_sent),
            (self.bytes_received, other.bytes_received),
        ):
            for party, count in theirs.items():
                mine[party] = mine.get(party, 0) + count
        for party, phases in other.seconds.items():
            for phase, seconds in phases.items():
                self._add_time(party, phase, seconds)
        self.messages_sent += other.messages_sent
        self.messages_delivered += other.messages_delivered


class Router:
    """Delivers encoded messages between ``parties`` (wire id -> party) through ``layers``.

    Raises :class:`ProtocolConfigError` if two parties share an id or a party does not have
    the :class:`Party` interface. A party that *raises* while handling bytes is a bug in that
    party (tolerant entry points never raise for a peer's fault): the exception propagates.
    """

    def __init__(
        self,
        parties: Mapping[int, Party] | Iterable[Party],
        *,
        layers: Sequence[Layer] = (),
        max_sweeps: int = 64,
    ) -> None:
        items = list(parties.values() if isinstance(parties, Mapping) else parties)
        self.parties: dict[int, Party] = {}
        for p in items:
            if not isinstance(p, Party):
                raise ProtocolConfigError(
                    f"router: {type(p).__name__} lacks the Party interface (party_id, phase, "
                    "done, begin, receive_bytes, deadline)"
                )
            if p.party_id in self.parties:
                raise ProtocolConfigError(f"router: two parties with id {p.party_id}")
            self.parties[p.party_id] = p
        self.layers = list(layers)
        self.max_sweeps = max_sweeps
        self.log = RouterLog(
            bytes_sent={i: 0 for i in self.parties},
            bytes_received={i: 0 for i in self.parties},
            seconds={i: {} for i in self.parties},
        )
        self._queue: deque[Envelope] = deque()
        self._begun = False

    # -- sending and delivering -------------------------------------------------------------

    def _emit(self, sender: int, phase: str, msgs: list[Message], t0: float) -> None:
        """Encode ``msgs`` (charged to ``sender``'s ``phase`` from ``t0``), then queue them
        through the layers."""
        datas = [encode(m) for m in msgs]
        self.log._add_time(sender, phase, time.perf_counter() - t0)
        for msg, data in zip(msgs, datas):
            self.log.bytes_sent[sender] = self.log.bytes_sent.get(sender, 0) + len(data)
            self.log.messages_sent += 1
            to = getattr(msg, "recipient", SERVER_ID)  # client messages all go to the server
            env = Envelope(sender, to, data, type(msg).__name__, phase)
            self.post(env)

    def post(self, env: Envelope, *, through_layers: bool = True) -> None:
        """Queue ``env`` for delivery (through the layers unless told otherwise). Tests use it
        to inject messages a real adversary could send."""
        envs = [env]
        if through_layers:
            for layer in self.layers:
                envs = [out for e in envs for out in layer.on_send(self, e)]
        self._queue.extend(envs)

    def inject(self, sender: int, msgs: Iterable[Message]) -> None:
        """Put messages that ``sender`` produced outside the router (e.g. in a test that drove
        the first stages by hand) in flight, through the layers; the round counts as begun."""
        self._begun = True
        party = self.parties.get(sender)
        phase = party.phase if party is not None else "injected"
        self._emit(sender, phase, list(msgs), time.perf_counter())

    @property
    def pending(self) -> tuple[Envelope, ...]:
        """The envelopes in flight, in delivery order (a copy; use in ``run(until=...)``)."""
        return tuple(self._queue)

    def take_pending(self) -> list[Envelope]:
        """Remove and return the envelopes still in flight (e.g. after a ``run(until=...)``
        stop, for a test that goes on by hand)."""
        out = list(self._queue)
        self._queue.clear()
        return out

    def _deliver(self, env: Envelope) -> None:
        party = self.parties.get(env.recipient)
        if party is None:
            return  # addressed to nobody we route for (e.g. a forged recipient id)
        self.log.bytes_received[env.recipient] = self.log.bytes_received.get(
            env.recipient, 0
        ) + len(env.data)
        self.log.messages_delivered += 1
        phase = party.phase
        t0 = time.perf_counter()
        out = party.receive_bytes(env.data, peer=env.sender)
        self._emit(env.recipient, phase, out, t0)

    def begin(self) -> None:
        """Start the round: every party whose layers admit it runs ``begin()`` (once)."""
        if self._begun:
            return
        self._begun = True
        for pid, party in self.parties.items():
            if all(layer.on_begin(self, pid) for layer in self.layers):
                phase = party.phase
                t0 = time.perf_counter()
                self._emit(pid, phase, party.begin(), t0)

    def _snapshot(self) -> tuple:
        return tuple((p.phase, p.done) for p in self.parties.values())

    def _sweep(self) -> bool:
        """Fire every live party's deadline; True if anything was sent or changed."""
        before = self._snapshot()
        for pid, party in self.parties.items():
            if party.done:
                continue
            phase = party.phase
            t0 = time.perf_counter()
            self._emit(pid, phase, party.deadline(), t0)
        return bool(self._queue) or self._snapshot() != before

    def run(self, *, until: Callable[[Router], bool] | None = None) -> RouterLog:
        """Run until nothing moves any more (or ``until(router)`` holds between deliveries);
        return the log. Can be called again to continue after an ``until`` stop.

        Raises ``RuntimeError`` if deadline sweeps keep changing state past ``max_sweeps``
        (a party that never settles: a bug).
        """
        self.begin()
        sweeps = 0
        while True:
            if until is not None and until(self):
                return self.log
            if self._queue:
                self._deliver(self._queue.popleft())
                continue
            if not self._sweep():
                return self.log
            sweeps += 1
            if sweeps > self.max_sweeps:
                raise RuntimeError(
                    f"router: still changing after {self.max_sweeps} deadline sweeps; a party "
                    "never settles (bug)"
                )


# -- fault layers -------------------------------------------------------------------------------


class Dropouts(Layer):
    """Clients that go silent at a phase: ``drop_at`` maps a party id to the phase whose message
    it never sends (nor anything later). It also receives nothing from then on: the message it
    would have answered is not delivered (the client is gone, as with a dead connection).
    ``"advertise"`` means it never joins.
    """

    def __init__(self, drop_at: Mapping[int, str]) -> None:
        self.drop_at = dict(drop_at)
        self.gone: set[int] = set()

    def on_begin(self, router: Router, party_id: int) -> bool:
        if self.drop_at.get(party_id) == router.parties[party_id].phase:
            self.gone.add(party_id)
            return False
        return True

    def on_send(self, router: Router, env: Envelope) -> list[Envelope]:
        if env.sender in self.gone or env.recipient in self.gone:
            return []
        target = router.parties.get(env.recipient)
        if target is not None and self.drop_at.get(env.recipient) == target.phase:
            self.gone.add(env.recipient)
            return []
        return [env]


class Tamper(Layer):
    """Replace the bytes of every envelope that ``match`` selects by ``change(envelope)``
    (``None`` drops it). ``count`` limits how many envelopes are changed (default: all)."""

    def __init__(
        self,
        match: Callable[[Envelope], bool],
        change: Callable[[Envelope], bytes | None],
        *,
        count: int | None = None,
    ) -> None:
        self.match, self.change, self.left = match, change, count
        self.changed: list[Envelope] = []

    def on_send(self, router: Router, env: Envelope) -> list[Envelope]:
        if (self.left is None or self.left > 0) and self.match(env):
            if self.left is not None:
                self.left -= 1
            data = self.change(env)
            self.changed.append(env)
            return [] if data is None else [env.with_data(data)]
        return [env]


class Replay(Layer):
    """Record every envelope that ``capture`` selects, and deliver a copy of each again right
    after the first envelope that ``trigger`` selects (a network attacker replaying old
    traffic, possibly to another recipient via ``redirect``)."""

    def __init__(
        self,
        capture: Callable[[Envelope], bool],
        trigger: Callable[[Envelope], bool],
        *,
        redirect: int | None = None,
    ) -> None:
        self.capture, self.trigger, self.redirect = capture, trigger, redirect
        self.recorded: list[Envelope] = []
        self.replayed: list[Envelope] = []

    def on_send(self, router: Router, env: Envelope) -> list[Envelope]:
        out = [env]
        if self.capture(env):
            self.recorded.append(env)
        elif not self.replayed and self.recorded and self.trigger(env):
            copies = [
                e if self.redirect is None else replace(e, recipient=self.redirect)
                for e in self.recorded
            ]
            self.replayed = copies
            out += copies
        return out


class Recorder(Layer):
    """Keeps every envelope that passes (after the layers before it), for inspection."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    def on_send(self, router: Router, env: Envelope) -> list[Envelope]:
        self.envelopes.append(env)
        return [env]

    def of_kind(self, kind: str) -> list[Envelope]:
        """The recorded envelopes of one message type name (e.g. ``"MaskedInput"``)."""
        return [e for e in self.envelopes if e.kind == kind]

    def describe(self) -> list[str]:
        """One line per envelope: ``sender -> recipient: kind (bytes)``."""
        return [
            f"{party_name(e.sender)} -> {party_name(e.recipient)}: {e.kind} ({len(e.data)} B)"
            for e in self.envelopes
        ]
