"""A request-rate limit shared by every thread and process on this machine.

Stripe limits reads per account and per endpoint, while a backfill runs several partition runs
in separate processes, each with several fetching threads. A limit kept in one process's memory
would let four processes send four times the allowed rate. Each limit here is one small file
holding the earliest time the next request may start; taking a slot is a read-modify-write of
that file under `flock`, which serialises the bookkeeping (microseconds) but not the requests.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
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
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 64, 0)
            next_free = float(raw) if raw.strip() else 0.0
            slot = max(time.time(), next_free)
            encoded = repr(slot + self.interval).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, encoded, 0)
            return slot
        finally:
            os.close(fd)  # closing the descriptor releases the lock


def wait_for_slots(*limits: SharedRateLimit) -> None:
    """Block until every limit allows one more request."""
    start = max(limit.reserve() for limit in limits)
    delay = start - time.time()
    if delay > 0:
        time.sleep(delay)
