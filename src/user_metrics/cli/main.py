"""The ``user-metrics`` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from user_metrics import __version__
from user_metrics.cli.query_commands import add_commands
from user_metrics.errors import InvalidInput, UserMetricsError
from user_metrics.settings import CONFIG_ENV, SPECS, SettingsError, load_settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="user-metrics", description="Per-user LLM usage analytics from OpenTelemetry spans."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="receive OTLP spans and store per-user request records",
        description="Receive OTLP spans, map LLM calls to priced request records, store them in DuckDB.",
    )
    serve.add_argument("--config", metavar="FILE", help=f"TOML config file (also ${CONFIG_ENV})")
    for spec in SPECS:
        # argparse %-formats help texts: a literal % in a setting's help must reach it as %%.
        help_text = f"{spec.help} [env {spec.env}; default {spec.default!r}]".replace("%", "%%")
        if spec.kind is list:
            metavar = "TOKEN" if spec.name.endswith("_tokens") else "KEY"
            serve.add_argument(spec.flag, dest=spec.name, action="append", metavar=metavar, help=help_text)
        elif spec.kind is bool:
            serve.add_argument(spec.flag, dest=spec.name, action="store_const", const=True, help=help_text)
        else:
            serve.add_argument(
                spec.flag, dest=spec.name, type=spec.kind, metavar=spec.name.upper(), help=help_text
            )
    add_commands(commands)
    demo = commands.add_parser(
        "demo",
        help="run a throwaway service filled with a month of realistic LLM traffic, to explore",
        description="Start the service on a temporary database, send it a seeded month of LLM calls of "
        "a few dozen users through the OpenTelemetry SDK, print the dashboard and API addresses, and "
        "serve until Ctrl-C; then delete the database.",
    )
    demo.add_argument("--users", type=int, default=36, help="how many users (default %(default)s)")
    demo.add_argument("--requests", type=int, default=3000, help="LLM calls in all (default %(default)s)")
    demo.add_argument("--days", type=int, default=30, help="days of history before now (default %(default)s)")
    demo.add_argument("--seed", type=int, default=1, help="the same seed plans the same traffic (default 1)")
    for name in ("api", "grpc", "http"):
        demo.add_argument(
            f"--{name}-listen",
            default="127.0.0.1:0",
            metavar="HOST:PORT",
            help=f"{name}_listen of the demo service (default %(default)s: a free port)",
        )
    demo.add_argument("--keep-db", metavar="PATH", help="write the database to PATH (new) and keep it")
    return parser


def serve(args: argparse.Namespace) -> int:
    # Imported here, so that --version, --help and the reading commands start fast.
    from user_metrics.app import App
    from user_metrics.ingest.pricing import PriceFileError

    flags: dict[str, Any] = {spec.name: getattr(args, spec.name) for spec in SPECS}
    settings = load_settings(flags, config_file=args.config)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    with stop_on_signals() as stop:
        try:
            app = App(settings)
        except PriceFileError as exc:
            raise SettingsError(str(exc)) from exc
        app.start()
        try:
            wait_for(stop)
        finally:
            logging.getLogger("user_metrics").info("shutting down: finishing in-flight exports")
            app.stop()
    return 0


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGINT and SIGTERM set while inside; the previous handlers come back after."""
    stop = threading.Event()

    def handle(*_: object) -> None:
        # Not stop.set() here: the handler runs on the main thread, which may be inside stop.wait()
        # holding the event's lock at that very moment, and the lock is not reentrant (a server
        # that ignored SIGTERM for good). A thread of its own takes the lock when it is free.
        threading.Thread(target=stop.set, name="stop-signal", daemon=True).start()

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, handle) for signum in signals}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def wait_for(stop: threading.Event) -> None:
    """Return once ``stop`` is set. Polled: Python runs signal handlers on the main thread, and a
    signal the kernel hands to another thread does not interrupt a long ``Event.wait()``."""
    while not stop.wait(0.5):
        pass


def invocation() -> str:
    """This program as the shell that started it can start it again: ``user-metrics`` when that name
    finds this script on PATH, else its path (``.venv/bin/user-metrics`` after README's install),
    or ``python -m user_metrics`` with this Python."""
    script = Path(sys.argv[0])
    if script.name == "user-metrics" and script.exists():
        on_path = shutil.which(script.name)
        if on_path and Path(on_path).resolve() == script.resolve():
            return script.name
        return shlex.quote(_as_typed(script))
    return f"{shlex.quote(_as_typed(Path(sys.executable)))} -m user_metrics"


def _as_typed(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, else absolute."""
    absolute = Path(os.path.abspath(path))  # not resolve(): a venv's python is a symlink
    try:
        relative = str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)
    return relative if os.sep in relative else f".{os.sep}{relative}"  # a bare name means PATH


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "demo":
            from user_metrics.cli.demo import demo  # imports the OpenTelemetry SDK

            return demo(args)
        from user_metrics.cli.query_commands import run

        return run(args)
    except (SettingsError, InvalidInput) as exc:
        print(f"user-metrics: {exc}", file=sys.stderr)
        return 2
    except UserMetricsError as exc:  # not found, unavailable
        print(f"user-metrics: {exc}", file=sys.stderr)
        return 1
