"""Run as a process by test_lake_store.py: invalidate a Lake's writer instance inside a lake
transaction (DuckDB 1.5.5's internal error of duckdb/duckdb#22352, which the query layer no longer
triggers), then write the lake again and close it. Closing the invalidated instance used to abort
the process (std::terminate). Prints "invalidated" (or "not invalidated": the DuckDB bug is
gone), then "written 1" and "closed"."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb

from user_metrics.stats import Stats
from user_metrics.store.lake import Lake

BUG = """WITH c AS (SELECT i AS x FROM range(1) t(i)),
p AS (SELECT * FROM c WHERE x >= 5000 UNION ALL SELECT * FROM c WHERE NOT EXISTS (SELECT 1 FROM c WHERE x >= 5000))
SELECT x, count() OVER () AS full_count FROM p ORDER BY x DESC LIMIT 5"""


def main(catalog: str, data_path: str, psql: str) -> None:
    lake = Lake(catalog, data_path, Stats(), memory_limit_mib=256, max_dimension_values=100)

    def invalidate(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("INSERT INTO plan_prices VALUES ('plan', 'x', 1, 'month')")
        for _ in range(20_000):
            con.execute(BUG).fetchall()

    try:
        lake.in_turn(invalidate)
        print("not invalidated", flush=True)
    except duckdb.InternalException:
        print("invalidated", flush=True)
        # What PostgreSQL's idle_in_transaction_session_timeout (lake.TURN_IDLE_S) does, at once.
        terminate = (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE state = 'idle in transaction'"
        )
        subprocess.run([*json.loads(psql), terminate], check=True, capture_output=True)
    lake.in_turn(lambda con: con.execute("INSERT INTO plan_prices VALUES ('plan', 'y', 2, 'month')"))
    with lake.reader() as reader:
        print("written", reader.execute("SELECT count(*) FROM plan_prices").fetchall()[0][0], flush=True)
    lake.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
