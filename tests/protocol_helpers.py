"""Helpers shared by the protocol tests (not a test module)."""

from __future__ import annotations


def to_server(server, msgs):
    """Deliver ``msgs`` to the server; return everything it sends back, in order."""
    out = []
    for m in msgs:
        out += server.receive(m)
    return out


def make_parties(cfg, x, *, seed=0, graph_seed=None, signing=None):
    """A Server and {id: Client} for ``cfg`` and updates ``x`` (row i is client i's).

    Client i rounds with ``default_rng([seed, i])``. Hardened configs get fresh Ed25519 keys
    (or ``signing``), a PKI and in-memory round ledgers; ``graph_seed`` is used in plain mode
    only (hardened mode derives it). Returns ``(server, clients, signing)``.
    """
    import numpy as np

    from protocol import Client, RoundLedger, Server
    from secagg import keys as sk

    ids = cfg.population
    if cfg.hardened and signing is None:
        signing = {i: sk.SigningKeyPair.generate() for i in ids}
    signing = signing or {}
    pki = {i: k.public_bytes() for i, k in signing.items()} if cfg.hardened else None
    server = Server(cfg, graph_seed=None if cfg.hardened else graph_seed, pki=pki)
    clients = {
        i: Client(
            cfg,
            i,
            x[i],
            rng=np.random.default_rng([seed, i]),
            signing_key=signing.get(i),
            pki=pki,
            round_ledger=RoundLedger.in_memory() if cfg.hardened else None,
        )
        for i in ids
    }
    return server, clients, signing
