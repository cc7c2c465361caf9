"""The per-user families of /metrics built by prometheus_client, as the service did before
``serve/user_samples.py``: the reference its SQL-written lines must equal byte for byte
(tests/serve/test_metrics_sql.py), and the "before" side of tests/benchmarks/scrape.py."""

from __future__ import annotations

import duckdb
from prometheus_client.core import Metric

from user_metrics.query.snapshot import snapshot
from user_metrics.serve.metrics import UsageCollector, _tokens
from user_metrics.serve.user_samples import families


class ReferenceCollector(UsageCollector):
    """A UsageCollector whose per-user samples are Metric objects formatted in Python."""

    def _user_families(self, con: duckdb.DuckDBPyConnection) -> tuple[tuple[tuple[Metric, bytes], ...], int]:
        requests, tokens, cost, last = families()
        users = snapshot(con, self._max_users, ()).users
        for user in users:
            u = user.usage
            requests.add_metric([user.user_id, "ok"], u.requests - u.errors)
            requests.add_metric([user.user_id, "error"], u.errors)
            for kind, count in _tokens(u):
                tokens.add_metric([user.user_id, kind], count)
            cost.add_metric([user.user_id], float(u.cost_usd))
            last.add_metric([user.user_id], u.last_active_us / 1e6)
        return tuple((family, b"") for family in (requests, tokens, cost, last)), len(users)
