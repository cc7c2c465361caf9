"""The lake's ``/metrics`` figures: how this node feeds the lake (lake mode only).

A receiver in lake mode acknowledges an Export once its rows are in its own file, with a copy in
its outbox; the shipper moves the outbox into the lake (``store/shipper.py``). These families say
how that goes: rows shipped, rows the lake had already (a re-ship after a crash, a span that
reached two nodes), lake commits, commits lost to another node's (retried) and failed attempts
(the catalog unreachable), and as gauges the rows waiting in the outbox and the age of the
oldest, which ``lake_max_lag`` bounds. Each node renders its own, so ``sum()`` adds them up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


@dataclass(frozen=True)
class LakeFigures:
    """What this node has done to the lake since it started, and where its outbox stands."""

    shipped_rows: int = 0
    duplicate_rows: int = 0
    commits: int = 0
    conflicts: int = 0
    failures: int = 0
    outbox_rows: int = 0
    lag_seconds: float = 0.0


COUNTERS = (
    ("shipped_rows", "user_metrics_lake_shipped_rows", "Request rows this node added to the lake"),
    (
        "duplicate_rows",
        "user_metrics_lake_duplicate_rows",
        "Rows shipped that the lake already held (a re-ship after a crash, a span sent to two nodes): "
        "not added again",
    ),
    ("commits", "user_metrics_lake_commits", "Lake transactions this node committed"),
    (
        "conflicts",
        "user_metrics_lake_conflicts",
        "Lake transactions that lost to another node's at commit and were retried",
    ),
    (
        "failures",
        "user_metrics_lake_ship_failures",
        "Attempts to write the lake that failed (the catalog or data path unreachable) and were retried",
    ),
)
GAUGES = (
    (
        "outbox_rows",
        "user_metrics_lake_outbox_rows",
        "Rows acknowledged here, waiting to be shipped to the lake",
    ),
    (
        "lag_seconds",
        "user_metrics_lake_lag_seconds",
        "Age of the oldest row waiting to be shipped (exports are refused beyond lake_max_lag)",
    ),
)


def lake_families(figures: LakeFigures) -> Iterable[Metric]:
    """The counters and gauges of ``figures``."""
    for field, name, text in COUNTERS:
        counter = CounterMetricFamily(name, text)
        counter.add_metric([], getattr(figures, field))
        yield counter
    for field, name, text in GAUGES:
        gauge = GaugeMetricFamily(name, text)
        gauge.add_metric([], getattr(figures, field))
        yield gauge
