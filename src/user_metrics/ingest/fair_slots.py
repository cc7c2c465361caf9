"""Fair slots: at most ``n`` holders at once, waiters served in the order they came.

The ingest core maps exports in Python, which holds the GIL, so only a few map at once. With a
plain semaphore a burst of huge exports could keep a one-span export waiting for as long as they
all take. Here a waiter is served in arrival order (a freed slot is handed to the first waiter,
not to whoever grabs it first), and a holder mapping a big export in parts calls ``turn()``
between parts: when someone waits, it hands its slot to the first waiter and queues again.
Small exports, whose whole work is shorter than one such part, may go to the front of the line
(``acquire(small=True)``): shortest job first, so they wait for one part at most.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator


class FairSlots:
    """A semaphore of ``n`` slots with a first-come, first-served line."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"FairSlots needs at least one slot, got {n}")
        self._free = n
        self._line: deque[threading.Event] = deque()
        self._small_waiting = 0  # at the front of the line
        self._lock = threading.Lock()

    def acquire(self, small: bool = False) -> None:
        """Take a slot, waiting behind everyone who came first (behind the small ones only, if
        ``small``)."""
        with self._lock:
            if self._free and not self._line:
                self._free -= 1
                return
            mine = threading.Event()
            if small:
                self._line.insert(self._small_waiting, mine)
                self._small_waiting += 1
            else:
                self._line.append(mine)
        mine.wait()  # set by the holder who hands us its slot

    def release(self) -> None:
        """Give the slot to the first waiter, or free it."""
        with self._lock:
            if self._line:
                self._next().set()
            else:
                self._free += 1

    def turn(self) -> None:
        """While holding a slot: let the first waiter go ahead, then take a slot again in line."""
        with self._lock:
            if not self._line:
                return
            mine = threading.Event()
            self._line.append(mine)
            self._next().set()
        mine.wait()

    def _next(self) -> threading.Event:
        """The first waiter, out of the line (the lock is held)."""
        self._small_waiting = max(0, self._small_waiting - 1)
        return self._line.popleft()

    @contextlib.contextmanager
    def held(self, small: bool = False) -> Iterator[None]:
        """A slot for the duration of the block."""
        self.acquire(small)
        try:
            yield
        finally:
            self.release()
