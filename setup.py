"""Build of the optional compiled kernel; all other metadata is in pyproject.toml.

``robust._kernels`` (column order statistics by a vectorised comparator network, and
float64 squared distances in one pass) is optional: if no C compiler is available the build
goes on without it and robust falls back to numpy (same results, slower).

The SHA-256 of ``robust/_kernels.c`` is compiled in (``FORTIS_KERNEL_SOURCE_SHA256``), so
that ``robust._native`` can refuse a build that no longer matches its source (an edited
``_kernels.c`` without a rebuild); ``robust.kernel_status()`` reports it.
"""

import hashlib
import sys
from pathlib import Path

from setuptools import Extension, setup

SOURCE = "robust/_kernels.c"
source_sha256 = hashlib.sha256((Path(__file__).parent / SOURCE).read_bytes()).hexdigest()
compile_args = [] if sys.platform == "win32" else ["-O3", "-std=c11"]

setup(
    ext_modules=[
        Extension(
            "robust._kernels",
            sources=[SOURCE],
            define_macros=[("FORTIS_KERNEL_SOURCE_SHA256", f'"{source_sha256}"')],
            extra_compile_args=compile_args,
            optional=True,
        )
    ]
)
