"""Fuzzing the key holder and the server's preparation with malformed messages (issue 11).

One honest filtered round (the preparation, then the round with the key holder) is recorded,
with a deep copy of the whole world -- server, clients, key holder, preparation and the router
with what is in flight -- at four points: the :class:`FilterPreparation` before it receives the
key holder's columns, and the :class:`KeyHolder` before each message it legitimately receives
(stages PREPARE, WAIT_ROWS, WAIT_ZERO_TEST). Each snapshot is then fed mutated versions of that
message: the byte-level mutators of ``test_protocol_fuzz`` (bit flips in header and body,
truncations, extensions, huge counts, splices, replays of any message of the round) and
field-level ones (ciphertexts 0, >= n**2, all ones, not coprime to n, swapped, dropped or added,
fresh valid ones; wrong round ids, senders, recipients, row counts, client lists, zero-test
counts; another stage's message), over the right channel or a wrong one (``peer=``).

For every input:

* the tolerant ``receive_bytes`` never raises. A refusal is the documented fail-closed answer:
  the key holder keeps a :class:`ProtocolError` attributed to the sender, answers exactly one
  ``Abort`` to the server and takes no further part (the preparation records its ``failure``
  and produces nothing);
* the key holder decrypts nothing for a message it must refuse outright (not its stage's type,
  not from the server, another round or recipient, an invalid ciphertext), never more
  ciphertexts than the stage's honest message holds, and what it decrypted for an accepted
  message is what :meth:`KeyHolder.audit` lists;
* no reason the key holder sends back (``Abort``, out-of-range rows) carries a number that is
  not public: a decrypted value in a reason would make it a decryption oracle for the server;
* the strict ``receive_strict`` raises nothing but :class:`ProtocolError`, and a refusal leaves
  the party as it was: fed the honest remaining messages, the key holder answers byte for byte
  what it answered in the honest round, and (for a sample, on the whole world) the server
  releases exactly the honest round's sum -- zero honest rounds lost.

The key holder's only peer is the server (in a deployment it dials the server and accepts no
connection), so a bad message reaching it is the server's fault or a bug: fail closed (the
server's round aborts, releasing nothing) is its documented answer on the tolerant path, which
is also checked on the whole world for a sample. The bugs this fuzzer found are pinned by the
regression tests at the end, each with its reproducer.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import struct
from dataclasses import dataclass

import numpy as np
import pytest
from protocol_helpers import filtered_parties
from test_protocol_fuzz import _mutate

from protocol import (
    KEYHOLDER_ID,
    SERVER_ID,
    FilterPreparation,
    KeyHolder,
    ProtocolError,
    Server,
    ServerStage,
)
from protocol.keyholder import KeyHolderStage
from protocol.messages import (
    Abort,
    DistanceOpened,
    DistanceRequest,
    PrepareColumns,
    PrepareProducts,
    ZeroTestRequest,
    ZeroTestResult,
    decode,
    decode_from,
    encode,
)
from protocol.router import Recorder, Router
from secagg.errors import SecAggError
from secagg.paillier_pack import SlotLayout
from secagg.paillier_private import PaillierPrivateKey
from secagg.sketch import sketch

N, D, K = 4, 6, 16
PER_SNAPSHOT = 1000  # x 4 snapshots = 4,000 malformed inputs per run (+ the regressions)
WORLD_SAMPLE = 8  # whole-world continuations per snapshot and outcome (refused strict/tolerant)
STAGES = ("prep", "PREPARE", "WAIT_ROWS", "WAIT_ZERO_TEST")
#: what the party receives in each snapshot, and what it answers in the honest round
EXPECTS = {
    "prep": (PrepareColumns, PrepareProducts),
    "PREPARE": (PrepareProducts, None),
    "WAIT_ROWS": (DistanceRequest, DistanceOpened),
    "WAIT_ZERO_TEST": (ZeroTestRequest, ZeroTestResult),
}
#: the field of each message that holds ciphertexts
CIPHERTEXTS = {
    PrepareColumns: "columns",
    PrepareProducts: "products",
    DistanceRequest: "ciphertexts",
    ZeroTestRequest: "tests",
}


# --- the recorded round ----------------------------------------------------------------------


@dataclass
class World:
    """Every party of a filtered round and the router currently moving its messages (the
    preparation's, then the round's)."""

    server: Server
    clients: dict
    keyholder: KeyHolder
    prep: FilterPreparation
    router: Router
    recorder: Recorder

    def finish(self) -> Server:
        """Run what is left of the round (as ``run_parties`` does) and return the server."""
        self.router.run()
        if self.router.parties.get(SERVER_ID) is self.prep:
            if self.prep.prepared is not None:
                self.server.attach_preparation(self.prep.prepared)
            parties = [self.server, *self.clients.values(), self.keyholder]
            self.router = Router(parties, layers=[self.recorder])
            self.router.run()
        return self.server


@dataclass
class Snapshot:
    """A world just before ``target`` (the preparation or the key holder) receives ``honest``.
    For the key holder, ``remaining`` are its honest inbound messages from ``honest`` on and
    ``replies`` what it answered to each in the honest round."""

    name: str
    world: World
    honest: bytes
    remaining: list[bytes]
    replies: list[list[bytes]]

    @property
    def target_id(self) -> int:
        return SERVER_ID if self.name == "prep" else KEYHOLDER_ID

    def target(self, world: World):
        return world.prep if self.name == "prep" else world.keyholder


@dataclass
class Recording:
    snapshots: dict[str, Snapshot]
    pool: list[bytes]  # every message of the honest round (replays, splices)
    expected_sum: np.ndarray  # the honest round's encoded sum
    survivors: tuple[int, ...]
    public: frozenset[int]  # numbers a reason may mention (public layout constants)


def _updates() -> np.ndarray:
    rng = np.random.default_rng(11)
    x = rng.normal(0.0, 0.05, (N, D))
    return x / np.maximum(1.0, np.linalg.norm(x, axis=1, keepdims=True))


def _public_numbers(config) -> frozenset[int]:
    key, lay = config.filtering.key, config.layouts
    out = {int(key.n), int(key.nsquare)}
    for name in dir(lay):
        if name.startswith("_"):
            continue
        value = getattr(lay, name)
        if isinstance(value, SlotLayout):
            out |= {int(value.max_abs), int(value.input_bound)}
        elif isinstance(value, int):
            out.add(int(value))
    return frozenset(out)


@functools.cache
def _recording() -> Recording:
    """The honest round, with a world snapshot before each message to the preparation or the
    key holder (cached per process: every test copies, never mutates, it)."""
    server, clients, keyholder = filtered_parties(_updates(), rule="mean", f=0, k=K)
    keyholder.workers = 1  # 2 cores; a few ciphertexts per call
    prep = FilterPreparation(server.config, workers=1)
    rec = Recorder()
    world = World(server, clients, keyholder, prep, Router([prep, keyholder], layers=[rec]), rec)
    seen: set[int] = set()

    def next_to(party: int):
        return lambda r: any(e.recipient == party and id(e) not in seen for e in r.pending)

    taken: list[tuple[str, World, bytes]] = []
    for name, party in zip(STAGES, (SERVER_ID, KEYHOLDER_ID, KEYHOLDER_ID, KEYHOLDER_ID)):
        if name == "WAIT_ROWS":  # the preparation is over: the round proper
            world.router.run()
            server.attach_preparation(prep.prepared)
            parties = [server, *clients.values(), keyholder]
            world.router = Router(parties, layers=[rec])
        world.router.run(until=next_to(party))
        (env,) = [e for e in world.router.pending if e.recipient == party and id(e) not in seen]
        seen.add(id(env))
        assert name == "prep" or keyholder.stage.value == name
        taken.append((name, copy.deepcopy(world), env.data))
    world.router.run()
    assert server.stage is ServerStage.DONE and server.verification.passed
    assert keyholder.stage is KeyHolderStage.DONE
    result = server.result
    assert set(result.survivors) == set(range(N))
    want = sum(clients[i]._signed_input.astype(object) for i in result.survivors)
    assert np.array_equal(server.config.encoder.to_signed(result.encoded_sum).astype(object), want)

    to_k = [e.data for e in rec.envelopes if e.recipient == KEYHOLDER_ID]
    from_k = [e.data for e in rec.envelopes if e.sender == KEYHOLDER_ID]
    assert [type(decode(d)) for d in to_k] == [
        PrepareProducts,
        DistanceRequest,
        ZeroTestRequest,
    ]
    assert [type(decode(d)) for d in from_k] == [PrepareColumns, DistanceOpened, ZeroTestResult]
    replies = [[], [from_k[1]], [from_k[2]]]  # to PrepareProducts, DistanceRequest, ZeroTest...
    snapshots = {"prep": Snapshot("prep", taken[0][1], taken[0][2], [], [])}
    for i, (name, snap_world, honest) in enumerate(taken[1:]):
        assert honest == to_k[i]
        snapshots[name] = Snapshot(name, snap_world, honest, to_k[i:], replies[i:])
    return Recording(
        snapshots,
        [e.data for e in rec.envelopes],
        result.encoded_sum.copy(),
        tuple(result.survivors),
        _public_numbers(server.config),
    )


# --- what the key holder decrypts ---------------------------------------------------------------


class DecryptionLog:
    """Counts every ciphertext a :class:`PaillierPrivateKey` decrypts (monkeypatched)."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        original_one, original_many = PaillierPrivateKey.decrypt, PaillierPrivateKey.decrypt_many

        def decrypt(key, ciphertext, **kw):
            out = original_one(key, ciphertext, **kw)
            self.count += 1
            return out

        def decrypt_many(key, ciphertexts, **kw):
            out = original_many(key, ciphertexts, **kw)
            self.count += len(out)
            return out

        monkeypatch.setattr(PaillierPrivateKey, "decrypt", decrypt)
        monkeypatch.setattr(PaillierPrivateKey, "decrypt_many", decrypt_many)


def _ciphertexts_valid(key, msg) -> bool:
    field = CIPHERTEXTS.get(type(msg))
    if field is None:
        return False
    try:
        key.ciphertexts_from_bytes(getattr(msg, field), sender="fuzz")
    except SecAggError:
        return False
    return True


def _admissible(snap: Snapshot, data: bytes, peer: int | None, key) -> bool:
    """Whether ``data`` on channel ``peer`` passes the checks that need no decryption: decodes,
    is the stage's message type, from the server, for this round, to the key holder, with valid
    ciphertexts. Anything else must be refused before a single decryption."""
    try:
        msg = decode_from(data, peer)
    except ProtocolError:
        return False
    kind, _ = EXPECTS[snap.name]
    rid = snap.world.server.config.round_id
    return (
        type(msg) is kind
        and msg.sender == SERVER_ID
        and msg.round_id == rid
        and msg.recipient == KEYHOLDER_ID
        and _ciphertexts_valid(key, msg)
    )


_NUMBER = re.compile(rb"-?\d+")


def _reasons(msgs) -> list[bytes]:
    """Every free-text reason in the key holder's answers."""
    out = []
    for m in msgs:
        if isinstance(m, Abort):
            out.append(m.reason.encode())
        elif isinstance(m, DistanceOpened):
            out += [why for _, why in m.out_of_range]
            out += [why for _, why in m.noise_faults]
    return out


def _secret_numbers(msgs, public: frozenset[int]) -> list[int]:
    """Numbers of at least 64 bits in the answers' reasons that are not public constants. The
    round's slot layouts all have max_abs >= 2**64, so a slot value beyond them (what
    :class:`SlotLayout` puts in its overflow messages) always shows up here."""
    found = []
    for text in _reasons(msgs):
        for token in _NUMBER.findall(text):
            value = int(token)
            if abs(value) >= 2**64 and abs(value) not in public:
                found.append(value)
    return found


# --- mutators ------------------------------------------------------------------------------------


def _split(key, data: bytes) -> list[int]:
    w = key.ciphertext_bytes
    return [int.from_bytes(data[i : i + w], "big") for i in range(0, len(data) - w + 1, w)]


def _join(key, values) -> bytes:
    w = key.ciphertext_bytes
    return b"".join(int(v).to_bytes(w, "big") for v in values)


def _bad_ciphertext(rng, key) -> int:
    """An invalid ciphertext: 0, >= n**2, or not coprime to n."""
    n, nsq = int(key.n), int(key.nsquare)
    top = (1 << (8 * key.ciphertext_bytes)) - 1
    bad = [0, nsq, nsq + 1, top, n, n * int(rng.integers(2, 1 << 30))]
    return bad[int(rng.integers(len(bad)))]


def _field_mutation(rng, msg, snap: Snapshot, key) -> bytes:
    """One field-level change of the stage's honest message (re-encoded, so it decodes)."""
    cfg = snap.world.server.config
    field = CIPHERTEXTS[type(msg)]
    cts = _split(key, getattr(msg, field))
    kind = int(rng.integers(10))
    if kind == 0:  # another round (header bytes 6:14)
        rid = [0, 1, 2, 2**64 - 1][int(rng.integers(4))]
        return snap.honest[:6] + struct.pack(">Q", rid) + snap.honest[14:]
    if kind == 1:  # another sender (header bytes 14:18; the encoder would refuse it)
        sender = [0, N - 1, N + 3, KEYHOLDER_ID, SERVER_ID][int(rng.integers(5))]
        return snap.honest[:14] + struct.pack(">I", sender) + snap.honest[18:]
    if kind == 2 and hasattr(msg, "recipient"):
        recipient = int(rng.choice([0, 2, N + 5, SERVER_ID]))
        return encode(dataclasses.replace(msg, recipient=recipient))
    if kind == 3 and cts:  # an invalid ciphertext somewhere
        cts[int(rng.integers(len(cts)))] = _bad_ciphertext(rng, key)
    elif kind == 4 and len(cts) > 1:  # two valid ciphertexts swapped
        i, j = rng.choice(len(cts), 2, replace=False)
        cts[i], cts[j] = cts[j], cts[i]
    elif kind == 5 and cts:  # a fresh, valid ciphertext of a random or small plaintext
        plain = int(rng.choice([0, 1, int(rng.integers(1 << 62)), int(key.n) - 1]))
        cts[int(rng.integers(len(cts)))] = int(key.encrypt(plain))
    elif kind == 6:  # a ciphertext dropped, added, or a byte cut off
        which = int(rng.integers(3))
        if which == 0 and cts:
            del cts[int(rng.integers(len(cts)))]
        elif which == 1:
            cts.append(int(key.encrypt(0)))
        else:
            return encode(dataclasses.replace(msg, **{field: getattr(msg, field)[:-1]}))
    elif kind == 7:  # another stage's message type, well formed and from the server
        other = [
            t for t in (PrepareProducts, DistanceRequest, ZeroTestRequest) if t is not type(msg)
        ]
        t = other[int(rng.integers(len(other)))]
        body = _join(key, cts[:1])
        if t is DistanceRequest:
            return encode(DistanceRequest(cfg.round_id, SERVER_ID, KEYHOLDER_ID, (0,), 1, body))
        return encode(t(cfg.round_id, SERVER_ID, KEYHOLDER_ID, body))
    elif kind == 8:  # the server abandons the round (legal in every stage)
        return encode(Abort(cfg.round_id, SERVER_ID, KEYHOLDER_ID, "fuzz"))
    else:  # the message type's own fields
        return encode(_type_fields(rng, msg, key, cts))
    return encode(dataclasses.replace(msg, **{field: _join(key, cts)}))


def _type_fields(rng, msg, key, cts):
    if isinstance(msg, PrepareColumns):
        return dataclasses.replace(msg, rows=int(rng.choice([0, msg.rows - 1, msg.rows + 1])))
    if isinstance(msg, DistanceRequest):
        which = int(rng.integers(4))
        if which == 0:  # a client outside the population
            stranger = int(rng.choice([N, N + 7, KEYHOLDER_ID - 1]))
            return dataclasses.replace(msg, clients=(*msg.clients, stranger))
        if which == 1:  # a client left out (its row still there)
            return dataclasses.replace(msg, clients=msg.clients[1:])
        if which == 2:
            return dataclasses.replace(msg, public_rows=int(rng.choice([0, 2, 2**32 - 1])))
        return dataclasses.replace(msg, clients=())
    if isinstance(msg, ZeroTestRequest):  # no test, or one more than the cap
        tests = b"" if rng.random() < 0.5 else msg.tests + _join(key, [key.encrypt(0)])
        return dataclasses.replace(msg, tests=tests)
    return msg  # PrepareProducts has no other field


def _mutation(rng, snap: Snapshot, pool, key) -> tuple[bytes, int | None]:
    """A mutated version of the snapshot's honest message, and the channel it arrives on."""
    honest = snap.honest
    if rng.random() < 0.55:
        data = _mutate(rng, honest, pool)
    else:
        data = _field_mutation(rng, decode(honest), snap, key)
        if data == honest:
            data = _mutate(rng, honest, pool)
    right = KEYHOLDER_ID if snap.name == "prep" else SERVER_ID
    if rng.random() < 0.85:
        return data, right
    wrong = [None, 0, N - 1, N + 2, SERVER_ID if right == KEYHOLDER_ID else KEYHOLDER_ID]
    return data, wrong[int(rng.integers(len(wrong)))]


# --- checks ------------------------------------------------------------------------------------


def _attributed(data: bytes, peer: int | None) -> int | None:
    """Whom a refusal of ``data`` on channel ``peer`` must name."""
    if peer is not None:
        return peer
    try:
        return decode(data, max_count=N + 1).sender  # as the party decodes
    except ProtocolError:
        return None


def _audit_view(keyholder: KeyHolder) -> tuple:
    a = keyholder.audit()
    rows = None if a.masked_rows is None else a.masked_rows.tolist()
    return a.row_ids, rows, dict(a.out_of_range), a.prepared, a.zero_tests


def _check_world(snap: Snapshot, feed) -> Server:
    """Copy the snapshot's world, ``feed(target)`` it something (its answers are sent on, the
    honest message stays in flight), finish the round and return the server."""
    world = copy.deepcopy(snap.world)
    out = feed(snap.target(world))
    world.router.inject(snap.target_id, out or [])
    return world.finish()


def _strict(msg):
    """A feed for :func:`_check_world`: the strict entry point refuses ``msg``."""

    def feed(target):
        with pytest.raises(ProtocolError):
            target.receive_strict(msg)
        return []

    return feed


def _assert_exact_round(server: Server, recording: Recording) -> None:
    assert server.stage is ServerStage.DONE, server.abort_reason
    assert tuple(server.result.survivors) == recording.survivors
    np.testing.assert_array_equal(server.result.encoded_sum, recording.expected_sum)


def _tolerant(snap: Snapshot, data: bytes, peer: int | None, log: DecryptionLog):
    """A fresh copy of the snapshot's party fed ``data`` on channel ``peer`` through its
    tolerant entry point, as deployed (it must not raise): the party, its answers and the
    number of ciphertexts it decrypted."""
    party = copy.deepcopy(snap.target(snap.world))
    log.count = 0
    out = party.receive_bytes(data, peer=peer)
    return party, out, log.count


def _fuzz_keyholder(snap: Snapshot, recording: Recording, log: DecryptionLog, rng) -> dict:
    key = snap.world.keyholder._key
    pub = key.public_key
    kind, answer = EXPECTS[snap.name]
    budget = len(_split(pub, getattr(decode(snap.honest), CIPHERTEXTS[kind])))
    before_audit = _audit_view(snap.world.keyholder)
    stage = snap.world.keyholder.stage
    stats = dict(total=0, refused=0, strict_refused=0, world_strict=0, world_tolerant=0)
    for _ in range(PER_SNAPSHOT):
        data, peer = _mutation(rng, snap, recording.pool, pub)
        stats["total"] += 1
        kh, out, decrypted = _tolerant(snap, data, peer, log)
        assert decrypted <= budget, (snap.name, decrypted, budget)
        if decrypted:
            assert _admissible(snap, data, peer, pub), (snap.name, data[:40], peer)
        # no answer carries a number the key holder decrypted (the out-of-range reasons once
        # did: test_out_of_range_reasons_do_not_reveal_a_committed_sketch_coordinate)
        assert not _secret_numbers(out, recording.public), _reasons(out)
        if kh.refusal is not None:
            stats["refused"] += 1
            refusal = kh.refusal
            assert isinstance(refusal, ProtocolError) and refusal.role == "key holder"
            assert refusal.stage == stage.value
            assert refusal.sender == _attributed(data, peer), (refusal, peer)
            assert kh.stage is KeyHolderStage.FAILED
            (abort,) = out
            assert isinstance(abort, Abort) and abort.recipient == SERVER_ID
            assert abort.sender == KEYHOLDER_ID and abort.reason.startswith("refused: ")
            assert kh.receive_bytes(snap.honest, peer=SERVER_ID) == []  # no further part
        else:
            assert kh.stage is not KeyHolderStage.FAILED
            if kh.stage is KeyHolderStage.ABORTED:  # the server abandoned the round
                assert out == [] and decrypted == 0
            else:
                assert [type(m) for m in out] == ([answer] if answer else [])
                audit = kh.audit()
                if snap.name == "PREPARE":
                    assert audit.prepared and decrypted == budget
                elif snap.name == "WAIT_ROWS":
                    assert decrypted == len(audit.row_ids) * (budget // (N + 1))
                    assert audit.masked_rows.shape[0] == len(out[0].accepted)
                else:
                    assert decrypted == len(audit.zero_tests) <= kh.max_zero_tests
                    assert out[0].equal == bytes(int(z) for z in audit.zero_tests)
        # strict entry point: a refusal changes nothing, the honest round goes on exactly
        try:
            msg = decode_from(data, peer)
        except ProtocolError:
            continue  # never reached the party
        kh = copy.deepcopy(snap.world.keyholder)
        try:
            kh.receive_strict(msg)
        except ProtocolError as exc:
            stats["strict_refused"] += 1
            assert exc.role == "key holder" and exc.stage == stage.value
            assert kh.stage is stage and kh.refusal is None
            assert _audit_view(kh) == before_audit
            answers = [
                [encode(m) for m in kh.receive_bytes(d, peer=SERVER_ID)] for d in snap.remaining
            ]
            assert answers == snap.replies, (snap.name, exc)
            if stats["world_strict"] < WORLD_SAMPLE:
                stats["world_strict"] += 1
                _assert_exact_round(_check_world(snap, _strict(msg)), recording)
            if stats["world_tolerant"] < WORLD_SAMPLE:
                stats["world_tolerant"] += 1
                # fail closed: the server's round aborts and releases nothing
                server = _check_world(snap, lambda t, d=data, p=peer: t.receive_bytes(d, peer=p))
                assert server.aborted and server.result is None
    return stats


def _fuzz_preparation(snap: Snapshot, recording: Recording, log: DecryptionLog, rng) -> dict:
    pub = snap.world.server.config.filtering.key
    stats = dict(total=0, refused=0, accepted=0, strict_refused=0, world=0)
    for _ in range(PER_SNAPSHOT):
        data, peer = _mutation(rng, snap, recording.pool, pub)
        stats["total"] += 1
        prep, out, decrypted = _tolerant(snap, data, peer, log)
        assert decrypted == 0  # the server holds no secret key
        assert prep.done
        if prep.failure is not None:
            stats["refused"] += 1
            assert isinstance(prep.failure, ProtocolError)
            assert out == [] and prep.prepared is None
            assert prep.receive_bytes(snap.honest, peer=KEYHOLDER_ID) == []  # failed for good
        else:
            # accepted: a well-formed PrepareColumns of the key holder's (the content of a
            # valid ciphertext is not the preparation's to judge)
            stats["accepted"] += 1
            msg = decode_from(data, peer)
            assert isinstance(msg, PrepareColumns) and msg.sender == KEYHOLDER_ID
            assert _ciphertexts_valid(pub, msg)
            (products,) = out
            assert isinstance(products, PrepareProducts) and prep.prepared is not None
        try:
            msg = decode_from(data, peer)
        except ProtocolError:
            continue
        prep = copy.deepcopy(snap.world.prep)
        try:
            prep.receive_strict(msg)
        except ProtocolError as exc:
            stats["strict_refused"] += 1
            assert exc.role == "server (preparation)"
            assert prep.prepared is None and prep.failure is None and not prep.done
            if stats["world"] < 3 * WORLD_SAMPLE:
                stats["world"] += 1
                _assert_exact_round(_check_world(snap, _strict(msg)), recording)
    return stats


@pytest.mark.parametrize("name", STAGES)
def test_malformed_messages_are_refused_safely_and_the_honest_round_survives(name, monkeypatch):
    recording = _recording()
    snap = recording.snapshots[name]
    log = DecryptionLog(monkeypatch)
    rng = np.random.default_rng(STAGES.index(name) + 110)
    if name == "prep":
        stats = _fuzz_preparation(snap, recording, log, rng)
        assert stats["world"] > 0
    else:
        stats = _fuzz_keyholder(snap, recording, log, rng)
        assert stats["world_strict"] == stats["world_tolerant"] == WORLD_SAMPLE
    assert stats["total"] == PER_SNAPSHOT
    assert stats["refused"] > 0.6 * PER_SNAPSHOT, stats
    assert stats["strict_refused"] > 0.2 * PER_SNAPSHOT, stats


def test_every_snapshot_finishes_the_recorded_round_exactly():
    """The control: each snapshot, left alone, releases the honest round's exact sum."""
    recording = _recording()
    assert set(recording.snapshots) == set(STAGES)
    for snap in recording.snapshots.values():
        _assert_exact_round(copy.deepcopy(snap.world).finish(), recording)


# --- regressions: bugs this fuzzer found ----------------------------------------------------------------------------------


def _shifted(pub, layout: SlotLayout, cts: list[int], slot: int, offset: int) -> list[int]:
    """``cts`` (packed with ``layout``'s slots) with ``offset`` added to slot ``slot``: what a
    lying server can do to any ciphertext without the key."""
    wide = SlotLayout(pub, max_abs=(1 << (layout.slot_bits - 1)) - 1, slot_bits=layout.slot_bits)
    values = np.zeros(layout.slots * len(cts), dtype=object)
    values[slot] = offset
    return [int(pub.add_plain(c, int(m))) for c, m in zip(cts, wide.pack(values))]


def test_out_of_range_reasons_do_not_reveal_a_committed_sketch_coordinate():
    recording = _recording()
    snap = recording.snapshots["WAIT_ROWS"]
    world = snap.world
    cfg, lay = world.server.config, world.server.config.layouts
    pub = cfg.filtering.key
    commit = decode(world.recorder.of_kind("SketchCommit")[0].data)  # client `victim`'s sketch
    victim, j = commit.sender, 3
    offset = lay.t_max + lay.bound + 1  # beyond max_abs, still inside the slot
    row = _shifted(pub, lay.row, _split(pub, commit.ciphertexts), j, offset)
    msg = decode(snap.honest)
    cts = _split(pub, msg.ciphertexts)
    per_row = lay.row_ciphertexts()
    at = msg.clients.index(victim) * per_row
    cts[at : at + per_row] = row  # the client's own sketch in place of its masked row
    kh = copy.deepcopy(world.keyholder)
    (opened,) = kh.receive_bytes(
        encode(dataclasses.replace(msg, ciphertexts=_join(pub, cts))), peer=SERVER_ID
    )
    secret = sketch(world.clients[victim]._signed_input, world.server.projection_seed, lay.k)[j]
    text = b" ".join(_reasons([opened]))
    assert str(int(secret) + offset).encode() not in text, text
    assert not _secret_numbers([opened], recording.public), text


def test_a_refused_preparation_does_not_reveal_what_the_key_holder_decrypted():
    recording = _recording()
    snap = recording.snapshots["PREPARE"]
    lay = snap.world.server.config.layouts
    pub = snap.world.server.config.filtering.key
    msg = decode(snap.honest)
    cts = _split(pub, msg.products)
    cts[:1] = _shifted(pub, lay.prep_column, cts[:1], 0, lay.prep_column.max_abs + 1)
    kh = copy.deepcopy(snap.world.keyholder)
    out = kh.receive_bytes(
        encode(dataclasses.replace(msg, products=_join(pub, cts))), peer=SERVER_ID
    )
    assert kh.refusal is not None  # refused, as it should be ...
    assert not _secret_numbers(out, recording.public), _reasons(out)  # ... saying only why


@pytest.mark.parametrize("field", ["projection_seed", "noise_seeds"])
def test_a_strictly_refused_distance_request_leaves_the_key_holder_unchanged(field):
    recording = _recording()
    snap = recording.snapshots["WAIT_ROWS"]
    pub = snap.world.server.config.filtering.key
    msg = decode(snap.honest)
    value = bytes(32) if field == "projection_seed" else _join(pub, [pub.encrypt(7)])
    kh = copy.deepcopy(snap.world.keyholder)
    with pytest.raises(ProtocolError, match="without distributed noise"):
        kh.receive_strict(dataclasses.replace(msg, **{field: value}))
    assert kh.audit().masked_rows is None  # it decrypted nothing ...
    answers = [[encode(m) for m in kh.receive_bytes(d, peer=SERVER_ID)] for d in snap.remaining]
    assert answers == snap.replies  # ... and the honest round goes on


def test_a_key_holder_answer_with_impossible_distances_does_not_crash_the_server():
    recording = _recording()
    snap = recording.snapshots["WAIT_ROWS"]
    world = copy.deepcopy(snap.world)
    (opened,) = world.keyholder.receive_bytes(snap.honest, peer=SERVER_ID)  # answered by hand
    (env,) = world.router.take_pending()  # ... the request it answered was all in flight
    assert env.data == snap.honest
    width = world.server.config.layouts.z_bytes
    z = (b"\x80" + bytes(width - 1)) * (len(opened.z) // width)  # every entry most negative
    out = world.server.receive_bytes(encode(dataclasses.replace(opened, z=z)), peer=KEYHOLDER_ID)
    world.router.inject(SERVER_ID, out)
    server = world.finish()
    assert server.result is None or np.array_equal(
        server.result.encoded_sum, recording.expected_sum
    )


def test_columns_that_are_not_the_key_holders_do_not_crash_the_round():
    recording = _recording()
    snap = recording.snapshots["prep"]
    pub = snap.world.server.config.filtering.key
    msg = decode(snap.honest)
    cts = _split(pub, msg.columns)
    cts[0], cts[1] = cts[1], cts[0]
    world = copy.deepcopy(snap.world)
    swapped = encode(dataclasses.replace(msg, columns=_join(pub, cts)))
    world.router.inject(SERVER_ID, world.prep.receive_bytes(swapped, peer=KEYHOLDER_ID))
    assert world.prep.prepared is not None  # well-formed valid ciphertexts: accepted
    server = world.finish()
    assert server.result is None or np.array_equal(
        server.result.encoded_sum, recording.expected_sum
    )
