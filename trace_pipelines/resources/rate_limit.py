"""A request-rate limit shared by every thread and process on this machine.

Stripe limits reads per account and per endpoint, while a backfill runs several partition runs
in separate processes, each with several fetching threads. A limit kept in one process's memory
would let four processes send four times the allowed rate. Each limit here is one small file
holding the earliest time the next request may start; taking a slot is a read-modify-write of
that file under `flock`, which serialises the bookkeeping (microseconds) but not the requests.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path


class SharedRateLimit:
    """Spaces requests `1 / rate` seconds apart across all processes using the same file."""

    def __init__(self, state_dir: Path, name: str, requests_per_second: float):
        if requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".next")
        self.interval = 1.0 / requests_per_second

    def reserve(self) -> float:
        """Claim the next free slot and return the wall-clock time at which it starts."""
        return reserve_together(self)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing the descriptor releases the lock


def reserve_together(*limits: SharedRateLimit) -> float:
    """Claim one slot that is free on every limit at once and return when it starts.

    The slot starts at the latest of the limits' next free times, and every limit moves on
    from that start. Reserving on each limit separately instead would book an endpoint slot
    at, say, t while the account limit only lets the request go at t + 0.2 s; the endpoint's
    next request could then leave moments after this one, and such bunches are what Stripe
    answers with 429. Locks are taken in one order (by file name) so two callers holding
    overlapping sets of limits cannot deadlock.
    """
    with contextlib.ExitStack() as stack:
        # One lock per file: a second flock on the same file would wait on the first.
        unique = {str(limit.path): limit for limit in limits}
        ordered = [unique[path] for path in sorted(unique)]
        fds = [stack.enter_context(limit._locked()) for limit in ordered]
        next_free = [_read_time(fd) for fd in fds]
        start = max(time.time(), *next_free)
        for limit, fd in zip(ordered, fds, strict=True):
            encoded = repr(start + limit.interval).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, encoded, 0)
        return start


def wait_for_slots(*limits: SharedRateLimit) -> None:
    """Block until every limit allows one more request."""
    delay = reserve_together(*limits) - time.time()
    if delay > 0:
        time.sleep(delay)


def _read_time(fd: int) -> float:
    raw = os.pread(fd, 64, 0)
    return float(raw) if raw.strip() else 0.0
