"""The lake's catalog connection string, kept out of sight: its password never reaches DuckDB.

DuckDB shows what a database was attached with to any SQL: ``duckdb_databases()`` lists the
ATTACH string as the database's path, and ``allowed_directories`` adds that string to the
``allowed_paths`` setting (measured with 1.5.5). The read-only SQL endpoint may read both. So a
password in the operator's catalog string (libpq's ``password=...`` keyword, or the
``postgresql://user:password@host/db`` form) is taken out before the ATTACH and handed to libpq
through a password file of its own (``passfile=...``, mode 0600, in the lake's private
directory, which SQL cannot read: file access is limited to the lake's data path). What SQL
can still see is the catalog's host, port, database and user names.

``redact`` hides the password in what is logged or shown in errors.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)|(://[^:/@\s]*:)([^@\s]*)(@)", re.IGNORECASE)
# One libpq keyword=value pair: the value bare, or single-quoted with \' and \\ escapes.
_KEYWORD = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")


def redact(catalog: str) -> str:
    """The catalog string with any password hidden, for logs and messages."""
    return _PASSWORD.sub(lambda m: f"{m[1]}***" if m[1] else f"{m[3]}***{m[5]}", catalog)


def without_password(catalog: str) -> tuple[str, str | None]:
    """(the catalog string without its password, the password or None)."""
    if "://" in catalog:
        parts = urlsplit(catalog)
        if parts.password is None:
            return catalog, None
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.password)
    kept, password, at = [], None, 0
    for match in _KEYWORD.finditer(catalog):
        if match.start() != at:
            return catalog, None  # not keyword=value pairs throughout: libpq will say what is wrong
        at = match.end()
        if match[1].lower() == "password":
            value = match[2]
            password = re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith("'") else value
        else:
            kept.append(match[0].strip())
    if catalog[at:].strip() or password is None:
        return catalog, None
    return " ".join(kept), password


def with_passfile(catalog: str, directory: str) -> str:
    """The catalog string to ATTACH: its password, if any, moved into a libpq password file
    written in ``directory`` (which must be private to this process)."""
    bare, password = without_password(catalog)
    if password is None:
        return catalog
    path = os.path.join(directory, "pgpass")
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(f"*:*:*:*:{escaped}\n")
    quoted = path.replace("\\", "\\\\").replace("'", "\\'")
    if "://" in bare:
        return bare + ("&" if "?" in bare else "?") + f"passfile={quote(path)}"
    return f"{bare} passfile='{quoted}'"
