"""The parties' stage tables are built from one list per party (protocol.stages)."""

from __future__ import annotations

import dataclasses
import enum

import pytest

from protocol.client import CLIENT_STAGES, CLIENT_TRANSITIONS, ClientStage
from protocol.events import LeaveRound, Refused, RoundFailed, StageDeadline
from protocol.keyholder import KEYHOLDER_STAGES
from protocol.messages import Abort, ConsistencySignature, MaskedInput, UnmaskResponse
from protocol.server import SERVER_STAGES, SERVER_TRANSITIONS, ServerStage
from protocol.stages import Stage, build_transitions, phase_of


def _path(table, start, event_of):
    """Follow the 'advance' events from ``start``; return the stages visited."""
    seen, stage = [start], start
    while event_of(stage) in table.get(stage, {}):
        stage = table[stage][event_of(stage)]
        seen.append(stage)
    return seen


def test_server_table_chains_the_stages_of_each_mode_into_done_or_aborted():
    S = ServerStage
    for (hardened, filtering), table in SERVER_TRANSITIONS.items():
        path = _path(table, S.COLLECT_KEYS, lambda s: StageDeadline)
        assert path[-1] is S.DONE
        assert (S.COLLECT_SIGNATURES in path) is hardened
        for stage in (S.COLLECT_SKETCHES, S.AWAIT_DISTANCES, S.AWAIT_ZERO_TEST):
            assert (stage in path) is filtering
        if filtering:  # filter before unmasking, verify after
            assert path.index(S.AWAIT_DISTANCES) < path.index(S.COLLECT_UNMASK)
            assert path.index(S.COLLECT_UNMASK) < path.index(S.AWAIT_ZERO_TEST)
        for stage in path[:-1]:
            assert table[stage][RoundFailed] is S.ABORTED  # failure is in the table too
            assert table[stage][Abort] is stage
        assert table[S.DONE] == {Abort: S.DONE}
        assert table[S.ABORTED] == {Abort: S.ABORTED}


def test_client_table_chains_the_stages_and_lists_every_exit():
    S = ClientStage
    specs = {s.stage: s for s in CLIENT_STAGES}
    for (hardened, filtering), table in CLIENT_TRANSITIONS.items():
        path = _path(table, S.NEW, lambda st: specs[st].advances_on if st in specs else None)
        assert path[-1] is S.DONE
        assert (S.WAIT_CONSISTENCY in path) is hardened
        assert (S.WAIT_SKETCH in path) is filtering
        for stage in path[:-1]:
            assert table[stage][Refused] is S.FAILED
            assert table[stage][LeaveRound] is S.ABORTED
        assert table[S.FAILED] == {} and table[S.ABORTED] == {}


def test_server_and_client_name_the_same_phases():
    server = [s.phase for s in SERVER_STAGES]
    client = [s.phase for s in CLIENT_STAGES]
    # the key holder's "prepare" phase is spoken with protocol.FilterPreparation, before
    # the round; the rest with the server
    keyholder = [s.phase for s in KEYHOLDER_STAGES if s.phase != "prepare"]
    # the clients' and the key holder's phases are the server's, in the same order (the
    # server alone waits for both)
    assert [p for p in server if p in client] == client
    assert [p for p in server if p in keyholder] == keyholder
    assert set(server) == set(client) | set(keyholder)
    assert phase_of(SERVER_STAGES, ServerStage.DONE) == "done"


def test_inserting_a_stage_is_one_list_edit():
    class St(enum.Enum):
        A = "A"
        NEW = "NEW"
        B = "B"
        DONE = "DONE"

    base = [
        Stage(St.A, StageDeadline, "a", stays_on=(MaskedInput,)),
        Stage(St.B, StageDeadline, "b", stays_on=(UnmaskResponse,)),
    ]
    inserted = [base[0], Stage(St.NEW, StageDeadline, "new", stays_on=(ConsistencySignature,))]
    inserted.append(base[1])
    table = build_transitions(inserted, hardened=False, done=St.DONE, terminal={St.DONE: {}})
    assert table[St.A][StageDeadline] is St.NEW and table[St.NEW][StageDeadline] is St.B
    assert table[St.NEW][ConsistencySignature] is St.NEW
    hardened_only = [base[0], dataclasses.replace(inserted[1], hardened_only=True), base[1]]
    plain = build_transitions(hardened_only, hardened=False, done=St.DONE, terminal={})
    assert plain[St.A][StageDeadline] is St.B and St.NEW not in plain
    with pytest.raises(ValueError, match="twice"):
        build_transitions(base + base[:1], hardened=False, done=St.DONE, terminal={})
