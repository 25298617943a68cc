"""Fetching one site-month of Stripe objects into the raw store.

The month is read endpoint by endpoint, several list streams at once (charges and invoices
are cut into time slices so their pages can be fetched in parallel; the shared rate limit keeps
the total within Stripe's limits). Each page goes to the partition's Parquet files as soon as it
arrives, so memory stays flat however large the account.

Charges are listed with their refunds and customer expanded, invoices with their payments,
customer and subscription expanded: that is how one request per page also yields the refunds,
the invoice payments and the objects created before the backfill window that in-window payments
refer to (a long-time subscriber's customer and subscription), without a request per object.
Expanded objects are folded back to ids before a row is stored, so `raw_json` keeps the shape
Stripe returns by default.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
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
    get_path,
)
from trace_pipelines.partitions import MonthWindow
from trace_pipelines.resources.raw_store import PartitionWriter, RawStore
from trace_pipelines.resources.stripe_reader import StripeAccountReader

# Which endpoints' requests each table's figure counts in its materialization metadata.
ENDPOINTS_BY_TABLE: dict[str, tuple[str, ...]] = {
    CHARGES.name: ("/v1/charges",),
    REFUNDS.name: ("/v1/refunds",),
    DISPUTES.name: ("/v1/disputes",),
    INVOICES.name: ("/v1/invoices",),
    INVOICE_PAYMENTS.name: ("/v1/invoice_payments",),
    CUSTOMERS.name: ("/v1/customers",),
    SUBSCRIPTIONS.name: ("/v1/subscriptions",),
    CHECKOUT_SESSIONS.name: ("/v1/checkout/sessions",),
}

INVOICE_SUBSCRIPTION_PATH = "parent.subscription_details.subscription"
SESSIONS = "/v1/checkout/sessions"

# List streams in flight per partition run; the shared rate limit, not this, sets the pace.
STREAM_THREADS = 16

# Lookups are one request each at ~150 ms; enough threads in flight to reach the rate limit.
LOOKUP_THREADS = 8


@dataclass
class PreWindowObjects:
    """Objects created before the backfill window that this month's payments refer to, by id.

    Each is kept as its table row (typed columns and the JSON text), not as the parsed object:
    a long-lived account's payments refer to thousands of old customers a month, and a parsed
    object takes several times the memory of its JSON.
    """

    customers: dict[str, dict] = field(default_factory=dict)
    subscriptions: dict[str, dict] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class MonthFetch:
    """Reads every raw object type of one site-month and writes it through `writer`."""

    def __init__(
        self,
        *,
        reader: StripeAccountReader,
        store: RawStore,
        writer: PartitionWriter,
        site_id: str,
        month: date,
        window_start: date,
        slices: int = 8,
        log: Callable[[str], None] = lambda message: None,
    ):
        self.reader = reader
        self.store = store
        self.writer = writer
        self.site_id = site_id
        self.window = MonthWindow(month)
        self.window_start_unix = MonthWindow(window_start).start_unix
        self.slices = slices
        self.log = log
        self.pre_window = PreWindowObjects()

    def run(self) -> None:
        """Fetch the month; raises the first error any stream met (the partition is dropped)."""
        # Every list is cut into the same time slices: a month's slowest list (often the
        # Checkout Sessions) would otherwise keep the whole partition waiting on one stream.
        # The largest lists go first, so the pool's threads start where the pages are.
        slices = [{"gte": gte, "lt": lt} for gte, lt in self.window.slices(self.slices)]
        lists: list[Callable[[dict[str, int]], None]] = [
            self._charges,
            partial(self._list_into, CHECKOUT_SESSIONS, SESSIONS),
            self._invoices,
            partial(self._list_into, CUSTOMERS, "/v1/customers"),
            partial(self._list_into, SUBSCRIPTIONS, "/v1/subscriptions", every_status=True),
            partial(self._list_into, DISPUTES, "/v1/disputes"),
        ]
        streams = [partial(read, created) for read in lists for created in slices]

        with ThreadPoolExecutor(max_workers=STREAM_THREADS) as pool:
            for future in [pool.submit(stream) for stream in streams]:
                future.result()

        self._store_pre_window_objects()

    def _rows(self, table: RawTable, objects: Iterable[dict], referenced: bool) -> list[dict]:
        observed_at = datetime.now(UTC).replace(tzinfo=None)
        return [
            table.row(
                obj,
                site_id=self.site_id,
                month=self.window.month,
                observed_at=observed_at,
                is_referenced=referenced,
            )
            for obj in objects
        ]

    def _add(self, table: RawTable, objects: Iterable[dict], *, referenced: bool = False) -> None:
        self.writer.add(table, self._rows(table, objects, referenced))

    def _list_into(
        self, table: RawTable, path: str, created: dict[str, int], *, every_status: bool = False
    ) -> None:
        # Stripe lists only live subscriptions unless asked for every status.
        params = {"created": created, "status": "all"} if every_status else {"created": created}
        for page in self.reader.list_pages(path, params):
            self._add(table, page)

    def _charges(self, created: dict[str, int]) -> None:
        params = {"created": created, "expand": ["data.refunds", "data.customer"]}
        for page in self.reader.list_pages("/v1/charges", params):
            refunds: list[dict] = []
            for charge in page:
                refunds.extend(self._all_of_sublist(charge, "refunds", "/v1/refunds", "charge"))
                charge["customer"] = self._fold_customer(charge.get("customer"))
            self._add(REFUNDS, refunds)
            self._add(CHARGES, page)

    def _invoices(self, created: dict[str, int]) -> None:
        expand = ["data.payments", "data.customer", f"data.{INVOICE_SUBSCRIPTION_PATH}"]
        for page in self.reader.list_pages("/v1/invoices", {"created": created, "expand": expand}):
            payments: list[dict] = []
            for invoice in page:
                payments.extend(
                    self._all_of_sublist(invoice, "payments", "/v1/invoice_payments", "invoice")
                )
                invoice["customer"] = self._fold_customer(invoice.get("customer"))
                details = get_path(invoice, "parent.subscription_details")
                if isinstance(details, dict):
                    details["subscription"] = self._fold_subscription(details.get("subscription"))
            self._add(INVOICE_PAYMENTS, payments)
            self._add(INVOICES, page)

    def _all_of_sublist(self, parent: dict, key: str, path: str, filter_name: str) -> list[dict]:
        """An expanded sub-list (a charge's refunds, an invoice's payments), every page of it.

        Stripe embeds only the first few items; the rest are paged from the sub-list's own
        endpoint. The expanded list is removed from the parent, which Stripe does not return
        with it by default.
        """
        sublist = parent.pop(key, None)
        if not isinstance(sublist, dict):
            return []
        items = list(sublist.get("data") or [])
        if sublist.get("has_more") and items:
            params = {filter_name: parent["id"], "starting_after": items[-1]["id"]}
            items.extend(self.reader.list(path, params))
        return items

    def _fold_customer(self, value: Any) -> Any:
        return self._fold(value, CUSTOMERS, self.pre_window.customers)

    def _fold_subscription(self, value: Any) -> Any:
        return self._fold(value, SUBSCRIPTIONS, self.pre_window.subscriptions)

    def _fold(self, value: Any, table: RawTable, kept: dict[str, dict]) -> Any:
        """Replace an expanded object by its id, keeping its row if it predates the window."""
        if not isinstance(value, dict):
            return value
        object_id = value["id"]
        if (value.get("created") or 0) < self.window_start_unix and object_id not in kept:
            [row] = self._rows(table, [value], referenced=True)
            with self.pre_window.lock:
                kept[object_id] = row
        return object_id

    def _sessions_of_subscription(self, subscription_id: str) -> list[dict]:
        return list(self.reader.list(SESSIONS, {"subscription": subscription_id}))

    def _store_pre_window_objects(self) -> None:
        """Store pre-window customers and subscriptions, and the Sessions that started them."""
        self.writer.add(CUSTOMERS, self.pre_window.customers.values())
        self.writer.add(SUBSCRIPTIONS, self.pre_window.subscriptions.values())

        wanted = set(self.pre_window.subscriptions)
        with self.store.lookup_claims(CHECKOUT_SESSIONS, self.site_id, wanted) as missing:
            with ThreadPoolExecutor(max_workers=LOOKUP_THREADS) as pool:
                found = pool.map(self._sessions_of_subscription, sorted(missing))
                # Each batch becomes rows as it arrives, so the parsed Sessions never pile up.
                rows = [
                    row
                    for batch in found
                    for row in self._rows(CHECKOUT_SESSIONS, batch, referenced=True)
                ]
            self.store.write_site_rows(CHECKOUT_SESSIONS, self.site_id, rows)
        if self.pre_window.customers or missing:
            self.log(
                f"Stored {len(self.pre_window.customers)} customers, "
                f"{len(self.pre_window.subscriptions)} subscriptions and {len(rows)} "
                "Checkout Sessions created before the backfill window."
            )
