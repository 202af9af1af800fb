"""fortis: private and Byzantine-robust federated aggregation.

This top-level package holds only what every other package shares and may import without
breaking the one-way dependency rule (``robust``, ``dp`` and ``secagg`` are leaves, ``protocol``
composes them, ``simulations`` uses everything): the common error base class and the version.
It imports nothing else, so a server process that imports it does not pull in torch or crypto.
"""

from .errors import FortisError

__all__ = ["FortisError", "__version__"]

__version__ = "0.1.0"
