"""Every public error class in dp/ is a fortis.FortisError and a DPError; DPError is also a
ValueError. (Uses tests/test_errors.py's walker; add "dp" to its PACKAGES to fold this in.)"""

from __future__ import annotations

from test_errors import _public_errors

from dp import DPError
from fortis import FortisError


def test_every_dp_error_is_a_fortis_error():
    found = _public_errors("dp")
    assert len(found) >= 6
    assert all(issubclass(e, FortisError) and issubclass(e, DPError) for e in found), found
    assert issubclass(DPError, ValueError)
