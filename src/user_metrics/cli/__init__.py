"""The command line (``user-metrics``, whose entry point is ``user_metrics.cli:main``) and the demo."""

from user_metrics.cli.main import main

__all__ = ["main"]
