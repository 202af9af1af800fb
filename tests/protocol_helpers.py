"""Helpers shared by the protocol tests (not a test module)."""

from __future__ import annotations


def to_server(server, msgs):
    """Deliver ``msgs`` to the server; return everything it sends back, in order."""
    out = []
    for m in msgs:
        out += server.receive(m)
    return out
