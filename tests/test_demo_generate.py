"""Tests of the demo store generator: determinism, Stripe shapes, integrity and scenario mix.

One small store (60 customers a site, both sites) is generated once for the module and read
by most tests; determinism and scaling generate their own. Every scenario the revenue
pipeline depends on has its own test, so a generator change that drops one fails by name.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from trace_pipelines.demo import DemoSummary, generate_demo_store
from trace_pipelines.demo.generate import default_now
from trace_pipelines.sandbox.store import load_fixtures

SHAPES_FILE = Path("/work/shared/stripe/object-shapes.json")
NOW = datetime(2026, 11, 15, 10, 0, tzinfo=UTC)
SMALL = 60

FILE_TYPES = {
    "charges": "charge",
    "refunds": "refund",
    "disputes": "dispute",
    "invoices": "invoice",
    "invoice_payments": "invoice_payment",
    "customers": "customer",
    "subscriptions": "subscription",
    "checkout_sessions": "checkout.session",
    "events": "event",
    "account": "account",
}
ID_PREFIXES = {
    "charges": ("ch_", "py_"),
    "refunds": ("re_", "pyr_"),
    "disputes": ("dp_",),
    "invoices": ("in_",),
    "invoice_payments": ("inpay_",),
    "customers": ("cus_",),
    "subscriptions": ("sub_",),
    "checkout_sessions": ("cs_",),
    "events": ("evt_",),
    "account": ("acct_",),
}
# Fields of Stripe's example objects the store leaves out on purpose: a charge's refunds are
# listed in refunds.json instead of being embedded.
LEFT_OUT = {"charge": {"refunds"}}
EVENT_TYPES = {
    "charge.succeeded",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
    "invoice.paid",
    "invoice_payment.paid",
    "customer.created",
    "customer.subscription.created",
    "checkout.session.completed",
}
LEGACY_INVOICE_FIELDS = ("charge", "subscription", "payment_intent")


def load_site(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Every fixture file of one account folder, parsed; the lone account as a list of one."""
    site = {name: json.loads((folder / f"{name}.json").read_text()) for name in FILE_TYPES}
    site["account"] = [site["account"]]
    return site


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def norm(email: str | None) -> str | None:
    return email.strip().lower() if email else None


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> DemoSummary:
    return generate_demo_store(tmp_path_factory.mktemp("demo"), customers=SMALL, now=NOW)


@pytest.fixture(scope="module")
def sites(store: DemoSummary) -> dict[str, dict[str, list[dict[str, Any]]]]:
    return {s.site_id: load_site(store.stripe_dir / s.stripe_account_id) for s in store.sites}


@pytest.fixture(scope="module")
def identities(store: DemoSummary) -> list[dict[str, str]]:
    return read_csv(store.trace_dir / "identities.csv")[1]


@pytest.fixture(scope="module")
def shapes() -> dict[str, dict[str, Any]]:
    return json.loads(SHAPES_FILE.read_text())["resources"]


def all_files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# -- determinism and size ----------------------------------------------------------------


def test_same_parameters_write_byte_identical_stores(tmp_path: Path) -> None:
    generate_demo_store(tmp_path / "one", customers=30, now=NOW)
    generate_demo_store(tmp_path / "two", customers=30, now=NOW)
    one, two = all_files(tmp_path / "one"), all_files(tmp_path / "two")
    assert len(one) == 2 * 10 + 4
    assert one == two


def test_a_different_seed_writes_a_different_store(tmp_path: Path) -> None:
    first = generate_demo_store(tmp_path / "one", customers=30, now=NOW, seed=1)
    second = generate_demo_store(tmp_path / "two", customers=30, now=NOW, seed=2)
    assert first.sites[0].stripe_account_id != second.sites[0].stripe_account_id
    charges = [
        (s.stripe_dir / s.sites[0].stripe_account_id / "charges.json").read_bytes()
        for s in (first, second)
    ]
    assert charges[0] != charges[1]


def test_a_second_run_replaces_the_previous_store(tmp_path: Path) -> None:
    generate_demo_store(tmp_path, customers=30, now=NOW, seed=1)
    summary = generate_demo_store(tmp_path, customers=30, now=NOW, seed=2, sites=1)
    accounts = sorted(p.name for p in (tmp_path / "stripe").iterdir())
    assert accounts == [summary.sites[0].stripe_account_id]
    assert not (tmp_path / ".demo-build").exists()


def test_charge_count_grows_with_customers_at_about_7_5_each(tmp_path: Path) -> None:
    counts = []
    for customers in (40, 160):
        summary = generate_demo_store(
            tmp_path / str(customers), customers=customers, now=NOW, sites=1
        )
        counts.append(summary.total("charges"))
        assert 6.5 * customers <= summary.total("charges") <= 8.5 * customers
    assert counts[1] > 3 * counts[0]


def test_one_site_writes_only_site_a(tmp_path: Path) -> None:
    summary = generate_demo_store(tmp_path, customers=30, now=NOW, sites=1)
    assert [s.site_id for s in summary.sites] == ["site_a"]
    rows = read_csv(tmp_path / "trace" / "sites.csv")[1]
    assert [r["site_id"] for r in rows] == ["site_a"]


def test_default_now_is_this_hour_in_utc() -> None:
    now = default_now()
    assert now.tzinfo is UTC and now.minute == now.second == now.microsecond == 0
    assert datetime.now(UTC) - now < timedelta(hours=1, minutes=1)


def test_invalid_parameters_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="customers"):
        generate_demo_store(tmp_path, customers=5, now=NOW)
    with pytest.raises(ValueError, match="sites"):
        generate_demo_store(tmp_path, customers=30, now=NOW, sites=3)


# -- shapes and ids ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FILE_TYPES))
def test_objects_carry_every_top_level_field_of_stripes_example(
    name: str, sites: dict[str, Any], shapes: dict[str, Any]
) -> None:
    kind = FILE_TYPES[name]
    expected = set(shapes[kind]) - LEFT_OUT.get(kind, set())
    for site in sites.values():
        assert site[name], f"{name} is empty"
        for obj in site[name]:
            missing = expected - set(obj)
            assert not missing, f"{obj['id']} lacks {sorted(missing)}"
            assert obj["object"] == kind
            assert obj.get("livemode", False) is False
            assert isinstance(obj["created"], int)


def test_charges_and_invoices_do_not_embed_refunds_or_payments(sites: dict[str, Any]) -> None:
    for site in sites.values():
        assert all("refunds" not in c for c in site["charges"])
        assert all("payments" not in i for i in site["invoices"])


def test_ids_have_their_prefix_and_are_unique_across_the_store(sites: dict[str, Any]) -> None:
    seen: Counter[str] = Counter()
    for site in sites.values():
        for name, prefixes in ID_PREFIXES.items():
            for obj in site[name]:
                assert obj["id"].startswith(prefixes), obj["id"]
                seen[obj["id"]] += 1
        intents = [c["payment_intent"] for c in site["charges"]]
        assert all(pi.startswith("pi_") for pi in intents)
        seen.update(intents)
    assert [i for i, n in seen.items() if n > 1] == []


def test_account_folders_are_named_by_account_id(store: DemoSummary) -> None:
    for site in store.sites:
        assert len(site.stripe_account_id) == len("acct_") + 16
        assert site.stripe_account_id[5:].isalnum()
        path = store.stripe_dir / site.stripe_account_id / "account.json"
        account = json.loads(path.read_text())
        assert isinstance(account, dict), "account.json holds one object, as GET /v1/account"
        assert account["id"] == site.stripe_account_id
        assert account["default_currency"] == "usd"
        assert account["business_profile"]["url"] == f"https://{site.domain}"


def test_the_sandbox_loads_the_fixtures(store: DemoSummary) -> None:
    # The fixtures exist for the local Stripe sandbox; its loader rejects unknown files,
    # non-arrays and objects without id or created, so loading proves the format.
    loaded = load_fixtures(store.stripe_dir)
    for site in store.sites:
        account = loaded.accounts[site.stripe_account_id]
        assert account.profile["id"] == site.stripe_account_id
        for name, collection in account.collections.items():
            assert len(collection.objects) == site.counts[name], name


def test_files_list_newest_first(sites: dict[str, Any]) -> None:
    for site in sites.values():
        for name, objects in site.items():
            created = [o["created"] for o in objects]
            assert created == sorted(created, reverse=True), name


# -- referential integrity -----------------------------------------------------------------


def test_refunds_and_disputes_point_at_existing_charges(sites: dict[str, Any]) -> None:
    for site in sites.values():
        charges = {c["id"]: c for c in site["charges"]}
        for refund in site["refunds"]:
            charge = charges[refund["charge"]]
            assert refund["created"] >= charge["created"]
            assert refund["payment_intent"] == charge["payment_intent"]
        for dispute in site["disputes"]:
            assert charges[dispute["charge"]]["disputed"] is True


def test_refunded_amounts_add_up_on_the_charge(sites: dict[str, Any]) -> None:
    for site in sites.values():
        returned: Counter[str] = Counter()
        for refund in site["refunds"]:
            returned[refund["charge"]] += refund["amount"]
        for charge in site["charges"]:
            assert charge["amount_refunded"] == returned[charge["id"]]
            assert charge["refunded"] == (charge["amount_refunded"] == charge["amount"])


def test_disputed_flag_matches_the_disputes(sites: dict[str, Any]) -> None:
    for site in sites.values():
        disputed = {d["charge"] for d in site["disputes"]}
        assert {c["id"] for c in site["charges"] if c["disputed"]} == disputed


def test_each_paid_invoice_has_one_payment_and_one_charge(sites: dict[str, Any]) -> None:
    for site in sites.values():
        invoices = {i["id"]: i for i in site["invoices"]}
        charges_by_pi = defaultdict(list)
        for charge in site["charges"]:
            charges_by_pi[charge["payment_intent"]].append(charge)
        payments_by_invoice = defaultdict(list)
        for payment in site["invoice_payments"]:
            assert payment["invoice"] in invoices
            assert payment["payment"]["type"] == "payment_intent"
            payments_by_invoice[payment["invoice"]].append(payment)
        for invoice in invoices.values():
            assert invoice["status"] == "paid"
            (payment,) = payments_by_invoice[invoice["id"]]
            (charge,) = charges_by_pi[payment["payment"]["payment_intent"]]
            assert charge["amount"] == invoice["amount_paid"] == payment["amount_paid"]
            assert charge["customer"] == invoice["customer"]
            assert charge["description"].startswith("Subscription ")


def test_invoices_name_their_subscription_only_under_parent(sites: dict[str, Any]) -> None:
    for site in sites.values():
        subscriptions = {s["id"] for s in site["subscriptions"]}
        for invoice in site["invoices"]:
            assert invoice["parent"]["type"] == "subscription_details"
            assert invoice["parent"]["subscription_details"]["subscription"] in subscriptions
            assert invoice["subscription"] is None
            assert "charge" not in invoice and "payment_intent" not in invoice
            assert len(invoice["lines"]["data"]) == 1
            assert invoice["status_transitions"]["paid_at"] >= invoice["created"]
        assert all("invoice" not in c for c in site["charges"])


def test_sessions_point_at_existing_payments_and_subscriptions(sites: dict[str, Any]) -> None:
    for site in sites.values():
        intents = {c["payment_intent"] for c in site["charges"]}
        subscriptions = {s["id"] for s in site["subscriptions"]}
        invoices = {i["id"] for i in site["invoices"]}
        customers = {c["id"] for c in site["customers"]}
        for session in site["checkout_sessions"]:
            if session["mode"] == "payment":
                assert session["payment_intent"] in intents
            else:
                assert session["mode"] == "subscription"
                assert session["subscription"] in subscriptions
                assert session["invoice"] in invoices
            assert session["customer"] is None or session["customer"] in customers


def test_charges_subscriptions_and_invoices_name_existing_customers(
    sites: dict[str, Any],
) -> None:
    for site in sites.values():
        customers = {c["id"] for c in site["customers"]}
        for name in ("charges", "subscriptions", "invoices"):
            for obj in site[name]:
                assert obj["customer"] is None or obj["customer"] in customers


def test_subscription_invoices_bill_in_order(sites: dict[str, Any]) -> None:
    for site in sites.values():
        by_subscription = defaultdict(list)
        for invoice in site["invoices"]:
            sub = invoice["parent"]["subscription_details"]["subscription"]
            by_subscription[sub].append(invoice)
        for subscription in site["subscriptions"]:
            invoices = sorted(by_subscription[subscription["id"]], key=lambda i: i["created"])
            reasons = [i["billing_reason"] for i in invoices]
            assert reasons[0] == "subscription_create"
            assert set(reasons[1:]) <= {"subscription_cycle", "subscription_update"}
            assert subscription["latest_invoice"] == invoices[-1]["id"]


def test_nothing_happens_after_now(store: DemoSummary, sites: dict[str, Any]) -> None:
    now = int(NOW.timestamp())
    for site in sites.values():
        for objects in site.values():
            assert all(o["created"] <= now for o in objects)


# -- the scenario mix ----------------------------------------------------------------------


def _charges_by_pi(site: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["payment_intent"]: c for c in site["charges"]}


def _session_only_visitor(site: dict[str, Any], **_: Any) -> bool:
    charges = _charges_by_pi(site)
    return any(
        s["mode"] == "payment"
        and s["metadata"].get("trace_visitor_id")
        and charges[s["payment_intent"]]["metadata"] == {}
        for s in site["checkout_sessions"]
    )


def _charge_metadata_visitor(site: dict[str, Any], **_: Any) -> bool:
    return any(c["metadata"].get("trace_visitor_id") for c in site["charges"])


def _charge_metadata_visitor_with_untagged_session(site: dict[str, Any], **_: Any) -> bool:
    charges = _charges_by_pi(site)
    return any(
        s["mode"] == "payment"
        and "trace_visitor_id" not in s["metadata"]
        and charges[s["payment_intent"]]["metadata"].get("trace_visitor_id")
        for s in site["checkout_sessions"]
    )


def _invoice_metadata_visitor_only(site: dict[str, Any], **_: Any) -> bool:
    subscriptions = {s["id"]: s for s in site["subscriptions"]}
    sessions = {s["subscription"]: s for s in site["checkout_sessions"] if s["subscription"]}
    for invoice in site["invoices"]:
        sub = invoice["parent"]["subscription_details"]["subscription"]
        if (
            invoice["metadata"].get("trace_visitor_id")
            and not subscriptions[sub]["metadata"]
            and not sessions[sub]["metadata"]
        ):
            return True
    return False


def _guest_email_only(site: dict[str, Any], **_: Any) -> bool:
    return any(
        c["customer"] is None
        and c["metadata"] == {}
        and (c["billing_details"]["email"] or c["receipt_email"])
        for c in site["charges"]
    )


def _guest_with_receipt_email_only(site: dict[str, Any], **_: Any) -> bool:
    return any(
        c["customer"] is None and c["billing_details"]["email"] is None and c["receipt_email"]
        for c in site["charges"]
    )


def _stripe_emails(site: dict[str, Any]) -> set[str]:
    emails = {c["email"] for c in site["customers"]}
    for charge in site["charges"]:
        emails |= {charge["billing_details"]["email"], charge["receipt_email"]}
    return emails - {None}


def _email_differs_in_case_or_spaces_on_stripe(
    site: dict[str, Any], identities: list[dict[str, str]], **_: Any
) -> bool:
    raw = {r["email"] for r in identities}
    normalised = {norm(e) for e in raw}
    return any(e not in raw and norm(e) in normalised for e in _stripe_emails(site))


def _email_differs_in_case_or_spaces_in_identities(
    site: dict[str, Any], identities: list[dict[str, str]], **_: Any
) -> bool:
    stripe = _stripe_emails(site)
    return any(
        r["email"] not in stripe and norm(r["email"]) in {norm(e) for e in stripe}
        for r in identities
    )


def _shared_email(
    site: dict[str, Any], identities: list[dict[str, str]], site_id: str, **_: Any
) -> bool:
    moments = defaultdict(set)
    for row in identities:
        if row["site_id"] == site_id:
            moments[norm(row["email"])].add((row["visitor_id"], row["identified_at"]))
    return any(
        len({v for v, _ in pairs}) >= 2 and len({t for _, t in pairs}) >= 2
        for pairs in moments.values()
    )


def _unattributed(site: dict[str, Any], identities: list[dict[str, str]], **_: Any) -> bool:
    known = {norm(r["email"]) for r in identities}
    tagged_customers = {
        o["customer"]
        for name in ("charges", "checkout_sessions", "subscriptions", "invoices")
        for o in site[name]
        if o["metadata"].get("trace_visitor_id")
    }
    return any(
        norm(c["email"]) not in known and c["id"] not in tagged_customers for c in site["customers"]
    )


def _pre_window_subscriber(site: dict[str, Any], window_start: int, **_: Any) -> bool:
    renewed = {
        i["parent"]["subscription_details"]["subscription"]
        for i in site["invoices"]
        if i["created"] >= window_start and i["billing_reason"] == "subscription_cycle"
    }
    customers = {c["id"]: c for c in site["customers"]}
    sessions = {s["subscription"]: s for s in site["checkout_sessions"] if s["subscription"]}
    return any(
        s["created"] < window_start
        and s["id"] in renewed
        and customers[s["customer"]]["created"] < window_start
        and sessions[s["id"]]["created"] < window_start
        for s in site["subscriptions"]
    )


def _subscription_session_with_visitor(site: dict[str, Any], **_: Any) -> bool:
    return any(
        s["mode"] == "subscription" and s["metadata"].get("trace_visitor_id")
        for s in site["checkout_sessions"]
    )


def _subscription_update_invoice(site: dict[str, Any], **_: Any) -> bool:
    return any(i["billing_reason"] == "subscription_update" for i in site["invoices"])


def _canceled_subscription(site: dict[str, Any], **_: Any) -> bool:
    return any(
        s["status"] == "canceled" and s["canceled_at"] and s["ended_at"]
        for s in site["subscriptions"]
    )


def _partial_refund(site: dict[str, Any], **_: Any) -> bool:
    return any(
        0 < c["amount_refunded"] < c["amount"] and not c["refunded"] for c in site["charges"]
    )


def _full_refund(site: dict[str, Any], **_: Any) -> bool:
    return any(c["refunded"] and c["amount_refunded"] == c["amount"] for c in site["charges"])


def _multi_refund(site: dict[str, Any], **_: Any) -> bool:
    return max(Counter(r["charge"] for r in site["refunds"]).values()) >= 2


def _dispute(status: str) -> Any:
    def check(site: dict[str, Any], **_: Any) -> bool:
        return any(d["status"] == status for d in site["disputes"])

    return check


def _failed(site: dict[str, Any], **_: Any) -> bool:
    return any(
        c["status"] == "failed" and not c["paid"] and not c["captured"] and c["failure_code"]
        for c in site["charges"]
    )


def _uncaptured(site: dict[str, Any], **_: Any) -> bool:
    return any(
        c["status"] == "succeeded" and not c["captured"] and c["amount_captured"] == 0
        for c in site["charges"]
    )


def _eur_beside_usd(site: dict[str, Any], **_: Any) -> bool:
    currencies = Counter(c["currency"] for c in site["charges"])
    # About 3% at full size; a 60-customer store has one or two euro buyers, so allow more.
    return 0 < currencies["eur"] < 0.25 * sum(currencies.values())


SCENARIOS = {
    "session-only visitor id": _session_only_visitor,
    "charge-metadata visitor id": _charge_metadata_visitor,
    "charge-metadata visitor id behind an untagged session": (
        _charge_metadata_visitor_with_untagged_session
    ),
    "invoice-metadata visitor id only": _invoice_metadata_visitor_only,
    "guest with only an email": _guest_email_only,
    "guest with only a receipt email": _guest_with_receipt_email_only,
    "Stripe email differing in case or spaces": _email_differs_in_case_or_spaces_on_stripe,
    "identity email differing in case or spaces": (_email_differs_in_case_or_spaces_in_identities),
    "email shared by two visitors": _shared_email,
    "unattributed customer": _unattributed,
    "pre-window subscriber renewing in the window": _pre_window_subscriber,
    "subscription session with visitor id": _subscription_session_with_visitor,
    "subscription_update invoice": _subscription_update_invoice,
    "canceled subscription": _canceled_subscription,
    "partial refund": _partial_refund,
    "full refund": _full_refund,
    "charge with several refunds": _multi_refund,
    "won dispute": _dispute("won"),
    "lost dispute": _dispute("lost"),
    "failed charge": _failed,
    "uncaptured charge": _uncaptured,
    "EUR charges beside USD": _eur_beside_usd,
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_site_contains_the_scenario(
    scenario: str,
    store: DemoSummary,
    sites: dict[str, Any],
    identities: list[dict[str, str]],
) -> None:
    window_start = int(store.window_start.timestamp())
    for site_id, site in sites.items():
        site_identities = [r for r in identities if r["site_id"] == site_id]
        assert SCENARIOS[scenario](
            site,
            identities=site_identities,
            site_id=site_id,
            window_start=window_start,
        ), f"{site_id} has no {scenario}"


def test_charges_spread_over_the_window_and_grow(store: DemoSummary, sites: dict[str, Any]) -> None:
    window_start = store.window_start
    for site in sites.values():
        months = Counter(
            datetime.fromtimestamp(c["created"], UTC).strftime("%Y-%m")
            for c in site["charges"]
            if c["created"] >= window_start.timestamp()
        )
        assert len(months) == store.months
        first, last_full = sorted(months)[0], sorted(months)[-2]
        assert months[last_full] > months[first]


# -- Trace inputs --------------------------------------------------------------------------


def test_csv_headers(store: DemoSummary) -> None:
    headers = {
        "sites.csv": ["site_id", "domain", "stripe_account_id"],
        "touchpoints.csv": ["site_id", "visitor_id", "occurred_at", "source", "medium", "campaign"],
        "identities.csv": ["site_id", "visitor_id", "email", "identified_at"],
        "ad_spend.csv": ["site_id", "date", "source", "medium", "campaign", "amount", "currency"],
    }
    for name, header in headers.items():
        assert read_csv(store.trace_dir / name)[0] == header


def test_sites_csv_names_each_account(store: DemoSummary) -> None:
    rows = read_csv(store.trace_dir / "sites.csv")[1]
    assert [(r["site_id"], r["domain"], r["stripe_account_id"]) for r in rows] == [
        (s.site_id, s.domain, s.stripe_account_id) for s in store.sites
    ]


def test_timestamps_parse_with_offsets_some_not_utc(store: DemoSummary) -> None:
    touchpoints = read_csv(store.trace_dir / "touchpoints.csv")[1]
    offsets = set()
    for row in touchpoints:
        moment = datetime.fromisoformat(row["occurred_at"])
        assert moment.tzinfo is not None
        offsets.add(moment.utcoffset())
    assert timedelta(0) in offsets and len(offsets) >= 3
    for row in read_csv(store.trace_dir / "identities.csv")[1]:
        assert datetime.fromisoformat(row["identified_at"]).tzinfo is not None


def test_known_visitors_have_touchpoints_but_a_few(
    store: DemoSummary, sites: dict[str, Any], identities: list[dict[str, str]]
) -> None:
    touchpoints = read_csv(store.trace_dir / "touchpoints.csv")[1]
    touched = {r["visitor_id"] for r in touchpoints}
    known = {r["visitor_id"] for r in identities}
    for site in sites.values():
        for name in ("charges", "checkout_sessions", "subscriptions", "invoices"):
            known |= {
                o["metadata"]["trace_visitor_id"]
                for o in site[name]
                if "trace_visitor_id" in o["metadata"]
            }
    silent = known - touched
    assert 1 <= len(silent) <= 0.1 * len(known)


def _first_tagged_payment(site: dict[str, Any]) -> dict[str, int]:
    """For each visitor id on a Stripe object, when its first tagged payment happened."""
    charges = _charges_by_pi(site)
    subscriptions = {s["id"]: s for s in site["subscriptions"]}
    paid: dict[str, int] = {}
    tagged = [(o["metadata"], o["created"]) for o in site["charges"] + site["invoices"]]
    for session in site["checkout_sessions"]:
        if session["mode"] == "payment":
            moment = charges[session["payment_intent"]]["created"]
        else:
            moment = subscriptions[session["subscription"]]["created"]
        tagged.append((session["metadata"], moment))
    for metadata, moment in tagged:
        visitor = metadata.get("trace_visitor_id")
        if visitor:
            paid[visitor] = min(paid.get(visitor, moment), moment)
    return paid


def test_most_visitors_are_touched_before_paying_some_only_after(
    store: DemoSummary, sites: dict[str, Any]
) -> None:
    first_touch: dict[str, float] = {}
    for row in read_csv(store.trace_dir / "touchpoints.csv")[1]:
        moment = datetime.fromisoformat(row["occurred_at"]).timestamp()
        first_touch[row["visitor_id"]] = min(first_touch.get(row["visitor_id"], moment), moment)
    before = after = 0
    for site in sites.values():
        for visitor, paid in _first_tagged_payment(site).items():
            if visitor in first_touch:
                before += first_touch[visitor] < paid
                after += first_touch[visitor] > paid
    assert after >= 2 and before > 5 * after


def test_touchpoint_channels(store: DemoSummary) -> None:
    touchpoints = read_csv(store.trace_dir / "touchpoints.csv")[1]
    channels = {(r["source"], r["medium"]) for r in touchpoints}
    assert {
        ("google", "cpc"),
        ("facebook", "paid_social"),
        ("(direct)", "(none)"),
        ("newsletter", "email"),
        ("reddit", "post"),
    } <= channels


def test_ad_spend_is_daily_usd_cents_over_the_window(store: DemoSummary) -> None:
    rows = read_csv(store.trace_dir / "ad_spend.csv")[1]
    for site in store.sites:
        site_rows = [r for r in rows if r["site_id"] == site.site_id]
        days = {r["date"] for r in site_rows}
        expected = (NOW.date() - store.window_start.date()).days + 1
        assert len(days) == expected
        assert {r["medium"] for r in site_rows} == {"cpc", "paid_social"}
        assert all(r["currency"] == "usd" and int(r["amount"]) > 0 for r in site_rows)


# -- events --------------------------------------------------------------------------------


def test_events_cover_the_last_30_days(store: DemoSummary, sites: dict[str, Any]) -> None:
    now = int(NOW.timestamp())
    for summary in store.sites:
        events = sites[summary.site_id]["events"]
        assert {e["type"] for e in events} <= EVENT_TYPES
        assert all(now - 30 * 86_400 <= e["created"] <= now for e in events)
        assert all(e["account"] == summary.stripe_account_id for e in events)
        types = {e["type"] for e in events}
        assert {"charge.succeeded", "invoice.paid", "checkout.session.completed"} <= types


def test_site_a_events_use_the_current_shape(sites: dict[str, Any]) -> None:
    events = sites["site_a"]["events"]
    assert {e["api_version"] for e in events} == {"2026-10-28.endive"}
    for event in events:
        obj = event["data"]["object"]
        if obj["object"] == "invoice":
            assert "parent" in obj and "charge" not in obj and obj["subscription"] is None
        if obj["object"] == "charge":
            assert "invoice" not in obj
    assert any(e["type"] == "invoice_payment.paid" for e in events)


def test_site_b_events_use_the_legacy_shape(sites: dict[str, Any]) -> None:
    site = sites["site_b"]
    events = site["events"]
    assert {e["api_version"] for e in events} == {"2024-06-20"}
    charges = {c["id"]: c for c in site["charges"]}
    payments = {p["invoice"]: p for p in site["invoice_payments"]}
    invoice_events = [e["data"]["object"] for e in events if e["type"] == "invoice.paid"]
    assert invoice_events
    for invoice in invoice_events:
        assert "parent" not in invoice
        assert all(invoice[field] for field in LEGACY_INVOICE_FIELDS)
        assert invoice["payment_intent"] == payments[invoice["id"]]["payment"]["payment_intent"]
        assert charges[invoice["charge"]]["payment_intent"] == invoice["payment_intent"]
    charge_events = [
        e["data"]["object"]
        for e in events
        if e["type"].startswith("charge.") and e["data"]["object"]["object"] == "charge"
    ]
    assert charge_events and all("invoice" in c for c in charge_events)
    assert any(c["invoice"] for c in charge_events)
    assert not any(e["type"] == "invoice_payment.paid" for e in events)


def test_event_objects_show_the_state_at_that_time(sites: dict[str, Any]) -> None:
    for site in sites.values():
        for event in site["events"]:
            obj = event["data"]["object"]
            if event["type"] == "charge.succeeded":
                assert obj["amount_refunded"] == 0 and obj["status"] == "succeeded"
            elif event["type"] == "charge.refunded":
                assert obj["amount_refunded"] > 0
            elif event["type"] == "customer.subscription.created":
                assert obj["status"] == "active" and obj["canceled_at"] is None
