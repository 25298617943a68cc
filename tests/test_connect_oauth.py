"""One-click Stripe Connect over real HTTP: our routes in uvicorn, Stripe's OAuth in the
sandbox, the official SDK between them. Every refusal must redirect with a clear message and
leave the registry, the partitions and Stripe untouched."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from dagster import DagsterInstance

from tests.stripe_fixtures import FixtureFolder
from tests.test_lifecycle_helpers import (
    CLIENT_ID,
    bound_socket,
    non_get_requests,
    query,
    serving,
    set_lifecycle_env,
)
from trace_pipelines import lifecycle
from trace_pipelines.oauth_state import StateError, StateSigner
from trace_pipelines.partitions import SITES
from trace_pipelines.sandbox.server import running_sandbox
from trace_pipelines.settings import trace_paths
from trace_pipelines.sites import SiteRegistry
from trace_pipelines.web.connect import ConnectConfigError, ConnectSettings, connect_routes

ACCOUNT = "acct_1ConnectOwner"
OTHER_ACCOUNT = "acct_1ConnectOther"
SECRET = b"a-test-secret-that-is-long-enough-0123456789"


# --- The state ---------------------------------------------------------------------------------


@pytest.fixture
def signer(tmp_path: Path) -> StateSigner:
    return StateSigner(SECRET, tmp_path / "states.sqlite")


def test_a_state_is_bound_to_its_site_and_works_once(signer: StateSigner):
    state = signer.issue("site_a", "a.example")
    ticket = signer.redeem(state)
    assert (ticket.site_id, ticket.domain) == ("site_a", "a.example")
    with pytest.raises(StateError, match="already used"):
        signer.redeem(state)


def test_a_state_expires_after_ten_minutes(signer: StateSigner):
    issued = time.time() - 601
    with pytest.raises(StateError, match="expired"):
        signer.redeem(signer.issue("site_a", "a.example", now=issued))
    assert signer.redeem(signer.issue("site_a", "a.example", now=time.time() - 590))


def test_an_altered_or_foreign_state_is_refused(signer: StateSigner, tmp_path: Path):
    state = signer.issue("site_a", "a.example")
    body, _, signature = state.partition(".")
    other_site = StateSigner(SECRET, tmp_path / "x.sqlite").issue("site_b", "b.example")
    forged = other_site.partition(".")[0] + "." + signature  # another site's body, our mac
    foreign = StateSigner(b"another-secret-of-sufficient-length-000000", tmp_path / "y.sqlite")
    for bad in (forged, body + ".", "", None, foreign.issue("site_a", "a.example")):
        with pytest.raises(StateError, match="could not be verified"):
            signer.redeem(bad)
    assert signer.redeem(state).site_id == "site_a"


def test_the_routes_refuse_to_start_without_a_state_secret(monkeypatch, tmp_path):
    set_lifecycle_env(monkeypatch, tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9/cb")
    monkeypatch.delenv("TRACE_STATE_SECRET")
    with pytest.raises(ConnectConfigError, match="TRACE_STATE_SECRET is missing"):
        connect_routes()
    monkeypatch.setenv("TRACE_STATE_SECRET", "short")
    with pytest.raises(ConnectConfigError, match="TRACE_STATE_SECRET"):
        ConnectSettings.from_env()


# --- The flow over HTTP ------------------------------------------------------------------------


def charges_fixture(root: Path) -> Path:
    """Two charges for the owner's account (this month and two months ago), one for another."""
    fixtures = FixtureFolder(root)
    now = datetime.now(UTC)
    fixtures.charge(ACCOUNT, int((now - timedelta(days=61)).timestamp()), amount=2500)
    fixtures.charge(ACCOUNT, int((now - timedelta(minutes=30)).timestamp()), amount=1200)
    fixtures.charge(OTHER_ACCOUNT, int((now - timedelta(days=3)).timestamp()), amount=999)
    return fixtures.write()


class ConnectFlow:
    """A browser's walk through the connect flow, one redirect at a time."""

    def __init__(self, app_base: str, sandbox):
        self.app_base = app_base
        self.sandbox = sandbox
        self.http = httpx.Client(follow_redirects=False, timeout=60)

    def start(self, site_id: str, domain: str | None = "shop-a.example") -> httpx.Response:
        params = {"site_id": site_id} | ({"domain": domain} if domain else {})
        return self.http.get(f"{self.app_base}/stripe/connect", params=params)

    def authorize(self, start: httpx.Response, **choice: str) -> httpx.Response:
        """The owner's answer on Stripe's page (`stripe_sandbox_account=` or `..._decision=`)."""
        assert start.status_code == 302, start.text
        return self.http.get(f"{start.headers['location']}&{urlencode(choice)}")

    def callback(self, authorized: httpx.Response) -> httpx.Response:
        assert authorized.status_code == 302, authorized.text
        return self.http.get(authorized.headers["location"])


def dashboard_message(response: httpx.Response) -> tuple[str, str, str]:
    """(path, stripe=..., message) of a redirect to the dashboard."""
    assert response.status_code == 302, response.text
    url = urlsplit(response.headers["location"])
    assert url.netloc == "dashboard.test"
    params = parse_qs(url.query)
    return url.path, params["stripe"][0], params["message"][0]


@pytest.fixture
def connect_app(tmp_path, monkeypatch):
    """(flow, sandbox, background launcher): our routes served over HTTP against a sandbox."""
    with running_sandbox(charges_fixture(tmp_path / "stripe")) as sandbox:
        sock, base = bound_socket()
        set_lifecycle_env(
            monkeypatch, tmp_path, sandbox.api_base, f"{base}/stripe/connect/callback"
        )
        launcher = lifecycle.BackgroundSync()
        with serving(connect_routes(launch=launcher), sock):
            yield ConnectFlow(base, sandbox), sandbox, launcher
        assert launcher.wait(300), "the background backfill did not finish"


def registered_sites() -> list[str]:
    return [site.site_id for site in SiteRegistry(trace_paths().registry).list()]


def test_connect_redirects_to_stripe_with_a_read_only_request(connect_app):
    flow, sandbox, _ = connect_app
    start = flow.start("site_a")
    assert start.status_code == 302
    url = urlsplit(start.headers["location"])
    assert f"{url.scheme}://{url.netloc}" == sandbox.api_base
    assert url.path == "/oauth/authorize"
    params = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert params["response_type"] == "code"
    assert params["client_id"] == CLIENT_ID
    assert params["scope"] == "read_only"
    assert params["redirect_uri"] == f"{flow.app_base}/stripe/connect/callback"
    assert (
        StateSigner(
            b"test-state-secret-0123456789abcdef0123456789abcdef",
            trace_paths().home / "oauth_states.sqlite",
        )
        .verify(params["state"])
        .site_id
        == "site_a"
    )


@pytest.mark.slow
def test_connect_stores_the_account_backfills_and_redirects_to_the_dashboard(connect_app):
    flow, sandbox, launcher = connect_app
    callback = flow.callback(flow.authorize(flow.start("site_a"), stripe_sandbox_account=ACCOUNT))

    path, outcome, message = dashboard_message(callback)
    assert (path, outcome) == ("/sites/site_a/attribution", "connected")
    assert "Backfilling the last 12 months" in message
    site = SiteRegistry(trace_paths().registry).get("site_a")
    assert (site.stripe_account_id, site.domain, site.status) == (
        ACCOUNT,
        "shop-a.example",
        "connected",
    )
    assert DagsterInstance.get().has_dynamic_partition(SITES.name, "site_a")

    assert launcher.wait(300)
    assert launcher.errors == []
    [result] = launcher.results
    assert (result.partitions, result.failed_partitions, result.models_refreshed) == (13, 0, True)
    home = trace_paths().home
    assert query(home, "select site_id, sum(amount) from raw.stripe_charges group by 1") == [
        ("site_a", 3700)
    ]
    assert query(
        home, "select sum(net_amount) from analytics.revenue where site_id = 'site_a'"
    ) == [(3700,)]
    # Only the token exchange wrote to Stripe; the backfill only read.
    assert non_get_requests(sandbox) == [("POST", "/oauth/token")]

    replayed = flow.http.get(callback.request.url)
    assert dashboard_message(replayed)[1:] == ("error", dashboard_message(replayed)[2])
    assert "already used" in dashboard_message(replayed)[2]


def assert_nothing_changed(sandbox, launcher) -> None:
    assert registered_sites() == []
    assert not DagsterInstance.get().has_dynamic_partition(SITES.name, "site_a")
    assert launcher.results == [] and launcher.wait(0)
    assert [p for m, p in non_get_requests(sandbox)] in ([], ["/oauth/token"])


def test_a_declined_authorization_changes_nothing(connect_app):
    flow, sandbox, launcher = connect_app
    callback = flow.callback(flow.authorize(flow.start("site_a"), stripe_sandbox_decision="deny"))
    path, outcome, message = dashboard_message(callback)
    assert (path, outcome) == ("/sites/site_a/attribution", "error")
    assert message == "Stripe was not connected: the authorization was declined."
    assert_nothing_changed(sandbox, launcher)
    assert non_get_requests(sandbox) == []


def test_an_altered_state_changes_nothing(connect_app):
    flow, sandbox, launcher = connect_app
    authorized = flow.authorize(flow.start("site_a"), stripe_sandbox_account=ACCOUNT)
    location = authorized.headers["location"].replace("state=", "state=x")
    _, outcome, message = dashboard_message(flow.http.get(location))
    assert outcome == "error" and "could not be verified" in message
    assert_nothing_changed(sandbox, launcher)
    assert non_get_requests(sandbox) == []  # the code was never exchanged


def test_a_failed_code_exchange_changes_nothing(connect_app):
    flow, sandbox, launcher = connect_app
    authorized = flow.authorize(flow.start("site_a"), stripe_sandbox_account=ACCOUNT)
    params = parse_qs(urlsplit(authorized.headers["location"]).query)
    response = flow.http.get(
        f"{flow.app_base}/stripe/connect/callback",
        params={"code": "ac_not_a_real_code", "state": params["state"][0]},
    )
    _, outcome, message = dashboard_message(response)
    assert outcome == "error" and "Stripe did not accept the authorization" in message
    assert "ac_not_a_real_code" not in message
    assert_nothing_changed(sandbox, launcher)
    token_calls = [r for r in sandbox.requests() if r["path"] == "/oauth/token"]
    assert [r["status"] for r in token_calls] == [400]


def test_an_account_already_feeding_another_site_is_refused(connect_app):
    flow, sandbox, launcher = connect_app
    lifecycle.connect_site("site_b", "b.example", ACCOUNT, backfill=False)
    callback = flow.callback(flow.authorize(flow.start("site_a"), stripe_sandbox_account=ACCOUNT))
    _, outcome, message = dashboard_message(callback)
    assert outcome == "error"
    assert f"Stripe account {ACCOUNT} is already connected to site 'site_b'" in message
    assert registered_sites() == ["site_b"]
    assert not DagsterInstance.get().has_dynamic_partition(SITES.name, "site_a")
    assert launcher.results == []


def test_an_unknown_site_without_a_domain_is_sent_back_with_a_message(connect_app):
    flow, sandbox, _ = connect_app
    _, outcome, message = dashboard_message(flow.start("site_new", domain=None))
    assert outcome == "error" and "no domain was given" in message
    _, outcome, message = dashboard_message(flow.start("Bad Site"))
    assert outcome == "error" and "not a valid site id" in message
    assert sandbox.requests() == []
