"""The DuckDB side of the lake: the extensions, from the installed wheels, and instances let go.

The DuckLake and PostgreSQL extensions are loaded by path from the ``duckdb_extension_ducklake``
and ``duckdb_extension_postgres`` wheels (each built for one DuckDB version, which pyproject.toml
pins), never downloaded. ``dispose`` closes an instance, unless DuckDB invalidated it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
from pathlib import Path

import duckdb

from user_metrics.errors import Unavailable

log = logging.getLogger(__name__)


def extension_paths() -> tuple[str, str]:
    """The DuckLake and PostgreSQL extension binaries of the installed wheels for this DuckDB."""
    found = []
    for package, name in (
        ("duckdb_extension_ducklake", "ducklake"),
        ("duckdb_extension_postgres", "postgres"),
    ):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise Unavailable(f"lake mode needs the {package.replace('_', '-')} package (pip install it)")
        path = Path(list(spec.submodule_search_locations)[0]) / "extensions" / f"v{duckdb.__version__}"
        binary = path / f"{name}.duckdb_extension"
        if not binary.exists():
            raise Unavailable(f"{binary} is missing: {package} must match duckdb {duckdb.__version__}")
        found.append(str(binary))
    return found[0], found[1]


# Instances DuckDB invalidated, kept for the life of the process: see _dispose.
_ABANDONED: list[duckdb.DuckDBPyConnection] = []


def dispose(con: duckdb.DuckDBPyConnection) -> None:
    """Close ``con``, unless DuckDB invalidated its instance (an internal error).

    Closing an invalidated instance that still has a transaction open (a lake write that failed
    part-way: its ROLLBACK fails too) throws from a C++ destructor, which aborts the process
    (measured with 1.5.5: "terminate called after throwing an instance of 'duckdb::Exception'").
    Such an instance is abandoned instead: kept referenced for good (one more reference that is
    never released, so not even the interpreter's exit destroys it); its memory is lost. That
    happens once per invalidation, which is rare and counted (``lake_reattaches``)."""
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")
    try:
        con.execute("SELECT 1").fetchall()
    except duckdb.Error:
        _ABANDONED.append(con)
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(con))
        log.warning("a lake connection DuckDB invalidated is abandoned, not closed (closing it aborts)")
        return
    with contextlib.suppress(duckdb.Error):
        con.close()
