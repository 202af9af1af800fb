"""Build of the optional compiled kernels; all other metadata is in pyproject.toml.

Both extensions are optional: if one does not build (no C compiler, or no ``gmp.h``), the
install goes on without it and the package falls back to its pure-Python path (same results,
slower).

* ``robust._kernels`` (column order statistics by a vectorised comparator network, and
  float64 squared distances in one pass); robust falls back to numpy.
* ``secagg._multiexp`` (Montgomery multi-exponentiation on GMP's mpn layer, for the masked
  distance protocol); secagg falls back to gmpy2 (:class:`secagg.paillier_multiexp.MultiExpTable`).

The SHA-256 of each source is compiled in (``FORTIS_KERNEL_SOURCE_SHA256``), so that
``robust._native`` and ``secagg._native_multiexp`` can refuse a build that no longer matches its
source (an edited ``.c`` file without a rebuild); ``robust.kernel_status()`` and
``secagg._native_multiexp.kernel_status()`` report it.
"""

import hashlib
import sys
from pathlib import Path

from setuptools import Extension, setup

compile_args = [] if sys.platform == "win32" else ["-O3", "-std=c11"]


def _extension(name: str, source: str, **kwargs) -> Extension:
    source_sha256 = hashlib.sha256((Path(__file__).parent / source).read_bytes()).hexdigest()
    return Extension(
        name,
        sources=[source],
        define_macros=[("FORTIS_KERNEL_SOURCE_SHA256", f'"{source_sha256}"')],
        extra_compile_args=compile_args,
        optional=True,
        **kwargs,
    )


setup(
    ext_modules=[
        _extension("robust._kernels", "robust/_kernels.c"),
        _extension("secagg._multiexp", "secagg/_multiexp.c", libraries=["gmp"]),
    ]
)
