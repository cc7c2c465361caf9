"""The query layer: every reader (Python client, CLI, HTTP API, gRPC) calls its functions.

Each function takes an open DuckDB connection (a reader cursor of the running service, or a
read-only connection to the file), a time window and filters. It reads rollup cells for the
whole days and hours inside the window and ``requests`` rows only for the partial hours at its
two ends (``cells.py``), so the answer is exact for any instant while a 30-day query reads at
most two hours of request rows. Each also takes ``tz``, the IANA zone its calendar periods
(``since="this_month"``), naive instants, active days and buckets are read in (``calendar.py``).

The functions live in the module named for what they answer: ``users.py`` (users, one user, a
user's recent requests), ``timeseries.py``, ``properties.py``, ``totals.py``, ``anomalies.py``,
``statements.py`` (a month's statement per user) and ``snapshot.py`` (all-time totals for
``/metrics``); ``scope.py`` holds what they share and ``results.py`` the dataclasses they answer.
"""
