"""Build of the optional compiled kernel; all other metadata is in pyproject.toml.

``robust._rankkernel`` (column order statistics by a vectorised comparator network) is
optional: if no C compiler is available the build goes on without it and robust falls back
to numpy's sort (same results, slower).
"""

import sys

from setuptools import Extension, setup

compile_args = [] if sys.platform == "win32" else ["-O3", "-std=c11"]

setup(
    ext_modules=[
        Extension(
            "robust._rankkernel",
            sources=["robust/_rankkernel.c"],
            extra_compile_args=compile_args,
            optional=True,
        )
    ]
)
