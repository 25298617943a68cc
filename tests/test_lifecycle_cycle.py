"""The whole life of a site in one test, over HTTP: connect through Stripe OAuth, a live
purchase, disconnect, a purchase while disconnected, reconnect, delete. Our app (webhook
receiver plus lifecycle routes) runs in uvicorn, Stripe is the sandbox, and the live apply
path stands in for the daemon's sensor."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.stripe_fixtures import FixtureFolder
from tests.test_connect_oauth import ConnectFlow, dashboard_message
from tests.test_lifecycle import everything_holding
from tests.test_lifecycle_helpers import (
    bound_socket,
    non_get_requests,
    query,
    serving,
    set_lifecycle_env,
)
from trace_pipelines import lifecycle
from trace_pipelines.live.apply import apply_landed_events
from trace_pipelines.resources.landing import landing_store_from_env
from trace_pipelines.sandbox.delivery import sign_payload
from trace_pipelines.sandbox.server import running_sandbox
from trace_pipelines.settings import trace_paths
from trace_pipelines.sites import SiteRegistry
from trace_pipelines.web.app import create_app
from trace_pipelines.web.connect import connect_routes

ACCOUNT = "acct_1WholeCycle"
WEBHOOK_SECRET = "whsec_lifecycle_test_secret"


def apply_live_events() -> None:
    """What the daemon's sensor does after events land: apply them, refresh the models."""
    apply_landed_events(trace_paths(), landing_store_from_env())
    lifecycle.refresh_revenue_models()


def charge_ids(site_id: str) -> list[str]:
    rows = query(
        trace_paths().home,
        "select id from raw.stripe_charges where site_id = ? order by id",
        [site_id],
    )
    return [charge_id for (charge_id,) in rows]


def revenue_charges(site_id: str) -> list[str]:
    rows = query(
        trace_paths().home,
        "select charge_id from analytics.revenue where site_id = ? order by charge_id",
        [site_id],
    )
    return [charge_id for (charge_id,) in rows]


@pytest.mark.slow
def test_connect_live_disconnect_reconnect_delete(tmp_path, monkeypatch):
    fixtures = FixtureFolder(tmp_path / "stripe")
    history = fixtures.charge(ACCOUNT, int((datetime.now(UTC) - timedelta(days=40)).timestamp()))
    launcher = lifecycle.BackgroundSync()

    with running_sandbox(fixtures.write()) as sandbox:
        sock, base = bound_socket()
        set_lifecycle_env(
            monkeypatch, tmp_path, sandbox.api_base, f"{base}/stripe/connect/callback"
        )
        app = create_app(
            secrets=[WEBHOOK_SECRET],
            on_deauthorized=lifecycle.on_deauthorized_webhook,
            extra_routes=connect_routes(launch=launcher),
        )
        flow = ConnectFlow(base, sandbox)

        def purchase() -> str:
            answer = sandbox.simulate_webhooks(
                account=ACCOUNT, kind="purchase", url=f"{base}/stripe/webhooks",
                secret=WEBHOOK_SECRET,
            )  # fmt: skip
            assert all(d["status"] == 200 for d in answer["deliveries"]), answer
            return answer["objects"]["charge"]

        with serving(app.routes, sock):
            # 1. Connect through OAuth: the account is stored and 12 months are read.
            connected = flow.callback(
                flow.authorize(flow.start("shop", "shop.example"), stripe_sandbox_account=ACCOUNT)
            )
            assert dashboard_message(connected)[1] == "connected"
            assert launcher.wait(300) and launcher.errors == []
            assert charge_ids("shop") == [history["id"]]

            # 2. A live purchase arrives by webhook and reaches the revenue tables.
            live = purchase()
            apply_live_events()
            assert revenue_charges("shop") == sorted([history["id"], live])

            # 3. Disconnect over HTTP: access revoked, time recorded, every row kept.
            response = httpx.post(f"{base}/sites/shop/disconnect", timeout=60)
            assert response.json()["status"] == "disconnected"
            time.sleep(1.1)  # the receiver remembers a site's status for a second

            # 4. A purchase while disconnected is acknowledged but not applied.
            missed = purchase()
            apply_live_events()
            assert revenue_charges("shop") == sorted([history["id"], live])

            # 5. Reconnect through OAuth: the missed purchase comes from GET /v1/events,
            #    with no duplicate and no 12-month backfill again.
            reconnected = flow.callback(
                flow.authorize(flow.start("shop"), stripe_sandbox_account=ACCOUNT)
            )
            path, outcome, message = dashboard_message(reconnected)
            assert outcome == "connected" and message.startswith("Reconnected"), message
            assert launcher.wait(300) and launcher.errors == []
            assert launcher.results[-1].plan.kind == "events"
            assert launcher.results[-1].partitions == 0
            apply_live_events()
            assert revenue_charges("shop") == sorted([history["id"], live, missed])
            assert charge_ids("shop") == sorted([history["id"], live, missed])

            # 6. Stripe-side disconnect by webhook is recorded like ours.
            event = {
                "id": "evt_deauth_1", "object": "event", "type": "account.application.deauthorized",
                "account": ACCOUNT, "created": int(time.time()) + 1, "livemode": False,
                "data": {"object": {"id": "ca_trace_test_platform", "object": "application"}},
            }  # fmt: skip
            body = json.dumps(event)
            answer = httpx.post(
                f"{base}/stripe/webhooks",
                content=body,
                headers={"Stripe-Signature": sign_payload(body, WEBHOOK_SECRET)},
            )
            assert answer.status_code == 200, answer.text
            assert SiteRegistry(trace_paths().registry).get("shop").status == "disconnected"

            # 7. Delete with the domain retyped: nothing of the site remains.
            deleted = httpx.post(
                f"{base}/sites/shop/delete", json={"confirm_domain": "SHOP.example"}, timeout=120
            )
            assert deleted.status_code == 200, deleted.text

        # Only the OAuth token exchanges and the one deauthorization wrote to Stripe.
        assert sorted(non_get_requests(sandbox)) == [
            ("POST", "/oauth/deauthorize"),
            ("POST", "/oauth/token"),
            ("POST", "/oauth/token"),
        ]

    assert everything_holding("shop", trace_paths().home, tmp_path / "no_inputs") == []
