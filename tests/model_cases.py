"""Builders for the model tests: Stripe-shaped objects, Trace input CSVs and one full refresh.

The objects follow Stripe's own shapes (`/work/shared/stripe/object-shapes.json`) with only the
fields the raw tables read; `legacy=True` renders the pre-basil links (`charge.invoice`,
`invoice.charge`, `invoice.payment_intent`, `invoice.subscription`) instead of invoice payments
and `invoice.parent`. A refresh writes them through the real RawStore, writes the CSVs, and
materializes the Trace input assets and every model asset with Dagster's `materialize`, so the
tests run the same factory, SQL and checks as production, on real DuckDB files.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from dagster import ExecuteInProcessResult, materialize
from dagster_duckdb import DuckDBResource

from trace_pipelines.assets.sql_models import MODELS_DIR, build_model_assets
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
)
from trace_pipelines.assets.trace_inputs import trace_input_assets
from trace_pipelines.resources.raw_store import RawStore
from trace_pipelines.resources.storage import TraceStorage

# Every object of a test lands in this partition month; `created` carries the real time.
PARTITION_MONTH = date(2026, 3, 1)
OBSERVED_AT = datetime(2026, 11, 1)
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)

TABLE_BY_OBJECT: dict[str, RawTable] = {
    "charge": CHARGES,
    "refund": REFUNDS,
    "dispute": DISPUTES,
    "invoice": INVOICES,
    "invoice_payment": INVOICE_PAYMENTS,
    "customer": CUSTOMERS,
    "subscription": SUBSCRIPTIONS,
    "checkout.session": CHECKOUT_SESSIONS,
}


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


def at(days: float = 0, hours: float = 0) -> datetime:
    """T0 shifted by a number of days and hours."""
    return T0 + timedelta(days=days, hours=hours)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def naive(moment: datetime) -> datetime:
    """A UTC moment as DuckDB returns TIMESTAMP values: naive."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def _metadata(visitor: str | None) -> dict[str, str]:
    return {"trace_visitor_id": visitor} if visitor else {}


def charge(
    charge_id: str,
    amount: int,
    *,
    created: datetime = T0,
    currency: str = "usd",
    status: str = "succeeded",
    captured: bool = True,
    customer: str | None = None,
    payment_intent: str | None = None,
    invoice: str | None = None,
    email: str | None = None,
    receipt_email: str | None = None,
    visitor: str | None = None,
    amount_refunded: int = 0,
) -> dict[str, Any]:
    """A charge; `invoice` fills the legacy `charge.invoice` field."""
    obj = {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount if captured and status == "succeeded" else 0,
        "amount_refunded": amount_refunded,
        "billing_details": {"email": email, "name": None},
        "captured": captured,
        "created": unix(created),
        "currency": currency,
        "customer": customer,
        "disputed": False,
        "metadata": _metadata(visitor),
        "paid": status == "succeeded",
        "payment_intent": payment_intent,
        "receipt_email": receipt_email,
        "refunded": amount_refunded == amount,
        "status": status,
    }
    if invoice:
        obj["invoice"] = invoice
    return obj


def invoice(
    invoice_id: str,
    amount_paid: int,
    *,
    customer: str | None,
    billing_reason: str = "manual",
    created: datetime = T0,
    status: str = "paid",
    currency: str = "usd",
    subscription: str | None = None,
    subscription_visitor: str | None = None,
    visitor: str | None = None,
    customer_email: str | None = None,
    legacy: bool = False,
    legacy_charge: str | None = None,
    legacy_payment_intent: str | None = None,
) -> dict[str, Any]:
    """An invoice in the basil shape, or the legacy one with `legacy=True`."""
    obj: dict[str, Any] = {
        "id": invoice_id,
        "object": "invoice",
        "amount_due": amount_paid,
        "amount_paid": amount_paid,
        "billing_reason": billing_reason,
        "created": unix(created),
        "currency": currency,
        "customer": customer,
        "customer_email": customer_email,
        "metadata": _metadata(visitor),
        "status": status,
        "status_transitions": {"paid_at": unix(created) if status == "paid" else None},
    }
    if legacy:
        obj |= {
            "subscription": subscription,
            "charge": legacy_charge,
            "payment_intent": legacy_payment_intent,
        }
    elif subscription:
        obj["parent"] = {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {
                "subscription": subscription,
                "metadata": _metadata(subscription_visitor),
            },
        }
    return obj


def invoice_payment(
    payment_id: str,
    invoice_id: str,
    amount_paid: int,
    *,
    payment_intent: str | None = None,
    charge_id: str | None = None,
    created: datetime = T0,
    status: str = "paid",
    currency: str = "usd",
) -> dict[str, Any]:
    """A basil invoice payment, paid by a PaymentIntent or (out of band) a charge."""
    payment = (
        {"type": "payment_intent", "payment_intent": payment_intent}
        if payment_intent
        else {"type": "charge", "charge": charge_id}
    )
    return {
        "id": payment_id,
        "object": "invoice_payment",
        "amount_paid": amount_paid,
        "amount_requested": amount_paid,
        "created": unix(created),
        "currency": currency,
        "invoice": invoice_id,
        "is_default": True,
        "payment": payment,
        "status": status,
        "status_transitions": {"paid_at": unix(created), "canceled_at": None},
    }


def refund(
    refund_id: str, charge_id: str, amount: int, *, status: str = "succeeded", currency="usd"
) -> dict[str, Any]:
    return {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "charge": charge_id,
        "created": unix(at(days=5)),
        "currency": currency,
        "payment_intent": None,
        "reason": "requested_by_customer",
        "status": status,
    }


def dispute(dispute_id: str, charge_id: str, amount: int, *, status: str) -> dict[str, Any]:
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "charge": charge_id,
        "created": unix(at(days=7)),
        "currency": "usd",
        "payment_intent": None,
        "reason": "fraudulent",
        "status": status,
    }


def customer(customer_id: str, email: str | None, *, created: datetime = T0) -> dict[str, Any]:
    return {
        "id": customer_id,
        "object": "customer",
        "created": unix(created),
        "email": email,
        "metadata": {},
        "name": None,
    }


def subscription(
    subscription_id: str, customer_id: str, *, visitor: str | None = None, created=T0
) -> dict[str, Any]:
    return {
        "id": subscription_id,
        "object": "subscription",
        "canceled_at": None,
        "created": unix(created),
        "currency": "usd",
        "customer": customer_id,
        "metadata": _metadata(visitor),
        "status": "active",
    }


def checkout_session(
    session_id: str,
    *,
    visitor: str | None,
    mode: str = "payment",
    payment_intent: str | None = None,
    invoice_id: str | None = None,
    subscription_id: str | None = None,
    customer_id: str | None = None,
    email: str | None = None,
    created: datetime = T0,
) -> dict[str, Any]:
    """A completed Checkout Session; its metadata stays on the Session, as in Stripe."""
    return {
        "id": session_id,
        "object": "checkout.session",
        "amount_total": None,
        "created": unix(created),
        "currency": "usd",
        "customer": customer_id,
        "customer_details": {"email": email},
        "invoice": invoice_id,
        "metadata": _metadata(visitor),
        "mode": mode,
        "payment_intent": payment_intent,
        "payment_status": "paid",
        "status": "complete",
        "subscription": subscription_id,
    }


def csv_text(header: str, rows: Sequence[Sequence[Any]]) -> str:
    lines = [header] + [
        ",".join("" if value is None else str(value) for value in row) for row in rows
    ]
    return "\n".join(lines) + "\n"


def touchpoints_csv(rows: Sequence[tuple[str, str, datetime, str | None, str | None]]) -> str:
    """(site_id, visitor_id, occurred_at, source, medium) rows as touchpoints.csv."""
    return csv_text(
        "site_id,visitor_id,occurred_at,source,medium,campaign",
        [
            (site, visitor, iso(moment), source, medium, None)
            for site, visitor, moment, source, medium in rows
        ],
    )


def identities_csv(rows: Sequence[tuple[str, str, str, datetime]]) -> str:
    """(site_id, visitor_id, email, identified_at) rows as identities.csv."""
    return csv_text(
        "site_id,visitor_id,email,identified_at",
        [(site, visitor, email, iso(moment)) for site, visitor, email, moment in rows],
    )


def ad_spend_csv(rows: Sequence[tuple[str, str, str, str, int, str]]) -> str:
    """(site_id, date, source, medium, amount, currency) rows as ad_spend.csv."""
    return csv_text(
        "site_id,date,source,medium,campaign,amount,currency",
        [
            (site, day, source, medium, None, amount, cur)
            for site, day, source, medium, amount, cur in rows
        ],
    )


def write_raw(home: Path, stripe: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Write each site's Stripe objects as one raw partition through the real RawStore."""
    store = RawStore(home / "raw")
    for site_id, objects in stripe.items():
        by_table: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for obj in objects:
            by_table[obj["object"]].append(obj)
        with store.partition(site_id, PARTITION_MONTH) as writer:
            for object_type, group in by_table.items():
                table = TABLE_BY_OBJECT[object_type]
                rows = [
                    table.row(obj, site_id=site_id, month=PARTITION_MONTH, observed_at=OBSERVED_AT)
                    for obj in group
                ]
                writer.add(table, rows)


def write_inputs(folder: Path, files: Mapping[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@contextlib.contextmanager
def inputs_env(folder: Path | None) -> Iterator[None]:
    """TRACE_INPUTS_DIR set to the folder (or unset) for the duration of a refresh."""
    previous = os.environ.get("TRACE_INPUTS_DIR")
    if folder is None:
        os.environ.pop("TRACE_INPUTS_DIR", None)
    else:
        os.environ["TRACE_INPUTS_DIR"] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TRACE_INPUTS_DIR", None)
        else:
            os.environ["TRACE_INPUTS_DIR"] = previous


def resources(home: Path) -> dict[str, Any]:
    return {
        "trace_storage": TraceStorage(home=str(home)),
        "duckdb": DuckDBResource(database=str(home / "warehouse.duckdb")),
    }


def refresh(
    home: Path,
    stripe: Mapping[str, Sequence[Mapping[str, Any]]],
    inputs: Mapping[str, str] | None,
    *,
    models_dir: Path = MODELS_DIR,
    raise_on_error: bool = True,
) -> ExecuteInProcessResult:
    """Write the data, then materialize the Trace inputs and every model with their checks."""
    write_raw(home, stripe)
    folder = write_inputs(home / "inputs", inputs) if inputs is not None else None
    with inputs_env(folder):
        return materialize(
            [*trace_input_assets, build_model_assets(models_dir)],
            resources=resources(home),
            raise_on_error=raise_on_error,
        )


def query(home: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as connection:
        return connection.execute(sql, list(params)).fetchall()


def query_dicts(home: Path, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as connection:
        cursor = connection.execute(sql, list(params))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def check_outcomes(result: ExecuteInProcessResult) -> dict[tuple[str, str], Any]:
    """(asset name, check name) -> the check evaluation of a run."""
    outcomes = {}
    for event in result.get_asset_check_evaluations():
        key = event.asset_check_key
        outcomes[(key.asset_key.to_user_string(), key.name)] = event
    return outcomes
