"""Applying landed events for real: landing store, live Parquet files, raw views, SQL models.

Events are built around the same hand-made Stripe objects the model tests use, landed in a
real store (SQLite, and PostgreSQL where the backend matters), applied with
`apply_landed_events`, and read back from DuckDB: the raw views, and the revenue tables after
a real refresh of every model.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import psycopg2
import pytest
from dagster import materialize

from tests.model_cases import (
    at,
    charge,
    customer,
    dispute,
    invoice,
    invoice_payment,
    refund,
    resources,
    subscription,
    unix,
)
from tests.stripe_fixtures import FixtureFolder
from trace_pipelines.assets.sql_models import model_assets
from trace_pipelines.assets.stripe_tables import CHARGES
from trace_pipelines.assets.trace_inputs import trace_input_assets
from trace_pipelines.live.apply import WATERMARK, apply_landed_events
from trace_pipelines.live.catch_up import land_missed_events
from trace_pipelines.live.files import live_files
from trace_pipelines.resources.landing import (
    LandingStore,
    PostgresLandingStore,
    SqliteLandingStore,
)
from trace_pipelines.resources.raw_store import RawStore
from trace_pipelines.resources.stripe_reader import StripeReader
from trace_pipelines.sandbox import running_sandbox
from trace_pipelines.settings import TracePaths
from trace_pipelines.sites import SiteRegistry

ACCOUNTS = {"site_a": "acct_1LiveA", "site_legacy": "acct_1Legacy", "site_current": "acct_1Now"}
_event_ids = itertools.count(1)


def event(obj: dict[str, Any], event_type: str, created: datetime | int, site: str = "site_a"):
    """A Stripe event carrying `obj` as it was at `created`."""
    return {
        "id": f"evt_{next(_event_ids):06d}_{uuid.uuid4().hex[:8]}",
        "object": "event",
        "account": ACCOUNTS[site],
        "api_version": "2026-10-28.endive",
        "created": created if isinstance(created, int) else unix(created),
        "type": event_type,
        "data": {"object": obj},
    }


@pytest.fixture
def home(trace_home: TracePaths) -> TracePaths:
    registry = SiteRegistry(trace_home.registry)
    for site_id, account in ACCOUNTS.items():
        registry.connect(site_id, f"{site_id.replace('_', '-')}.example.com", account)
    return trace_home


@pytest.fixture(params=["sqlite", "postgres"])
def landing(request, home: TracePaths) -> Iterator[LandingStore]:
    if request.param == "sqlite":
        yield SqliteLandingStore(home.home / "landing.sqlite")
        return
    database = f"trace_live_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'create database "{database}"')
    try:
        yield PostgresLandingStore(f"postgresql://postgres@127.0.0.1:5432/{database}")
    finally:
        admin.cursor().execute(f'drop database "{database}" with (force)')
        admin.close()


@pytest.fixture
def sqlite_landing(home: TracePaths) -> SqliteLandingStore:
    return SqliteLandingStore(home.home / "landing.sqlite")


def land(landing: LandingStore, events: list[dict[str, Any]], site: str = "site_a") -> None:
    for item in events:
        landing.land(item, site_id=site)


def query(paths: TracePaths, sql: str) -> list[tuple]:
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def refresh_models(paths: TracePaths) -> None:
    materialize([*trace_input_assets, model_assets], resources=resources(paths.home))


def test_state_follows_stripe_time_not_arrival_order(home, landing):
    paid = charge("ch_order", 5000, customer="cus_order")
    refunded = {**paid, "amount_refunded": 5000, "refunded": True}
    same_second = charge("ch_tie", 3000)
    tie_refunded = {**same_second, "amount_refunded": 1000}
    opened = dispute("dp_tie", "ch_tie", 3000, status="needs_response")
    lost = {**opened, "status": "lost"}

    land(
        landing,
        [
            # The refund arrives first, the success it follows a minute later.
            event(refunded, "charge.refunded", at(hours=1)),
            event(paid, "charge.succeeded", at()),
            # Same second: only the object's own fields can order these.
            event(tie_refunded, "charge.refunded", at(days=2)),
            event(same_second, "charge.updated", at(days=2)),
            event(lost, "charge.dispute.closed", at(days=3)),
            event(opened, "charge.dispute.created", at(days=3)),
        ],
    )
    apply_landed_events(home, landing)
    # A day later Stripe redelivers the old success as a new event: it changes nothing.
    land(landing, [event(paid, "charge.succeeded", at())])
    apply_landed_events(home, landing)

    charges = dict(query(home, "select id, amount_refunded from raw.stripe_charges"))
    assert charges == {"ch_order": 5000, "ch_tie": 1000}
    assert query(home, "select id, status from raw.stripe_disputes") == [("dp_tie", "lost")]
    assert landing.watermark(WATERMARK) == landing.last_seq() == 7

    refresh_models(home)
    revenue = query(
        home,
        "select charge_id, gross_amount, refunded_amount, disputed_amount, net_amount "
        "from analytics.revenue order by charge_id",
    )
    assert revenue == [("ch_order", 5000, 5000, 0, 0), ("ch_tie", 3000, 1000, 3000, -1000)]


def subscription_events(site: str, legacy: bool) -> list[dict[str, Any]]:
    """A subscription's first invoice and a renewal, as the events an account sends."""
    first_charge = charge("ch_first", 2900, customer="cus_sub", payment_intent="pi_first")
    renew_charge = charge(
        "ch_renew",
        2900,
        created=at(days=31),
        customer="cus_sub",
        payment_intent="pi_renew",
        invoice="in_renew" if legacy else None,
    )
    first_invoice = invoice(
        "in_first",
        2900,
        customer="cus_sub",
        billing_reason="subscription_create",
        subscription="sub_main",
        legacy=legacy,
        legacy_payment_intent="pi_first",
    )
    renew_invoice = invoice(
        "in_renew",
        2900,
        customer="cus_sub",
        billing_reason="subscription_cycle",
        created=at(days=31),
        subscription="sub_main",
        legacy=legacy,
        legacy_charge="ch_renew",
    )
    events = [
        event(customer("cus_sub", "sub@example.com"), "customer.created", at(), site),
        event(subscription("sub_main", "cus_sub"), "customer.subscription.created", at(), site),
        event(first_charge, "charge.succeeded", at(), site),
        event(first_invoice, "invoice.paid", at(), site),
        event(renew_charge, "charge.succeeded", at(days=31), site),
        event(renew_invoice, "invoice.payment_succeeded", at(days=31), site),
    ]
    if not legacy:
        events += [
            event(
                invoice_payment("inpay_first", "in_first", 2900, payment_intent="pi_first"),
                "invoice_payment.paid",
                at(),
                site,
            ),
            event(
                invoice_payment("inpay_renew", "in_renew", 2900, charge_id="ch_renew"),
                "invoice_payment.paid",
                at(days=31),
                site,
            ),
        ]
    return events


def test_legacy_and_current_payloads_give_the_same_revenue(home, sqlite_landing):
    land(sqlite_landing, subscription_events("site_legacy", legacy=True), "site_legacy")
    land(sqlite_landing, subscription_events("site_current", legacy=False), "site_current")

    apply_landed_events(home, sqlite_landing)
    refresh_models(home)

    columns = (
        "kind, charge_id, invoice_id, subscription_id, customer_key, paid_at, currency, "
        "gross_amount, refunded_amount, disputed_amount, net_amount"
    )
    legacy = query(
        home,
        f"select {columns} from analytics.revenue where site_id = 'site_legacy' order by all",
    )
    current = query(
        home,
        f"select {columns} from analytics.revenue where site_id = 'site_current' order by all",
    )
    assert legacy == current
    assert [(row[0], row[1], row[2], row[3], row[-1]) for row in current] == [
        ("renewal", "ch_renew", "in_renew", "sub_main", 2900),
        ("subscription_first", "ch_first", "in_first", "sub_main", 2900),
    ]


def test_a_refund_embedded_in_a_legacy_charge_becomes_a_refund_row(home, sqlite_landing):
    legacy_charge = charge("ch_embedded", 4000, amount_refunded=1500)
    legacy_charge["refunds"] = {
        "object": "list",
        "data": [refund("re_embedded", "ch_embedded", 1500)],
        "has_more": False,
    }
    land(sqlite_landing, [event(legacy_charge, "charge.refunded", at(days=5))])

    apply_landed_events(home, sqlite_landing)

    assert query(home, "select id, charge_id, amount from raw.stripe_refunds") == [
        ("re_embedded", "ch_embedded", 1500)
    ]


_CRASHING_APPLY = """
import os, sys
from trace_pipelines.live.apply import apply_landed_events
from trace_pipelines.resources.landing import SqliteLandingStore
from trace_pipelines.settings import TracePaths

paths = TracePaths(__import__("pathlib").Path(sys.argv[1]))
landing = SqliteLandingStore(paths.home / "landing.sqlite")
# Killed after the batch's files are renamed into place, before the watermark moves.
apply_landed_events(paths, landing, batch_events=3, before_watermark=lambda seq: seq > 3
    and os._exit(9))
"""


def test_an_apply_killed_midway_is_redone_exactly_once(home, sqlite_landing):
    charges = [charge(f"ch_crash_{i}", 1000 + i) for i in range(7)]
    land(sqlite_landing, [event(c, "charge.succeeded", at(hours=i)) for i, c in enumerate(charges)])

    killed = subprocess.run([sys.executable, "-c", _CRASHING_APPLY, str(home.home)], check=False)

    assert killed.returncode == 9
    assert sqlite_landing.watermark(WATERMARK) == 3, "the first batch finished, the second not"
    store = RawStore(home.raw_dir)
    assert [(f.first_seq, f.last_seq) for f in live_files(store, CHARGES, "site_a")] == [
        (1, 3),
        (4, 6),
    ], "the killed batch's file is on disk but not acknowledged"

    result = apply_landed_events(home, sqlite_landing)

    assert (result.first_seq, result.last_seq, result.events_applied) == (3, 7, 4)
    files = live_files(store, CHARGES, "site_a")
    assert [(f.first_seq, f.last_seq) for f in files] == [(1, 3), (4, 7)]
    with duckdb.connect() as con:
        stored = con.execute(
            "select id, count(*) from read_parquet($files) group by id order by id",
            {"files": [str(f.path) for f in files]},
        ).fetchall()
    assert stored == [(c["id"], 1) for c in charges], "every event's row is on disk exactly once"
    assert query(home, "select count(*), sum(amount) from raw.stripe_charges") == [
        (7, sum(c["amount"] for c in charges))
    ]


def test_small_live_files_are_merged_once_there_are_many(home, sqlite_landing):
    paid = [charge(f"ch_many_{i}", 100 * (i + 1)) for i in range(6)]
    for i, item in enumerate(paid):
        land(sqlite_landing, [event(item, "charge.succeeded", at(hours=i))])
        apply_landed_events(home, sqlite_landing, compact_after_files=3)
    # A later state of a merged charge still wins over the merged one.
    land(sqlite_landing, [event({**paid[0], "amount_refunded": 100}, "charge.refunded", at(2))])
    apply_landed_events(home, sqlite_landing, compact_after_files=3)

    files = live_files(RawStore(home.raw_dir), CHARGES, "site_a")
    assert len(files) <= 4
    assert min(f.first_seq for f in files) == 1 and max(f.last_seq for f in files) == 7
    assert query(
        home, "select count(*), sum(amount), sum(amount_refunded) from raw.stripe_charges"
    ) == [(6, sum(c["amount"] for c in paid), 100)]


def test_events_of_a_deleted_site_are_skipped_not_applied(home, sqlite_landing):
    land(sqlite_landing, [event(charge("ch_gone", 100), "charge.succeeded", at())], "site_a")
    SiteRegistry(home.registry).delete("site_a")

    result = apply_landed_events(home, sqlite_landing)

    assert result.skipped == {"no_site": 1}
    assert query(home, "select count(*) from raw.stripe_charges") == [(0,)]


def test_missed_events_are_caught_up_from_the_events_list_once(home, sqlite_landing, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    fixtures = FixtureFolder(tmp_path / "fixtures")
    account = ACCOUNTS["site_a"]
    recent = [charge(f"ch_missed_{i}", 700 + i, created=now - timedelta(hours=i)) for i in range(3)]
    events = [event(c, "charge.succeeded", now - timedelta(hours=i)) for i, c in enumerate(recent)]
    # Stripe lists a connected account's events without `account`.
    for item in events:
        item.pop("account")
    too_old = event(charge("ch_old", 1), "charge.succeeded", now - timedelta(days=4))
    ignored = event({"id": "pi_1", "object": "payment_intent"}, "payment_intent.created", now)
    for item in [*events, too_old, ignored]:
        fixtures.add(account, "events", item)
    # The receiver got one of them already.
    sqlite_landing.land({**events[0], "account": account}, site_id="site_a")
    site = SiteRegistry(home.registry).get("site_a")

    with running_sandbox(fixtures.write()) as sandbox:
        reader = StripeReader(
            api_key=sandbox.api_key,
            api_base=sandbox.api_base,
            rate_state_dir=str(home.locks_dir / "ratelimit"),
        ).for_account(account)
        since = now - timedelta(days=3)
        first = land_missed_events(reader, sqlite_landing, site, since)
        second = land_missed_events(reader, sqlite_landing, site, since)

    assert (first, second) == (2, 0)
    stored = sqlite_landing.read_after(0)
    assert sorted(e.event_id for e in stored) == sorted(e["id"] for e in events)
    assert {(e.site_id, e.account_id) for e in stored} == {("site_a", account)}
    assert {e.source for e in stored[1:]} == {"events_api"}

    apply_landed_events(home, sqlite_landing)
    assert sorted(query(home, "select id from raw.stripe_charges")) == sorted(
        (c["id"],) for c in recent
    )


def test_live_files_never_break_a_view_while_none_exist(home):
    # The views order by state_rank, which only live files carry; before any exists the
    # zero-row schema file supplies it.
    from trace_pipelines.resources.warehouse import ensure_raw_views

    ensure_raw_views(home)
    assert query(home, "select count(*), max(state_rank) from raw.stripe_charges") == [(0, None)]
