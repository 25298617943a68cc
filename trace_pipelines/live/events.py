"""Which Stripe events Trace applies, and the raw-table rows each one becomes.

An event carries the whole object as it was when the event happened (`data.object`), so
applying it means writing that object as a raw row, observed at the event's `created` time.
The raw views keep the newest `observed_at` per (site_id, id), which makes state depend on
Stripe's clock, not on arrival order: `charge.succeeded` delivered after `charge.refunded`
is older, so the refund stays; an event redelivered a day later repeats a row that is
already there.

Two events about one object can share a `created` second (a charge succeeds and is refunded
in the same second). Their order is then decided by `state_rank`, a number read from the
object's own fields that only grows as the object moves through its life (see `state_rank`).
Both legacy (`charge.invoice`, `invoice.charge`, `invoice.subscription`) and current payloads
are written unchanged: the raw columns read either shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from trace_pipelines.assets.stripe_tables import (
    CHARGES,
    CHECKOUT_SESSIONS,
    CUSTOMERS,
    DISPUTES,
    INVOICE_PAYMENTS,
    INVOICES,
    REFUNDS,
    SUBSCRIPTIONS,
    RawTable,
    unix_to_utc,
)

# The event types whose object becomes a raw row, and the table it goes to.
TABLE_BY_EVENT_TYPE: dict[str, RawTable] = {
    "charge.succeeded": CHARGES,
    "charge.updated": CHARGES,
    "charge.refunded": CHARGES,
    "charge.refund.updated": REFUNDS,
    "charge.dispute.created": DISPUTES,
    "charge.dispute.updated": DISPUTES,
    "charge.dispute.closed": DISPUTES,
    "invoice.paid": INVOICES,
    "invoice.payment_succeeded": INVOICES,
    "invoice_payment.paid": INVOICE_PAYMENTS,
    "customer.created": CUSTOMERS,
    "customer.updated": CUSTOMERS,
    "customer.subscription.created": SUBSCRIPTIONS,
    "customer.subscription.updated": SUBSCRIPTIONS,
    "customer.subscription.deleted": SUBSCRIPTIONS,
    "checkout.session.completed": CHECKOUT_SESSIONS,
}
APPLIED_EVENT_TYPES: frozenset[str] = frozenset(TABLE_BY_EVENT_TYPE)

# Sent when a site owner disconnects Trace from Stripe's side; landed, never applied as rows.
DEAUTHORIZED_EVENT_TYPE = "account.application.deauthorized"

# Everything the receiver and the catch-up store; other types are acknowledged and dropped.
LANDED_EVENT_TYPES: frozenset[str] = APPLIED_EVENT_TYPES | {DEAUTHORIZED_EVENT_TYPE}


class EventShapeError(ValueError):
    """An applied event whose `data.object` is not the object its type promises."""


@dataclass(frozen=True)
class LiveRow:
    """One raw row produced by an event, with the table it belongs to."""

    table: RawTable
    row: dict[str, Any]

    @property
    def month(self) -> date:
        return self.row["month"]


# Status order per object: a later stage never goes back to an earlier one, so within one
# second the later stage is the newer state. Unknown statuses rank lowest.
_STATUS_STAGE: dict[str, dict[str, int]] = {
    CHARGES.name: {"pending": 1, "failed": 2, "succeeded": 2},
    REFUNDS.name: {"pending": 1, "requires_action": 1, "succeeded": 2, "failed": 2, "canceled": 2},
    DISPUTES.name: {
        "warning_needs_response": 1,
        "needs_response": 1,
        "warning_under_review": 2,
        "under_review": 2,
        "warning_closed": 3,
        "won": 3,
        "lost": 3,
        "prevented": 3,
    },
    INVOICES.name: {"draft": 1, "open": 2, "paid": 3, "uncollectible": 3, "void": 3},
    INVOICE_PAYMENTS.name: {"open": 1, "paid": 2, "canceled": 2},
    SUBSCRIPTIONS.name: {
        "incomplete": 1,
        "trialing": 2,
        "active": 3,
        "past_due": 4,
        "unpaid": 5,
        "paused": 5,
        "canceled": 6,
        "incomplete_expired": 6,
    },
    CHECKOUT_SESSIONS.name: {"open": 1, "complete": 2, "expired": 2},
}
# customer.created comes before customer.updated for the same customer in the same second.
_CUSTOMER_STAGE = {"customer.created": 1, "customer.updated": 2}


def state_rank(table: RawTable, obj: Mapping[str, Any], event_type: str) -> int:
    """How far along its life an object is, for ordering two states of the same second.

    The stage of its status comes first. For charges, what only ever grows comes next: the
    refunded amount (capped at 2**40 minor units), then `disputed`, then `captured`.
    Equal ranks mean equal or indistinguishable states; the view then keeps either.
    """
    if table is CUSTOMERS:
        return _CUSTOMER_STAGE.get(event_type, 0)
    stage = _STATUS_STAGE.get(table.name, {}).get(str(obj.get("status")), 0)
    if table is not CHARGES:
        return stage
    refunded = min(max(int(obj.get("amount_refunded") or 0), 0), 2**40 - 1)
    return (
        (stage << 43)
        | (refunded << 2)
        | (int(bool(obj.get("disputed"))) << 1)
        | int(bool(obj.get("captured")))
    )


def first_of_month(unix_seconds: int) -> date:
    """The first day of the UTC month holding a Stripe timestamp."""
    moment = unix_to_utc(unix_seconds)
    return date(moment.year, moment.month, 1)


def rows_for_event(
    event: Mapping[str, Any], site_id: str, window_start: date | None = None
) -> list[LiveRow]:
    """The raw rows one event writes: its object, plus refunds a legacy charge embeds.

    Empty for a type Trace does not apply. Each row is filed under the month its object was
    created (a refund under its own month: the event does not say when its charge was made)
    and is observed at the event's `created`. `window_start` marks objects created before the
    site's backfill window as referenced rows, as the backfill does.
    """
    table = TABLE_BY_EVENT_TYPE.get(event.get("type", ""))
    if table is None:
        return []
    obj = (event.get("data") or {}).get("object")
    if not isinstance(obj, Mapping) or obj.get("object") != table.stripe_object:
        raise EventShapeError(
            f"event {event.get('id')} ({event.get('type')}) does not carry a "
            f"{table.stripe_object} in data.object"
        )
    observed_at = unix_to_utc(event["created"])
    rows = [_live_row(table, obj, event["type"], site_id, observed_at, window_start)]

    # Before API 2022-11-15 a charge embedded its refunds; they are the refunds' state too.
    refunds = obj.get("refunds") if table is CHARGES else None
    if isinstance(refunds, Mapping):
        for refund in refunds.get("data") or ():
            if isinstance(refund, Mapping) and refund.get("object") == "refund":
                rows.append(
                    _live_row(REFUNDS, refund, event["type"], site_id, observed_at, window_start)
                )
    return rows


def _live_row(
    table: RawTable,
    obj: Mapping[str, Any],
    event_type: str,
    site_id: str,
    observed_at,
    window_start: date | None,
) -> LiveRow:
    month = first_of_month(int(obj.get("created") or 0))
    row = table.row(
        obj,
        site_id=site_id,
        month=month,
        observed_at=observed_at,
        is_referenced=window_start is not None and month < window_start,
    )
    row["state_rank"] = state_rank(table, obj, event_type)
    return LiveRow(table, row)
