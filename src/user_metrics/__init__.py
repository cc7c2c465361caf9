"""otel-user-metrics: per-user LLM usage analytics from OpenTelemetry spans."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("otel-user-metrics")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
