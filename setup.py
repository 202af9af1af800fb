"""Build of the optional compiled kernel; all other metadata is in pyproject.toml.

``robust._kernels`` (column order statistics by a vectorised comparator network, and
float64 squared distances in one pass) is optional: if no C compiler is available the build
goes on without it and robust falls back to numpy (same results, slower).
"""

import sys

from setuptools import Extension, setup

compile_args = [] if sys.platform == "win32" else ["-O3", "-std=c11"]

setup(
    ext_modules=[
        Extension(
            "robust._kernels",
            sources=["robust/_kernels.c"],
            extra_compile_args=compile_args,
            optional=True,
        )
    ]
)
