"""A started service freezes its long-lived objects out of the cyclic GC and collects gen 0 less often."""

from __future__ import annotations

import gc
from pathlib import Path

from conftest import Service

from user_metrics.app import GC_THRESHOLD


def test_the_start_freezes_the_heap_and_raises_the_gen0_threshold(tmp_path: Path) -> None:
    before = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, *before[1:])
    svc = Service(tmp_path / "db.duckdb")
    try:
        svc.start()
        assert gc.get_threshold()[0] == GC_THRESHOLD
        assert gc.get_freeze_count() > 10_000  # modules, price tables, conventions
        assert gc.isenabled()
    finally:
        svc.stop()
