"""The command line as a newcomer first meets it: every command's --help, and a quick start.

Each command is run in a process of its own; --help as README installs it, through the
``user-metrics`` console script next to this Python. A quick start means importing only what the
command uses: which heavy libraries a command loads is asserted, not how long it takes.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import Service

import user_metrics
from user_metrics.cli.main import _parser
from user_metrics.errors import PROTOCOL_STATUS
from user_metrics.query.anomalies import DEFAULT_THRESHOLD

SCRIPT = Path(sys.executable).parent / "user-metrics"


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser under ``parser`` (itself first) with the words that reach it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


COMMANDS = list(commands(_parser()))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.exists(), f"{SCRIPT}: install the package (pip install -e .) to get the console script"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_the_parser_has_every_command() -> None:
    """The walk below reaches the subcommands (so the help test covers them all)."""
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "serve", "demo", "users", "user", "requests", "sql", "anomalies"} <= names


@pytest.mark.parametrize(
    ("path", "parser"), COMMANDS, ids=[" ".join(path) or "user-metrics" for path, _ in COMMANDS]
)
def test_help_of_every_command(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    """`--help` exits 0 and prints the usage and every option of that command."""
    done = run(*path, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith(f"usage: {' '.join(('user-metrics', *path))}")
    for action in parser._actions:
        for option in action.option_strings:
            assert option in done.stdout, f"{option} missing from the help of {path}"


def test_the_anomalies_help_shows_the_real_default_threshold() -> None:
    """The CLI states the threshold's default without importing the detector; it must agree."""
    done = run("anomalies", "--help")
    assert f"(default {DEFAULT_THRESHOLD:g})" in " ".join(done.stdout.split())


# Each costs tens to hundreds of milliseconds to import (genai_prices and grpc the most).
HEAVY = {"duckdb", "grpc", "genai_prices", "pyarrow", "numpy", "opentelemetry", "prometheus_client"}
# Runs the CLI's main() as the console script does, then names every top-level module loaded.
PROBE = """
import sys
from user_metrics.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print("modules:", *sorted({name.split(".")[0] for name in sys.modules}))
sys.exit(code)
"""


def heavy_imports(*args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """The heavy libraries `user-metrics ARGS` imports, and how it ended."""
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60)
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("modules: ")]
    return set(line.split()[1:]) & HEAVY, done


class TestStartsQuickly:
    def test_version_imports_no_heavy_library(self) -> None:
        """`--version` prints the version having loaded none of the heavy libraries."""
        heavy, done = heavy_imports("--version")
        assert done.returncode == 0 and f"user-metrics {user_metrics.__version__}" in done.stdout
        assert heavy == set()

    def test_asking_a_server_loads_neither_duckdb_nor_grpc(self, service: Service) -> None:
        """A reading command with --url talks HTTP: no DuckDB, Arrow, gRPC or price data."""
        assert service.app is not None
        heavy, done = heavy_imports("users", "--url", service.app.api_url, "--format", "json")
        assert done.returncode == 0, done.stderr
        assert '"total": 0' in done.stdout
        assert heavy == set()

    def test_reading_a_file_does_load_duckdb(self, tmp_path: Path) -> None:
        """The probe sees imports: --db needs DuckDB (and still not the ingest side's libraries)."""
        heavy, done = heavy_imports("users", "--db", str(tmp_path / "none.duckdb"))
        assert done.returncode == 1 and "no database file" in done.stderr
        assert "duckdb" in heavy and not heavy & {"grpc", "genai_prices", "opentelemetry"}


def test_the_version_is_the_installed_distributions() -> None:
    """__version__ is written once, and the package metadata is built from it."""
    assert importlib.metadata.version("otel-user-metrics") == user_metrics.__version__


def test_every_error_maps_to_a_real_grpc_status() -> None:
    """The error table names gRPC codes as text (grpc loads lazily); each name is a real code."""
    assert {name for name, _ in PROTOCOL_STATUS.values()} <= {code.name for code in grpc.StatusCode}
