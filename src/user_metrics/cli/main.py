"""The ``user-metrics`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from user_metrics import __version__
from user_metrics.cli.process import LOG_FORMAT, stop_on_signals, wait_for
from user_metrics.cli.query_commands import add_commands
from user_metrics.errors import InvalidInput, UserMetricsError
from user_metrics.settings import CONFIG_ENV, SPECS, SettingsError, load_settings


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
        where = f"; in [{spec.section}] of the config file" if spec.section else ""
        help_text = f"{spec.help} [env {spec.env}{where}; default {spec.default!r}]".replace("%", "%%")
        if spec.kind is list:
            metavar = "TOKEN" if spec.name.endswith("_tokens") else "KEY"
            metavar = "PREFIX" if spec.name.endswith("_prefixes") else metavar
            serve.add_argument(spec.flag, dest=spec.name, action="append", metavar=metavar, help=help_text)
        elif spec.kind is bool:
            # a switch on by default is turned off by its flag (--no-ingest)
            const = spec.default is not True
            serve.add_argument(spec.flag, dest=spec.name, action="store_const", const=const, help=help_text)
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

    flags: dict[str, Any] = {spec.name: getattr(args, spec.name) for spec in SPECS}
    settings = load_settings(flags, config_file=args.config)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    with stop_on_signals() as stop:
        app = App(settings)  # a price file it cannot use is a SettingsError too
        app.start()
        try:
            wait_for(stop)
        finally:
            logging.getLogger("user_metrics").info("shutting down: finishing in-flight exports")
            app.stop()
    return 0


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
