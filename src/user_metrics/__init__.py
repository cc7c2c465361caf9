"""otel-user-metrics: per-user LLM usage analytics from OpenTelemetry spans.

``user_metrics.connect(path=None, url=None)`` returns a client with the query functions
(``users``, ``user``, ``timeseries``, ``by_property``, ``totals``, ``sql``).
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("otel-user-metrics")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__", "connect"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `user-metrics --help` and the receivers do not load the clients.
    if name == "connect":
        from user_metrics.client import connect

        return connect
    raise AttributeError(f"module 'user_metrics' has no attribute {name!r}")
