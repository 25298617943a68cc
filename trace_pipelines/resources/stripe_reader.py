"""The `stripe` resource: read-only access to the Stripe accounts connected to Trace sites.

Read-only by construction: the only HTTP call this module makes is a GET, reachable through
`list` and `retrieve`. Trace's promise to a site owner is that it can read their Stripe
account and never write to it; there is no method here that could break it.

Requests go through the official SDK's requestor (the two halves of
`stripe.StripeClient.raw_request`), pinned to the SDK's API version, with the connected account
per request in `Stripe-Account`. Successful responses are parsed once, by orjson, into plain
dicts: the raw tables store the objects as Stripe sent them, and building SDK objects (or the
SDK's OrderedDicts) for a few hundred thousand charges would only cost time and memory.

The SDK's own retries are switched off: they ignore `Retry-After` and do not retry a 429 that
lacks `Stripe-Should-Retry`. The loop here honours both, retries 5xx and connection errors
with capped exponential backoff and jitter, and paces requests under Stripe's limits with a
rate limit shared across processes (`rate_limit`), so that four concurrent partition runs
together stay under one account's budget.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import stripe
from dagster import ConfigurableResource
from pydantic import Field

from trace_pipelines.resources.rate_limit import SharedRateLimit, wait_for_slots
from trace_pipelines.settings import trace_paths

PAGE_SIZE = 100


class StripeReadError(Exception):
    """A Stripe read that cannot succeed by retrying; the message says what to do."""


class StripeReader(ConfigurableResource):
    """Lists and retrieves Stripe objects of connected accounts, within Stripe's rate limits."""

    api_key: str = Field(
        description="Platform secret key or restricted read-only key (from STRIPE_API_KEY)."
    )
    api_base: str | None = Field(
        default=None,
        description="Base address of the Stripe API; set to the local sandbox in tests and demos.",
    )
    endpoint_requests_per_second: float = Field(
        default=25.0, description="Stripe's default limit on any single endpoint."
    )
    account_requests_per_second_live: float = Field(
        default=100.0, description="Stripe's read limit per account in live mode."
    )
    account_requests_per_second_test: float = Field(
        default=25.0, description="Stripe's read limit per account in test mode."
    )
    rate_headroom: float = Field(
        default=0.96,
        description=(
            "Fraction of each limit Trace paces at; the rest absorbs the jitter between a "
            "request's start here and its arrival at Stripe."
        ),
    )
    max_attempts: int = Field(default=8, description="Attempts per request before giving up.")
    max_backoff_seconds: float = Field(default=20.0, description="Cap on one retry's wait.")
    timeout_seconds: float = Field(default=60.0, description="Timeout of one HTTP request.")
    rate_state_dir: str | None = Field(
        default=None,
        description="Folder for the shared rate-limit state; default $TRACE_HOME/locks/ratelimit.",
    )

    @property
    def livemode(self) -> bool:
        return not self.api_key.startswith(("sk_test_", "rk_test_"))

    def for_account(self, account_id: str) -> StripeAccountReader:
        """A reader scoped to one connected account (`Stripe-Account: account_id`)."""
        return StripeAccountReader(self, account_id)

    def build_client(self) -> stripe.StripeClient:
        base = {"api": self.api_base.rstrip("/")} if self.api_base else None
        return stripe.StripeClient(
            self.api_key,
            base_addresses=base,
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=self.timeout_seconds),
        )

    def state_dir(self) -> Path:
        if self.rate_state_dir:
            return Path(self.rate_state_dir)
        return trace_paths().locks_dir / "ratelimit"


class StripeAccountReader:
    """Read operations against one connected account; counts its requests per endpoint."""

    def __init__(self, reader: StripeReader, account_id: str):
        self.reader = reader
        self.account_id = account_id
        self.requests: Counter[str] = Counter()
        self._client = reader.build_client()
        self._counter_lock = threading.Lock()
        account_rate = (
            reader.account_requests_per_second_live
            if reader.livemode
            else reader.account_requests_per_second_test
        )
        self._state_dir = reader.state_dir()
        self._account_limit = SharedRateLimit(
            self._state_dir, f"{account_id}", account_rate * reader.rate_headroom
        )
        self._endpoint_limits: dict[str, SharedRateLimit] = {}

    def list(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[dict]:
        """Every object of a list endpoint, newest first, paging 100 at a time."""
        for page in self.list_pages(path, params):
            yield from page

    def list_pages(
        self, path: str, params: Mapping[str, Any] | None = None
    ) -> Iterator[list[dict]]:
        """The pages of a list endpoint, following `starting_after` while `has_more`."""
        query = {"limit": PAGE_SIZE, **(params or {})}
        while True:
            page = self._get(path, path, query)
            data = page.get("data", [])
            if data:
                yield data
            if not page.get("has_more") or not data:
                return
            query = {**query, "starting_after": data[-1]["id"]}

    def retrieve(self, path: str, object_id: str, params: Mapping[str, Any] | None = None) -> dict:
        """One object by id, e.g. `retrieve("/v1/customers", "cus_123")`."""
        return self._get(f"{path}/{{id}}", f"{path}/{object_id}", dict(params or {}))

    def _limit_for(self, endpoint: str) -> SharedRateLimit:
        limit = self._endpoint_limits.get(endpoint)
        if limit is None:
            rate = self.reader.endpoint_requests_per_second * self.reader.rate_headroom
            limit = SharedRateLimit(self._state_dir, f"{self.account_id}{endpoint}", rate)
            self._endpoint_limits[endpoint] = limit
        return limit

    def _get(self, endpoint: str, url: str, params: Mapping[str, Any]) -> dict:
        """The one HTTP call of this module: a GET, retried on what Stripe says is transient."""
        attempts = self.reader.max_attempts
        for attempt in range(1, attempts + 1):
            wait_for_slots(self._account_limit, self._limit_for(endpoint))
            with self._counter_lock:
                self.requests[endpoint] += 1
            try:
                return self._get_json(url, params)
            except stripe.StripeError as error:
                if attempt == attempts or not _is_transient(error):
                    raise StripeReadError(self._explain(error, attempt)) from None
                time.sleep(self._backoff(error, attempt))
        raise AssertionError("unreachable")

    def _get_json(self, url: str, params: Mapping[str, Any]) -> dict:
        """GET `url` through the SDK and parse a successful body with orjson.

        `raw_request` would parse every body with the standard library's pure-Python object
        hook into OrderedDicts: measured on a 36,000-object month, that parse was a quarter of
        a worker's CPU samples and the largest block of its memory at peak, and on a busy
        machine the CPU it takes is what slows the requests. This does what `raw_request` does
        with the SDK's requestor (private, hence the SDK pinned in requirements.lock), except
        for the parse; any other answer goes through the SDK's own interpretation, which raises
        its typed errors exactly as `raw_request` would.
        """
        requestor = self._client._requestor
        body, status, headers = requestor.request_raw(
            "get",
            url,
            params=params,
            options={"stripe_account": self.account_id},
            base_address="api",
            api_mode="V1",
            usage=["raw_request"],
        )
        if 200 <= status < 300:
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                pass  # the SDK's interpretation below raises its "Invalid response body" error
        return requestor._interpret_response(body, status, headers, "V1").data

    def _backoff(self, error: stripe.StripeError, attempt: int) -> float:
        retry_after = _header(error, "Retry-After")
        if retry_after is not None:
            try:
                return min(float(retry_after), self.reader.max_backoff_seconds)
            except ValueError:
                pass
        ceiling = min(self.reader.max_backoff_seconds, 0.5 * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _explain(self, error: stripe.StripeError, attempts: int) -> str:
        account = self.account_id
        status = error.http_status
        if isinstance(error, stripe.AuthenticationError):
            return (
                "Stripe rejected the API key (HTTP 401). Set STRIPE_API_KEY to the platform's "
                "secret key or a restricted key with read access, then run again."
            )
        if isinstance(error, stripe.PermissionError):
            return (
                f"Stripe refused access to account {account} (HTTP 403): the site's connection "
                "was revoked or the account id is wrong. Reconnect the site with "
                "`trace-pipelines sites connect`, then run again."
            )
        if isinstance(error, stripe.APIConnectionError):
            where = self.reader.api_base or "api.stripe.com"
            return (
                f"Could not reach Stripe at {where} after {attempts} attempts. Check the "
                "network (and STRIPE_API_BASE if you point Trace at a sandbox), then run again."
            )
        if isinstance(error, stripe.RateLimitError):
            return (
                f"Stripe kept rate-limiting account {account} after {attempts} attempts. Lower "
                "the run queue's concurrency for this account or the resource's rate limits."
            )
        if status is not None and status >= 500:
            return (
                f"Stripe failed with HTTP {status} after {attempts} attempts for account "
                f"{account}. Stripe may be degraded: run the partition again later."
            )
        return (
            f"Stripe refused the request for account {account} (HTTP {status}): "
            f"{error.user_message or 'no message'}."
        )


def _header(error: stripe.StripeError, name: str) -> str | None:
    headers = error.headers or {}
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _is_transient(error: stripe.StripeError) -> bool:
    """Whether Stripe says (or the status implies) that the same request may succeed later."""
    hint = _header(error, "Stripe-Should-Retry")
    if hint is not None:
        return hint.lower() == "true"
    if isinstance(error, stripe.APIConnectionError):
        return True
    status = error.http_status or 0
    return status == 429 or status >= 500
