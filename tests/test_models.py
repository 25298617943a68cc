"""The SQL models, run for real: Stripe objects through the RawStore, CSVs through the Trace
input assets, every model materialized with its checks on a DuckDB file in tmp_path.

One shared refresh holds one small story per rule (each with its own customers and emails), and
the table of cases below asserts each story's rows to the cent. Separate refreshes cover what
must be seen on its own: a clean USD-only site where every check passes, a corrupted model the
checks must catch, and the factory's handling of new and broken files.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetCheckSeverity, AssetKey, Failure, materialize
from dagster_duckdb import DuckDBResource

from tests.model_cases import (
    ad_spend_csv,
    at,
    charge,
    check_outcomes,
    checkout_session,
    customer,
    dispute,
    identities_csv,
    inputs_env,
    invoice,
    invoice_payment,
    naive,
    query,
    query_dicts,
    refresh,
    refund,
    resources,
    subscription,
    touchpoints_csv,
    write_inputs,
)
from trace_pipelines.assets.sql_models import (
    MODELS_DIR,
    ModelDefinitionError,
    analytics_models_job,
    build_model_assets,
    model_assets,
)
from trace_pipelines.assets.stripe_tables import RAW_TABLES
from trace_pipelines.assets.trace_inputs import trace_input_assets
from trace_pipelines.resources.storage import TraceStorage

# ---------------------------------------------------------------------------------------------
# The shared story: one site per concern, a customer (or several) per rule.


def subscription_story(legacy: bool) -> list[dict[str, Any]]:
    """A subscription's first invoice, a renewal and a one-off, in either API shape.

    Basil: invoice payments link in_first (by PaymentIntent) and in_renew (by charge) to their
    charges. Legacy: in_first names its PaymentIntent, in_renew names its charge, and the
    renewal charge names its invoice.
    """
    objects = [
        customer("cus_sub", "sub@example.com"),
        subscription("sub_main", "cus_sub"),
        charge("ch_first", 2900, customer="cus_sub", payment_intent="pi_first"),
        charge(
            "ch_renew",
            2900,
            created=at(days=31),
            customer="cus_sub",
            payment_intent="pi_renew",
            invoice="in_renew" if legacy else None,
        ),
        charge("ch_oneoff", 1500, created=at(days=40), customer="cus_sub"),
        invoice(
            "in_first",
            2900,
            customer="cus_sub",
            billing_reason="subscription_create",
            subscription="sub_main",
            legacy=legacy,
            legacy_payment_intent="pi_first",
        ),
        invoice(
            "in_renew",
            2900,
            customer="cus_sub",
            billing_reason="subscription_cycle",
            created=at(days=31),
            subscription="sub_main",
            legacy=legacy,
            legacy_charge="ch_renew",
        ),
    ]
    if not legacy:
        objects += [
            invoice_payment("inpay_first", "in_first", 2900, payment_intent="pi_first"),
            invoice_payment("inpay_renew", "in_renew", 2900, charge_id="ch_renew"),
        ]
    return objects


SHARED_STRIPE: dict[str, list[dict[str, Any]]] = {
    "site_a": [
        # metadata on the charge
        customer("cus_meta", "meta@example.com"),
        charge("ch_meta", 5000, customer="cus_meta", visitor="v_meta"),
        # email: the customer object's email, lowercased and trimmed
        customer("cus_email", "  Email@Example.COM "),
        charge("ch_email", 3000, customer="cus_email"),
        # nothing to go on
        charge("ch_unattributed", 1200, email="nobody@example.com"),
        # several visitors share an email: the latest identified before the payment wins
        customer("cus_several", "several@example.com"),
        charge("ch_several", 4100, customer="cus_several"),
        # all identified after the payment: the earliest of them wins
        customer("cus_after", "after@example.com"),
        charge("ch_after", 4200, customer="cus_after"),
        # a visitor id only on the Checkout Session, reached through the PaymentIntent
        charge("ch_session_pi", 2500, email="pi@example.com", payment_intent="pi_session"),
        checkout_session("cs_pi", visitor="v_session_pi", payment_intent="pi_session"),
        # ... through the invoice the Session created
        customer("cus_session_invoice", None),
        charge("ch_session_invoice", 2600, customer="cus_session_invoice", payment_intent="pi_si"),
        invoice("in_session", 2600, customer="cus_session_invoice"),
        invoice_payment("inpay_session", "in_session", 2600, payment_intent="pi_si"),
        checkout_session("cs_invoice", visitor="v_session_invoice", invoice_id="in_session"),
        # ... through the subscription the Session created
        customer("cus_session_sub", None),
        subscription("sub_session", "cus_session_sub"),
        charge("ch_session_sub", 2700, customer="cus_session_sub", payment_intent="pi_ss"),
        invoice(
            "in_session_sub",
            2700,
            customer="cus_session_sub",
            billing_reason="subscription_create",
            subscription="sub_session",
        ),
        invoice_payment("inpay_session_sub", "in_session_sub", 2700, payment_intent="pi_ss"),
        checkout_session(
            "cs_sub", visitor="v_session_sub", mode="subscription", subscription_id="sub_session"
        ),
        # renewals inherit the first payment's attribution, even when they carry another one
        customer("cus_renew", "renew@example.com"),
        subscription("sub_renew", "cus_renew"),
        charge("ch_r1", 1000, customer="cus_renew", payment_intent="pi_r1", visitor="v_renew"),
        charge("ch_r2", 1000, created=at(days=31), customer="cus_renew", payment_intent="pi_r2"),
        charge(
            "ch_r3",
            1000,
            created=at(days=62),
            customer="cus_renew",
            payment_intent="pi_r3",
            visitor="v_someone_else",
        ),
        *[
            invoice(
                invoice_id,
                1000,
                customer="cus_renew",
                billing_reason=reason,
                created=at(days=days),
                subscription="sub_renew",
            )
            for invoice_id, reason, days in (
                ("in_r1", "subscription_create", 0),
                ("in_r2", "subscription_cycle", 31),
                ("in_r3", "subscription_update", 62),
            )
        ],
        invoice_payment("inpay_r1", "in_r1", 1000, payment_intent="pi_r1"),
        invoice_payment("inpay_r2", "in_r2", 1000, payment_intent="pi_r2", created=at(days=31)),
        invoice_payment("inpay_r3", "in_r3", 1000, payment_intent="pi_r3", created=at(days=62)),
        # refunds: partial, full, and one the charge row has not seen yet; failed ones ignored
        charge("ch_partial", 10000, email="partial@example.com", amount_refunded=2500),
        refund("re_partial", "ch_partial", 2500),
        refund("re_failed", "ch_partial", 5000, status="failed"),
        charge("ch_full", 4000, email="full@example.com", amount_refunded=4000),
        refund("re_full", "ch_full", 4000),
        charge("ch_stale", 3000, email="stale@example.com"),
        refund("re_stale", "ch_stale", 1000),
        # disputes: a won one takes nothing, a lost one takes its amount
        charge("ch_won", 6000, email="won@example.com"),
        dispute("dp_won", "ch_won", 6000, status="won"),
        charge("ch_lost", 7000, email="lost@example.com"),
        dispute("dp_lost", "ch_lost", 7000, status="lost"),
        # not revenue: failed, pending, uncaptured
        charge("ch_failed", 9100, email="failed@example.com", status="failed"),
        charge("ch_pending", 9200, email="pending@example.com", status="pending"),
        charge("ch_uncaptured", 9300, email="uncaptured@example.com", captured=False),
        # a paid invoice with no charge (paid out of band) counts once; a zero one never
        invoice("in_out_of_band", 1800, customer="cus_oob"),
        invoice("in_zero", 0, customer="cus_zero", billing_reason="subscription_create"),
        # EUR beside USD, for the same kind of customer
        customer("cus_eur", "eur@example.com"),
        charge("ch_eur", 9000, customer="cus_eur", currency="eur", visitor="v_eur"),
        # the same email on two sites
        charge("ch_shared_a", 1100, email="shared@example.com"),
    ],
    "site_b": [charge("ch_shared_b", 2200, email="Shared@example.com")],
    "site_basil": subscription_story(legacy=False),
    "site_legacy": subscription_story(legacy=True),
    # cohorts and channel performance
    "site_c": [
        charge("ch_c1_jan", 10000, created=at(days=-60), customer="cus_c1", visitor="v_c1"),
        charge("ch_c1_feb", 10000, created=at(days=-30), customer="cus_c1"),
        charge(
            "ch_c2_jan",
            5001,
            created=at(days=-59),
            customer="cus_c2",
            visitor="v_c2",
            amount_refunded=1000,
        ),
        charge("ch_c3_feb", 3000, created=at(days=-25), customer="cus_c3"),
    ],
}

SHARED_INPUTS = {
    "touchpoints.csv": touchpoints_csv(
        [
            ("site_a", "v_meta", at(days=-2), "Google", "CPC"),
            ("site_a", "v_email", at(days=-3), "facebook", "paid_social"),
            ("site_a", "v_email", at(days=-1), "google", "cpc"),
            ("site_a", "v_recent", at(days=-4), "twitter", "social"),
            ("site_a", "v_session_pi", at(hours=1), "newsletter", "email"),
            ("site_a", "v_renew", at(days=-1), "reddit", "post"),
            ("site_a", "v_someone_else", at(days=-1), "bing", "cpc"),
            ("site_a", "v_shared_a", at(days=-1), None, None),
            ("site_b", "v_shared_b", at(days=-1), "tiktok", "video"),
            ("site_c", "v_c1", at(days=-61), "google", "cpc"),
            ("site_c", "v_c2", at(days=-60), "google", "cpc"),
        ]
    ),
    "identities.csv": identities_csv(
        [
            ("site_a", "v_email", "email@example.com", at(days=-1)),
            ("site_a", "v_old", "several@example.com", at(days=-5)),
            ("site_a", "v_recent", "several@example.com", at(days=-1)),
            ("site_a", "v_soon_after", "several@example.com", at(hours=1)),
            ("site_a", "v_after_2", "after@example.com", at(days=2)),
            ("site_a", "v_after_1", "after@example.com", at(days=1)),
            ("site_a", "v_shared_a", "shared@example.com", at(days=-1)),
            ("site_b", "v_shared_b", "shared@example.com", at(days=-1)),
        ]
    ),
    "ad_spend.csv": ad_spend_csv(
        [
            ("site_c", "2026-01-05", "Google", "CPC", 6000, "usd"),
            ("site_c", "2026-01-06", "google", "cpc", 3001, "usd"),
            ("site_c", "2026-01-07", "google", "cpc", 1000, "EUR"),
            ("site_c", "2026-02-01", "bing", "cpc", 2000, "usd"),
        ]
    ),
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory):
    """The shared story refreshed once: (TRACE_HOME, the run's result)."""
    home = tmp_path_factory.mktemp("shared")
    return home, refresh(home, SHARED_STRIPE, SHARED_INPUTS)


def attributed_row(home: Path, site_id: str, revenue_id: str) -> dict[str, Any]:
    rows = query_dicts(
        home,
        "select * from analytics.attributed_revenue where site_id = ? and revenue_id = ?",
        [site_id, revenue_id],
    )
    assert len(rows) == 1, f"{site_id}/{revenue_id}: expected one row, found {len(rows)}"
    return rows[0]


# Each case: the row it names must hold exactly these values.
REVENUE_CASES = {
    "metadata_on_charge": (
        "site_a",
        "ch_meta",
        {"attribution_path": "metadata", "visitor_id": "v_meta", "channel": "google/cpc"},
    ),
    "email_of_customer_object_lowercased_and_trimmed": (
        "site_a",
        "ch_email",
        {
            "attribution_path": "email",
            "visitor_id": "v_email",
            "customer_email": "email@example.com",
            "channel": "facebook/paid_social",  # the earliest touchpoint, not the latest
        },
    ),
    "unattributed": (
        "site_a",
        "ch_unattributed",
        {
            "attribution_path": "unattributed",
            "visitor_id": None,
            "channel": "unattributed",
            "customer_key": "nobody@example.com",
        },
    ),
    "email_several_visitors_latest_before_payment_wins": (
        "site_a",
        "ch_several",
        {"attribution_path": "email", "visitor_id": "v_recent", "channel": "twitter/social"},
    ),
    "email_only_identified_after_earliest_wins_and_no_touchpoints_is_direct": (
        "site_a",
        "ch_after",
        {"attribution_path": "email", "visitor_id": "v_after_1", "channel": "direct/none"},
    ),
    "session_visitor_via_payment_intent_touchpoint_only_after_payment": (
        "site_a",
        "ch_session_pi",
        {
            "attribution_path": "metadata",
            "visitor_id": "v_session_pi",
            "channel": "newsletter/email",
        },
    ),
    "session_visitor_via_invoice": (
        "site_a",
        "in_session",
        {
            "attribution_path": "metadata",
            "visitor_id": "v_session_invoice",
            "charge_id": "ch_session_invoice",
            "kind": "one_off",
        },
    ),
    "session_visitor_via_subscription": (
        "site_a",
        "in_session_sub",
        {
            "attribution_path": "metadata",
            "visitor_id": "v_session_sub",
            "kind": "subscription_first",
            "subscription_id": "sub_session",
        },
    ),
    "renewal_first_payment": (
        "site_a",
        "in_r1",
        {"kind": "subscription_first", "visitor_id": "v_renew", "channel": "reddit/post"},
    ),
    "renewal_cycle_inherits": (
        "site_a",
        "in_r2",
        {
            "kind": "renewal",
            "charge_id": "ch_r2",
            "visitor_id": "v_renew",
            "attribution_path": "metadata",
            "channel": "reddit/post",
            "acquired_at": naive(at()),
            "cohort_month": date(2026, 3, 1),
        },
    ),
    "renewal_update_inherits_despite_own_metadata": (
        "site_a",
        "in_r3",
        {"kind": "renewal", "visitor_id": "v_renew", "channel": "reddit/post"},
    ),
    "partial_refund": (
        "site_a",
        "ch_partial",
        {"gross_amount": 10000, "refunded_amount": 2500, "net_amount": 7500},
    ),
    "full_refund": (
        "site_a",
        "ch_full",
        {"gross_amount": 4000, "refunded_amount": 4000, "net_amount": 0},
    ),
    "refund_the_charge_row_has_not_seen": (
        "site_a",
        "ch_stale",
        {"refunded_amount": 1000, "net_amount": 2000},
    ),
    "won_dispute_takes_nothing": (
        "site_a",
        "ch_won",
        {"disputed_amount": 0, "net_amount": 6000},
    ),
    "lost_dispute_takes_its_amount": (
        "site_a",
        "ch_lost",
        {"disputed_amount": 7000, "net_amount": 0},
    ),
    "paid_invoice_without_charge_counts_once": (
        "site_a",
        "in_out_of_band",
        {"charge_id": None, "invoice_id": "in_out_of_band", "gross_amount": 1800},
    ),
    "eur_keeps_its_currency": (
        "site_a",
        "ch_eur",
        {"currency": "eur", "net_amount": 9000, "attribution_path": "metadata"},
    ),
    "same_email_site_a": (
        "site_a",
        "ch_shared_a",
        {"visitor_id": "v_shared_a", "channel": "direct/none", "net_amount": 1100},
    ),
    "same_email_site_b": (
        "site_b",
        "ch_shared_b",
        {
            "visitor_id": "v_shared_b",
            "customer_key": "shared@example.com",
            "channel": "tiktok/video",
            "net_amount": 2200,
        },
    ),
    "basil_invoice_via_payment_intent": (
        "site_basil",
        "in_first",
        {"charge_id": "ch_first", "kind": "subscription_first", "subscription_id": "sub_main"},
    ),
    "legacy_invoice_via_invoice_payment_intent": (
        "site_legacy",
        "in_first",
        {"charge_id": "ch_first", "kind": "subscription_first", "subscription_id": "sub_main"},
    ),
}


@pytest.mark.parametrize(
    ("site_id", "revenue_id", "expected"),
    list(REVENUE_CASES.values()),
    ids=list(REVENUE_CASES),
)
def test_revenue_rule(shared, site_id: str, revenue_id: str, expected: dict[str, Any]) -> None:
    home, _ = shared
    row = attributed_row(home, site_id, revenue_id)
    assert {column: row[column] for column in expected} == expected


NOT_REVENUE = {
    "failed_charge": "ch_failed",
    "pending_charge": "ch_pending",
    "uncaptured_charge": "ch_uncaptured",
    "zero_amount_invoice": "in_zero",
}


@pytest.mark.parametrize("object_id", list(NOT_REVENUE.values()), ids=list(NOT_REVENUE))
def test_not_revenue(shared, object_id: str) -> None:
    home, _ = shared
    assert query(
        home,
        "select count(*) from analytics.revenue "
        "where ? in (revenue_id, coalesce(charge_id, ''), coalesce(invoice_id, ''))",
        [object_id],
    ) == [(0,)]


def test_invoice_and_its_charge_are_one_row(shared) -> None:
    home, _ = shared
    rows = query(
        home,
        "select revenue_id, invoice_id from analytics.revenue "
        "where site_id = 'site_a' and charge_id in ('ch_r1', 'ch_r2', 'ch_r3') order by 1",
    )
    assert rows == [("in_r1", "in_r1"), ("in_r2", "in_r2"), ("in_r3", "in_r3")]


def test_basil_and_legacy_invoice_shapes_give_identical_revenue(shared) -> None:
    home, _ = shared
    columns = "* exclude (site_id)"
    basil = query(
        home, f"select {columns} from analytics.revenue where site_id = 'site_basil' order by all"
    )
    legacy = query(
        home, f"select {columns} from analytics.revenue where site_id = 'site_legacy' order by all"
    )
    assert len(basil) == 3
    assert basil == legacy
    kinds = query(
        home,
        "select revenue_id, kind, charge_id from analytics.revenue "
        "where site_id = 'site_legacy' order by revenue_id",
    )
    assert kinds == [
        ("ch_oneoff", "one_off", "ch_oneoff"),
        ("in_first", "subscription_first", "ch_first"),
        ("in_renew", "renewal", "ch_renew"),
    ]


def test_currencies_are_never_added_together(shared) -> None:
    home, result = shared
    totals = dict(
        query(
            home,
            "select currency, sum(net_amount) from analytics.revenue "
            "where site_id = 'site_a' group by currency",
        )
    )
    assert totals["eur"] == 9000
    cohort_currencies = query(
        home,
        "select distinct currency from analytics.cohort_ltv "
        "where site_id = 'site_a' and channel = 'unattributed' order by 1",
    )
    assert cohort_currencies == [("usd",)]
    eur_cohort = query(
        home,
        "select cumulative_net_revenue, customers from analytics.cohort_ltv "
        "where site_id = 'site_a' and currency = 'eur' and months_since_acquisition = 0",
    )
    assert eur_cohort == [(9000, 1)]


@pytest.mark.parametrize(
    ("view", "source"),
    [
        ("revenue_usd", "revenue"),
        ("attributed_revenue_usd", "attributed_revenue"),
        ("cohort_ltv_usd", "cohort_ltv"),
        ("channel_performance_usd", "channel_performance"),
    ],
)
def test_usd_views_exclude_other_currencies_visibly(shared, view: str, source: str) -> None:
    home, result = shared
    [(non_usd_in_view,)] = query(
        home, f"select count(*) from analytics.{view} where currency != 'usd'"
    )
    [(usd_in_source,)] = query(
        home, f"select count(*) from analytics.{source} where currency = 'usd'"
    )
    [(left_out,)] = query(home, f"select count(*) from analytics.{source} where currency != 'usd'")
    [(in_view,)] = query(home, f"select count(*) from analytics.{view}")
    assert non_usd_in_view == 0 and in_view == usd_in_source and left_out > 0
    [event] = [
        event
        for event in result.get_asset_materialization_events()
        if event.asset_key == AssetKey(view)
    ]
    assert event.materialization.metadata["excluded_non_usd_rows"].value == left_out


def test_non_usd_revenue_warns(shared) -> None:
    _, result = shared
    outcome = check_outcomes(result)[("revenue", "usd_only")]
    assert not outcome.passed
    assert outcome.severity == AssetCheckSeverity.WARN
    assert "site_id=site_a, currency=eur, payments=1, net_amount_minor_units=9000" in (
        outcome.description
    )


def test_every_error_check_passes_on_the_shared_story(shared) -> None:
    _, result = shared
    outcomes = check_outcomes(result)
    assert len(outcomes) == len(model_assets.check_specs)
    failed = {key: o.description for key, o in outcomes.items() if not o.passed}
    assert failed.keys() == {("revenue", "usd_only")}


def test_attribution_path_shares_are_reported(shared) -> None:
    home, result = shared
    metadata = check_outcomes(result)[("attributed_revenue", "one_attribution_path")].metadata
    [(usd_net,)] = query(
        home, "select sum(net_amount) from analytics.revenue where currency = 'usd'"
    )
    [(email_net,)] = query(
        home,
        "select sum(net_amount) from analytics.attributed_revenue "
        "where currency = 'usd' and attribution_path = 'email'",
    )
    assert metadata["usd email share of net revenue"].value == pytest.approx(
        round(email_net / usd_net, 4)
    )
    assert {"usd metadata payments", "usd unattributed payments", "eur metadata payments"} <= set(
        metadata
    )


def months_since(month: date) -> int:
    today = date.today()
    return (today.year - month.year) * 12 + today.month - month.month


def test_cohort_ltv_curves(shared) -> None:
    home, _ = shared
    rows = query(
        home,
        "select cohort_month, channel, currency, months_since_acquisition, customers, "
        "net_revenue, cumulative_net_revenue, ltv_per_customer from analytics.cohort_ltv "
        "where site_id = 'site_c' order by all",
    )
    january, february = date(2026, 1, 1), date(2026, 2, 1)
    google = [row for row in rows if row[1] == "google/cpc"]
    unattributed = [row for row in rows if row[1] == "unattributed"]
    assert len(google) == months_since(january) + 1
    assert len(unattributed) == months_since(february) + 1
    # c1 paid 10000 in January and in February; c2 paid 5001 in January, 1000 refunded.
    # 14001 / 2 customers = 7000.5, rounded half away from zero.
    assert google[:3] == [
        (january, "google/cpc", "usd", 0, 2, 14001, 14001, 7001),
        (january, "google/cpc", "usd", 1, 2, 10000, 24001, 12001),
        (january, "google/cpc", "usd", 2, 2, 0, 24001, 12001),
    ]
    assert unattributed[0] == (february, "unattributed", "usd", 0, 1, 3000, 3000, 3000)


def test_channel_performance(shared) -> None:
    home, _ = shared
    rows = query(
        home,
        "select month, channel, currency, ad_spend, new_customers, first_month_net_revenue, "
        "cac, roas from analytics.channel_performance where site_id = 'site_c' order by all",
    )
    january, february = date(2026, 1, 1), date(2026, 2, 1)
    assert [(*row[:7], None if row[7] is None else str(row[7])) for row in rows] == [
        # spend but no EUR customers: the EUR spend stays in its own row
        (january, "google/cpc", "eur", 1000, 0, 0, None, "0.0000"),
        # 9001 / 2 = 4500.5 -> 4501; 14001 / 9001 = 1.55549...
        (january, "google/cpc", "usd", 9001, 2, 14001, 4501, "1.5555"),
        # spend with no customers
        (february, "bing/cpc", "usd", 2000, 0, 0, None, "0.0000"),
        # customers with no spend
        (february, "unattributed", "usd", 0, 1, 3000, 0, None),
    ]
    [(roas_type,)] = query(home, "select typeof(roas) from analytics.channel_performance limit 1")
    assert roas_type == "DECIMAL(18,4)"


def test_output_tables_have_the_contracted_columns(shared) -> None:
    home, _ = shared
    expected = {
        "revenue": "site_id revenue_id kind charge_id invoice_id subscription_id customer_key "
        "customer_email paid_at currency gross_amount refunded_amount disputed_amount net_amount",
        "attributed_revenue": "site_id revenue_id kind charge_id invoice_id subscription_id "
        "customer_key customer_email paid_at currency gross_amount refunded_amount "
        "disputed_amount net_amount visitor_id attribution_path channel acquired_at cohort_month",
        "cohort_ltv": "site_id cohort_month channel currency months_since_acquisition customers "
        "net_revenue cumulative_net_revenue ltv_per_customer",
        "channel_performance": "site_id month channel currency ad_spend new_customers "
        "first_month_net_revenue cac roas",
    }
    for table, columns in expected.items():
        found = query(
            home,
            "select column_name from information_schema.columns "
            "where table_schema = 'analytics' and table_name = ? order by ordinal_position",
            [table],
        )
        assert [name for (name,) in found] == columns.split(), table
    money = query(
        home,
        "select table_name, column_name, data_type from information_schema.columns "
        "where table_schema = 'analytics' and (column_name like '%amount' "
        "or column_name in ('net_revenue', 'cumulative_net_revenue', 'ltv_per_customer', "
        "'ad_spend', 'first_month_net_revenue', 'cac')) and data_type != 'BIGINT'",
    )
    assert money == []


def test_model_metadata_schema_row_count_and_lineage(shared) -> None:
    home, result = shared
    events = {e.asset_key: e.materialization for e in result.get_asset_materialization_events()}
    revenue = events[AssetKey("revenue")].metadata
    [(revenue_rows,)] = query(home, "select count(*) from analytics.revenue")
    assert revenue["dagster/row_count"].value == revenue_rows
    schema = revenue["dagster/column_schema"].schema
    assert [(c.name, c.type) for c in schema.columns][:3] == [
        ("site_id", "VARCHAR"),
        ("revenue_id", "VARCHAR"),
        ("kind", "VARCHAR"),
    ]

    def upstream(asset: str, column: str) -> set[tuple[str, str]]:
        lineage = events[AssetKey(asset)].metadata["dagster/column_lineage"].lineage
        return {
            (dep.asset_key.to_user_string(), dep.column_name)
            for dep in lineage.deps_by_column[column]
        }

    # Follow attributed_revenue.net_amount back to the raw Stripe fields, one model at a time.
    assert upstream("attributed_revenue", "net_amount") == {("revenue", "net_amount")}
    assert ("int_revenue_payments", "refunded_amount") in upstream("revenue", "net_amount")
    assert ("stg_succeeded_charges", "refunded_amount") in upstream(
        "int_revenue_payments", "refunded_amount"
    )
    assert upstream("stg_succeeded_charges", "refunded_amount") == {
        ("stripe_charges", "amount_refunded"),
        ("stripe_refunds", "amount"),
    }
    assert ("stripe_checkout_sessions", "trace_visitor_id") in upstream(
        "stg_checkout_sessions", "trace_visitor_id"
    )
    assert ("trace_touchpoints", "source") in upstream("int_customer_acquisitions", "channel")
    for event in events.values():
        if event.asset_key in model_assets.keys:
            lineage = event.metadata["dagster/column_lineage"].lineage
            columns = [c.name for c in event.metadata["dagster/column_schema"].schema.columns]
            assert set(lineage.deps_by_column) == set(columns), event.asset_key


# ---------------------------------------------------------------------------------------------
# Checks: all pass on a clean USD-only site, and catch a model that double counts.

CLEAN_STRIPE = {
    "site_clean": [
        customer("cus_1", "one@example.com"),
        charge("ch_1", 5000, customer="cus_1", visitor="v_1"),
        charge("ch_2", 2500, email="two@example.com", amount_refunded=500),
        refund("re_2", "ch_2", 500),
        # a renewal a month later, so an attribution that is not inherited shows
        invoice(
            "in_3", 1900, customer="cus_1", billing_reason="subscription_cycle", created=at(31)
        ),
        invoice_payment("inpay_3", "in_3", 1900, payment_intent="pi_3", created=at(31)),
        charge("ch_3", 1900, customer="cus_1", payment_intent="pi_3", created=at(31)),
    ]
}
CLEAN_INPUTS = {
    "touchpoints.csv": touchpoints_csv([("site_clean", "v_1", at(days=-1), "google", "cpc")]),
    "identities.csv": identities_csv([("site_clean", "v_2", "two@example.com", at(days=-1))]),
    "ad_spend.csv": ad_spend_csv([("site_clean", "2026-03-01", "google", "cpc", 700, "usd")]),
}


def test_every_check_passes_on_a_consistent_usd_dataset(tmp_path: Path) -> None:
    result = refresh(tmp_path, CLEAN_STRIPE, CLEAN_INPUTS)
    outcomes = check_outcomes(result)
    assert len(outcomes) == len(model_assets.check_specs)
    assert {key: o.description for key, o in outcomes.items() if not o.passed} == {}


CORRUPTIONS = {
    # the invoice row and its charge counted twice, as if deduplication were forgotten
    "duplicate_revenue_row": (
        "revenue.sql",
        "from intermediate.int_revenue_payments\n",
        "from (\n"
        "    select * from intermediate.int_revenue_payments\n"
        "    union all\n"
        "    select * from intermediate.int_revenue_payments where invoice_id is not null\n"
        ")\n",
        {
            ("revenue", "key_is_unique"),
            ("revenue", "charge_in_one_row"),
            ("revenue", "invoice_in_one_row"),
            ("revenue", "reconciles_with_raw_stripe"),
        },
    ),
    # refunds forgotten in net_amount
    "net_ignores_refunds": (
        "revenue.sql",
        "gross_amount - refunded_amount - disputed_amount as net_amount",
        "gross_amount - disputed_amount as net_amount",
        {("revenue", "amounts_add_up"), ("revenue", "reconciles_with_raw_stripe")},
    ),
    # renewals attributed on their own instead of inheriting
    "attribution_not_inherited": (
        "attributed_revenue.sql",
        "    acquisitions.acquired_at,",
        "    revenue.paid_at as acquired_at,",
        {("attributed_revenue", "customers_keep_first_attribution")},
    ),
}


@pytest.mark.parametrize(
    ("file_name", "old", "new", "expected_failures"),
    list(CORRUPTIONS.values()),
    ids=list(CORRUPTIONS),
)
def test_checks_catch_a_corrupt_model(
    tmp_path: Path, file_name: str, old: str, new: str, expected_failures: set
) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models_dir)
    sql = (models_dir / file_name).read_text()
    assert old in sql
    (models_dir / file_name).write_text(sql.replace(old, new))

    result = refresh(
        tmp_path / "home", CLEAN_STRIPE, CLEAN_INPUTS, models_dir=models_dir, raise_on_error=False
    )
    failed = {key for key, outcome in check_outcomes(result).items() if not outcome.passed}
    assert failed == expected_failures
    if ("revenue", "key_is_unique") in expected_failures:
        # a blocking grain check stops the models downstream of the broken table
        assert not result.success
        assert AssetKey("attributed_revenue") not in {
            e.asset_key for e in result.get_asset_materialization_events()
        }


def test_a_model_failing_at_run_time_stops_only_what_reads_it(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models_dir)
    sql = (models_dir / "stg_invoices.sql").read_text()
    # parses, but fails when DuckDB runs it
    (models_dir / "stg_invoices.sql").write_text(
        sql.replace("    amount_paid,\n", "    cast('not a number' as bigint) as amount_paid,\n")
    )

    result = refresh(
        tmp_path / "home", CLEAN_STRIPE, CLEAN_INPUTS, models_dir=models_dir, raise_on_error=False
    )

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert "stg_invoices.sql failed to build" in message
    assert "int_charge_invoices" in message  # named as not refreshed because of it
    built = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    # the models that do not read stg_invoices are still refreshed
    assert {"stg_succeeded_charges", "stg_customers", "stg_checkout_sessions"} <= built
    assert not built & {"stg_invoices", "int_charge_invoices", "revenue", "attributed_revenue"}


def test_materializing_one_model_builds_only_it(tmp_path: Path) -> None:
    refresh(tmp_path, CLEAN_STRIPE, CLEAN_INPUTS)
    [(before,)] = query(tmp_path, "select count(*) from analytics.cohort_ltv")

    result = materialize(
        [*trace_input_assets, model_assets],
        selection=[AssetKey("cohort_ltv")],
        resources=resources(tmp_path),
    )

    built = {e.asset_key for e in result.get_asset_materialization_events()}
    assert built == {AssetKey("cohort_ltv")}
    checks = {e.asset_check_key.name for e in result.get_asset_check_evaluations()}
    assert checks == {"key_is_unique", "matches_attributed_revenue"}
    assert query(tmp_path, "select count(*) from analytics.cohort_ltv") == [(before,)]


# ---------------------------------------------------------------------------------------------
# The factory: files become assets, references become dependencies.


def test_adding_a_file_adds_an_asset_with_its_dependencies(tmp_path: Path) -> None:
    shutil.copytree(MODELS_DIR, tmp_path / "models")
    (tmp_path / "models" / "int_refund_rates.sql").write_text(
        "-- One row per site and currency: the share of gross revenue refunded.\n"
        "-- key: site_id, currency\n"
        "with totals as (\n"
        "    select site_id, currency, sum(gross_amount) as gross,\n"
        "        sum(refunded_amount) as refunded\n"
        "    from analytics.revenue\n"
        "    group by all\n"
        ")\n"
        "select totals.*, sites.charges from totals\n"
        "join (select site_id, count(*) as charges from raw.stripe_charges group by all) as sites\n"
        "    using (site_id)\n"
        "cross join (select count(*) from trace.ad_spend)\n"
    )
    before = build_model_assets(MODELS_DIR).keys
    after = build_model_assets(tmp_path / "models")
    new = AssetKey("int_refund_rates")
    assert after.keys - before == {new}
    assert after.asset_deps[new] == {
        AssetKey("revenue"),
        AssetKey("stripe_charges"),
        AssetKey("trace_ad_spend"),
    }
    assert after.group_names_by_key[new] == "intermediate"
    assert after.descriptions_by_key[new].startswith("One row per site and currency")


def test_every_raw_reference_maps_to_the_raw_asset_of_that_name() -> None:
    deps = model_assets.dependency_keys - model_assets.keys
    raw = {AssetKey(table.name) for table in RAW_TABLES}
    trace = {a.key for a in trace_input_assets}
    assert deps <= raw | trace
    assert deps >= {AssetKey("stripe_charges"), AssetKey("stripe_invoice_payments")}
    assert model_assets.asset_deps[AssetKey("revenue")] == {AssetKey("int_revenue_payments")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("select 1 as x\n", "start the file with a `--` comment"),
        ("-- One row per thing.\nselect 1 as x\n", "add a `-- key:"),
        ("-- One row per thing.\n-- key: x\nselect x from charges\n", "qualify `charges`"),
        ("-- One row per thing.\n-- key: x\nselect x from raw.nope\n", "reads raw.nope"),
    ],
    ids=["no_description", "no_key", "unqualified_table", "unknown_table"],
)
def test_a_broken_model_file_is_refused_with_a_clear_message(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "broken.sql").write_text(text)
    with pytest.raises(ModelDefinitionError, match=message.replace("`", ".").replace("(", ".")):
        build_model_assets(tmp_path)


def test_models_refresh_while_partitions_are_missing_or_a_backfill_runs() -> None:
    for key in model_assets.keys:
        condition = repr(model_assets.automation_conditions_by_key[key])
        assert "label='any_deps_missing'" not in condition
        assert "label='any_deps_in_progress'" not in condition
        # still eager on new dependency data, and never two refreshes of one model at once
        assert "label='any_deps_updated'" in condition
        assert "RunInProgressAutomationCondition" in condition


def test_the_job_refreshes_inputs_and_models_with_their_checks() -> None:
    from dagster import Definitions

    defs = Definitions(
        assets=[*trace_input_assets, model_assets],
        jobs=[analytics_models_job],
        resources=resources(Path("/tmp/unused")),
    )
    job = defs.resolve_job_def("analytics_models")
    assert job.asset_layer.executable_asset_keys >= {
        *(a.key for a in trace_input_assets),
        *model_assets.keys,
    }
    checks = {key.name for key in job.asset_layer.asset_graph.asset_check_keys}
    assert {"reconciles_with_raw_stripe", "usd_only", "one_attribution_path"} <= checks


# ---------------------------------------------------------------------------------------------
# Trace inputs


def materialize_inputs(home: Path, folder: Path | None):
    with inputs_env(folder):
        return materialize(trace_input_assets, resources=resources(home), raise_on_error=False)


def test_inputs_unset_creates_empty_tables(tmp_path: Path) -> None:
    result = materialize_inputs(tmp_path, None)
    assert result.success
    for table in ("touchpoints", "identities", "ad_spend"):
        assert query(tmp_path, f"select count(*) from trace.{table}") == [(0,)]
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert "TRACE_INPUTS_DIR is unset" in metadata["source"].value


def test_inputs_are_typed_and_normalized(tmp_path: Path) -> None:
    folder = write_inputs(
        tmp_path / "inputs",
        {
            "touchpoints.csv": "site_id,visitor_id,occurred_at,source,medium,campaign,extra\n"
            "s,v,2026-03-04T10:15:00+01:00,google,cpc,,ignored\n",
            "identities.csv": "site_id,visitor_id,email,identified_at\n"
            "s,v, Ana@Example.COM ,2026-03-04T23:30:00-05:00\n",
            "ad_spend.csv": "site_id,date,source,medium,campaign,amount,currency\n"
            "s,2026-03-04,google,cpc,spring,1250,USD\n",
        },
    )
    assert materialize_inputs(tmp_path, folder).success
    assert query(tmp_path, "select occurred_at::varchar, campaign from trace.touchpoints") == [
        ("2026-03-04 09:15:00", None)
    ]
    assert query(tmp_path, "select email, identified_at::varchar from trace.identities") == [
        ("ana@example.com", "2026-03-05 04:30:00")
    ]
    assert query(tmp_path, "select amount, typeof(amount), currency from trace.ad_spend") == [
        (1250, "BIGINT", "usd")
    ]


GOOD_SPEND = "site_id,date,source,medium,campaign,amount,currency\ns,2026-03-04,g,cpc,,100,usd\n"

BAD_INPUTS = {
    "non_integer_amount": (
        "ad_spend.csv",
        GOOD_SPEND + "s,2026-03-05,g,cpc,,12.50,usd\n",
        'ad_spend.csv line 3: amount is "12.50"; write a whole number of minor units',
    ),
    "unparseable_timestamp": (
        "touchpoints.csv",
        "site_id,visitor_id,occurred_at,source,medium,campaign\ns,v,yesterday,g,cpc,\n",
        'touchpoints.csv line 2: occurred_at is "yesterday"; write an ISO-8601 time',
    ),
    "timestamp_without_offset": (
        "identities.csv",
        "site_id,visitor_id,email,identified_at\ns,v,a@b.c,2026-03-04T10:15:00\n",
        'identities.csv line 2: identified_at is "2026-03-04T10:15:00"',
    ),
    "missing_column": (
        "ad_spend.csv",
        "site_id,date,source,medium,campaign,amount\ns,2026-03-04,g,cpc,,100\n",
        "ad_spend.csv line 1 lacks the column(s) currency; add them",
    ),
    "missing_file": ("ad_spend.csv", None, "ad_spend.csv is missing; add ad_spend.csv"),
    "ragged_row": (
        "ad_spend.csv",
        GOOD_SPEND + "s,2026-03-05,g\n",
        "ad_spend.csv line 3 cannot be read as CSV",
    ),
}


@pytest.mark.parametrize(
    ("file_name", "text", "message"), list(BAD_INPUTS.values()), ids=list(BAD_INPUTS)
)
def test_a_bad_input_fails_clearly_and_writes_nothing(
    tmp_path: Path, file_name: str, text: str | None, message: str
) -> None:
    good = {
        "touchpoints.csv": "site_id,visitor_id,occurred_at,source,medium,campaign\n"
        "s,v,2026-03-04T10:15:00Z,g,cpc,\n",
        "identities.csv": "site_id,visitor_id,email,identified_at\n"
        "s,v,a@b.c,2026-03-04T10:15:00Z\n",
        "ad_spend.csv": GOOD_SPEND,
    }
    folder = write_inputs(tmp_path / "inputs", good)
    assert materialize_inputs(tmp_path, folder).success
    table = file_name.removesuffix(".csv")
    before = query(tmp_path, f"select * from trace.{table}")

    if text is None:
        (folder / file_name).unlink()
    else:
        (folder / file_name).write_text(text)
    with inputs_env(folder), pytest.raises(Failure) as raised:
        materialize(
            [a for a in trace_input_assets if a.key == AssetKey(f"trace_{table}")],
            resources=resources(tmp_path),
        )
    assert message in raised.value.description
    assert str(folder / file_name) in raised.value.description
    assert query(tmp_path, f"select * from trace.{table}") == before


def test_misconfigured_duckdb_resource_is_refused(tmp_path: Path) -> None:
    with inputs_env(None), pytest.raises(Failure, match="set DuckDBResource"):
        materialize(
            trace_input_assets[:1],
            resources={
                "trace_storage": TraceStorage(home=str(tmp_path)),
                "duckdb": DuckDBResource(database=str(tmp_path / "other.duckdb")),
            },
        )
