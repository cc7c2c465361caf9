"""What one read-only SQL statement may contain, checked on DuckDB's own parse tree before it runs.

DuckDB cannot interrupt a statement while it binds, plans and optimises it, nor a function
while it fills one block of rows, and it does not count the values a function builds against
``memory_limit``. So the shapes that make those steps long or large are refused up front:
``json_serialize_sql`` gives the parse tree, and ``check`` counts what it holds (see the
``MAX_*`` bounds). It also keeps SQL inside the database: DuckDB lets even a locked-down
connection read its own database file, write-ahead log and spill directory, through
``read_blob``, ``read_csv``, ``glob`` and the other table functions, or a quoted file name in
``FROM``. So only the table functions in ``TABLE_FUNCTIONS`` are allowed, and a table name that
looks like a path is refused.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import duckdb

from user_metrics.errors import InvalidInput

MAX_NODES = 5_000  # parse-tree nodes: expressions, table references, clauses
MAX_SELECTS = 64  # SELECT blocks: each part of a UNION, each subquery, each CTE
MAX_JOINS = 24  # joins in the whole statement: DuckDB's join ordering grows fast with them
MAX_WINDOWS = 32  # window functions (OVER ...)
MAX_GROUPING_SETS = 64  # GROUPING SETS, CUBE and ROLLUP expand to this many groupings at most
MAX_SIZE = 10_000  # the size a function is asked to build: repeat count, pad width, list length
# what is counted in the parse tree -> its bound; checked in this order, the most telling first
BOUNDS = {
    "SELECT blocks": MAX_SELECTS,
    "joins": MAX_JOINS,
    "window functions": MAX_WINDOWS,
    "grouping sets": MAX_GROUPING_SETS,
    "parse-tree nodes": MAX_NODES,
}

# Table functions that read nothing but the database's own tables, catalog and their arguments.
TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "json_each",
        "json_tree",
        "pragma_table_info",
        "pragma_show",
        "pragma_version",
        "pragma_database_size",
        "pg_timezone_names",
        "icu_calendar_names",
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_databases",
        "duckdb_dependencies",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_schemas",
        "duckdb_sequences",
        "duckdb_settings",
        "duckdb_tables",
        "duckdb_types",
        "duckdb_views",
    }
)
# scalar function -> the index of its size argument, which must be a whole-number literal <= MAX_SIZE
SIZED_FUNCTIONS = {"repeat": 1, "lpad": 1, "rpad": 1, "list_resize": 1, "array_resize": 1}
SERIES_FUNCTIONS = ("range", "generate_series")  # as scalars they build the whole list at once
FORMAT_FUNCTIONS = ("printf", "format")  # a width in the format string pads to that size
_PRINTF_SPEC = re.compile(r"%[-+ #0']*(\*|\d*)(?:\.(\*|\d*))?")
_FMT_SPEC = re.compile(r"\{([^{}]*)\}")
_PATH_CHARACTERS = re.compile(r"[./\\:]")
_INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}


class QueryRefused(InvalidInput):
    """The SQL is not one read-only SELECT over this database."""


class QueryTooComplex(QueryRefused):
    """The statement is larger or more intricate than the bounds allow."""

    limit = "sql_complexity"


_LAKE_CATALOG = "__ducklake_metadata"


class ReadsFiles(QueryRefused):
    """The statement would read a file (the database's own files included) or run other SQL."""

    limit = "sql_files"


def check(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise ``QueryTooComplex`` or ``ReadsFiles`` unless the one SELECT in ``sql`` is within bounds."""
    try:
        row = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
        tree = json.loads(row[0] if row else "null")
    except RecursionError:
        raise QueryTooComplex("sql: nested too deeply") from None
    except duckdb.Error as exc:
        raise QueryRefused(f"sql: cannot read the statement's structure: {exc}") from exc
    if not isinstance(tree, dict) or tree.get("error"):
        message = tree.get("error_message") if isinstance(tree, dict) else None
        raise QueryRefused(f"sql: {message or 'cannot read the statement structure'}")
    table_functions: set[int] = set()
    counts: Counter[str] = Counter()
    for node in _nodes(tree["statements"]):
        kind = node.get("type")
        counts["parse-tree nodes"] += 1
        counts["SELECT blocks"] += kind == "SELECT_NODE"
        counts["joins"] += kind == "JOIN"
        counts["window functions"] += node.get("class") == "WINDOW"
        counts["grouping sets"] += len(node.get("group_sets") or ())
        if kind in ("BASE_TABLE", "SHOW_REF") and _PATH_CHARACTERS.search(node.get("table_name") or ""):
            raise ReadsFiles(
                f"sql: {node['table_name']!r} is not a table of this database (file access is disabled)"
            )
        if kind == "BASE_TABLE" and _internal(node):
            raise ReadsFiles(
                f"sql: {node['table_name']!r} is not a table of this database (the lake's catalog)"
            )
        if kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            _check_table_function(function)
            table_functions.add(id(function))  # its own node comes next: not a scalar call
        elif node.get("class") == "FUNCTION" and id(node) not in table_functions:
            _check_function(node)
    for name, bound in BOUNDS.items():
        if counts[name] > bound:
            raise QueryTooComplex(f"sql: too complex: {counts[name]} {name}, at most {bound}")


def _internal(table: dict[str, Any]) -> bool:
    """Whether a table reference names a lake's catalog database (DuckLake attaches its PostgreSQL
    catalog as ``__ducklake_metadata_<lake>``, whose every table and view, PostgreSQL's own
    included, a reader could otherwise read)."""
    names = (table.get("catalog_name"), table.get("schema_name"))
    return any(str(name or "").lower().startswith(_LAKE_CATALOG) for name in names)


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every object of the parse tree that is a node (has a ``type`` or ``class`` name)."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("type"), str) or isinstance(item.get("class"), str):
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_table_function(function: dict[str, Any]) -> None:
    name = str(function.get("function_name", "")).lower()
    if name not in TABLE_FUNCTIONS:
        raise ReadsFiles(
            f"sql: {name}() is not allowed: file access is disabled and SQL reads only this database "
            f"(table functions allowed: {', '.join(sorted(TABLE_FUNCTIONS))})"
        )


def _check_function(node: dict[str, Any]) -> None:
    name = str(node.get("function_name", "")).lower()
    arguments = node.get("children") or []
    if name in SIZED_FUNCTIONS:
        index = SIZED_FUNCTIONS[name]
        size = _literal(arguments[index]) if index < len(arguments) else 0
        if not _whole(size) or size > MAX_SIZE:
            raise QueryTooComplex(f"sql: {name}() sizes must be whole-number literals of at most {MAX_SIZE}")
    elif name in SERIES_FUNCTIONS:
        _series(name, [_literal(a) for a in arguments])
    elif name in FORMAT_FUNCTIONS and arguments:
        _format(name, _literal(arguments[0]))


def _series(name: str, values: list[Any]) -> None:
    """range(stop), range(start, stop) or range(start, stop, step) as a list: its length is bounded."""
    start, stop, step = {1: (0, *values, 1), 2: (*values, 1), 3: tuple(values)}.get(len(values), (0, 0, 0))
    if not all(map(_whole, (start, stop, step))) or step == 0 or -(-(stop - start) // step) > MAX_SIZE:
        raise QueryTooComplex(
            f"sql: {name}() as a list takes whole-number literals and holds at most {MAX_SIZE} values; "
            f"use FROM {name}(...) for other series"
        )


def _format(name: str, text: Any) -> None:
    """printf and format pad to the widths in their format string: those must be literals, and small."""
    if not isinstance(text, str):
        raise QueryTooComplex(f"sql: {name}() needs its format as a text literal")
    if name == "printf":
        widths = [w for spec in _PRINTF_SPEC.findall(text) for w in spec if w]
    else:
        widths = re.findall(r"\d+", " ".join(_FMT_SPEC.findall(text)))
        widths += ["*"] * bool(re.search(r"\{[^}]*\{", text))  # a nested field is a width from an argument
    if any(not w.isdigit() or int(w) > MAX_SIZE for w in widths):
        raise QueryTooComplex(f"sql: {name}() widths must be written in the format, at most {MAX_SIZE}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _literal(node: Any) -> Any:
    """The value of a literal node (an integer or text constant), else None."""
    if not isinstance(node, dict) or node.get("class") != "CONSTANT":
        return None
    value = node.get("value") or {}
    kind = (value.get("type") or {}).get("id")
    if value.get("is_null") or (kind not in _INTEGER_TYPES and kind != "VARCHAR"):
        return None
    return value.get("value")
