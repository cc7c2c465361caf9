"""Whether rollup cells can answer a filter or a breakdown, given values folded into ``(other)``.

``dims.py`` gives rollup cells of their own to the first ``max_dimension_values`` values of each
dimension and folds later ones into ``(other)``. A filter naming a folded value, or a breakdown
by a dimension with folded values, must read request rows instead (``CellSql.rows_only``):
``served_by_rollups`` and ``folded`` say when.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from user_metrics.query.window import Filters
from user_metrics.store import dims


def served_by_rollups(con: duckdb.DuckDBPyConnection, filters: Filters) -> bool:
    """Whether rollup cells hold exactly the requests the filters match.

    They do unless a filter names a value that is not admitted in a dimension that has folded
    values: its requests may hide in an ``(other)`` cell. A model filter looks at both model
    dimensions (it matches either model, ignoring case).
    """
    wanted: list[tuple[str, str, bool]] = []  # dimension, value, caseless
    for column, value in (("service_name", filters.service), ("environment", filters.environment)):
        if value is not None:
            wanted.append((column, value, False))
    if filters.model is not None:
        wanted += [(column, filters.model, True) for column in dims.CASELESS]
    wanted += [(dims.property_dimension(key), value, False) for key, value in filters.properties]
    if not wanted:
        return True
    params: dict[str, object] = {}
    rows = []
    for i, (dim, value, caseless) in enumerate(wanted):
        params[f"d{i}"], params[f"v{i}"] = dim, value
        rows.append(f"($d{i}, {f'lower($v{i})' if caseless else f'$v{i}'})")
    (ok,) = con.execute(
        f"""SELECT bool_and(EXISTS (SELECT 1 FROM dim_values AS a WHERE a.dim = w.dim AND a.value = w.value)
                            OR NOT EXISTS (SELECT 1 FROM dim_values AS a
                                           WHERE a.dim = w.dim AND a.value IS NULL))
            FROM (VALUES {", ".join(rows)}) AS w(dim, value)""",
        params,
    ).fetchone() or (True,)
    return bool(ok)


def folded(con: duckdb.DuckDBPyConnection, dimensions: Iterable[str]) -> bool:
    """Whether any of these dimensions has folded values into ``(other)``."""
    names = list(dimensions)
    (found,) = con.execute(
        "SELECT count(*) FROM dim_values WHERE value IS NULL AND dim IN (SELECT unnest($names::VARCHAR[]))",
        {"names": names},
    ).fetchone() or (0,)
    return bool(found)
