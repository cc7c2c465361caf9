"""Build script for the optional C extension only; pyproject.toml holds all the metadata.

``user_metrics.ingest._otlp_scan`` (src/user_metrics/ingest/native/) splits OTLP requests natively.
It is optional: where no C compiler works, the build skips it and the service runs the pure-Python
path (setuptools reports the failed extension as a warning, the install succeeds).
"""

from setuptools import Extension, setup

NATIVE = "src/user_metrics/ingest/native"

setup(
    ext_modules=[
        Extension(
            "user_metrics.ingest._otlp_scan",
            sources=[f"{NATIVE}/module.c", f"{NATIVE}/otlp_scan.c"],
            depends=[f"{NATIVE}/otlp_scan.h"],
            include_dirs=[NATIVE],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,
        )
    ]
)
