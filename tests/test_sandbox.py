"""The local Stripe sandbox answers as Stripe does, over real HTTP, to the official SDK.

One sandbox with a small hand-built fixture folder serves most tests; tests that need other
options (rate limit, latency, a separate process) start their own.
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from trace_pipelines.sandbox import FixtureError, load_fixtures
from trace_pipelines.sandbox.server import (
    SandboxHandle,
    running_sandbox,
    running_sandbox_process,
)
from trace_pipelines.sandbox.store import Collection

KEY = "sk_test_trace_sandbox"
ALPHA, BETA, GONE = "acct_1Alpha", "acct_1Beta", "acct_1Gone"
NOW = 1_800_000_000
DAY = 86_400
T0 = 1_770_000_000
# 250 charges, two per second, so ordering must break ties on id.
CHARGE_CREATED = {f"ch_a{i:03d}": T0 + i // 2 for i in range(250)}


# --- Fixtures ------------------------------------------------------------------------------


def _obj(kind: str, object_id: str, created: int, **fields: Any) -> dict[str, Any]:
    return {"id": object_id, "object": kind, "created": created, "livemode": False, **fields}


def _write(root: Path, account: str, resource: str, objects: list[dict[str, Any]]) -> None:
    folder = root / account
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{resource}.json").write_text(json.dumps(objects))


def _alpha(root: Path) -> None:
    charges = [
        _obj(
            "charge",
            object_id,
            created,
            amount=1000 + i,
            currency="usd",
            customer="cus_a1" if i % 2 == 0 else "cus_a2",
            payment_intent=f"pi_a{i:03d}",
        )
        for i, (object_id, created) in enumerate(CHARGE_CREATED.items())
    ]
    # Files need not be sorted: the sandbox orders them, breaking ties on id.
    random.Random(7).shuffle(charges)
    refunds = [
        _obj("refund", f"re_a{k:02d}", T0 + 1000 + k, charge="ch_a000", amount=10)
        for k in range(12)
    ] + [_obj("refund", "re_b99", T0 + 2000, charge="ch_a001", amount=5)]
    customers = [
        _obj("customer", "cus_a1", T0 - 10, email="one@example.com"),
        _obj("customer", "cus_a2", T0 - 9, email="two@example.com"),
    ]
    subscriptions = [
        _obj("subscription", "sub_a1", T0, customer="cus_a1", status="active"),
        _obj("subscription", "sub_a2", T0 + 1, customer="cus_a1", status="canceled"),
        _obj("subscription", "sub_a3", T0 + 2, customer="cus_a2", status="past_due"),
    ]
    invoices = [
        _obj(
            "invoice",
            "in_a1",
            T0 + 10,
            customer="cus_a1",
            status="paid",
            parent={
                "type": "subscription_details",
                "subscription_details": {"subscription": "sub_a1", "metadata": {}},
            },
        ),
        # An invoice rendered in a pre-basil API version: the subscription at top level.
        _obj("invoice", "in_a2", T0 + 11, customer="cus_a2", status="open", subscription="sub_a3"),
        _obj("invoice", "in_a3", T0 + 12, customer="cus_a2", status="paid", parent=None),
    ]
    invoice_payments = [
        _obj(
            "invoice_payment",
            "inpay_a1",
            T0 + 10,
            invoice="in_a1",
            status="paid",
            payment={"type": "payment_intent", "payment_intent": "pi_a000"},
        ),
        _obj(
            "invoice_payment",
            "inpay_a2",
            T0 + 11,
            invoice="in_a1",
            status="paid",
            payment={"type": "charge", "charge": "ch_a001"},
        ),
        _obj(
            "invoice_payment",
            "inpay_a3",
            T0 + 12,
            invoice="in_a2",
            status="open",
            payment={"type": "payment_intent", "payment_intent": "pi_a002"},
        ),
    ]
    events = [
        _obj("event", "evt_new", NOW - DAY, type="charge.succeeded", data={"object": {}}),
        _obj("event", "evt_edge", NOW - 30 * DAY, type="invoice.paid", data={"object": {}}),
        _obj("event", "evt_refund", NOW - 2 * DAY, type="charge.refunded", data={"object": {}}),
        _obj("event", "evt_old", NOW - 30 * DAY - 1, type="charge.succeeded", data={"object": {}}),
    ]
    for resource, objects in [
        ("charges", charges),
        ("refunds", refunds),
        ("customers", customers),
        ("subscriptions", subscriptions),
        ("invoices", invoices),
        ("invoice_payments", invoice_payments),
        ("events", events),
        ("disputes", [_obj("dispute", "dp_a1", T0 + 5, charge="ch_a002", status="lost")]),
        ("checkout_sessions", [_obj("checkout.session", "cs_a1", T0, customer="cus_a1")]),
    ]:
        _write(root, ALPHA, resource, objects)


@pytest.fixture(scope="module")
def fixtures_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three accounts: a busy one, a small one, and one that disconnected the platform."""
    root = tmp_path_factory.mktemp("stripe_fixtures")
    _alpha(root)
    # Beta's charge points at Alpha's customer id: expansion must not reach across accounts.
    _write(
        root,
        BETA,
        "charges",
        [_obj("charge", f"ch_b{i}", T0 + i, customer="cus_a1") for i in range(3)],
    )
    _write(root, GONE, "charges", [_obj("charge", "ch_g0", T0)])
    (root / GONE / "revoked").touch()
    return root


@pytest.fixture(scope="module")
def sandbox(fixtures_dir: Path):
    """The shared sandbox, its clock fixed at NOW."""
    with running_sandbox(fixtures_dir, api_keys=[KEY], now=NOW) as handle:
        yield handle


@pytest.fixture(scope="module")
def client(sandbox: SandboxHandle) -> stripe.StripeClient:
    """The official SDK pointed at the sandbox, with retries off so errors surface."""
    return stripe.StripeClient(KEY, base_addresses={"api": sandbox.api_base}, max_network_retries=0)


@pytest.fixture(scope="module")
def http(sandbox: SandboxHandle):
    """A raw HTTP client for what the SDK hides: status codes, headers, bodies."""
    with httpx.Client(base_url=sandbox.api_base, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


@pytest.fixture(autouse=True)
def _no_leftover_faults(request: pytest.FixtureRequest):
    yield
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").clear_faults()


def _alpha_opts() -> dict[str, str]:
    return {"stripe_account": ALPHA}


def _ids(page: Any) -> list[str]:
    return [o["id"] for o in page["data"]]


def _get(http: httpx.Client, path: str, account: str | None = ALPHA, **params: Any) -> Any:
    headers = {"Stripe-Account": account} if account else {}
    return http.get(path, params=params, headers=headers)


NEWEST_FIRST = sorted(CHARGE_CREATED, key=lambda i: (CHARGE_CREATED[i], i), reverse=True)


# --- Ordering and paging -------------------------------------------------------------------


def test_pages_forward_newest_first_through_all_charges(client: stripe.StripeClient):
    pages = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = client.v1.charges.list(params=params, options=_alpha_opts())
        pages.append(page)
        if not page.has_more:
            break
        params["starting_after"] = page.data[-1].id

    assert [len(p.data) for p in pages] == [100, 100, 50]
    assert [p.has_more for p in pages] == [True, True, False]
    assert [c.id for p in pages for c in p.data] == NEWEST_FIRST
    assert pages[0].url == "/v1/charges"


def test_sdk_auto_paging_walks_every_charge_once(client: stripe.StripeClient):
    page = client.v1.charges.list(params={"limit": 100}, options=_alpha_opts())
    assert [c.id for c in page.auto_paging_iter()] == NEWEST_FIRST


def test_pages_backward_with_ending_before(http: httpx.Client):
    last = _get(http, "/v1/charges", limit=100, starting_after=NEWEST_FIRST[199]).json()
    assert _ids(last) == NEWEST_FIRST[200:]

    middle = _get(http, "/v1/charges", limit=100, ending_before=NEWEST_FIRST[200]).json()
    first = _get(http, "/v1/charges", limit=100, ending_before=NEWEST_FIRST[100]).json()
    short = _get(http, "/v1/charges", limit=100, ending_before=NEWEST_FIRST[50]).json()

    assert (_ids(middle), middle["has_more"]) == (NEWEST_FIRST[100:200], True)
    assert (_ids(first), first["has_more"]) == (NEWEST_FIRST[:100], False)
    assert (_ids(short), short["has_more"]) == (NEWEST_FIRST[:50], False)


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        ({"created[gte]": T0 + 10}, lambda c: c >= T0 + 10),
        ({"created[gt]": T0 + 10}, lambda c: c > T0 + 10),
        ({"created[lt]": T0 + 10}, lambda c: c < T0 + 10),
        ({"created[lte]": T0 + 10}, lambda c: c <= T0 + 10),
        ({"created": T0 + 10}, lambda c: c == T0 + 10),
        ({"created[gte]": T0 + 10, "created[lt]": T0 + 12}, lambda c: T0 + 10 <= c < T0 + 12),
        ({"created[gt]": T0 + 124}, lambda c: False),
        ({"created[lt]": T0}, lambda c: False),
    ],
    ids=["gte", "gt", "lt", "lte", "equal", "range", "after-all", "before-all"],
)
def test_created_filters_at_exact_second_boundaries(http: httpx.Client, params, keep):
    expected = [i for i in NEWEST_FIRST if keep(CHARGE_CREATED[i])]
    response = _get(http, "/v1/charges", limit=100, **params)
    page = response.json()
    assert response.status_code == 200
    assert _ids(page) == expected[:100]
    assert page["has_more"] is (len(expected) > 100)


@pytest.mark.parametrize(
    ("value", "status"),
    [("1", 200), ("100", 200), ("0", 400), ("101", 400), ("-5", 400), ("ten", 400)],
)
def test_limit_must_be_between_1_and_100(http: httpx.Client, value, status):
    response = _get(http, "/v1/charges", limit=value)
    assert response.status_code == status
    if status == 200:
        assert len(response.json()["data"]) == int(value)
    else:
        error = response.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", "limit")


@pytest.mark.parametrize(
    ("params", "status", "code", "param"),
    [
        ({"starting_after": "ch_nope"}, 400, "resource_missing", "starting_after"),
        ({"ending_before": "ch_nope"}, 400, "resource_missing", "ending_before"),
        ({"colour": "red"}, 400, "parameter_unknown", "colour"),
        ({"created[gte]": "yesterday"}, 400, None, "created[gte]"),
    ],
)
def test_bad_list_parameters_get_stripe_errors(http: httpx.Client, params, status, code, param):
    response = _get(http, "/v1/charges", **params)
    error = response.json()["error"]
    assert response.status_code == status
    assert (error.get("code"), error["param"]) == (code, param)


def test_sdk_raises_invalid_request_for_unknown_cursor(client: stripe.StripeClient):
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.charges.list(params={"starting_after": "ch_nope"}, options=_alpha_opts())
    assert raised.value.code == "resource_missing"
    assert raised.value.param == "starting_after"


# --- Filters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        ("/v1/subscriptions", {}, ["sub_a3", "sub_a1"]),
        ("/v1/subscriptions", {"status": "all"}, ["sub_a3", "sub_a2", "sub_a1"]),
        ("/v1/subscriptions", {"status": "canceled"}, ["sub_a2"]),
        ("/v1/subscriptions", {"status": "active", "customer": "cus_a1"}, ["sub_a1"]),
        ("/v1/invoices", {"subscription": "sub_a1"}, ["in_a1"]),
        ("/v1/invoices", {"subscription": "sub_a3"}, ["in_a2"]),
        ("/v1/invoices", {"customer": "cus_a2", "status": "paid"}, ["in_a3"]),
        ("/v1/invoice_payments", {"invoice": "in_a1"}, ["inpay_a2", "inpay_a1"]),
        ("/v1/invoice_payments", {"payment[type]": "charge"}, ["inpay_a2"]),
        ("/v1/invoice_payments", {"payment[payment_intent]": "pi_a002"}, ["inpay_a3"]),
        ("/v1/invoice_payments", {"payment[charge]": "ch_a001"}, ["inpay_a2"]),
        ("/v1/invoice_payments", {"status": "open"}, ["inpay_a3"]),
        ("/v1/refunds", {"charge": "ch_a001"}, ["re_b99"]),
        ("/v1/disputes", {"charge": "ch_a002"}, ["dp_a1"]),
        ("/v1/customers", {"email": "two@example.com"}, ["cus_a2"]),
        ("/v1/checkout/sessions", {"customer": "cus_a1"}, ["cs_a1"]),
        ("/v1/charges", {"payment_intent": "pi_a007"}, ["ch_a007"]),
        ("/v1/charges", {"customer": "cus_a2", "limit": 3}, ["ch_a249", "ch_a247", "ch_a245"]),
    ],
)
def test_list_filters(http: httpx.Client, path, params, expected):
    response = _get(http, path, **params)
    assert response.status_code == 200, response.text
    assert _ids(response.json()) == expected


# --- Expansion -----------------------------------------------------------------------------


def test_expanding_refunds_embeds_the_first_ten_and_pages_on(
    client: stripe.StripeClient, http: httpx.Client
):
    charge = client.v1.charges.retrieve(
        "ch_a000", params={"expand": ["refunds"]}, options=_alpha_opts()
    )
    refunds = charge.refunds
    newest = [f"re_a{k:02d}" for k in range(11, -1, -1)]
    assert [r.id for r in refunds.data] == newest[:10]
    assert (refunds.has_more, refunds.total_count) == (True, 12)
    assert refunds.url == "/v1/charges/ch_a000/refunds"

    rest = _get(http, "/v1/refunds", charge="ch_a000", starting_after=refunds.data[-1].id)
    assert _ids(rest.json()) == newest[10:]
    nested = _get(http, "/v1/charges/ch_a000/refunds", limit=5).json()
    assert (_ids(nested), nested["url"]) == (newest[:5], "/v1/charges/ch_a000/refunds")


def test_charges_come_without_refunds_unless_expanded(http: httpx.Client):
    plain = _get(http, "/v1/charges/ch_a001").json()
    listed = _get(http, "/v1/charges", limit=3, **{"expand[]": "data.refunds"}).json()
    assert "refunds" not in plain
    assert all(c["refunds"]["object"] == "list" for c in listed["data"])
    assert listed["data"][0]["refunds"]["total_count"] == 0


def test_expands_customer_on_a_list(client: stripe.StripeClient):
    page = client.v1.charges.list(
        params={"limit": 2, "expand": ["data.customer"]}, options=_alpha_opts()
    )
    assert [(c.customer.id, c.customer.email) for c in page.data] == [
        ("cus_a2", "two@example.com"),
        ("cus_a1", "one@example.com"),
    ]


def test_expands_nested_subscription_in_both_invoice_shapes(http: httpx.Client):
    page = _get(
        http,
        "/v1/invoices",
        **{
            "expand[0]": "data.parent.subscription_details.subscription",
            "expand[1]": "data.subscription",
            "customer": "cus_a1",
        },
    ).json()
    legacy = _get(http, "/v1/invoices/in_a2", **{"expand[]": "subscription"}).json()
    basil = page["data"][0]["parent"]["subscription_details"]["subscription"]

    assert (basil["object"], basil["id"]) == ("subscription", "sub_a1")
    assert (legacy["subscription"]["object"], legacy["subscription"]["id"]) == (
        "subscription",
        "sub_a3",
    )


def test_expanding_does_not_change_the_stored_objects(http: httpx.Client):
    _get(http, "/v1/charges/ch_a000", **{"expand[]": "customer"})
    assert _get(http, "/v1/charges/ch_a000").json()["customer"] == "cus_a1"


def test_expands_invoice_payments_and_serves_their_url(client: stripe.StripeClient):
    invoice = client.v1.invoices.retrieve(
        "in_a1",
        params={"expand": ["payments", "payments.data.payment.charge"]},
        options=_alpha_opts(),
    )
    payments = invoice.payments
    assert [p.id for p in payments.data] == ["inpay_a2", "inpay_a1"]
    assert (payments.total_count, payments.has_more) == (2, False)
    assert payments.url == "/v1/invoices/in_a1/payments"
    assert payments.data[0].payment.charge.amount == 1001
    # A PaymentIntent is not stored, so its id stays an id.
    assert payments.data[1].payment.payment_intent == "pi_a000"

    listed = client.v1.invoice_payments.list(params={"invoice": "in_a1"}, options=_alpha_opts())
    assert [p.id for p in listed.data] == ["inpay_a2", "inpay_a1"]


@pytest.mark.parametrize(
    ("path", "expand"),
    [
        ("/v1/charges", "customer"),  # a list needs the data. prefix
        ("/v1/charges", "data.amount"),  # not an id
        ("/v1/charges", "data.nothing_here"),
        ("/v1/charges", "data.customer.a.b.c"),  # deeper than 4 levels
        ("/v1/charges/ch_a000", "currency"),
        ("/v1/account", "settings"),
    ],
)
def test_unsupported_expand_paths_are_400(http: httpx.Client, path, expand):
    response = _get(http, path, **{"expand[]": expand})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "expand"


# --- Accounts, auth, errors ----------------------------------------------------------------


def test_an_account_sees_only_its_own_objects(http: httpx.Client):
    beta = _get(http, "/v1/charges", account=BETA, **{"expand[]": "data.customer"}).json()
    alpha_charge_from_beta = _get(http, "/v1/charges/ch_a000", account=BETA)
    platform = _get(http, "/v1/charges", account=None).json()

    assert _ids(beta) == ["ch_b2", "ch_b1", "ch_b0"]
    # cus_a1 belongs to Alpha, so Beta's expansion cannot turn it into an object.
    assert [c["customer"] for c in beta["data"]] == ["cus_a1"] * 3
    assert alpha_charge_from_beta.status_code == 404
    assert alpha_charge_from_beta.json()["error"]["code"] == "resource_missing"
    assert platform["data"] == []


@pytest.mark.parametrize("account", ["acct_1Unknown", GONE])
def test_unknown_or_revoked_account_is_403(client: stripe.StripeClient, account):
    with pytest.raises(stripe.PermissionError) as raised:
        client.v1.charges.list(options={"stripe_account": account})
    assert raised.value.http_status == 403
    assert raised.value.error.code == "account_invalid"
    assert f"account '{account}'" in raised.value.user_message


def test_revoking_and_restoring_an_account_at_runtime(
    client: stripe.StripeClient, sandbox: SandboxHandle
):
    sandbox.revoke(BETA)
    try:
        with pytest.raises(stripe.PermissionError):
            client.v1.charges.list(options={"stripe_account": BETA})
    finally:
        sandbox.restore(BETA)
    assert len(client.v1.charges.list(options={"stripe_account": BETA}).data) == 3


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        ("Bearer sk_test_wrongwrongwrong1234", "Invalid API Key provided: sk_test_****1234"),
        ("Bearer sk_test_short", "Invalid API Key provided: sk_test_****"),
        (None, "You did not provide an API key."),
        ("Basic " + "c2tfdGVzdF90cmFjZV9zYW5kYm94Og==", None),  # the key as user name
    ],
    ids=["wrong-key", "short-key", "no-key", "basic-auth"],
)
def test_authentication(sandbox: SandboxHandle, authorization, message):
    headers = {"Stripe-Account": ALPHA}
    if authorization:
        headers["Authorization"] = authorization
    response = httpx.get(f"{sandbox.api_base}/v1/customers", headers=headers)
    if message is None:
        assert response.status_code == 200
        return
    error = response.json()["error"]
    assert response.status_code == 401
    assert error["message"].startswith(message)
    assert "wrongwrongwrong" not in response.text and "short" not in error["message"]


def test_sdk_raises_authentication_error_for_a_bad_key(sandbox: SandboxHandle):
    bad = stripe.StripeClient("sk_test_not_the_key_abcd", base_addresses={"api": sandbox.api_base})
    with pytest.raises(stripe.AuthenticationError) as raised:
        bad.v1.charges.list(options=_alpha_opts())
    assert "sk_test_****abcd" in str(raised.value)
    assert "not_the_key" not in str(raised.value)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/payouts", 404),
        ("GET", "/v1/charges/ch_missing", 404),
        ("POST", "/v1/charges", 405),
        ("DELETE", "/v1/customers/cus_a1", 405),
        ("GET", "/not-stripe", 404),
    ],
)
def test_errors_are_stripe_json_with_a_request_id(http: httpx.Client, method, path, status):
    response = http.request(method, path, headers={"Stripe-Account": ALPHA})
    assert response.status_code == status
    assert set(response.json()) == {"error"}
    assert {"type", "message"} <= set(response.json()["error"])
    assert response.headers["Request-Id"].startswith("req_")


def test_account_endpoint_needs_no_account_header(http: httpx.Client):
    assert _get(http, "/v1/account").json()["id"] == ALPHA
    assert _get(http, "/v1/account", account=None).json()["object"] == "account"


# --- Events window -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["evt_new", "evt_refund", "evt_edge"]),
        ({"type": "charge.succeeded"}, ["evt_new"]),
        ({"type": "charge.*"}, ["evt_new", "evt_refund"]),
        ({"types[0]": "invoice.paid", "types[1]": "charge.refunded"}, ["evt_refund", "evt_edge"]),
        ({"created[lt]": NOW - 29 * DAY}, ["evt_edge"]),
    ],
)
def test_events_reach_back_30_days_only(http: httpx.Client, params, expected):
    assert _ids(_get(http, "/v1/events", **params).json()) == expected


def test_an_event_older_than_30_days_cannot_be_retrieved(client: stripe.StripeClient):
    assert client.v1.events.retrieve("evt_edge", options=_alpha_opts()).type == "invoice.paid"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.events.retrieve("evt_old", options=_alpha_opts())
    assert raised.value.http_status == 404


# --- Faults and the request log ------------------------------------------------------------


def test_injected_500s_fail_matching_requests_then_stop(
    client: stripe.StripeClient, sandbox: SandboxHandle
):
    sandbox.inject_fault(status=500, count=2, path_prefix="/v1/charges")

    assert client.v1.refunds.list(options=_alpha_opts()).data  # not a matching path
    for _ in range(2):
        with pytest.raises(stripe.APIError) as raised:
            client.v1.charges.list(options=_alpha_opts())
        assert raised.value.http_status == 500
    assert client.v1.charges.list(options=_alpha_opts()).data


def test_injected_429_carries_retry_hints(http: httpx.Client, sandbox: SandboxHandle):
    sandbox.inject_fault(status=429, count=1, path_prefix="/v1/customers", retry_after=3)
    limited = _get(http, "/v1/customers")
    after = _get(http, "/v1/customers")

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "3"
    assert limited.headers["Stripe-Should-Retry"] == "true"
    assert limited.json()["error"]["code"] == "rate_limit"
    assert after.status_code == 200


def test_sdk_sees_a_rate_limit_error(client: stripe.StripeClient, sandbox: SandboxHandle):
    sandbox.inject_fault(status=429, path_prefix="/v1/invoices")
    with pytest.raises(stripe.RateLimitError):
        client.v1.invoices.list(options=_alpha_opts())


def test_request_log_records_and_clears(http: httpx.Client, sandbox: SandboxHandle):
    sandbox.clear_requests()
    _get(http, "/v1/charges", limit=2)
    _get(http, "/v1/charges/ch_a001")
    _get(http, "/v1/charges", account="acct_1Unknown")
    log = sandbox.requests()
    sandbox.clear_requests()

    assert [(r["method"], r["path"], r["endpoint"], r["status"]) for r in log] == [
        ("GET", "/v1/charges", "/v1/charges", 200),
        ("GET", "/v1/charges/ch_a001", "/v1/charges/{id}", 200),
        ("GET", "/v1/charges", "/v1/charges", 403),
    ]
    assert [r["stripe_account"] for r in log] == [ALPHA, ALPHA, "acct_1Unknown"]
    assert log[0]["query"] == "limit=2"
    assert all(r["request_id"].startswith("req_") and r["timestamp"] > 0 for r in log)
    assert sandbox.requests() == []


def test_rate_limit_per_endpoint_under_concurrency(fixtures_dir: Path):
    with running_sandbox(fixtures_dir, rate_limit_per_endpoint=5) as handle:
        headers = {"Authorization": f"Bearer {KEY}", "Stripe-Account": ALPHA}
        with httpx.Client(base_url=handle.api_base, headers=headers) as http:
            with concurrent.futures.ThreadPoolExecutor(12) as pool:
                responses = list(pool.map(lambda _: http.get("/v1/charges"), range(12)))
            other_endpoint = http.get("/v1/customers")
            other_account = http.get("/v1/charges", headers={"Stripe-Account": BETA})

    statuses = sorted(r.status_code for r in responses)
    limited = [r for r in responses if r.status_code == 429]
    assert statuses == [200] * 5 + [429] * 7
    assert all(int(r.headers["Retry-After"]) >= 1 for r in limited)
    assert limited[0].json()["error"]["code"] == "rate_limit"
    assert (other_endpoint.status_code, other_account.status_code) == (200, 200)


def test_latency_overlaps_across_concurrent_requests(fixtures_dir: Path):
    with running_sandbox(fixtures_dir, latency_ms=300) as handle:
        headers = {"Authorization": f"Bearer {KEY}", "Stripe-Account": ALPHA}
        with httpx.Client(base_url=handle.api_base, headers=headers) as http:
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(5) as pool:
                codes = list(pool.map(lambda _: http.get("/v1/customers").status_code, range(5)))
            elapsed = time.perf_counter() - started

    assert codes == [200] * 5
    assert 0.3 <= elapsed < 1.0  # five 300 ms requests, served side by side


def test_an_internal_failure_is_a_stripe_500_without_a_stack_trace(
    fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("internal detail")

    monkeypatch.setattr(Collection, "query", broken)
    with running_sandbox(fixtures_dir) as handle:
        response = httpx.get(
            f"{handle.api_base}/v1/charges",
            headers={"Authorization": f"Bearer {KEY}", "Stripe-Account": ALPHA},
        )

    assert response.status_code == 500
    assert response.json()["error"]["type"] == "api_error"
    assert "internal detail" not in response.text and "Traceback" not in response.text
    assert response.headers["Request-Id"].startswith("req_")


@pytest.mark.parametrize(
    "body",
    [{"status": 404}, {"status": 500, "count": 0}, {"status": 500, "path_prefix": "v1"}, []],
)
def test_control_api_refuses_a_malformed_fault(sandbox: SandboxHandle, body):
    response = httpx.post(f"{sandbox.api_base}/_sandbox/faults", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("Cannot queue that fault")
    assert httpx.get(f"{sandbox.api_base}/_sandbox/faults").json()["pending"] == []


# --- Fixture loading and running -----------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "content", "problem"),
    [
        ("charges.json", "[{", "is not valid JSON"),
        ("charges.json", '{"id": "ch_1"}', "must hold a JSON array"),
        ("charges.json", '[{"created": 1}]', 'item 0 has no string "id"'),
        ("refunds.json", '[{"id": "re_1", "created": "today"}]', 'no integer "created"'),
        ("charges.json", '[{"id": "re_1", "object": "refund", "created": 1}]', 'not a "charge"'),
        ("charge.json", "[]", "is not a fixture file the sandbox knows"),
    ],
)
def test_malformed_fixture_fails_with_a_clear_message(tmp_path: Path, file, content, problem):
    folder = tmp_path / ALPHA
    folder.mkdir()
    (folder / file).write_text(content)

    with pytest.raises(FixtureError) as raised:
        load_fixtures(tmp_path)
    message = str(raised.value)
    assert str(folder / file) in message
    assert problem in message


def test_fixtures_folder_without_accounts_is_an_error(tmp_path: Path):
    with pytest.raises(FixtureError, match="holds no acct_"):
        load_fixtures(tmp_path)


def test_sandbox_runs_as_its_own_process(fixtures_dir: Path):
    with running_sandbox_process(fixtures_dir, now=NOW) as handle:
        client = stripe.StripeClient(KEY, base_addresses={"api": handle.api_base})
        page = client.v1.charges.list(params={"limit": 3}, options=_alpha_opts())
        assert [c.id for c in page.data] == NEWEST_FIRST[:3]
        assert handle.health()["revoked"] == [GONE]
    assert handle.process is not None and handle.process.poll() is not None
