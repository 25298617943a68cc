"""The webhook receiver over real HTTP: signatures, limits, routing and durable landing.

Each test runs the real app under uvicorn on a free port, posts with httpx, and reads back the
real landing store (SQLite, and PostgreSQL where the backend matters). Requests are signed
here with Stripe's published scheme (HMAC-SHA256 of "<t>.<body>"), independently of the SDK
the receiver verifies with.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest

from trace_pipelines.resources.landing import (
    LandingStore,
    PostgresLandingStore,
    SqliteLandingStore,
)
from trace_pipelines.sites import SiteRegistry
from trace_pipelines.web.app import ReceiverHandle, running_receiver

SECRET = "whsec_current_secret_for_tests"
OLD_SECRET = "whsec_previous_secret_in_rotation"
ACCOUNT_A, ACCOUNT_OFF, ACCOUNT_UNKNOWN = "acct_1SiteA", "acct_1SiteOff", "acct_1Nobody"


def sign(body: str | bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for `body`, as Stripe computes it."""
    text = body.decode() if isinstance(body, bytes) else body
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.{text}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def charge_event(
    event_id: str | None = None,
    account: str | None = ACCOUNT_A,
    event_type: str = "charge.succeeded",
    created: int | None = None,
) -> dict[str, Any]:
    created = created or int(time.time())
    event = {
        "id": event_id or f"evt_{uuid.uuid4().hex[:20]}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": created,
        "type": event_type,
        "livemode": False,
        "data": {
            "object": {
                "id": f"ch_{uuid.uuid4().hex[:16]}",
                "object": "charge",
                "created": created,
                "amount": 4200,
                "currency": "usd",
                "status": "succeeded",
            }
        },
    }
    if account:
        event["account"] = account
    return event


def post(receiver: ReceiverHandle, body: str | bytes, signature: str | None, **kw):
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return httpx.post(receiver.webhook_url, content=body, headers=headers, timeout=10, **kw)


@pytest.fixture
def registry(tmp_path: Path) -> SiteRegistry:
    registry = SiteRegistry(tmp_path / "sites.sqlite")
    registry.connect("site_a", "a.example.com", ACCOUNT_A)
    registry.connect("site_off", "off.example.com", ACCOUNT_OFF)
    registry.disconnect("site_off")
    return registry


@pytest.fixture
def landing(tmp_path: Path) -> SqliteLandingStore:
    return SqliteLandingStore(tmp_path / "landing.sqlite")


@pytest.fixture
def receiver(landing, registry) -> Iterator[ReceiverHandle]:
    with running_receiver(
        landing=landing, registry=registry, secrets=[SECRET, OLD_SECRET]
    ) as handle:
        yield handle


def landed_ids(landing: LandingStore) -> list[str]:
    return [event.event_id for event in landing.read_after(0)]


def test_a_signed_event_is_stored_before_the_answer_and_a_duplicate_only_once(receiver, landing):
    event = charge_event()
    body = json.dumps(event)

    first = post(receiver, body, sign(body))
    # Stripe's retry of the same event carries a fresh signature.
    retry = post(receiver, body, sign(body, timestamp=int(time.time()) + 1))

    assert (first.status_code, first.json()["outcome"]) == (200, "stored")
    assert (retry.status_code, retry.json()["outcome"]) == (200, "duplicate")
    [stored] = landing.read_after(0)
    assert (stored.event_id, stored.site_id, stored.account_id) == (
        event["id"],
        "site_a",
        ACCOUNT_A,
    )
    assert stored.payload == event


def test_a_secret_in_rotation_is_accepted_beside_the_current_one(receiver, landing):
    body = json.dumps(charge_event())
    assert post(receiver, body, sign(body, secret=OLD_SECRET)).status_code == 200
    assert landing.count() == 1


BAD_SIGNATURES = {
    "missing": lambda body: None,
    "malformed": lambda body: "this is not a signature",
    "no_v1": lambda body: f"t={int(time.time())},v0=abc",
    "expired": lambda body: sign(body, timestamp=int(time.time()) - 301),
    "from_the_future": lambda body: sign(body, timestamp=int(time.time()) + 3600),
    "wrong_secret": lambda body: sign(body, secret="whsec_someone_else"),
    "other_body": lambda body: sign(body.replace("4200", "1")),
}


@pytest.mark.parametrize("case", sorted(BAD_SIGNATURES))
def test_a_bad_signature_is_refused_and_nothing_is_stored(receiver, landing, case):
    body = json.dumps(charge_event())

    response = post(receiver, body, BAD_SIGNATURES[case](body))

    assert response.status_code == 400
    assert landing.count() == 0
    assert "whsec" not in response.text and "Traceback" not in response.text
    assert set(response.json()) == {"error"}


def test_a_replayed_request_is_refused_and_changes_nothing(receiver, landing):
    event = charge_event()
    body = json.dumps(event)
    signature = sign(body)
    assert post(receiver, body, signature).status_code == 200

    replay = post(receiver, body, signature)
    # Padding the header with a junk v1 entry is still the same signed request.
    padded = post(receiver, body, signature + ",v1=" + "0" * 64)

    assert replay.status_code == 400 and "already received" in replay.json()["error"]
    assert padded.status_code == 400
    assert landed_ids(landing) == [event["id"]]


def test_a_body_over_one_megabyte_gets_413_by_length_and_by_stream(receiver, landing):
    big = json.dumps({**charge_event(), "padding": "x" * (1024 * 1024)})

    declared = post(receiver, big, sign(big))

    def chunks() -> Iterator[bytes]:
        # Streamed without Content-Length: the receiver must count while reading.
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024].encode()

    streamed = httpx.post(
        receiver.webhook_url, content=chunks(), headers={"Stripe-Signature": sign(big)}
    )

    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert landing.count() == 0


@pytest.mark.parametrize("body", ["not json at all", "[1, 2, 3]", '{"id": "evt_1"}'])
def test_a_signed_body_that_is_not_an_event_gets_400(receiver, landing, body):
    response = post(receiver, body, sign(body))
    assert response.status_code == 400
    assert landing.count() == 0


def test_unknown_and_disconnected_accounts_are_answered_held_and_counted(receiver, landing):
    unknown = charge_event(account=ACCOUNT_UNKNOWN)
    disconnected = charge_event(account=ACCOUNT_OFF)
    platform = charge_event(account=None)

    answers = [post(receiver, json.dumps(e), sign(json.dumps(e))) for e in (unknown, disconnected)]
    answers.append(post(receiver, json.dumps(platform), sign(json.dumps(platform))))
    # Stripe retrying a held event: still one held record.
    answers.append(
        post(
            receiver, json.dumps(unknown), sign(json.dumps(unknown), timestamp=1 + int(time.time()))
        )
    )

    assert [a.status_code for a in answers] == [200, 200, 200, 200]
    assert {a.json()["outcome"] for a in answers} == {"held"}
    assert landing.count() == 0, "held events never enter the stream that is applied"
    assert landing.held_counts() == {
        "unknown_account": 1,
        "site_disconnected": 1,
        "no_account": 1,
    }
    stats = httpx.get(f"{receiver.url}/stripe/webhooks/stats").json()
    assert stats["held"] == landing.held_counts()
    assert stats["responses"]["held"] == 4


def test_other_event_types_are_acknowledged_and_ignored(receiver, landing):
    event = charge_event(event_type="payment_intent.created")
    response = post(receiver, json.dumps(event), sign(json.dumps(event)))
    assert (response.status_code, response.json()["outcome"]) == (200, "ignored")
    assert landing.count() == 0 and landing.held_counts() == {}


def test_deauthorization_is_landed_and_handed_to_the_disconnect_hook(landing, registry):
    calls: list[tuple[str, str]] = []
    event = {
        "id": "evt_deauth_1",
        "object": "event",
        "type": "account.application.deauthorized",
        "created": int(time.time()),
        "account": ACCOUNT_A,
        "data": {"object": {"id": "ca_trace", "object": "application"}},
    }
    body = json.dumps(event)
    with running_receiver(
        landing=landing,
        registry=registry,
        secrets=[SECRET],
        on_deauthorized=lambda site, e: calls.append((site.site_id, e["id"])),
    ) as receiver:
        first = post(receiver, body, sign(body))
        retry = post(receiver, body, sign(body, timestamp=int(time.time()) + 1))

    assert (first.status_code, retry.status_code) == (200, 200)
    assert calls == [("site_a", "evt_deauth_1")] * 2, "the hook is idempotent; retries reach it"
    assert landed_ids(landing) == ["evt_deauth_1"]


def test_a_failing_disconnect_hook_gets_500_so_stripe_retries(landing, registry):
    def broken(site, event):
        raise RuntimeError("registry unavailable: secret=whsec_do_not_leak")

    event = {
        "id": "evt_deauth_2",
        "type": "account.application.deauthorized",
        "created": int(time.time()),
        "account": ACCOUNT_A,
        "data": {"object": {"id": "ca_trace", "object": "application"}},
    }
    body = json.dumps(event)
    with running_receiver(
        landing=landing, registry=registry, secrets=[SECRET], on_deauthorized=broken
    ) as receiver:
        response = post(receiver, body, sign(body))
    assert response.status_code == 500
    assert "whsec" not in response.text and "RuntimeError" not in response.text


def test_health_answers_while_the_landing_store_does(receiver):
    assert httpx.get(f"{receiver.url}/healthz").json() == {"status": "ok"}


def test_the_receiver_refuses_to_start_without_a_secret(landing, registry, monkeypatch):
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    from trace_pipelines.web.app import create_app
    from trace_pipelines.web.webhooks import WebhookConfigError

    with pytest.raises(WebhookConfigError, match="STRIPE_WEBHOOK_SECRET is not set"):
        create_app(landing=landing, registry=registry)


@pytest.fixture
def postgres_landing() -> Iterator[PostgresLandingStore]:
    database = f"trace_webhooks_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'create database "{database}"')
    try:
        yield PostgresLandingStore(f"postgresql://postgres@127.0.0.1:5432/{database}")
    finally:
        admin.cursor().execute(f'drop database "{database}" with (force)')
        admin.close()


def test_on_postgresql_events_land_once_replays_fail_and_holds_count(postgres_landing, registry):
    event = charge_event()
    body = json.dumps(event)
    held = charge_event(account=ACCOUNT_UNKNOWN)
    with running_receiver(
        landing=postgres_landing, registry=registry, secrets=[SECRET]
    ) as receiver:
        signature = sign(body)
        outcomes = [
            post(receiver, body, signature).status_code,
            post(receiver, body, signature).status_code,
            post(receiver, body, sign(body, timestamp=int(time.time()) + 1)).status_code,
            post(receiver, json.dumps(held), sign(json.dumps(held))).status_code,
        ]
    assert outcomes == [200, 400, 200, 200]
    assert landed_ids(postgres_landing) == [event["id"]]
    assert postgres_landing.held_counts() == {"unknown_account": 1}
    postgres_landing.advance_watermark(1)
    postgres_landing.advance_watermark(0)
    assert postgres_landing.watermark() == 1, "a watermark never moves back"
