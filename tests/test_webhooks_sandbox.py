"""End to end over HTTP: the sandbox makes changes and posts signed webhooks, the receiver lands
them, the apply writes raw rows and the models compute revenue.

Duplicates, reordering and both payload versions come from the sandbox's delivery options, as
a test against Stripe itself would get them.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import materialize

from tests.model_cases import resources
from tests.stripe_fixtures import FixtureFolder
from trace_pipelines.assets.sql_models import model_assets
from trace_pipelines.assets.trace_inputs import trace_input_assets
from trace_pipelines.live.apply import apply_landed_events
from trace_pipelines.live.catch_up import land_missed_events
from trace_pipelines.resources.landing import SqliteLandingStore
from trace_pipelines.resources.stripe_reader import StripeReader
from trace_pipelines.sandbox import running_sandbox
from trace_pipelines.sandbox.delivery import run_purchase_loop
from trace_pipelines.settings import TracePaths
from trace_pipelines.sites import SiteRegistry
from trace_pipelines.web.app import running_receiver

SECRET = "whsec_sandbox_delivery_tests"
ACCOUNTS = {"site_now": "acct_1SbxNow", "site_old": "acct_1SbxOld"}


@pytest.fixture
def world(trace_home: TracePaths, tmp_path: Path):
    registry = SiteRegistry(trace_home.registry)
    fixtures = FixtureFolder(tmp_path / "fixtures")
    for site_id, account in ACCOUNTS.items():
        registry.connect(site_id, f"{site_id.replace('_', '-')}.example.com", account)
        fixtures.objects[account]  # an empty account folder
    landing = SqliteLandingStore(trace_home.home / "landing.sqlite")
    with (
        running_sandbox(fixtures.write()) as sandbox,
        running_receiver(landing=landing, registry=registry, secrets=[SECRET]) as receiver,
    ):
        yield sandbox, receiver, landing, trace_home


def simulate(sandbox, receiver, site: str, kind: str, **options):
    return sandbox.simulate_webhooks(
        account=ACCOUNTS[site], kind=kind, url=receiver.webhook_url, secret=SECRET, **options
    )


def revenue(paths: TracePaths, site: str) -> list[tuple]:
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        return con.execute(
            "select kind, gross_amount, refunded_amount, disputed_amount, net_amount "
            "from analytics.revenue where site_id = ? order by paid_at, kind",
            [site],
        ).fetchall()


def test_duplicated_reordered_deliveries_are_stored_once_and_give_one_payment(world):
    sandbox, receiver, landing, paths = world

    answer = simulate(sandbox, receiver, "site_now", "purchase", duplicates=2, reorder=True)

    assert answer["event_types"] == [
        "customer.created",
        "charge.succeeded",
        "checkout.session.completed",
    ]
    assert [d["status"] for d in answer["deliveries"]] == [200] * 9
    assert [d["event"] for d in answer["deliveries"][::3]] == answer["events"][::-1]
    assert sorted(e.event_id for e in landing.read_after(0)) == sorted(answer["events"])

    apply_landed_events(paths, landing)
    materialize([*trace_input_assets, model_assets], resources=resources(paths.home))
    assert revenue(paths, "site_now") == [("one_off", 4900, 0, 0, 4900)]


def test_both_payload_versions_from_the_sandbox_give_the_same_revenue(world):
    sandbox, receiver, landing, paths = world
    for site, version in (("site_now", "current"), ("site_old", "legacy")):
        simulate(sandbox, receiver, site, "renewal", api_version=version)  # subscribes
        simulate(sandbox, receiver, site, "renewal", api_version=version)  # renews
        bought = simulate(sandbox, receiver, site, "purchase", api_version=version, amount=1000)
        charge = bought["objects"]["charge"]
        simulate(sandbox, receiver, site, "refund", api_version=version, amount=400, charge=charge)
        simulate(
            sandbox, receiver, site, "dispute", api_version=version, charge=charge,
            dispute_status="lost",
        )  # fmt: skip

    apply_landed_events(paths, landing)
    materialize([*trace_input_assets, model_assets], resources=resources(paths.home))

    expected = [
        ("subscription_first", 2900, 0, 0, 2900),
        ("renewal", 2900, 0, 0, 2900),
        # Refunded 400, then the rest disputed and lost.
        ("one_off", 1000, 400, 600, 0),
    ]
    assert sorted(revenue(paths, "site_now")) == sorted(expected)
    assert sorted(revenue(paths, "site_old")) == sorted(expected)


def test_sandbox_events_are_listed_so_a_catch_up_finds_nothing_missing(world):
    sandbox, receiver, landing, paths = world
    answer = simulate(sandbox, receiver, "site_now", "purchase")
    site = SiteRegistry(paths.registry).get("site_now")
    reader = StripeReader(
        api_key=sandbox.api_key,
        api_base=sandbox.api_base,
        rate_state_dir=str(paths.locks_dir / "ratelimit"),
    ).for_account(site.stripe_account_id)

    assert land_missed_events(reader, landing, site, datetime.now(UTC) - timedelta(days=1)) == 0
    listed = list(reader.list("/v1/events"))
    assert sorted(e["id"] for e in listed) == sorted(answer["events"])
    assert reader.retrieve("/v1/charges", answer["objects"]["charge"])["amount"] == 4900


def test_a_simulation_for_an_unknown_account_or_kind_is_refused(world):
    sandbox, receiver, _, _ = world
    with pytest.raises(RuntimeError, match="No such account"):
        sandbox.simulate_webhooks(
            account="acct_1Missing", kind="purchase", url=receiver.webhook_url, secret=SECRET
        )
    with pytest.raises(RuntimeError, match="`kind` must be one of"):
        simulate(sandbox, receiver, "site_now", "chargeback")
    with pytest.raises(RuntimeError, match="no succeeded charge"):
        simulate(sandbox, receiver, "site_old", "refund")


def test_the_purchase_loop_delivers_and_ends_quietly_when_the_sandbox_is_gone(
    tmp_path: Path, caplog
):
    fixtures = FixtureFolder(tmp_path / "fixtures")
    fixtures.objects[ACCOUNTS["site_now"]]  # an empty account folder
    landing = SqliteLandingStore(tmp_path / "landing.sqlite")
    registry = SiteRegistry(tmp_path / "sites.sqlite")
    registry.connect("site_now", "site-now.example.com", ACCOUNTS["site_now"])
    with running_receiver(landing=landing, registry=registry, secrets=[SECRET]) as receiver:
        with running_sandbox(fixtures.write()) as sandbox:
            made = run_purchase_loop(
                sandbox, ACCOUNTS["site_now"], receiver.webhook_url, SECRET, 0, max_purchases=2
            )
            assert made == 2
            assert landing.count() > 0  # what a purchase sends reached the receiver

        # The sandbox has stopped, as on Ctrl-C before the demo sets `stop`: the loop warns
        # while nobody asked it to stop, and ends without an error once asked.
        assert (
            run_purchase_loop(
                sandbox, ACCOUNTS["site_now"], receiver.webhook_url, SECRET, 0, max_purchases=1
            )
            == 1
        )
        assert "Sandbox unreachable" in caplog.text
        stop = threading.Event()
        threading.Timer(0.2, stop.set).start()
        assert (
            run_purchase_loop(
                sandbox, ACCOUNTS["site_now"], receiver.webhook_url, SECRET, 0, stop=stop
            )
            == 0
        )
