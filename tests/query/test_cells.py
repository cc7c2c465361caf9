"""query/cells.py: how a window is cut into rollup cells and request rows."""

from __future__ import annotations

import pytest


class TestDecompose:
    @pytest.mark.parametrize("seed", range(20))
    def test_pieces_tile_the_window_exactly(self, seed: int) -> None:
        """Whole days, then whole hours, then raw microseconds: contiguous, no gap, no overlap."""
        import random

        from user_metrics.query.cells import PER_USER, decompose

        rng = random.Random(seed)
        since = rng.randrange(10**15, 2 * 10**15)
        until = (
            since
            + rng.choice([1, 59 * 10**6, 3 * 3600 * 10**6, 86_400 * 10**6, 40 * 86_400 * 10**6])
            + rng.randrange(10**9)
        )
        pieces = decompose(since, until, PER_USER)
        edges = [
            (first * level.unit_us, last * level.unit_us) if level else (first, last)
            for level, first, last in pieces
        ]
        assert edges[0][0] == since and edges[-1][1] == until
        assert all(a[1] == b[0] for a, b in zip(edges, edges[1:], strict=False))
        levels = [level.table if level else "raw" for level, _, _ in pieces]
        assert levels.count("rollup_user_day") <= 1 and levels.count("raw") <= 2
        # Coarsest in the middle: raw only at the ends, hours next to them, days inside.
        rank = [{"raw": 0, "rollup_user_hour": 1, "rollup_user_day": 2}[x] for x in levels]
        top = rank.index(max(rank))
        assert rank[: top + 1] == sorted(rank[: top + 1]) and rank[top:] == sorted(rank[top:], reverse=True)
