"""pytest plugin: the ``fortis_threat_model`` fixture (session-scoped dataset cache)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fortis_threat_model():
    """A :class:`simulations.testing.ThreatModel` shared by the whole test session."""
    from simulations.testing import ThreatModel

    return ThreatModel()
