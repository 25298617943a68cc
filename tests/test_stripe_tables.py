"""Typed columns read the same link whichever API version rendered the object."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from trace_pipelines.assets.stripe_tables import CHARGES, INVOICES, RAW_TABLES

OBSERVED = datetime(2026, 3, 2)

BASIL_INVOICE = {
    "id": "in_1",
    "created": 1772323200,
    "customer": "cus_1",
    "parent": {
        "type": "subscription_details",
        "subscription_details": {
            "subscription": "sub_1",
            "metadata": {"trace_visitor_id": " v_sub "},
        },
    },
    "status_transitions": {"paid_at": 1772323260},
    "currency": "USD",
}
LEGACY_INVOICE = {
    "id": "in_1",
    "created": 1772323200,
    "customer": {"id": "cus_1", "object": "customer"},
    "subscription": "sub_1",
    "charge": "ch_1",
    "payment_intent": "pi_1",
    "status_transitions": {"paid_at": 1772323260},
    "currency": "usd",
}


def invoice_row(invoice: dict) -> dict:
    return INVOICES.row(invoice, site_id="site_a", month=date(2026, 3, 1), observed_at=OBSERVED)


@pytest.mark.parametrize("invoice", [BASIL_INVOICE, LEGACY_INVOICE], ids=["basil", "legacy"])
def test_invoice_links_read_from_both_shapes(invoice):
    row = invoice_row(invoice)
    assert (row["subscription_id"], row["customer_id"], row["currency"]) == (
        "sub_1",
        "cus_1",
        "usd",
    )
    assert row["paid_at"] == datetime(2026, 3, 1, 0, 1)
    assert row["created"] == datetime(2026, 3, 1)


def test_legacy_invoice_keeps_its_direct_charge_link():
    assert invoice_row(LEGACY_INVOICE)["charge_id"] == "ch_1"
    assert invoice_row(BASIL_INVOICE)["charge_id"] is None
    assert invoice_row(BASIL_INVOICE)["subscription_trace_visitor_id"] == "v_sub"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [({"trace_visitor_id": " v_1 "}, "v_1"), ({"trace_visitor_id": "  "}, None), ({}, None)],
)
def test_visitor_id_is_trimmed_and_blank_means_none(metadata, expected):
    charge = {"id": "ch_1", "created": 1772323200, "metadata": metadata}
    row = CHARGES.row(charge, site_id="s", month=date(2026, 3, 1), observed_at=OBSERVED)
    assert row["trace_visitor_id"] == expected


@pytest.mark.parametrize("table", RAW_TABLES, ids=lambda table: table.name)
def test_every_row_matches_its_arrow_schema(table):
    import pyarrow as pa

    row = table.row(
        {"id": "x_1", "created": 1772323200},
        site_id="s",
        month=date(2026, 3, 1),
        observed_at=OBSERVED,
    )
    assert list(row) == table.all_column_names
    pa.Table.from_pylist([row], schema=table.arrow_schema)  # raises on a type mismatch
