"""Writes ``schema6.duckdb.gz``: a database as the code of schema 6 (commit 9369e66) stored it.

``tests/store/test_dimensions.py`` opens a copy with today's code to check the upgrade. Run it against
that commit, not against this tree (it refuses any other schema)::

    git worktree add /tmp/schema6 9369e66
    PYTHONPATH=/tmp/schema6/src python tests/data/make_schema6_db.py
"""

from __future__ import annotations

import gzip
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from otlp import T0, chat, request, span  # noqa: E402

from user_metrics.app import App  # noqa: E402
from user_metrics.settings import Settings  # noqa: E402
from user_metrics.store.schema import SCHEMA_VERSION  # noqa: E402

HOUR_NS = 3600 * 10**9


def spans() -> list[object]:
    """An alias answered by its dated snapshot, errors that name only the alias, and properties."""
    out = []
    for i in range(24):
        user = ("alice", "bob", "carol", None)[i % 4]
        start = T0 + i * HOUR_NS
        props = {"property.plan": ("free", "pro")[i % 2], "property.feature": f"f{i % 6}"}
        if i % 5 == 4:  # failed: no response model, only the alias asked for
            out.append(span(chat(user, model="gpt-4o", **props), start=start, error=True))
        else:
            attrs = chat(user, model="gpt-4o", inp=1000 + i, out=100 + i, **props)
            attrs["gen_ai.response.model"] = "gpt-4o-2024-08-06"
            out.append(span(attrs, start=start))
    for i in range(6):
        attrs = chat("alice", model="claude-sonnet-4-5", inp=500, out=50, **{"property.plan": "pro"})
        attrs["gen_ai.provider.name"] = "anthropic"
        attrs["gen_ai.response.model"] = "claude-sonnet-4-5-20250929"
        out.append(span(attrs, start=T0 + i * HOUR_NS + 1234))
    return out


def main() -> None:
    if SCHEMA_VERSION != "6":
        sys.exit(f"this writes a schema-6 database; the code on the path has schema {SCHEMA_VERSION}")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "schema6.duckdb"
        app = App(
            Settings(
                db=str(db), grpc_listen="127.0.0.1:0", api_listen="127.0.0.1:0", http_listen="127.0.0.1:0"
            )
        )
        app.start()
        try:
            result = app.ingestor.export(request(spans(), {"service.name": "chat-api"}))
            assert result.rejected_spans == 0, result.error_message
        finally:
            app.stop()
        with db.open("rb") as src, gzip.open(HERE / "schema6.duckdb.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)


if __name__ == "__main__":
    main()
