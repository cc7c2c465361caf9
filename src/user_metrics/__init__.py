"""otel-user-metrics: per-user LLM usage analytics from OpenTelemetry spans.

``user_metrics.connect(path=None, url=None)`` returns a client with the query functions
(``users``, ``user``, ``timeseries``, ``by_property``, ``totals``, ``sql``).
"""

from typing import Any

# The one place the version is written: pyproject.toml reads it from here when the package is
# built, so it needs no importlib.metadata at run time (which `user-metrics --version` would pay).
__version__ = "0.1.0"

__all__ = ["__version__", "connect"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `user-metrics --help` and the receivers do not load the clients.
    if name == "connect":
        from user_metrics.client import connect

        return connect
    raise AttributeError(f"module 'user_metrics' has no attribute {name!r}")
