"""Webhooks from the sandbox: make a change in an account, record its events, post them signed.

`POST /_sandbox/webhooks/simulate` (control API, localhost only) takes

    {"account": "acct_...", "kind": "purchase" | "renewal" | "refund" | "dispute",
     "url": "http://127.0.0.1:8787/stripe/webhooks", "secret": "whsec_...",
     "duplicates": 0, "delay_ms": 0, "reorder": false, "api_version": "current" | "legacy",
     "visitor_id": null, "email": null, "amount": null, "charge": null,
     "dispute_status": "lost"}

and does what Stripe does for that change: creates or updates the objects in the account's
store (so later `GET` lists, retrieves and `GET /v1/events` show them), records one event per
change, and posts each event to `url` signed with `secret` by Stripe's scheme
(`Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`). For tests it can send
each event `duplicates` extra times (each delivery signed at its own second, as Stripe's
retries are), wait `delay_ms` between deliveries, and send them newest first (`reorder`).
`api_version: legacy` renders objects as accounts on versions before 2025-03-31.basil see them
(`charge.invoice`, `invoice.charge`, `invoice.subscription`, refunds embedded in the charge).
The answer lists the events, the objects changed and every delivery's HTTP status.

- purchase: a new customer pays through Checkout (customer.created, charge.succeeded,
  checkout.session.completed); `visitor_id` goes on the Session's metadata.
- renewal: the newest active subscription bills its next cycle (charge.succeeded,
  invoice.paid, invoice_payment.paid in the current shape); with no subscription, a new
  customer subscribes through Checkout (the first invoice, `subscription_create`).
- refund: the given `charge`, else the newest succeeded charge not yet fully refunded, is
  refunded in full or by `amount` (charge.refunded, charge.refund.updated).
- dispute: the same choice of charge is disputed and closed as `dispute_status`
  (charge.dispute.created, charge.updated, charge.dispute.closed).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trace_pipelines.sandbox.app import SandboxState, StripeError, _control_state, json_response
from trace_pipelines.sandbox.store import RESOURCES, Account, Collection

logger = logging.getLogger(__name__)

KINDS = ("purchase", "renewal", "refund", "dispute")
API_VERSIONS = {"current": "2026-10-28.endive", "legacy": "2024-06-20"}


def sign_payload(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe sends with `payload`, signed at `timestamp`."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    digest = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


@dataclass(frozen=True)
class Simulation:
    """One simulate request, validated."""

    account: str
    kind: str
    url: str
    secret: str
    duplicates: int = 0
    delay_ms: int = 0
    reorder: bool = False
    api_version: str = "current"
    visitor_id: str | None = None
    email: str | None = None
    amount: int | None = None
    charge: str | None = None
    dispute_status: str = "lost"

    @classmethod
    def from_json(cls, body: Any) -> Simulation:
        """Validate a request body; ValueError names the field to fix."""
        if not isinstance(body, dict):
            raise ValueError("send a JSON object")
        for name in ("account", "kind", "url", "secret"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise ValueError(f"`{name}` is required (a string)")
        if body["kind"] not in KINDS:
            raise ValueError(f"`kind` must be one of {', '.join(KINDS)}")
        if body.get("api_version", "current") not in API_VERSIONS:
            raise ValueError("`api_version` must be current or legacy")
        known = set(cls.__dataclass_fields__)
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
        simulation = cls(**body)
        if not 0 <= simulation.duplicates <= 10 or not 0 <= simulation.delay_ms <= 60_000:
            raise ValueError("`duplicates` must be 0..10 and `delay_ms` 0..60000")
        return simulation


def delivery_routes() -> list[Route]:
    """The control route, added to the sandbox app beside the other control routes."""
    return [Route("/_sandbox/webhooks/simulate", _simulate, methods=["POST"])]


async def _simulate(request: Request) -> Response:
    state = _control_state(request)
    try:
        simulation = Simulation.from_json(json.loads(await request.body() or b"{}"))
    except (ValueError, TypeError) as error:
        raise StripeError(400, f"Cannot simulate that: {error}.") from None
    account = state.store.account(simulation.account)
    if account is None:
        raise StripeError(404, f"No such account in the fixtures: '{simulation.account}'")

    # No await between reading and replacing collections: the change is atomic for the
    # other requests this event loop serves.
    try:
        change = _Change(state, account, simulation)
        events = change.make()
    except LookupError as error:
        raise StripeError(400, f"Cannot simulate a {simulation.kind}: {error}.") from None

    deliveries = await _deliver(events, simulation)
    logger.info(
        "Sandbox %s for %s: %s events, %s deliveries",
        simulation.kind,
        account.id,
        len(events),
        len(deliveries),
    )
    return json_response(
        {
            "events": [event["id"] for event in events],
            "event_types": [event["type"] for event in events],
            "objects": change.touched,
            "deliveries": deliveries,
        }
    )


async def _deliver(events: list[dict[str, Any]], simulation: Simulation) -> list[dict]:
    order = list(reversed(events)) if simulation.reorder else list(events)
    plan = [(event, copy) for event in order for copy in range(1 + simulation.duplicates)]
    results = []
    signed_at: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for index, (event, copy) in enumerate(plan):
            if index and simulation.delay_ms:
                await asyncio.sleep(simulation.delay_ms / 1000)
            body = json.dumps(event, separators=(",", ":"))
            # Stripe signs every attempt afresh, so no two deliveries of one event share a
            # timestamp (the receiver would take the second for a replay): each is signed at
            # its own second, one past the previous attempt's when they fall in the same one.
            previous = signed_at.get(event["id"])
            timestamp = int(time.time())
            if previous is not None:
                timestamp = max(timestamp, previous + 1)
            signed_at[event["id"]] = timestamp
            signature = sign_payload(body, simulation.secret, timestamp)
            try:
                response = await client.post(
                    simulation.url,
                    content=body,
                    headers={"Content-Type": "application/json", "Stripe-Signature": signature},
                )
                status: int | str = response.status_code
            except httpx.HTTPError as error:
                status = f"error: {type(error).__name__}"
            results.append({"event": event["id"], "copy": copy, "status": status})
    return results


def _new_id(prefix: str) -> str:
    return f"{prefix}_sbx{uuid.uuid4().hex[:20]}"


class _Change:
    """The objects and events of one simulated change in one account."""

    def __init__(self, state: SandboxState, account: Account, simulation: Simulation):
        self.account = account
        self.simulation = simulation
        self.now = int(state.clock())
        self.legacy = simulation.api_version == "legacy"
        self.events: list[dict[str, Any]] = []
        self.touched: dict[str, str] = {}

    def make(self) -> list[dict[str, Any]]:
        getattr(self, f"_{self.simulation.kind}")()
        return self.events

    # -- the changes ----------------------------------------------------------------------

    def _purchase(self) -> None:
        amount = self.simulation.amount or 4900
        customer = self._new_customer()
        intent = _new_id("pi")
        charge = self._charge(amount, customer["id"], intent, customer["email"])
        session = self._session("payment", customer, amount, payment_intent=intent)
        self._record("customer.created", customer)
        self._record("charge.succeeded", charge)
        self._record("checkout.session.completed", session)

    def _renewal(self) -> None:
        subscriptions = self.account.collections["subscriptions"].objects
        active = [s for s in subscriptions if s.get("status") == "active"]
        if active:
            subscription = active[-1]
            customer_id = _id_of(subscription.get("customer"))
            email = (self.account.collections["customers"].get(customer_id) or {}).get("email")
            reason = "subscription_cycle"
        else:
            customer = self._new_customer()
            customer_id, email = customer["id"], customer["email"]
            subscription = {
                "id": _new_id("sub"),
                "object": "subscription",
                "created": self.now,
                "customer": customer_id,
                "status": "active",
                "currency": "usd",
                "canceled_at": None,
                "metadata": {},
            }
            self._put("subscriptions", subscription)
            self._record("customer.created", customer)
            self._record("customer.subscription.created", subscription)
            reason = "subscription_create"
        amount = self.simulation.amount or 2900
        intent = _new_id("pi")
        invoice_id = _new_id("in")
        charge = self._charge(amount, customer_id, intent, email, invoice=invoice_id)
        invoice = self._invoice(invoice_id, amount, customer_id, email, subscription, reason)
        if self.legacy:
            invoice |= {"charge": charge["id"], "payment_intent": intent}
        self._put("invoices", invoice)
        self._record("charge.succeeded", charge)
        self._record("invoice.paid", invoice)
        if not self.legacy:
            payment = {
                "id": _new_id("inpay"),
                "object": "invoice_payment",
                "created": self.now,
                "invoice": invoice_id,
                "amount_paid": amount,
                "amount_requested": amount,
                "currency": "usd",
                "is_default": True,
                "status": "paid",
                "payment": {"type": "payment_intent", "payment_intent": intent},
                "status_transitions": {"paid_at": self.now, "canceled_at": None},
            }
            self._put("invoice_payments", payment)
            self._record("invoice_payment.paid", payment)
        if reason == "subscription_create":
            session = self._session(
                "subscription",
                {"id": customer_id, "email": email},
                amount,
                subscription=subscription["id"],
                invoice=invoice_id,
            )
            self._record("checkout.session.completed", session)

    def _refund(self) -> None:
        charge = self._target_charge()
        remaining = charge["amount"] - (charge.get("amount_refunded") or 0)
        amount = min(self.simulation.amount or remaining, remaining)
        refund = {
            "id": _new_id("re"),
            "object": "refund",
            "created": self.now,
            "charge": charge["id"],
            "payment_intent": charge.get("payment_intent"),
            "amount": amount,
            "currency": charge["currency"],
            "status": "succeeded",
            "reason": "requested_by_customer",
            "metadata": {},
        }
        self._put("refunds", refund)
        refunded = charge.get("amount_refunded", 0) + amount
        updated = {**charge, "amount_refunded": refunded, "refunded": refunded >= charge["amount"]}
        self._put("charges", updated)
        rendered = dict(updated)
        if self.legacy:
            # Old versions embed the charge's refunds in the charge itself.
            refunds = [r for r in self.account.collections["refunds"].objects]
            mine = [r for r in refunds if r.get("charge") == charge["id"]]
            rendered["refunds"] = {
                "object": "list",
                "data": sorted(mine, key=lambda r: -r["created"]),
                "has_more": False,
                "url": f"/v1/charges/{charge['id']}/refunds",
            }
        self._record("charge.refunded", rendered)
        self._record("charge.refund.updated", refund)

    def _dispute(self) -> None:
        charge = self._target_charge()
        dispute = {
            "id": _new_id("dp"),
            "object": "dispute",
            "created": self.now,
            "charge": charge["id"],
            "payment_intent": charge.get("payment_intent"),
            "amount": charge["amount"] - (charge.get("amount_refunded") or 0),
            "currency": charge["currency"],
            "status": "needs_response",
            "reason": "fraudulent",
            "metadata": {},
        }
        self._record("charge.dispute.created", dispute)
        updated = {**charge, "disputed": True}
        self._put("charges", updated)
        self._record("charge.updated", updated)
        closed = {**dispute, "status": self.simulation.dispute_status}
        self._put("disputes", closed)
        self._record("charge.dispute.closed", closed)

    # -- helpers --------------------------------------------------------------------------

    def _new_customer(self) -> dict[str, Any]:
        email = self.simulation.email or f"buyer-{uuid.uuid4().hex[:8]}@example.com"
        customer = {
            "id": _new_id("cus"),
            "object": "customer",
            "created": self.now,
            "email": email,
            "name": None,
            "metadata": {},
            "livemode": False,
        }
        self._put("customers", customer)
        return customer

    def _charge(
        self,
        amount: int,
        customer: str,
        intent: str,
        email: str | None,
        invoice: str | None = None,
    ) -> dict[str, Any]:
        charge = {
            "id": _new_id("ch"),
            "object": "charge",
            "created": self.now,
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": 0,
            "currency": "usd",
            "status": "succeeded",
            "paid": True,
            "captured": True,
            "refunded": False,
            "disputed": False,
            "customer": customer,
            "payment_intent": intent,
            "billing_details": {"email": email, "name": None},
            "receipt_email": email,
            "metadata": {},
            "livemode": False,
        }
        if self.legacy:
            charge["invoice"] = invoice
        self._put("charges", charge)
        return charge

    def _invoice(
        self,
        invoice_id: str,
        amount: int,
        customer: str,
        email: str | None,
        subscription: dict[str, Any],
        reason: str,
    ) -> dict[str, Any]:
        invoice: dict[str, Any] = {
            "id": invoice_id,
            "object": "invoice",
            "created": self.now,
            "status": "paid",
            "billing_reason": reason,
            "customer": customer,
            "customer_email": email,
            "amount_due": amount,
            "amount_paid": amount,
            "currency": "usd",
            "status_transitions": {"paid_at": self.now},
            "metadata": {},
        }
        if self.legacy:
            invoice["subscription"] = subscription["id"]
        else:
            invoice["parent"] = {
                "type": "subscription_details",
                "subscription_details": {
                    "subscription": subscription["id"],
                    "metadata": subscription.get("metadata") or {},
                },
            }
        return invoice

    def _session(
        self, mode: str, customer: dict[str, Any], amount: int, **links: str
    ) -> dict[str, Any]:
        visitor = self.simulation.visitor_id
        session = {
            "id": _new_id("cs"),
            "object": "checkout.session",
            "created": self.now,
            "mode": mode,
            "status": "complete",
            "payment_status": "paid",
            "customer": customer["id"],
            "customer_details": {"email": customer.get("email")},
            "payment_intent": links.get("payment_intent"),
            "subscription": links.get("subscription"),
            "invoice": links.get("invoice"),
            "amount_total": amount,
            "currency": "usd",
            "metadata": {"trace_visitor_id": visitor} if visitor else {},
        }
        self._put("checkout_sessions", session)
        return session

    def _target_charge(self) -> dict[str, Any]:
        charges = self.account.collections["charges"]
        if self.simulation.charge:
            charge = charges.get(self.simulation.charge)
            if charge is None:
                raise LookupError(f"no charge {self.simulation.charge} in {self.account.id}")
            return charge
        for charge in reversed(charges.objects):
            if charge.get("status") == "succeeded" and (
                (charge.get("amount_refunded") or 0) < charge["amount"]
            ):
                return charge
        raise LookupError(f"{self.account.id} has no succeeded charge left to act on")

    def _put(self, resource: str, obj: dict[str, Any]) -> None:
        """Add or replace an object; the collection is rebuilt so its indexes stay right."""
        old = self.account.collections[resource]
        objects = [o for o in old.objects if o["id"] != obj["id"]] + [obj]
        self.account.collections[resource] = Collection(RESOURCES[resource], objects)
        self.touched[obj["object"].replace("checkout.session", "checkout_session")] = obj["id"]

    def _record(self, event_type: str, obj: dict[str, Any]) -> None:
        event = {
            "id": _new_id("evt"),
            "object": "event",
            "account": self.account.id,
            "api_version": API_VERSIONS[self.simulation.api_version],
            "created": self.now,
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        self.events.append(event)
        old = self.account.collections["events"]
        self.account.collections["events"] = Collection(RESOURCES["events"], [*old.objects, event])


def _id_of(value: Any) -> str | None:
    return value.get("id") if isinstance(value, dict) else value


def run_purchase_loop(
    handle: Any,
    account: str,
    url: str,
    secret: str,
    every_seconds: float = 5.0,
    *,
    visitor_ids: Sequence[str] = (),
    stop: threading.Event | None = None,
    max_purchases: int | None = None,
) -> int:
    """Make a purchase in `account` every `every_seconds` until `stop` is set; returns how many.

    `handle` is a running sandbox's `SandboxHandle`. Purchases take the `visitor_ids` in turn
    (on the Checkout Session), so they appear attributed when those visitors are in the Trace
    inputs; with none they are unattributed. A failed purchase is logged and the loop goes on;
    a sandbox that stopped answering ends the loop quietly once `stop` is set.
    """
    stop = stop or threading.Event()
    made = 0
    while not stop.is_set() and (max_purchases is None or made < max_purchases):
        visitor = visitor_ids[made % len(visitor_ids)] if visitor_ids else None
        try:
            answer = handle.simulate_webhooks(
                account=account, kind="purchase", url=url, secret=secret, visitor_id=visitor
            )
            logger.info("Sandbox purchase %s in %s", answer["objects"].get("charge"), account)
        except RuntimeError as error:
            logger.warning("Sandbox purchase in %s failed: %s", account, error)
        except OSError as error:
            # The sandbox is unreachable. On Ctrl-C it stops before `stop` is set (the whole
            # process group gets the signal): give the caller a moment to say so, and end quietly.
            if stop.wait(1.0):
                break
            logger.warning("Sandbox unreachable for a purchase in %s: %s", account, error)
        made += 1
        stop.wait(every_seconds)
    return made


def visitor_ids_from_inputs(inputs_dir: str, site_id: str, limit: int = 50) -> list[str]:
    """Visitor ids of a site from a Trace inputs folder's touchpoints.csv, for the demo loop."""
    path = Path(inputs_dir) / "touchpoints.csv"
    if not path.exists():
        return []
    seen: dict[str, None] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("site_id") == site_id and row.get("visitor_id"):
                seen.setdefault(row["visitor_id"], None)
                if len(seen) >= limit:
                    break
    return list(seen)
