"""The raw Stripe assets run through Dagster against the local sandbox over real HTTP."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from tests.conftest import Ingestion, failure_message
from tests.stripe_fixtures import FixtureFolder, unix
from trace_pipelines.assets.stripe_tables import CHARGES
from trace_pipelines.resources.raw_store import RawStore
from trace_pipelines.sandbox.server import running_sandbox

MARCH, APRIL = date(2026, 3, 1), date(2026, 4, 1)
ACCT_A, ACCT_B = "acct_1TraceTestA", "acct_1TraceTestB"


@pytest.fixture
def fixtures(tmp_path: Path) -> FixtureFolder:
    return FixtureFolder(tmp_path / "stripe")


def ingestion_for(sandbox, trace_home, dagster_instance, **options) -> Ingestion:
    return Ingestion(trace_home, dagster_instance, sandbox.api_base, **options)


def test_lists_every_charge_across_page_boundaries(fixtures, trace_home, dagster_instance):
    expected = {fixtures.charge(ACCT_A, unix("2026-03-10T12:00:00") + i)["id"] for i in range(250)}
    with running_sandbox(fixtures.write()) as sandbox:
        ingestion = ingestion_for(sandbox, trace_home, dagster_instance)
        ingestion.connect("site_a", ACCT_A)
        result = ingestion.run("site_a", MARCH)
        charge_requests = [r for r in sandbox.requests() if r["endpoint"] == "/v1/charges"]

    assert result.success
    assert {row[0] for row in ingestion.query("select id from raw.stripe_charges")} == expected
    assert sum("starting_after" in r["query"] for r in charge_requests) >= 2
    metadata = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node(
        "stripe_raw_objects")}  # fmt: skip
    assert metadata["stripe_charges"]["dagster/row_count"].value == 250
    assert metadata["stripe_charges"]["api_requests"].value == len(charge_requests)
    assert metadata["stripe_charges"]["window_start"].value == "2026-03-01T00:00:00+00:00"


def test_a_charge_belongs_to_the_month_of_its_creation_second(
    fixtures, trace_home, dagster_instance
):
    last_second = fixtures.charge(ACCT_A, unix("2026-03-31T23:59:59"))
    first_second = fixtures.charge(ACCT_A, unix("2026-03-01T00:00:00"))
    april_midnight = fixtures.charge(ACCT_A, unix("2026-04-01T00:00:00"))
    fixtures.charge(ACCT_A, unix("2026-02-28T23:59:59"))
    with running_sandbox(fixtures.write()) as sandbox:
        ingestion = ingestion_for(sandbox, trace_home, dagster_instance)
        ingestion.connect("site_a", ACCT_A)
        assert ingestion.run("site_a", MARCH).success
        assert ingestion.run("site_a", APRIL).success

    rows = ingestion.query("select id, month from raw.stripe_charges order by id")
    assert sorted(rows) == sorted(
        [
            (last_second["id"], MARCH),
            (first_second["id"], MARCH),
            (april_midnight["id"], APRIL),
        ]
    )


def test_recovers_from_500s_and_429s(fixtures, trace_home, dagster_instance):
    charges = [fixtures.charge(ACCT_A, unix("2026-03-05T00:00:00") + i) for i in range(120)]
    with running_sandbox(fixtures.write()) as sandbox:
        ingestion = ingestion_for(sandbox, trace_home, dagster_instance)
        ingestion.connect("site_a", ACCT_A)
        sandbox.inject_fault(status=500, count=2, path_prefix="/v1/charges")
        sandbox.inject_fault(status=429, count=2, path_prefix="/v1/customers", retry_after=1)
        result = ingestion.run("site_a", MARCH)
        statuses = [r["status"] for r in sandbox.requests()]

    assert result.success, failure_message(result)
    assert statuses.count(500) == 2 and statuses.count(429) == 2
    assert ingestion.query("select count(*) from raw.stripe_charges") == [(len(charges),)]


def test_sends_only_get_requests(fixtures, trace_home, dagster_instance):
    customer = fixtures.customer(ACCT_A, unix("2026-03-02T00:00:00"), "a@example.com")
    subscription = fixtures.subscription(ACCT_A, unix("2026-03-02T00:00:00"), customer)
    fixtures.paid_invoice(ACCT_A, unix("2026-03-02T00:00:01"), subscription, "subscription_create")
    charge = fixtures.charge(ACCT_A, unix("2026-03-03T00:00:00"))
    fixtures.refund(ACCT_A, charge, 100, unix("2026-03-04T00:00:00"))
    fixtures.dispute(ACCT_A, charge, unix("2026-03-05T00:00:00"), "lost")
    fixtures.session(ACCT_A, unix("2026-03-03T00:00:00"), payment_intent=charge["payment_intent"])
    with running_sandbox(fixtures.write()) as sandbox:
        ingestion = ingestion_for(sandbox, trace_home, dagster_instance)
        ingestion.connect("site_a", ACCT_A)
        assert ingestion.run("site_a", MARCH).success
        methods = {r["method"] for r in sandbox.requests()}

    assert methods == {"GET"}


def test_rerunning_a_partition_replaces_exactly_its_rows(
    fixtures, trace_home, dagster_instance, tmp_path
):
    march = [fixtures.charge(ACCT_A, unix("2026-03-10T00:00:00") + i) for i in range(30)]
    fixtures.charge(ACCT_A, unix("2026-04-10T00:00:00"))
    with running_sandbox(fixtures.write()) as sandbox:
        ingestion = ingestion_for(sandbox, trace_home, dagster_instance)
        ingestion.connect("site_a", ACCT_A)
        assert ingestion.run("site_a", MARCH).success
        assert ingestion.run("site_a", APRIL).success
        assert ingestion.run("site_a", MARCH).success
    april_file = RawStore(trace_home.raw_dir).partition_file(CHARGES, "site_a", APRIL)
    april_written = april_file.stat().st_mtime_ns
    assert ingestion.query("select count(*), count(distinct id) from raw.stripe_charges") == [
        (31, 31)
    ]

    # Stripe's state moves on: a refund on one charge. The re-run must show it, once.
    fixtures.refund(ACCT_A, march[0], 250, unix("2026-03-20T00:00:00"))
    with running_sandbox(fixtures.write()) as sandbox:
        ingestion.api_base = sandbox.api_base
        assert ingestion.run("site_a", MARCH).success

    assert ingestion.query("select count(*), count(distinct id) from raw.stripe_charges") == [
        (31, 31)
    ]
    assert ingestion.query(
        f"select amount_refunded from raw.stripe_charges where id = '{march[0]['id']}'"
    ) == [(250,)]
    assert ingestion.query("select count(*) from raw.stripe_refunds") == [(1,)]
    assert april_file.stat().st_mtime_ns == april_written


def test_two_accounts_never_see_each_others_data(fixtures, trace_home, dagster_instance):
    ids_a = {fixtures.charge(ACCT_A, unix("2026-03-10T00:00:00") + i)["id"] for i in range(5)}
    ids_b = {fixtures.charge(ACCT_B, unix("2026-03-10T00:00:00") + i)["id"] for i in range(7)}
    with running_sandbox(fixtures.write()) as sandbox:
        ingestion = ingestion_for(sandbox, trace_home, dagster_instance)
        ingestion.connect("site_a", ACCT_A)
        ingestion.connect("site_b", ACCT_B)
        assert ingestion.run("site_a", MARCH).success
        assert ingestion.run("site_b", MARCH).success

    rows = ingestion.query("select site_id, id from raw.stripe_charges")
    assert {charge for site, charge in rows if site == "site_a"} == ids_a
    assert {charge for site, charge in rows if site == "site_b"} == ids_b


def test_keeps_every_refund_of_a_charge_with_more_than_100(fixtures, trace_home, dagster_instance):
    charge = fixtures.charge(ACCT_A, unix("2026-03-10T00:00:00"), amount=100_000)
    refunds = {
        fixtures.refund(ACCT_A, charge, 10, unix("2026-03-11T00:00:00") + i)["id"]
        for i in range(130)
    }
    with running_sandbox(fixtures.write()) as sandbox:
        ingestion = ingestion_for(sandbox, trace_home, dagster_instance)
        ingestion.connect("site_a", ACCT_A)
        assert ingestion.run("site_a", MARCH).success

    rows = ingestion.query("select id, charge_id, amount from raw.stripe_refunds")
    assert {row[0] for row in rows} == refunds
    assert {row[1] for row in rows} == {charge["id"]}
    assert sum(row[2] for row in rows) == 1300
    assert ingestion.query("select raw_json like '%\"refunds\"%' from raw.stripe_charges") == [
        (False,)
    ]


def test_fetches_objects_created_before_the_window_that_payments_refer_to(
    fixtures, trace_home, dagster_instance
):
    old_customer = fixtures.customer(ACCT_A, unix("2024-05-01T00:00:00"), "Loyal@Example.com")
    old_subscription = fixtures.subscription(ACCT_A, unix("2024-05-01T00:00:05"), old_customer)
    old_session = fixtures.session(
        ACCT_A,
        unix("2024-05-01T00:00:00"),
        mode="subscription",
        subscription=old_subscription["id"],
        customer=old_customer["id"],
        metadata={"trace_visitor_id": "v_loyal"},
    )
    invoice, _, renewal = fixtures.paid_invoice(
        ACCT_A, unix("2026-03-01T08:00:00"), old_subscription, "subscription_cycle"
    )
    with running_sandbox(fixtures.write()) as sandbox:
        ingestion = ingestion_for(sandbox, trace_home, dagster_instance)
        ingestion.connect("site_a", ACCT_A, backfill_start=MARCH)
        assert ingestion.run("site_a", MARCH).success

    assert ingestion.query("select id, email, is_referenced from raw.stripe_customers") == [
        (old_customer["id"], "Loyal@Example.com", True)
    ]
    assert ingestion.query("select id, is_referenced from raw.stripe_subscriptions") == [
        (old_subscription["id"], True)
    ]
    assert ingestion.query(
        "select id, subscription_id, trace_visitor_id from raw.stripe_checkout_sessions"
    ) == [(old_session["id"], old_subscription["id"], "v_loyal")]
    assert ingestion.query("select id, subscription_id, customer_id from raw.stripe_invoices") == [
        (invoice["id"], old_subscription["id"], old_customer["id"])
    ]
    assert ingestion.query(
        "select charge_id, payment_intent_id from raw.stripe_invoice_payments"
    ) == [(None, renewal["payment_intent"])]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown_site", "Unknown site 'site_x'"),
        ("wrong_key", "Stripe rejected the API key (HTTP 401)"),
        ("revoked_account", f"Stripe refused access to account {ACCT_A} (HTTP 403)"),
        ("unreachable", "Could not reach Stripe at http://127.0.0.1:9"),
    ],
)
def test_bad_input_fails_with_one_clear_message_and_no_partial_partition(
    case, expected, fixtures, trace_home, dagster_instance
):
    for i in range(150):
        fixtures.charge(ACCT_A, unix("2026-03-10T00:00:00") + i)
    with running_sandbox(fixtures.write()) as sandbox:
        ingestion = ingestion_for(sandbox, trace_home, dagster_instance, max_attempts=2)
        ingestion.connect("site_a", ACCT_A)
        assert ingestion.run("site_a", APRIL).success  # an earlier, healthy partition
        site = "site_a"
        if case == "unknown_site":
            site = "site_x"
            dagster_instance.add_dynamic_partitions("sites", [site])
        elif case == "wrong_key":
            ingestion.api_key = "sk_test_not_the_key"
        elif case == "revoked_account":
            sandbox.revoke(ACCT_A)
        elif case == "unreachable":
            ingestion.api_base = "http://127.0.0.1:9"
        result = ingestion.run(site, MARCH)

    assert not result.success
    message = failure_message(result)
    assert message.startswith(expected)
    assert "sk_test_" not in message
    store = RawStore(trace_home.raw_dir)
    assert not store.partition_file(CHARGES, site, MARCH).exists()
    assert not list(trace_home.raw_dir.rglob("*.tmp"))
    assert store.partition_file(CHARGES, "site_a", APRIL).exists()


def test_a_pre_window_subscription_is_looked_up_once_however_many_months_renew_it(
    fixtures, trace_home, dagster_instance
):
    customer = fixtures.customer(ACCT_A, unix("2024-05-01T00:00:00"), "loyal@example.com")
    subscription = fixtures.subscription(ACCT_A, unix("2024-05-01T00:00:05"), customer)
    session = fixtures.session(
        ACCT_A, unix("2024-05-01T00:00:00"), mode="subscription", subscription=subscription["id"]
    )
    for paid in ("2026-03-01T08:00:00", "2026-04-01T08:00:00"):
        fixtures.paid_invoice(ACCT_A, unix(paid), subscription, "subscription_cycle")
    with running_sandbox(fixtures.write()) as sandbox:
        ingestion = ingestion_for(sandbox, trace_home, dagster_instance)
        ingestion.connect("site_a", ACCT_A, backfill_start=MARCH)
        for month in (MARCH, APRIL, MARCH):
            assert ingestion.run("site_a", month).success
        lookups = [r for r in sandbox.requests() if "subscription=" in r["query"]]

    assert len(lookups) == 1
    assert ingestion.query("select id from raw.stripe_checkout_sessions") == [(session["id"],)]
