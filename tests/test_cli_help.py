"""The command line as a newcomer first meets it: every command's --help, and a quick start.

Each command is run as README installs it: the ``user-metrics`` console script next to this
Python, in a process of its own.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from user_metrics.anomalies import DEFAULT_THRESHOLD
from user_metrics.cli import _parser

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
