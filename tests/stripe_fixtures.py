"""Small hand-built Stripe fixture folders for the ingestion tests.

Objects carry the fields the pipeline reads, with Stripe's names and nesting; everything else
Stripe would send is left out, which the sandbox and the pipeline must both tolerate.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_sequence = itertools.count(1)


def unix(text: str) -> int:
    """`2026-03-31T23:59:59` (UTC) as Unix seconds."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_sequence):08d}"


class FixtureFolder:
    """Collects objects per account and resource, then writes the sandbox's fixtures layout."""

    def __init__(self, root: Path):
        self.root = root
        self.objects: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))

    def add(self, account: str, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[account][resource].append(obj)
        return obj

    def charge(self, account: str, created: int, **fields: Any) -> dict[str, Any]:
        amount = fields.pop("amount", 1000)
        charge = {
            "id": _id("ch"),
            "object": "charge",
            "created": created,
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": 0,
            "currency": "usd",
            "status": "succeeded",
            "paid": True,
            "captured": True,
            "refunded": False,
            "disputed": False,
            "customer": None,
            "payment_intent": _id("pi"),
            "billing_details": {"email": None, "name": None},
            "receipt_email": None,
            "metadata": {},
            "livemode": False,
        }
        charge.update(fields)
        return self.add(account, "charges", charge)

    def refund(self, account: str, charge: dict[str, Any], amount: int, created: int) -> dict:
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        refund = {
            "id": _id("re"),
            "object": "refund",
            "created": created,
            "charge": charge["id"],
            "payment_intent": charge["payment_intent"],
            "amount": amount,
            "currency": charge["currency"],
            "status": "succeeded",
            "reason": "requested_by_customer",
        }
        return self.add(account, "refunds", refund)

    def customer(self, account: str, created: int, email: str | None = None) -> dict[str, Any]:
        customer = {
            "id": _id("cus"),
            "object": "customer",
            "created": created,
            "email": email,
            "name": None,
            "metadata": {},
            "livemode": False,
        }
        return self.add(account, "customers", customer)

    def subscription(self, account: str, created: int, customer: dict) -> dict[str, Any]:
        subscription = {
            "id": _id("sub"),
            "object": "subscription",
            "created": created,
            "customer": customer["id"],
            "status": "active",
            "currency": "usd",
            "canceled_at": None,
            "metadata": {},
        }
        return self.add(account, "subscriptions", subscription)

    def session(self, account: str, created: int, **fields: Any) -> dict[str, Any]:
        session = {
            "id": _id("cs"),
            "object": "checkout.session",
            "created": created,
            "mode": "payment",
            "status": "complete",
            "payment_status": "paid",
            "customer": None,
            "customer_details": {"email": None},
            "payment_intent": None,
            "subscription": None,
            "invoice": None,
            "amount_total": 1000,
            "currency": "usd",
            "metadata": {},
        }
        session.update(fields)
        return self.add(account, "checkout_sessions", session)

    def paid_invoice(
        self, account: str, created: int, subscription: dict, billing_reason: str
    ) -> tuple[dict, dict, dict]:
        """A paid subscription invoice, its invoice payment and the charge that paid it."""
        charge = self.charge(account, created, customer=subscription["customer"])
        invoice = {
            "id": _id("in"),
            "object": "invoice",
            "created": created,
            "status": "paid",
            "billing_reason": billing_reason,
            "customer": subscription["customer"],
            "customer_email": None,
            "amount_due": charge["amount"],
            "amount_paid": charge["amount"],
            "currency": "usd",
            "status_transitions": {"paid_at": created},
            "parent": {
                "type": "subscription_details",
                "subscription_details": {"subscription": subscription["id"], "metadata": {}},
            },
            "metadata": {},
        }
        payment = {
            "id": _id("inpay"),
            "object": "invoice_payment",
            "created": created,
            "invoice": invoice["id"],
            "amount_paid": charge["amount"],
            "amount_requested": charge["amount"],
            "currency": "usd",
            "is_default": True,
            "status": "paid",
            "payment": {"type": "payment_intent", "payment_intent": charge["payment_intent"]},
            "status_transitions": {"paid_at": created, "canceled_at": None},
        }
        self.add(account, "invoices", invoice)
        self.add(account, "invoice_payments", payment)
        return invoice, payment, charge

    def dispute(self, account: str, charge: dict, created: int, status: str) -> dict[str, Any]:
        charge["disputed"] = True
        dispute = {
            "id": _id("dp"),
            "object": "dispute",
            "created": created,
            "charge": charge["id"],
            "payment_intent": charge["payment_intent"],
            "amount": charge["amount"],
            "currency": charge["currency"],
            "status": status,
            "reason": "fraudulent",
        }
        return self.add(account, "disputes", dispute)

    def write(self) -> Path:
        """Write `root/acct_*/<resource>.json` and return the root."""
        for account, resources in self.objects.items():
            folder = self.root / account
            folder.mkdir(parents=True, exist_ok=True)
            for resource, objects in resources.items():
                (folder / f"{resource}.json").write_text(json.dumps(objects))
        for account in self.objects:
            (self.root / account).mkdir(parents=True, exist_ok=True)
        return self.root
