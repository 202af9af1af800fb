"""fortis server / client as processes: the TOML file, what a deployment refuses, and a server
killed with SIGKILL mid-round that resumes to the same final model as an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from protocol.network.state import load_state
from simulations.config import SimulationConfig
from simulations.deploy import (
    DeployConfigError,
    NetworkSettings,
    check_deployable,
    load_deploy_config,
    make_credentials,
    write_deploy_config,
)

CLIENTS = 5


def _config(**kw) -> SimulationConfig:
    base = dict(
        dataset="digits",
        clients=CLIENTS,
        rounds=4,
        secure=True,
        clip=5.0,
        defence="mean",
        attack="none",
        seed=3,
        eval_every=1,
    )
    return SimulationConfig(**{**base, **kw})


def _settings(root: Path, port: int = 0, **kw) -> NetworkSettings:
    return NetworkSettings(
        certs=root / "certs",
        state=root / "state.npz",
        out=root / "report",
        federation="resumefed",
        port=port,
        **kw,
    )


def test_the_deployment_file_round_trips(tmp_path):
    config = _config(defence="multi_krum", defence_params={"m": 3}, pre=(("bucketing", {"s": 2}),))
    settings = _settings(tmp_path, port=47123, hardened=False, stage_timeout=7.5)
    path = write_deploy_config(tmp_path / "fed.toml", settings, config)
    back_settings, back = load_deploy_config(path)
    assert back.key() == config.key()
    assert back_settings == settings
    over, _ = load_deploy_config(path, network={"port": 9, "host": "10.0.0.1"})
    assert over.address == ("10.0.0.1", 9)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(secure=False), "secure = true"),
        (dict(clip=None), "needs clip"),
        (dict(stragglers=0.2), "stragglers"),
    ],
)
def test_what_a_deployment_cannot_run_is_refused(change, match):
    with pytest.raises(DeployConfigError, match=match):
        check_deployable(_config(**change))


def test_a_bad_deployment_file_names_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[network]\nfederation = "x"\nportt = 3\n')
    with pytest.raises(DeployConfigError, match="portt"):
        load_deploy_config(bad)
    bad.write_text("[network\n")
    with pytest.raises(DeployConfigError, match="not valid TOML"):
        load_deploy_config(bad)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fortis(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "simulations", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        **kw,
    )


def _federation(root: Path):
    settings = _settings(root, port=_free_port(), first_timeout=60, stage_timeout=60)
    make_credentials(settings, CLIENTS)
    toml = write_deploy_config(root / "fed.toml", settings, _config())
    return settings, toml


def _clients(toml):
    return [_fortis("client", "--config", str(toml), "--id", str(i)) for i in range(CLIENTS)]


def _finish(procs, timeout=120):
    for p in procs:
        p.wait(timeout=timeout)


def _wait_line(proc, pattern, timeout=120) -> str:
    """Read ``proc``'s stderr until a line matches ``pattern``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        if not line and proc.poll() is not None:
            break
        if re.search(pattern, line):
            return line
    raise AssertionError(f"no line matching {pattern!r}")


def test_a_server_killed_mid_round_resumes_to_the_same_final_model(tmp_path):
    # the uninterrupted run
    ref_settings, ref_toml = _federation(tmp_path / "ref")
    procs = [_fortis("server", "--config", str(ref_toml)), *_clients(ref_toml)]
    try:
        _finish(procs)
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode == 0, procs[0].stderr.read().decode()[-2000:]
    ref_meta, ref_arrays = load_state(ref_settings.state, federation="resumefed")
    assert ref_meta["round"] == 4

    # the same run, its server killed with SIGKILL in the middle of round 3
    settings, toml = _federation(tmp_path / "killed")
    server = _fortis("server", "--config", str(toml))
    clients = _clients(toml)
    procs = [server, *clients]
    try:
        _wait_line(server, r"round \d+ aggregated")  # round 1
        _wait_line(server, r"round \d+ aggregated")  # round 2
        os.kill(clients[0].pid, signal.SIGSTOP)  # client 0 freezes: round 3 cannot finish
        _wait_line(server, r"\(step 2\) opened")
        time.sleep(0.5)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        meta, _ = load_state(settings.state, federation="resumefed")
        assert meta["round"] == 2, "the kill came after round 3 completed"
        used = json.loads(settings.rid_file().read_text())["next_round_id"]
        os.kill(clients[0].pid, signal.SIGCONT)
        resumed = _fortis("server", "--config", str(toml), "--resume")
        procs.append(resumed)
        line = _wait_line(resumed, r"resuming after round")
        assert "resuming after round 2" in line
        assert f"next round id {used}" in line  # the round in flight is never reused
        _finish([resumed, *clients])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert resumed.returncode == 0
    final, arrays = load_state(settings.state, federation="resumefed")
    assert final["round"] == 4
    np.testing.assert_array_equal(arrays["params"], ref_arrays["params"])
    accs = [r["accuracy"] for r in final["history"]]
    assert accs == [r["accuracy"] for r in ref_meta["history"]]
    assert all(c.returncode == 0 for c in clients)
