"""The simulations error family: every error ``simulations`` raises on purpose.

:class:`SimulationError` derives from :class:`fortis.FortisError` (so the CLI turns it into a
one-line message) and from :class:`ValueError`: its members report an input that cannot run
(an option, a data file, a spec) or a round the inputs made impossible. Each module keeps its
own subclass next to the code that raises it (``DatasetError`` in ``datasets``,
``AttackError`` in ``attacks`` ...); this module holds the base and the errors that belong to
no single module.
"""

from __future__ import annotations

from fortis.errors import FortisError

__all__ = ["ConfigError", "SecureRoundError", "SimulationError", "SimulationStateError"]


class SimulationError(FortisError, ValueError):
    """Base class of every error raised by ``simulations``; the message names the option,
    file or round at fault."""


class ConfigError(SimulationError):
    """A simulation option is invalid. The message names the option and the allowed values."""


class SecureRoundError(SimulationError):
    """A secure-aggregation round aborted (for example too few survivors to unmask); the
    message names the round and the protocol's reason."""


class SimulationStateError(SimulationError):
    """A :class:`~simulations.runner.Simulation` was asked to go on after its run ended
    (for example a round after the model diverged)."""
