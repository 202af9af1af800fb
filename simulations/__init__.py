"""fortis.simulations: datasets, attacks, training, the runner, the ``fortis`` CLI and reports.

Every error raised here on purpose derives from :class:`SimulationError` (a
:class:`fortis.FortisError` and a :class:`ValueError`).
"""

from simulations.errors import SimulationError

__all__ = ["SimulationError"]
