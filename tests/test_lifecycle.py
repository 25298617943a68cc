"""A site's lifecycle against the sandbox: what reconnecting reads, disconnecting (from either
side), reconnecting from the disconnect point both ways, and deleting with full cascade."""

from __future__ import annotations

import csv
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import pytest
from dagster import AssetKey, DagsterInstance, SkipReason, build_schedule_context

from tests.stripe_fixtures import FixtureFolder
from tests.test_lifecycle_helpers import (
    bound_socket,
    non_get_requests,
    query,
    serving,
    set_lifecycle_env,
)
from trace_pipelines import lifecycle
from trace_pipelines.lifecycle import SyncPlan, plan_sync
from trace_pipelines.partitions import SITES, backfill_months
from trace_pipelines.resources.landing import landing_store_from_env
from trace_pipelines.sandbox.server import running_sandbox
from trace_pipelines.sensors.schedules import daily_stripe_refresh
from trace_pipelines.settings import trace_paths
from trace_pipelines.sites import Site, SiteError, SiteRegistry
from trace_pipelines.web.connect import connect_routes

NOW = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)


def site(status: str, disconnected_at: datetime | None) -> Site:
    return Site(
        "site_a", "a.example", "acct_1A", status, NOW - timedelta(days=400), disconnected_at, None
    )


# --- What a connect reads ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "backfill", "expected"),
    [
        (
            None,
            True,
            SyncPlan("site_a", "backfill", NOW.date(), tuple(backfill_months(12, NOW.date()))),
        ),
        (None, False, SyncPlan("site_a", "none", NOW.date())),
        (site("connected", None), True, SyncPlan("site_a", "none", NOW.date())),
        (
            site("disconnected", NOW - timedelta(days=3)),
            True,
            SyncPlan(
                "site_a", "events", NOW.date(), events_since=NOW - timedelta(days=3, minutes=10)
            ),
        ),
        (
            site("disconnected", NOW - timedelta(days=45)),
            False,
            SyncPlan(
                "site_a",
                "months",
                NOW.date(),
                (date(2026, 5, 1), date(2026, 6, 1), date(2026, 7, 1)),
            ),
        ),
        (
            site("disconnected", datetime(2025, 1, 31, tzinfo=UTC)),
            True,
            SyncPlan("site_a", "months", NOW.date(), tuple(backfill_months(18, NOW.date()))),
        ),
    ],
    ids=[
        "new",
        "new-no-backfill",
        "already-connected",
        "gap-3-days",
        "gap-45-days",
        "gap-18-months",
    ],
)
def test_a_connect_reads_only_what_it_misses(previous, backfill, expected):
    assert plan_sync("site_a", previous, backfill=backfill, now=NOW) == expected


def test_a_new_site_never_reads_twelve_months_again_after_a_reconnect():
    gap = plan_sync(
        "site_a", site("disconnected", NOW - timedelta(days=31)), backfill=True, now=NOW
    )
    assert gap.kind == "months" and len(gap.months) == 2


# --- Fixtures: two phases of one store ---------------------------------------------------------


GAP_ACCOUNT = "acct_1GapSite"
TWIN_ACCOUNT = "acct_1TwinSite"


def event_for(account: str, obj: dict, kind: str) -> dict:
    return {
        "id": f"evt_{obj['id']}_{kind.replace('.', '_')}",
        "object": "event",
        "type": kind,
        "created": obj["created"],
        "account": account,
        "api_version": "2026-10-28.endive",
        "data": {"object": obj},
        "livemode": False,
    }


def two_phase_store(root: Path, now: datetime, disconnect_at: datetime) -> tuple[Path, Path]:
    """The same history in two accounts, as it stood at the disconnect and as it stands now.

    Both accounts hold identical objects (same ids), so a site that was disconnected and one
    that never was can be compared row for row."""
    stamp = lambda delta: int((disconnect_at + delta).timestamp())  # noqa: E731
    before = [
        ("charge", stamp(-timedelta(days=20)), 4000),
        ("charge", stamp(-timedelta(days=2)), 1500),
    ]
    after = [
        ("charge", stamp(timedelta(hours=2)), 700),
        ("charge", min(stamp(timedelta(days=2)), int((now - timedelta(hours=1)).timestamp())), 900),
    ]
    phases = []
    for name, objects in (("at_disconnect", before), ("now", before + after)):
        fixtures = FixtureFolder(root / name)
        for index, (_, created, amount) in enumerate(objects):
            charge = {**fixtures.charge(GAP_ACCOUNT, created, amount=amount)}
            charge["id"] = f"ch_story_{index}"
            charge["payment_intent"] = f"pi_story_{index}"
            fixtures.objects[GAP_ACCOUNT]["charges"][-1] = charge
            fixtures.add(TWIN_ACCOUNT, "charges", dict(charge))
            for account in (GAP_ACCOUNT, TWIN_ACCOUNT):
                fixtures.add(account, "events", event_for(account, charge, "charge.succeeded"))
        phases.append(fixtures.write())
    return phases[0], phases[1]


def raw_rows(home: Path, site_id: str) -> list[tuple]:
    return query(
        home,
        "select id, created, amount, amount_refunded, status from raw.stripe_charges "
        "where site_id = ? order by id",
        [site_id],
    )


def revenue_rows(home: Path, site_id: str) -> list[tuple]:
    return query(
        home,
        "select revenue_id, kind, paid_at, currency, gross_amount, net_amount "
        "from analytics.revenue where site_id = ? order by revenue_id",
        [site_id],
    )


def apply_if_events_landed(result: lifecycle.SyncResult) -> None:
    """Run the live apply path over what a catch-up landed (the daemon's sensor does it)."""
    if result.events_landed:
        from trace_pipelines.live.apply import apply_landed_events

        apply_landed_events(trace_paths(), landing_store_from_env())
        lifecycle.refresh_revenue_models()


# --- Reconnect ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("gap_days", [3, 45], ids=["within-30-days", "beyond-30-days"])
def test_reconnect_resumes_from_the_disconnect_point(tmp_path, monkeypatch, gap_days):
    now = datetime.now(UTC)
    disconnect_at = now - timedelta(days=gap_days)
    at_disconnect, today = two_phase_store(tmp_path / "stripe", now, disconnect_at)

    with running_sandbox(at_disconnect) as sandbox:
        set_lifecycle_env(monkeypatch, tmp_path, sandbox.api_base, "http://127.0.0.1:9/cb")
        lifecycle.connect_site("gap", "gap.example", GAP_ACCOUNT, backfill=True)
        lifecycle.disconnect_site("gap", at=disconnect_at)
        assert non_get_requests(sandbox) == [("POST", "/oauth/deauthorize")]

    with running_sandbox(today) as sandbox:
        set_lifecycle_env(monkeypatch, tmp_path, sandbox.api_base, "http://127.0.0.1:9/cb")
        results: list[lifecycle.SyncResult] = []
        outcome = lifecycle.connect_site(
            "gap",
            "gap.example",
            GAP_ACCOUNT,
            launch=lambda plan: results.append(lifecycle.run_sync_plan(plan)),
        )
        apply_if_events_landed(results[0])
        assert outcome.reconnected
        assert outcome.plan.kind == ("events" if gap_days < 30 else "months")
        gap_partitions = results[0].partitions
        lifecycle.connect_site("twin", "twin.example", TWIN_ACCOUNT, backfill=True)
        assert non_get_requests(sandbox) == []

    # Never the 12 months again: at most the months since the disconnect month.
    assert (
        gap_partitions
        <= (now.year * 12 + now.month) - (disconnect_at.year * 12 + disconnect_at.month) + 1
    )
    home = trace_paths().home
    assert len(raw_rows(home, "gap")) == 4
    assert raw_rows(home, "gap") == raw_rows(home, "twin")
    assert revenue_rows(home, "gap") == revenue_rows(home, "twin")
    assert SiteRegistry(trace_paths().registry).get("gap").status == "connected"


def test_a_site_cannot_switch_to_another_account(tmp_path, monkeypatch):
    set_lifecycle_env(monkeypatch, tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9/cb")
    monkeypatch.delenv("STRIPE_CLIENT_ID")
    lifecycle.connect_site("site_a", "a.example", "acct_1A", backfill=False)
    lifecycle.disconnect_site("site_a")
    with pytest.raises(SiteError, match="reads Stripe account acct_1A, not acct_1B"):
        lifecycle.connect_site("site_a", "a.example", "acct_1B")
    assert SiteRegistry(trace_paths().registry).get("site_a").status == "disconnected"


# --- Disconnect --------------------------------------------------------------------------------


@pytest.fixture
def connected_site(tmp_path, monkeypatch):
    """site_a connected and backfilled for this month, served by our routes over HTTP."""
    fixtures = FixtureFolder(tmp_path / "stripe")
    fixtures.charge(GAP_ACCOUNT, int((datetime.now(UTC) - timedelta(hours=2)).timestamp()))
    with running_sandbox(fixtures.write()) as sandbox:
        sock, base = bound_socket()
        set_lifecycle_env(
            monkeypatch, tmp_path, sandbox.api_base, f"{base}/stripe/connect/callback"
        )
        lifecycle.connect_site("site_a", "shop-a.example", GAP_ACCOUNT, backfill=False)
        lifecycle.run_sync_plan(
            SyncPlan("site_a", "months", datetime.now(UTC).date(), tuple(backfill_months(0)))
        )
        with serving(connect_routes(), sock):
            yield base, sandbox


def test_disconnect_revokes_access_records_when_and_keeps_every_row(connected_site):
    base, sandbox = connected_site
    home = trace_paths().home
    revenue_before = query(home, "select * from analytics.revenue order by revenue_id")
    assert len(revenue_before) == 1

    response = httpx.post(f"{base}/sites/site_a/disconnect", timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "disconnected" and body["disconnected_at"]
    assert "its rows stay" in body["message"]

    assert non_get_requests(sandbox) == [("POST", "/oauth/deauthorize")]
    read = httpx.get(
        f"{sandbox.api_base}/v1/charges",
        headers={"Authorization": f"Bearer {sandbox.api_key}", "Stripe-Account": GAP_ACCOUNT},
    )
    assert read.status_code == 403
    assert query(home, "select * from analytics.revenue order by revenue_id") == revenue_before
    assert len(raw_rows(home, "site_a")) == 1

    schedule = daily_stripe_refresh(build_schedule_context(instance=DagsterInstance.get()))
    assert isinstance(schedule, SkipReason)

    again = httpx.post(f"{base}/sites/site_a/disconnect", timeout=60).json()
    assert again["message"] == "Site site_a is already disconnected."
    assert again["disconnected_at"] == body["disconnected_at"]
    assert len(non_get_requests(sandbox)) == 1


def test_the_deauthorized_webhook_disconnects_but_a_stale_one_does_not(tmp_path, monkeypatch):
    set_lifecycle_env(monkeypatch, tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9/cb")
    registry = SiteRegistry(trace_paths().registry)
    connected = lifecycle.connect_site("site_a", "a.example", "acct_1A", backfill=False).site

    stale = connected.connected_at - timedelta(minutes=5)
    assert lifecycle.handle_deauthorized("acct_1A", stale) is None
    assert registry.get("site_a").is_connected
    assert lifecycle.handle_deauthorized("acct_1Unknown", datetime.now(UTC)) is None

    at = datetime.now(UTC).replace(microsecond=0)
    site = lifecycle.handle_deauthorized("acct_1A", at)
    assert (site.status, site.disconnected_at) == ("disconnected", at)
    assert lifecycle.handle_deauthorized("acct_1A", at + timedelta(seconds=5)) is None
    assert registry.get("site_a").disconnected_at == at


# --- Delete ------------------------------------------------------------------------------------


KEEP_ACCOUNT = "acct_1KeepSite"


def write_inputs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "sites.csv": [
            ["site_id", "domain", "stripe_account_id"],
            ["doomed", "doomed.example", GAP_ACCOUNT],
            ["keep", "keep.example", KEEP_ACCOUNT],
        ],
        "touchpoints.csv": [
            ["site_id", "visitor_id", "occurred_at", "source", "medium", "campaign"],
            ["doomed", "v_1", "2026-01-01T00:00:00Z", "google", "cpc", "x"],
            ["keep", "v_2", "2026-01-01T00:00:00Z", "bing", "cpc", "y"],
        ],
        "identities.csv": [
            ["site_id", "visitor_id", "email", "identified_at"],
            ["doomed", "v_1", "a@example.com", "2026-01-01T00:00:00Z"],
            ["keep", "v_2", "b@example.com", "2026-01-01T00:00:00Z"],
        ],
        "ad_spend.csv": [
            ["site_id", "date", "source", "medium", "campaign", "amount", "currency"],
            ["doomed", "2026-01-01", "google", "cpc", "x", "1000", "usd"],
            ["keep", "2026-01-01", "bing", "cpc", "y", "2000", "usd"],
        ],
    }
    for name, rows in files.items():
        with open(folder / name, "w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    return folder


def everything_holding(site_id: str, home: Path, inputs: Path) -> list[str]:
    """Every place under TRACE_HOME, the inputs and the instance still naming the site."""
    found = [str(p) for p in home.rglob(f"*{site_id}*")]
    parquet = [str(p) for p in home.rglob("*.parquet")]
    with duckdb.connect() as con:
        for path in parquet:
            if (
                "site_id"
                in con.execute(f"describe select * from '{path}'").df()["column_name"].values
            ):
                hits = con.execute(
                    f"select count(*) from '{path}' where site_id = ?", [site_id]
                ).fetchone()[0]
                found += [f"{path}: {hits} rows"] if hits else []
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        tables = con.execute(
            "select table_schema, table_name from information_schema.columns "
            "where column_name = 'site_id'"
        ).fetchall()
        for schema, table in tables:
            hits = con.execute(
                f'select count(*) from "{schema}"."{table}" where site_id = ?', [site_id]
            ).fetchone()[0]
            found += [f"warehouse {schema}.{table}: {hits} rows"] if hits else []
    for name in ("landing.sqlite", "sites.sqlite", "oauth_states.sqlite"):
        if (home / name).exists():
            import sqlite3

            con = sqlite3.connect(home / name)
            for (table,) in con.execute("select name from sqlite_master where type = 'table'"):
                columns = [row[1] for row in con.execute(f"pragma table_info({table})")]
                if "site_id" in columns:
                    hits = con.execute(
                        f"select count(*) from {table} where site_id = ?", (site_id,)
                    ).fetchone()[0]
                    found += [f"{name}:{table}: {hits} rows"] if hits else []
            con.close()
    for path in inputs.glob("*.csv"):
        if site_id in path.read_text():
            found.append(str(path))
    instance = DagsterInstance.get()
    if instance.has_dynamic_partition(SITES.name, site_id):
        found.append("dagster partition")
    runs = [r for r in instance.get_runs() if site_id in json.dumps(r.tags)]
    found += [f"dagster run {run.run_id}" for run in runs]
    materialized = instance.get_materialized_partitions(AssetKey("stripe_charges"))
    found += [f"materialization {key}" for key in materialized if site_id in key]
    return found


def site_numbers(home: Path, site_id: str) -> dict[str, list[tuple]]:
    tables = [
        "raw.stripe_charges",
        "analytics.revenue",
        "analytics.attributed_revenue",
        "trace.touchpoints",
        "trace.ad_spend",
        "analytics.channel_performance",
    ]
    return {
        table: query(
            home,
            f"select * exclude (site_id) from {table} where site_id = ? order by all",
            [site_id],
        )
        for table in tables
    }


@pytest.mark.slow
def test_delete_removes_everything_of_the_site_and_nothing_else(tmp_path, monkeypatch):
    fixtures = FixtureFolder(tmp_path / "stripe")
    created = int((datetime.now(UTC) - timedelta(hours=3)).timestamp())
    for account, amount in ((GAP_ACCOUNT, 1000), (KEEP_ACCOUNT, 2000)):
        fixtures.charge(account, created, amount=amount)
    inputs = write_inputs(tmp_path / "inputs")
    this_month = tuple(backfill_months(0))

    with running_sandbox(fixtures.write()) as sandbox:
        sock, base = bound_socket()
        set_lifecycle_env(
            monkeypatch, tmp_path, sandbox.api_base, f"{base}/stripe/connect/callback"
        )
        monkeypatch.setenv("TRACE_INPUTS_DIR", str(inputs))
        home = trace_paths().home
        for site_id, account in (("doomed", GAP_ACCOUNT), ("keep", KEEP_ACCOUNT)):
            lifecycle.connect_site(site_id, f"{site_id}.example", account, backfill=False)
            lifecycle.run_sync_plan(SyncPlan(site_id, "months", this_month[0], this_month))
            landing_store_from_env().land(
                {
                    "id": f"evt_{site_id}",
                    "type": "charge.succeeded",
                    "created": created,
                    "account": account,
                },
                site_id=site_id,
            )
        keep_before = site_numbers(home, "keep")
        assert keep_before["raw.stripe_charges"] and keep_before["trace.touchpoints"]
        assert everything_holding("doomed", home, inputs)

        with serving(connect_routes(), sock):
            wrong = httpx.post(
                f"{base}/sites/doomed/delete", json={"confirm_domain": "keep.example"}
            )
            assert wrong.status_code == 400 and "nothing was deleted" in wrong.json()["error"]
            assert SiteRegistry(trace_paths().registry).get("doomed").is_connected

            # Interrupted midway: the landing store cannot be opened after the raw files went.
            monkeypatch.setenv("TRACE_LANDING_URL", "mysql://nowhere")
            with pytest.raises(ValueError, match="TRACE_LANDING_URL"):
                lifecycle.delete_site("doomed", " Doomed.Example ")
            monkeypatch.delenv("TRACE_LANDING_URL")
            assert SiteRegistry(trace_paths().registry).get("doomed").status == "disconnected"

            done = httpx.post(
                f"{base}/sites/doomed/delete",
                json={"confirm_domain": "doomed.example"},
                timeout=120,
            )
            assert done.status_code == 200, done.text
            assert done.json()["deleted"] is True
            again = httpx.post(
                f"{base}/sites/doomed/delete", json={"confirm_domain": "doomed.example"}
            )
            assert again.status_code == 404 and "Unknown site 'doomed'" in again.json()["error"]

        # The deletion revoked access once and wrote nothing else to Stripe.
        assert non_get_requests(sandbox) == [("POST", "/oauth/deauthorize")]

    assert everything_holding("doomed", home, inputs) == []
    # A later refresh cannot bring the site back, and the other site's numbers are unchanged.
    lifecycle.refresh_revenue_models()
    assert everything_holding("doomed", home, inputs) == []
    assert site_numbers(home, "keep") == keep_before
    assert [s.site_id for s in SiteRegistry(trace_paths().registry).list()] == ["keep"]
    assert json.dumps(keep_before, default=str).count("2000") >= 1
