"""Writes ``schema8.duckdb.gz``: a database as the code of schema 8 (commit c30c3ff) stored it.

``tests/store/test_schema.py`` opens a copy with today's code to check the upgrade to schema 9
(``requests.scope_name`` and ``scope_version``). Run it against that commit, not this tree (it
refuses any other schema)::

    git worktree add /tmp/schema8 c30c3ff
    PYTHONPATH=/tmp/schema8/src python tests/data/make_schema8_db.py
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

# One LLM span waits in `pending` for this parent (in trace TRACE), which the test sends.
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
PARENT = bytes.fromhex("b7ad6b7169203331")


def main() -> None:
    if SCHEMA_VERSION != "8":
        sys.exit(f"this writes a schema-8 database; the code on the path has schema {SCHEMA_VERSION}")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "schema8.duckdb"
        app = App(
            Settings(
                db=str(db),
                grpc_listen="127.0.0.1:0",
                api_listen="127.0.0.1:0",
                http_listen="127.0.0.1:0",
                attribution_window_seconds=3600,
            )
        )
        app.start()
        try:
            stored = [span(chat(user, inp=1000 + i, out=10)) for i, user in enumerate(("alice", "bob", None))]
            result = app.ingestor.export(request(stored, {"service.name": "chat-api"}))
            assert result.rejected_spans == 0, result.error_message
            orphan = span(chat(None, inp=500, out=5), trace_id=TRACE, parent=PARENT, start=T0 + 1)
            result = app.ingestor.export(request([orphan], {"service.name": "chat-api"}))
            assert result.rejected_spans == 0, result.error_message
        finally:
            app.stop()
        with db.open("rb") as src, gzip.open(HERE / "schema8.duckdb.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)


if __name__ == "__main__":
    main()
