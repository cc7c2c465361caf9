"""Running a server process from the command line: its log line format, stopping on SIGINT and
SIGTERM, and the name this program is started again by. Used by ``serve`` and ``demo``."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
