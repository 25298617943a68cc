"""Trouble on demand for the sandbox: rate limits, injected failures and a request log.

Tests and benchmarks use these to see how the pipeline copes with the failures real Stripe
produces (429s, 5xx) and to count what it asked for. All state lives on one event loop, so
each check-and-update runs without an `await` in between and needs no lock.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

INJECTABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class SlidingWindowLimiter:
    """At most `per_second` requests in any one-second window per (account, endpoint).

    A sliding log of accepted request times rather than a fixed window, so a burst that
    straddles a second boundary cannot get twice the limit through.
    """

    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        """Allow `per_second` requests per key per second, timed by `clock`."""
        if per_second < 1:
            raise ValueError(f"rate limit must be at least 1 request per second, got {per_second}")
        self.per_second = per_second
        self._clock = clock
        self._accepted: dict[tuple[str, str], deque[float]] = {}

    def acquire(self, account: str, endpoint: str) -> float | None:
        """Record a request and return None, or return the seconds to wait if over the limit."""
        now = self._clock()
        times = self._accepted.setdefault((account, endpoint), deque())
        while times and times[0] <= now - 1.0:
            times.popleft()
        if len(times) >= self.per_second:
            return times[0] + 1.0 - now
        times.append(now)
        return None


@dataclass
class Fault:
    """Fail the next `count` requests whose path starts with `path_prefix` with `status`."""

    status: int
    count: int = 1
    path_prefix: str = "/v1"
    retry_after: int | None = None

    @classmethod
    def from_json(cls, body: Any) -> Fault:
        """Build a fault from the control API's JSON, raising ValueError on bad input."""
        if not isinstance(body, dict):
            raise ValueError('send a JSON object such as {"status": 500, "count": 1}')
        unknown = set(body) - {"status", "count", "path_prefix", "retry_after"}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        fault = cls(
            status=body.get("status", 500),
            count=body.get("count", 1),
            path_prefix=body.get("path_prefix", "/v1"),
            retry_after=body.get("retry_after"),
        )
        if fault.status not in INJECTABLE_STATUSES:
            raise ValueError(f"status must be one of {sorted(INJECTABLE_STATUSES)}")
        if type(fault.count) is not int or fault.count < 1:
            raise ValueError("count must be a positive integer")
        if not isinstance(fault.path_prefix, str) or not fault.path_prefix.startswith("/"):
            raise ValueError("path_prefix must be a path such as /v1/charges")
        if fault.retry_after is not None and (
            type(fault.retry_after) is not int or fault.retry_after < 0
        ):
            raise ValueError("retry_after must be a whole number of seconds")
        return fault

    def to_json(self) -> dict[str, Any]:
        """The fault as the control API shows it."""
        return asdict(self)


class FaultQueue:
    """Injected failures waiting for matching requests, consumed first in, first out."""

    def __init__(self) -> None:
        """Start with no faults queued."""
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Queue `fault` behind any already waiting."""
        self._faults.append(fault)

    def clear(self) -> None:
        """Drop every queued fault."""
        self._faults.clear()

    def pending(self) -> list[Fault]:
        """The faults still waiting, with their remaining counts."""
        return list(self._faults)

    def take(self, path: str) -> Fault | None:
        """The first fault matching `path`, one use of it consumed, or None."""
        for i, fault in enumerate(self._faults):
            if path.startswith(fault.path_prefix):
                fault.count -= 1
                if fault.count == 0:
                    del self._faults[i]
                return fault
        return None


@dataclass(frozen=True)
class LoggedRequest:
    """One request the sandbox answered under /v1."""

    method: str
    path: str
    query: str
    stripe_account: str | None
    # The route template (`/v1/charges/{id}`), None for unknown paths; what rate limits and
    # per-endpoint request rates are counted by.
    endpoint: str | None
    status: int
    timestamp: float
    request_id: str


class RequestLog:
    """Every /v1 request received, oldest first, bounded so a long benchmark cannot exhaust
    memory (the oldest entries go first once `max_entries` is reached)."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        """Keep at most `max_entries` requests."""
        self._entries: deque[LoggedRequest] = deque(maxlen=max_entries)

    def append(self, entry: LoggedRequest) -> None:
        """Record one answered request."""
        self._entries.append(entry)

    def clear(self) -> None:
        """Forget every request recorded so far."""
        self._entries.clear()

    def to_json(self) -> list[dict[str, Any]]:
        """The log as plain dicts, oldest first."""
        return [asdict(e) for e in self._entries]


def retry_after_header(seconds: float) -> str:
    """A `Retry-After` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))
