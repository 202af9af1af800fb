"""Helpers shared by the protocol tests (not a test module)."""

from __future__ import annotations


def to_server(server, msgs):
    """Deliver ``msgs`` to the server; return everything it sends back, in order."""
    out = []
    for m in msgs:
        out += server.receive(m)
    return out


def route(server, clients, *, pending=(), layers=(), until=None):
    """Run ``server`` and ``clients`` (a list or id -> Client) through the protocol's Router,
    the one ``run_round`` uses; ``pending`` are server messages already produced by hand.
    Returns the router (its ``log``, and what is still in flight after an ``until`` stop)."""
    from protocol import SERVER_ID
    from protocol.router import Router

    parties = list(clients.values()) if isinstance(clients, dict) else list(clients)
    router = Router([server, *parties], layers=layers)
    if pending:
        router.inject(SERVER_ID, pending)
    router.run(until=until)
    return router


def run_to_masked(server, clients):
    """Run the round through the router until the server has closed masked-input collection.
    Returns (the clients' MaskedInput messages, the server's requests still in flight)."""
    from protocol.messages import decode
    from protocol.router import Recorder

    before = {"advertise", "share_keys", "complaints", "masked_input"}
    rec = Recorder()
    router = route(server, clients, layers=[rec], until=lambda r: server.phase not in before)
    masked = [decode(e.data) for e in rec.of_kind("MaskedInput")]
    return masked, [decode(e.data) for e in router.take_pending()]


def expected_sum(cfg, x, survivors, seed=0):
    """The exact encoded sum of the survivors' inputs, client i rounding with
    ``default_rng([seed, i])`` as :func:`make_parties` sets it up."""
    import numpy as np

    enc = [cfg.encoder.encode(x[i], np.random.default_rng([seed, i])) for i in survivors]
    return cfg.encoder.wrap(np.sum([e.astype(np.uint64) for e in enc], axis=0))


def make_parties(cfg, x, *, seed=0, graph_seed=None, signing=None, **server_kw):
    """A Server and {id: Client} for ``cfg`` and updates ``x`` (row i is client i's).

    Client i rounds with ``default_rng([seed, i])``. Hardened configs get fresh Ed25519 keys
    (or ``signing``), a PKI and in-memory round ledgers; ``graph_seed`` is used in plain mode
    only (hardened mode derives it); ``server_kw`` go to the Server. Returns
    ``(server, clients, signing)``.
    """
    import numpy as np

    from protocol import Client, RoundLedger, Server
    from secagg import keys as sk

    ids = cfg.population
    if cfg.hardened and signing is None:
        signing = {i: sk.SigningKeyPair.generate() for i in ids}
    signing = signing or {}
    pki = {i: k.public_bytes() for i, k in signing.items()} if cfg.hardened else None
    server = Server(cfg, graph_seed=None if cfg.hardened else graph_seed, pki=pki, **server_kw)
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


def paillier_test_key():
    """One 1024-bit Paillier key per test process (allowed for tests only), cached."""
    global _TEST_KEY
    if _TEST_KEY is None:
        from secagg.paillier_private import generate_paillier_keypair

        _TEST_KEY = generate_paillier_keypair(1024, allow_insecure=True)[1]
    return _TEST_KEY


_TEST_KEY = None


def filtered_parties(x, *, rule="multi_krum", f=1, k=32, seed=0, **config_kw):
    """A filtered round's server, clients (id -> Client, seeded rounding) and key holder for the
    updates ``x`` (clip norm 1, value range 1, the test Paillier key); ``config_kw`` go to
    :class:`protocol.RoundConfig` (e.g. ``noise=``, ``hardened=``)."""
    import numpy as np

    from protocol import Client, FilterConfig, KeyHolder, RoundConfig, Server

    key = paillier_test_key()
    n, d = x.shape
    filtering = FilterConfig(key.public_key, 1.0, rule=rule, f=f, sketch_dim=k)
    config = RoundConfig(0, tuple(range(n)), d, 1.0, filtering=filtering, **config_kw)
    rngs = np.random.default_rng(seed).spawn(n)
    server = Server(config, graph_seed=bytes(32))
    clients = {i: Client(config, i, x[i], rng=rngs[i]) for i in range(n)}
    return server, clients, KeyHolder(config, key)
