"""Revenue per user in a window, exact to the nano-dollar: plan prices prorated, imported records.

Interface stub (issue 16); the billing helper fills it in.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import duckdb

from user_metrics.query.window import Window


def revenue_by_user(
    con: duckdb.DuckDBPyConnection, window: Window, users: Sequence[int] | None = None
) -> dict[int, Decimal] | None:
    """Revenue (USD, 9 decimals) per user key in the window; None when no revenue source exists.

    ``users`` None: every user with revenue in the window.
    """
    return None
