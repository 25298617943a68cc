"""A request-rate limit shared by every thread and process on this machine.

Stripe limits reads per account and per endpoint, while a backfill runs several partition runs
in separate processes, each with several fetching threads. A limit kept in one process's memory
would let four processes send four times the allowed rate. Each limit here is one small file;
reading and updating it happens under `flock`, which serialises the bookkeeping (microseconds)
but not the requests.

A limit guards the rate in two steps:

1. `reserve` books evenly spaced start times (`1 / rate` apart), so requests do not queue up
   and burst.
2. `admit`, called when a booked time has come, records the moment the request really starts
   and holds it back while `rate` requests already started within the last second. A thread
   that wakes late (its process was busy) would otherwise send beside the requests booked
   after it, and a server counting arrivals in a sliding one-second window, as Stripe's
   limiter and the sandbox's do, would refuse the excess with 429s.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import time
from pathlib import Path

WINDOW_SECONDS = 1.0


class SharedRateLimit:
    """At most `requests_per_second` request starts in any one second, across all processes
    using the same file, spaced `1 / requests_per_second` apart."""

    def __init__(self, state_dir: Path, name: str, requests_per_second: float):
        if requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".next")
        self.interval = 1.0 / requests_per_second
        # A fractional rate still lets the whole requests it covers start within a second.
        self.per_window = max(1, math.floor(requests_per_second))

    def reserve(self) -> float:
        """Claim the next free slot and return the wall-clock time at which it starts."""
        with self._state() as state:
            slot = max(time.time(), state.next_free)
            state.next_free = slot + self.interval
            return slot

    def admit(self) -> None:
        """Block until fewer than `per_window` requests started in the last second, then
        record this one as started now."""
        while True:
            with self._state() as state:
                now = time.time()
                recent = [t for t in state.started if t > now - WINDOW_SECONDS]
                if len(recent) < self.per_window:
                    state.started = [*recent, now]
                    return
                # The oldest request still in the window leaves it at recent[-per_window] + 1 s.
                delay = recent[-self.per_window] + WINDOW_SECONDS - now
            time.sleep(max(delay, 0.001))

    def _state(self) -> _LockedState:
        return _LockedState(self.path)


class _LockedState:
    """The limit's file, locked and parsed on entry, written back on exit.

    Layout: the next free slot on the first line, then the start times of the requests that
    started within the last second, space-separated.
    """

    def __init__(self, path: Path):
        self.path = path
        self.next_free = 0.0
        self.started: list[float] = []

    def __enter__(self) -> _LockedState:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        lines = os.pread(self._fd, 1 << 16, 0).decode().split("\n", 1)
        try:
            self.next_free = float(lines[0]) if lines[0].strip() else 0.0
            self.started = [float(t) for t in lines[1].split()] if len(lines) > 1 else []
        except ValueError:
            # A file from an older layout or a torn write: start afresh; the worst case is
            # one request sent a little early.
            self.next_free, self.started = 0.0, []
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            encoded = f"{self.next_free!r}\n{' '.join(map(repr, self.started))}".encode()
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, encoded, 0)
        finally:
            os.close(self._fd)  # closing the descriptor releases the lock


def wait_for_slots(*limits: SharedRateLimit) -> None:
    """Block until every limit allows one more request, and count it as started."""
    start = max(limit.reserve() for limit in limits)
    delay = start - time.time()
    if delay > 0:
        time.sleep(delay)
    for limit in limits:
        limit.admit()
