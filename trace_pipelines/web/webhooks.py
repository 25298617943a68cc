"""The Stripe webhook receiver: verify, land durably, answer.

`POST /stripe/webhooks` does only what must happen before Stripe gets its answer, so an
acknowledgement takes milliseconds and a crash at any point loses nothing:

1. refuse a body over 1 MB (413), judged by Content-Length and by counting while reading;
2. verify `Stripe-Signature` with the official SDK against every secret in
   STRIPE_WEBHOOK_SECRET (comma-separated, so a rotated secret and its successor both pass),
   within Stripe's 300-second tolerance, and refuse timestamps from the future by as much;
3. parse the JSON (400 if it is not an event);
4. route it: an applied or deauthorization event of a connected account is landed for that
   account's site; one of an unknown account or a disconnected site is held (answered, kept
   and counted, never applied); any other type is acknowledged and dropped;
5. commit to the landing store, in the same transaction as the signature: a request whose
   signed content was accepted before is a replay and gets 400. Stripe's own retries are
   signed afresh, so they pass and are answered 2xx as duplicates, stored once. Commits are
   grouped: one writer thread takes every delivery waiting and commits them in one
   transaction (one fsync), so fifty concurrent senders cost a few commits, not fifty queued
   on SQLite's write lock, and the event loop never blocks on the disk.

Only then does it answer 2xx. A receiver killed after the commit but before the answer gets
the event again from Stripe's retry, which lands as a duplicate. Responses and logs name the
cause of a refusal but never a secret, a signature or a stack trace.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from stripe import SignatureVerificationError, WebhookSignature

from trace_pipelines.live.events import DEAUTHORIZED_EVENT_TYPE, LANDED_EVENT_TYPES
from trace_pipelines.resources.landing import (
    DUPLICATE,
    HELD,
    REPLAYED,
    STORED,
    LandingStore,
    SignedDelivery,
)
from trace_pipelines.sites import Site, SiteRegistry

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
TOLERANCE_SECONDS = 300

# Why an event was held instead of applied; the keys of the stats endpoint's `held`.
HELD_NO_ACCOUNT = "no_account"
HELD_UNKNOWN_ACCOUNT = "unknown_account"
HELD_DISCONNECTED = "site_disconnected"

# Called with the site and the event when Stripe reports that a site owner disconnected
# Trace from Stripe's side; it must be idempotent (Stripe may deliver the event twice).
DeauthorizedHook = Callable[[Site, dict[str, Any]], None]


class WebhookConfigError(ValueError):
    """The receiver cannot start; the message says which setting to fix."""


def webhook_secrets_from_env() -> list[str]:
    """STRIPE_WEBHOOK_SECRET as a list: one or more `whsec_...` secrets, comma-separated."""
    secrets = [s.strip() for s in os.environ.get("STRIPE_WEBHOOK_SECRET", "").split(",")]
    secrets = [s for s in secrets if s]
    if not secrets:
        raise WebhookConfigError(
            "STRIPE_WEBHOOK_SECRET is not set: set it to the webhook endpoint's signing secret "
            "(whsec_..., shown in the Stripe dashboard under Developers > Webhooks); during a "
            "rotation give both, comma-separated."
        )
    return secrets


class _Refusal(Exception):
    """A request answered with an error status and a message safe to show the sender."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


# Deliveries committed in one transaction at most; more wait for the next one.
_GROUP_COMMIT_MAX = 500
# How long an account's site is remembered: a disconnect takes effect within this time.
SITE_CACHE_SECONDS = 1.0

# After this long without a delivery the writer does the store's housekeeping.
_IDLE_SECONDS = 0.2


class GroupCommitter:
    """One thread that commits waiting deliveries together and wakes each sender after."""

    def __init__(self, landing: LandingStore):
        self.landing = landing
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    async def land(self, delivery: SignedDelivery) -> str:
        """The delivery's outcome, once its transaction is committed."""
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((delivery, future, loop))
        return await future

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="webhook-group-commit", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        self.landing.defer_maintenance()
        while True:
            try:
                batch = [self._queue.get(timeout=_IDLE_SECONDS)]
            except queue.Empty:
                self._maintain()
                continue
            while len(batch) < _GROUP_COMMIT_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                outcomes = self.landing.land_signed([delivery for delivery, _, _ in batch])
            except Exception as error:  # noqa: BLE001 - every sender of the batch gets it
                for _, future, loop in batch:
                    loop.call_soon_threadsafe(_settle, future, None, error)
                continue
            for (_, future, loop), outcome in zip(batch, outcomes, strict=True):
                loop.call_soon_threadsafe(_settle, future, outcome, None)

    def _maintain(self) -> None:
        try:
            self.landing.do_maintenance()
        except Exception as error:  # noqa: BLE001 - housekeeping must not stop the writer
            logger.warning("Landing store housekeeping failed: %s", type(error).__name__)


def _settle(future: asyncio.Future, outcome: str | None, error: Exception | None) -> None:
    if future.done():  # the sender went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(outcome)


class WebhookReceiver:
    """The state behind the webhook routes: secrets, the landing store, counters."""

    def __init__(
        self,
        landing: LandingStore,
        registry: SiteRegistry,
        secrets: Sequence[str],
        *,
        on_deauthorized: DeauthorizedHook | None = None,
        tolerance_seconds: int = TOLERANCE_SECONDS,
        max_body_bytes: int = MAX_BODY_BYTES,
    ):
        if not secrets:
            raise WebhookConfigError("the webhook receiver needs at least one signing secret")
        self.landing = landing
        self.registry = registry
        self.secrets = tuple(secrets)
        self.on_deauthorized = on_deauthorized
        self.tolerance_seconds = tolerance_seconds
        self.max_body_bytes = max_body_bytes
        self.started_at = time.time()
        # Answers given since start, by outcome or refusal reason.
        self.responses: Counter[str] = Counter()
        self._committer = GroupCommitter(landing)
        self._sites: dict[str, tuple[float, Site | None]] = {}
        self._lookups: dict[str, asyncio.Future[Site | None]] = {}

    def routes(self) -> list[Route]:
        """The routes this receiver serves; `create_app` adds them to the app."""
        return [
            Route("/stripe/webhooks", self.receive, methods=["POST"]),
            Route("/stripe/webhooks/stats", self.stats, methods=["GET"]),
        ]

    async def receive(self, request: Request) -> JSONResponse:
        """Handle one delivery (see the module docstring for the steps)."""
        try:
            body = await self._read_body(request)
            signed_at, replay_key = self._verify(body, request.headers.get("stripe-signature"))
            event = _parse_event(body)
            outcome = await self._land(event, signed_at, replay_key)
        except _Refusal as refusal:
            self.responses[refusal.reason] += 1
            logger.info("Refused a webhook (%s): %s", refusal.reason, refusal.message)
            return JSONResponse({"error": refusal.message}, status_code=refusal.status)
        self.responses[outcome] += 1
        return JSONResponse({"received": True, "outcome": outcome})

    async def stats(self, request: Request) -> JSONResponse:
        """Counters: answers since start, and held events and landing progress (durable)."""
        held, last_seq, applied = await run_in_threadpool(self._durable_counts)
        return JSONResponse(
            {
                "since": self.started_at,
                "responses": dict(self.responses),
                "held": held,
                "landed_through_seq": last_seq,
                "applied_through_seq": applied,
            }
        )

    def _durable_counts(self) -> tuple[dict[str, int], int, int]:
        return self.landing.held_counts(), self.landing.last_seq(), self.landing.watermark()

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body_bytes
            except ValueError:
                raise _Refusal(400, "bad_length", "Content-Length is not a number.") from None
            if too_big:
                raise self._too_large()
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise self._too_large()
                chunks.append(chunk)
        except ClientDisconnect:
            raise _Refusal(400, "disconnected", "The request body was cut off.") from None
        return b"".join(chunks)

    def _too_large(self) -> _Refusal:
        return _Refusal(
            413,
            "too_large",
            f"The body is over {self.max_body_bytes} bytes; a Stripe event is never that big.",
        )

    def _verify(self, body: bytes, header: str | None) -> tuple[int, str]:
        """The signature's timestamp and the replay key of its signed content, or a 400."""
        if not header:
            raise _Refusal(400, "no_signature", "The Stripe-Signature header is missing.")
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refusal(400, "not_utf8", "The body is not UTF-8 text.") from None
        timestamp = _signature_timestamp(header)
        if timestamp is None or "v1=" not in header:
            raise _Refusal(400, "bad_signature_header", "The Stripe-Signature header is malformed.")
        for secret in self.secrets:
            try:
                WebhookSignature.verify_header(payload, header, secret, self.tolerance_seconds)
            except SignatureVerificationError as error:
                if "tolerance" in str(error):
                    raise _Refusal(
                        400, "expired_signature", "The signature's timestamp is too old."
                    ) from None
                continue
            if timestamp > time.time() + self.tolerance_seconds:
                raise _Refusal(
                    400, "future_signature", "The signature's timestamp is in the future."
                )
            # The same signed content twice is a replay, whichever v1 entries the header lists.
            replay_key = hashlib.sha256(f"{timestamp}.{payload}".encode()).hexdigest()
            return timestamp, replay_key
        raise _Refusal(
            400,
            "wrong_signature",
            "No signature matches this endpoint's signing secret(s) for this body.",
        )

    async def _land(self, event: dict[str, Any], signed_at: int, replay_key: str) -> str:
        if event["type"] not in LANDED_EVENT_TYPES:
            return "ignored"
        site, held_reason = await self._route(event)
        delivery = SignedDelivery(
            event=event,
            site_id=site.site_id if site else None,
            signature=replay_key,
            signed_at=signed_at,
            held_reason=held_reason,
        )
        try:
            outcome = await self._committer.land(delivery)
        except Exception as error:  # noqa: BLE001 - answered 500 so that Stripe retries
            logger.error(
                "Could not land event %s: %s; Stripe will retry it.",
                event["id"],
                type(error).__name__,
            )
            raise _Refusal(
                500, "landing_failed", "The event could not be stored; it will be retried."
            ) from None
        if outcome == REPLAYED:
            raise _Refusal(400, "replayed", "This signed request was already received.")

        if event["type"] == DEAUTHORIZED_EVENT_TYPE and site is not None and not held_reason:
            await self._deauthorized(site, event)
        log = logger.debug if outcome in (STORED, DUPLICATE) else logger.info
        log("Webhook %s %s for site %s: %s", event["id"], event["type"], delivery.site_id, outcome)
        return outcome

    async def _route(self, event: dict[str, Any]) -> tuple[Site | None, str | None]:
        account = event.get("account")
        if not isinstance(account, str) or not account:
            return None, HELD_NO_ACCOUNT
        remembered = self._sites.get(account)
        if remembered is not None and time.monotonic() - remembered[0] < SITE_CACHE_SECONDS:
            site = remembered[1]
        else:
            # One lookup per account at a time: when the entry expires under load, the fifty
            # deliveries in flight wait for the same registry read instead of each opening the
            # registry in a worker thread, which made every expiry a latency spike.
            lookup = self._lookups.get(account)
            if lookup is None:
                lookup = asyncio.ensure_future(self._look_up(account))
                self._lookups[account] = lookup
            # Shielded: a sender that hangs up must not cancel the lookup the others await.
            site = await asyncio.shield(lookup)
        if site is None:
            return None, HELD_UNKNOWN_ACCOUNT
        if not site.is_connected:
            return site, HELD_DISCONNECTED
        return site, None

    async def _look_up(self, account: str) -> Site | None:
        try:
            site = await run_in_threadpool(self.registry.site_for_account, account)
            self._sites[account] = (time.monotonic(), site)
            return site
        finally:
            del self._lookups[account]

    async def _deauthorized(self, site: Site, event: dict[str, Any]) -> None:
        if self.on_deauthorized is None:
            logger.warning(
                "Stripe reports site %s (%s) disconnected Trace; no disconnect hook is set, "
                "so the site stays connected until `trace-pipelines sites disconnect`.",
                site.site_id,
                site.stripe_account_id,
            )
            return
        try:
            await run_in_threadpool(self.on_deauthorized, site, event)
        except Exception as error:  # noqa: BLE001 - answered 500 so that Stripe retries
            logger.error(
                "Disconnecting site %s after %s failed: %s; Stripe will retry.",
                site.site_id,
                event["id"],
                type(error).__name__,
            )
            raise _Refusal(
                500, "deauthorize_failed", "The disconnect could not be recorded yet."
            ) from None


def _signature_timestamp(header: str) -> int | None:
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _parse_event(body: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _Refusal(400, "not_json", "The body is not JSON.") from None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
        or not isinstance(event.get("created"), int)
    ):
        raise _Refusal(
            400, "not_an_event", "The body is not a Stripe event (id, type and created)."
        )
    return event


# Outcomes a 2xx answer reports, for readers of the stats endpoint.
ACCEPTED_OUTCOMES = (STORED, DUPLICATE, HELD, "ignored")
