"""The raw Stripe tables: which columns each one has and how a Stripe object fills them.

Each raw table keeps the whole object as JSON (`raw_json`) and lifts out, as typed columns,
the fields the revenue models read. Stripe changed where some links live in API version
`2025-03-31.basil` (`charge.invoice`, `invoice.charge`, `invoice.payment_intent` and
`invoice.subscription` are gone; invoices reach their money through invoice payments and their
subscription through `invoice.parent.subscription_details`). The extractors here accept both
shapes, so every model downstream reads one set of columns whatever version rendered the object.

Every table has `site_id`, `id`, `created` (UTC), `month` (the partition the row was fetched
for), `observed_at` (when Trace read it) and `raw_json`. Amounts are integer minor units with
`currency` beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pyarrow as pa

StripeObject = Mapping[str, Any]


@dataclass(frozen=True)
class Column:
    """One typed column of a raw table and the function that reads it from a Stripe object."""

    name: str
    type: pa.DataType
    description: str
    extract: Callable[[StripeObject], Any]


@dataclass(frozen=True)
class RawTable:
    """A raw table: its name (also the Dagster asset name) and its object-specific columns."""

    name: str
    stripe_object: str
    description: str
    columns: tuple[Column, ...]
    # Customers, subscriptions and Checkout Sessions can be fetched because an in-window payment
    # refers to them although they were created before the backfill window.
    has_referenced_rows: bool = False

    @property
    def all_column_names(self) -> list[str]:
        return [field.name for field in self.arrow_schema]

    @property
    def arrow_schema(self) -> pa.Schema:
        leading = [
            pa.field("site_id", pa.string(), nullable=False),
            pa.field("id", pa.string(), nullable=False),
            pa.field("created", pa.timestamp("us")),
            pa.field("month", pa.date32()),
        ]
        specific = [pa.field(column.name, column.type) for column in self.columns]
        trailing = [pa.field("observed_at", pa.timestamp("us")), pa.field("raw_json", pa.string())]
        if self.has_referenced_rows:
            trailing.insert(0, pa.field("is_referenced", pa.bool_()))
        return pa.schema(leading + specific + trailing)

    def column_descriptions(self) -> dict[str, str]:
        common = {
            "site_id": "Trace site the Stripe account is connected to.",
            "id": "Stripe object id.",
            "created": "When Stripe created the object (UTC).",
            "month": "First day of the partition month the row was fetched for.",
            "is_referenced": (
                "True when fetched because an in-window payment refers to it although it was "
                "created before the backfill window."
            ),
            "observed_at": "When Trace read this state of the object from Stripe (UTC).",
            "raw_json": "The whole Stripe object as returned by the API.",
        }
        specific = {column.name: column.description for column in self.columns}
        return {name: specific.get(name) or common[name] for name in self.all_column_names}

    def row(
        self,
        obj: StripeObject,
        *,
        site_id: str,
        month: date,
        observed_at: datetime,
        is_referenced: bool = False,
    ) -> dict[str, Any]:
        """The table row for one Stripe object."""
        row: dict[str, Any] = {
            "site_id": site_id,
            "id": obj["id"],
            "created": unix_to_utc(obj.get("created")),
            "month": month,
        }
        for column in self.columns:
            row[column.name] = column.extract(obj)
        if self.has_referenced_rows:
            row["is_referenced"] = is_referenced
        row["observed_at"] = observed_at
        row["raw_json"] = _json(obj)
        return row


def _json(value: Any) -> str:
    # orjson rather than the standard library: serializing every object's JSON was a third of
    # the backfill's CPU time per page. Sorted keys keep the text stable across fetches.
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def unix_to_utc(value: Any) -> datetime | None:
    """Stripe's unix seconds as a naive UTC datetime (DuckDB TIMESTAMP), or None."""
    if value is None:
        return None
    return datetime.fromtimestamp(int(value), tz=UTC).replace(tzinfo=None)


def get_path(obj: StripeObject | None, path: str) -> Any:
    """The value at a dotted path (`parent.subscription_details.subscription`), or None."""
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def object_id(value: Any) -> str | None:
    """An id whether the field holds the id itself or the expanded object."""
    if isinstance(value, Mapping):
        return value.get("id")
    return value


def first_id(obj: StripeObject, *paths: str) -> str | None:
    """The first non-empty id among several paths: the current shape first, then legacy ones."""
    for path in paths:
        found = object_id(get_path(obj, path))
        if found:
            return found
    return None


def visitor_id(metadata: Any) -> str | None:
    """Trace's visitor id from a metadata dict, trimmed; None when absent or blank."""
    if not isinstance(metadata, Mapping):
        return None
    value = metadata.get("trace_visitor_id")
    if value is None or not str(value).strip():
        return None
    return str(value).strip()


def _field(path: str) -> Callable[[StripeObject], Any]:
    return lambda obj: get_path(obj, path)


def _amount(path: str) -> Callable[[StripeObject], Any]:
    def read(obj: StripeObject) -> int | None:
        value = get_path(obj, path)
        return None if value is None else int(value)

    return read


def _ids(*paths: str) -> Callable[[StripeObject], str | None]:
    return lambda obj: first_id(obj, *paths)


def _time(path: str) -> Callable[[StripeObject], datetime | None]:
    return lambda obj: unix_to_utc(get_path(obj, path))


def _metadata_json(obj: StripeObject) -> str:
    return _json(obj.get("metadata") or {})


def _visitor(path: str = "metadata") -> Callable[[StripeObject], str | None]:
    return lambda obj: visitor_id(get_path(obj, path))


def _lower(path: str) -> Callable[[StripeObject], str | None]:
    def read(obj: StripeObject) -> str | None:
        value = get_path(obj, path)
        return value.lower() if isinstance(value, str) else value

    return read


_STR, _INT, _BOOL, _TS = pa.string(), pa.int64(), pa.bool_(), pa.timestamp("us")

CHARGES = RawTable(
    name="stripe_charges",
    stripe_object="charge",
    description="One row per Stripe charge, whatever its status, by the month it was created.",
    columns=(
        Column("status", _STR, "succeeded, pending or failed.", _field("status")),
        Column("paid", _BOOL, "True when the charge succeeded or was authorized.", _field("paid")),
        Column("captured", _BOOL, "False for an authorization not captured.", _field("captured")),
        Column("amount", _INT, "Charged amount in minor units.", _amount("amount")),
        Column("amount_captured", _INT, "Captured, minor units.", _amount("amount_captured")),
        Column("amount_refunded", _INT, "Refunded, minor units.", _amount("amount_refunded")),
        Column("currency", _STR, "Lowercase ISO currency of the amounts.", _lower("currency")),
        Column("disputed", _BOOL, "True when the charge has been disputed.", _field("disputed")),
        Column("customer_id", _STR, "Stripe customer, if any.", _ids("customer")),
        Column("payment_intent_id", _STR, "PaymentIntent that created it.", _ids("payment_intent")),
        Column(
            "invoice_id",
            _STR,
            "Invoice it paid, from the legacy `charge.invoice` (null from API 2025-03-31.basil).",
            _ids("invoice"),
        ),
        Column("billing_email", _STR, "billing_details.email.", _field("billing_details.email")),
        Column("receipt_email", _STR, "Receipt email.", _field("receipt_email")),
        Column("metadata_json", _STR, "The charge's metadata as JSON.", _metadata_json),
        Column("trace_visitor_id", _STR, "metadata.trace_visitor_id, trimmed.", _visitor()),
    ),
)

REFUNDS = RawTable(
    name="stripe_refunds",
    stripe_object="refund",
    description="One row per refund, filed under the month of the charge it refunds.",
    columns=(
        Column("charge_id", _STR, "The refunded charge.", _ids("charge")),
        Column("payment_intent_id", _STR, "PaymentIntent of the charge.", _ids("payment_intent")),
        Column("amount", _INT, "Refunded amount in minor units.", _amount("amount")),
        Column("currency", _STR, "Lowercase ISO currency.", _lower("currency")),
        Column("status", _STR, "pending, succeeded, failed or canceled.", _field("status")),
        Column("reason", _STR, "Why the refund was made.", _field("reason")),
    ),
)

DISPUTES = RawTable(
    name="stripe_disputes",
    stripe_object="dispute",
    description="One row per dispute, by the month the dispute was opened.",
    columns=(
        Column("charge_id", _STR, "The disputed charge.", _ids("charge")),
        Column("payment_intent_id", _STR, "PaymentIntent of the charge.", _ids("payment_intent")),
        Column("amount", _INT, "Disputed amount in minor units.", _amount("amount")),
        Column("currency", _STR, "Lowercase ISO currency.", _lower("currency")),
        Column("status", _STR, "won, lost, needs_response, under_review, ...", _field("status")),
        Column("reason", _STR, "The cardholder's reason.", _field("reason")),
    ),
)

INVOICES = RawTable(
    name="stripe_invoices",
    stripe_object="invoice",
    description="One row per invoice, by the month it was created.",
    columns=(
        Column("status", _STR, "draft, open, paid, uncollectible or void.", _field("status")),
        Column(
            "billing_reason",
            _STR,
            "subscription_create, subscription_cycle, subscription_update, manual, ...",
            _field("billing_reason"),
        ),
        Column("customer_id", _STR, "Stripe customer billed.", _ids("customer")),
        Column("customer_email", _STR, "Email on the invoice.", _field("customer_email")),
        Column(
            "subscription_id",
            _STR,
            "parent.subscription_details.subscription, else the legacy `invoice.subscription`.",
            _ids("parent.subscription_details.subscription", "subscription"),
        ),
        Column("charge_id", _STR, "Legacy `invoice.charge` (null from basil on).", _ids("charge")),
        Column(
            "payment_intent_id",
            _STR,
            "Legacy `invoice.payment_intent` (null from basil on).",
            _ids("payment_intent"),
        ),
        Column("amount_due", _INT, "Amount due, minor units.", _amount("amount_due")),
        Column("amount_paid", _INT, "Amount paid, minor units.", _amount("amount_paid")),
        Column("currency", _STR, "Lowercase ISO currency.", _lower("currency")),
        Column(
            "paid_at", _TS, "status_transitions.paid_at (UTC).", _time("status_transitions.paid_at")
        ),
        Column("metadata_json", _STR, "The invoice's metadata as JSON.", _metadata_json),
        Column("trace_visitor_id", _STR, "metadata.trace_visitor_id, trimmed.", _visitor()),
        Column(
            "subscription_trace_visitor_id",
            _STR,
            "trace_visitor_id in the subscription metadata copied onto the invoice.",
            _visitor("parent.subscription_details.metadata"),
        ),
    ),
)

INVOICE_PAYMENTS = RawTable(
    name="stripe_invoice_payments",
    stripe_object="invoice_payment",
    description="One row per invoice payment, filed under the month of its invoice.",
    columns=(
        Column("invoice_id", _STR, "The invoice paid.", _ids("invoice")),
        Column("payment_type", _STR, "payment_intent or charge.", _field("payment.type")),
        Column(
            "payment_intent_id", _STR, "PaymentIntent that paid it.", _ids("payment.payment_intent")
        ),
        Column("charge_id", _STR, "Charge that paid it.", _ids("payment.charge")),
        Column("amount_paid", _INT, "Amount paid, minor units.", _amount("amount_paid")),
        Column("currency", _STR, "Lowercase ISO currency.", _lower("currency")),
        Column("status", _STR, "open, paid or canceled.", _field("status")),
        Column("is_default", _BOOL, "The default payment.", _field("is_default")),
        Column(
            "paid_at", _TS, "status_transitions.paid_at (UTC).", _time("status_transitions.paid_at")
        ),
    ),
)

CUSTOMERS = RawTable(
    name="stripe_customers",
    stripe_object="customer",
    description="One row per customer, by the month it was created (plus older referenced ones).",
    has_referenced_rows=True,
    columns=(
        Column("email", _STR, "The customer's email as Stripe holds it.", _field("email")),
        Column("name", _STR, "The customer's name.", _field("name")),
        Column("metadata_json", _STR, "The customer's metadata as JSON.", _metadata_json),
        Column("trace_visitor_id", _STR, "metadata.trace_visitor_id, trimmed.", _visitor()),
    ),
)

SUBSCRIPTIONS = RawTable(
    name="stripe_subscriptions",
    stripe_object="subscription",
    description=(
        "One row per subscription, by the month it was created (plus older referenced ones)."
    ),
    has_referenced_rows=True,
    columns=(
        Column("customer_id", _STR, "The subscribed customer.", _ids("customer")),
        Column("status", _STR, "active, past_due, canceled, ...", _field("status")),
        Column("currency", _STR, "Lowercase ISO currency.", _lower("currency")),
        Column("canceled_at", _TS, "When it was canceled (UTC).", _time("canceled_at")),
        Column("metadata_json", _STR, "The subscription's metadata as JSON.", _metadata_json),
        Column("trace_visitor_id", _STR, "metadata.trace_visitor_id, trimmed.", _visitor()),
    ),
)

CHECKOUT_SESSIONS = RawTable(
    name="stripe_checkout_sessions",
    stripe_object="checkout.session",
    description=(
        "One row per Checkout Session, by the month created (plus older referenced ones)."
    ),
    has_referenced_rows=True,
    columns=(
        Column("mode", _STR, "payment, subscription or setup.", _field("mode")),
        Column("status", _STR, "open, complete or expired.", _field("status")),
        Column(
            "payment_status", _STR, "paid, unpaid, no_payment_required.", _field("payment_status")
        ),
        Column("customer_id", _STR, "Customer created or reused.", _ids("customer")),
        Column("customer_email", _STR, "customer_details.email.", _field("customer_details.email")),
        Column("payment_intent_id", _STR, "PaymentIntent (payment mode).", _ids("payment_intent")),
        Column("subscription_id", _STR, "Subscription (subscription mode).", _ids("subscription")),
        Column("invoice_id", _STR, "Invoice created by the Session.", _ids("invoice")),
        Column("amount_total", _INT, "Total, minor units.", _amount("amount_total")),
        Column("currency", _STR, "Lowercase ISO currency.", _lower("currency")),
        Column("metadata_json", _STR, "The Session's own metadata as JSON.", _metadata_json),
        Column("trace_visitor_id", _STR, "metadata.trace_visitor_id, trimmed.", _visitor()),
    ),
)

RAW_TABLES: tuple[RawTable, ...] = (
    CHARGES,
    REFUNDS,
    DISPUTES,
    INVOICES,
    INVOICE_PAYMENTS,
    CUSTOMERS,
    SUBSCRIPTIONS,
    CHECKOUT_SESSIONS,
)
RAW_TABLES_BY_NAME: dict[str, RawTable] = {table.name: table for table in RAW_TABLES}
