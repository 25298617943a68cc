"""Stripe Connect OAuth in the sandbox: authorize, token exchange and deauthorize.

Real Stripe serves these at https://connect.stripe.com; the sandbox serves them on its own
address so the pipeline's connect flow runs end to end with the official SDK. There is no
consent screen: `GET /oauth/authorize` answers at once with the redirect Stripe sends after
the owner decides. Which account approves is chosen by the test-only query parameter
`stripe_sandbox_account=acct_...`; `stripe_sandbox_decision=deny` answers as an owner who
declined (`error=access_denied`). `POST /_sandbox/oauth/codes {"account": ...}` issues a code
directly, for tests that skip the redirect.

Approving connects the account (it reads again if it was revoked), a code works once within
five minutes, and `POST /oauth/deauthorize` revokes the account: reads for it get 403 from then
on, as on Stripe. Every OAuth request is recorded in the request log beside the /v1 ones.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from trace_pipelines.sandbox.app import SandboxState, StripeError, _control_state, json_response

CODE_TTL_SECONDS = 300
SCOPES = ("read_only", "read_write")


@dataclass
class _Grant:
    account_id: str
    scope: str
    expires_at: float


@dataclass
class OAuthCodes:
    """Authorization codes issued and not yet exchanged."""

    grants: dict[str, _Grant] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, account_id: str, scope: str) -> str:
        code = f"ac_{secrets.token_urlsafe(24)}"
        with self.lock:
            self.grants[code] = _Grant(account_id, scope, time.monotonic() + CODE_TTL_SECONDS)
        return code

    def redeem(self, code: str) -> _Grant | None:
        with self.lock:
            grant = self.grants.pop(code, None)
        if grant is None or grant.expires_at < time.monotonic():
            return None
        return grant


def oauth_routes() -> list[Route]:
    """The OAuth routes and their control endpoint, registered by `create_app`."""
    return [
        Route("/oauth/authorize", _authorize, methods=["GET"]),
        Route("/oauth/token", _token, methods=["POST"]),
        Route("/oauth/deauthorize", _deauthorize, methods=["POST"]),
        Route("/_sandbox/oauth/codes", _issue_code, methods=["POST"]),
    ]


def _codes(request: Request) -> OAuthCodes:
    # Created on first use so the app factory needs no more than the route registration.
    app_state = request.app.state
    if not hasattr(app_state, "oauth_codes"):
        app_state.oauth_codes = OAuthCodes()
    return app_state.oauth_codes


def oauth_error(status: int, error: str, description: str) -> Response:
    """Stripe's OAuth error shape, which differs from the /v1 `{"error": {...}}` one."""
    return json_response({"error": error, "error_description": description}, status)


async def _authorize(request: Request) -> Response:
    state: SandboxState = request.app.state.sandbox
    params = request.query_params
    redirect_uri = params.get("redirect_uri", "")
    if urlsplit(redirect_uri).scheme not in ("http", "https"):
        return oauth_error(400, "invalid_redirect_uri", "redirect_uri must be an http(s) URL.")
    if params.get("response_type") != "code":
        return oauth_error(400, "unsupported_response_type", "response_type must be code.")
    if not params.get("client_id", "").startswith("ca_"):
        return oauth_error(400, "invalid_client", "No such application: client_id is missing.")
    scope = params.get("scope", "read_only")
    if scope not in SCOPES:
        return oauth_error(400, "invalid_scope", f"Invalid scope: {scope}.")

    answer: dict[str, str] = {}
    if params.get("state") is not None:
        answer["state"] = params["state"]
    if params.get("stripe_sandbox_decision") == "deny":
        answer = {
            "error": "access_denied",
            "error_description": "The user denied your request",
            **answer,
        }
    else:
        account_id = params.get("stripe_sandbox_account", "")
        if state.store.account(account_id) is None:
            return oauth_error(
                400,
                "invalid_request",
                "The sandbox needs stripe_sandbox_account=acct_... naming a fixtures account "
                "to approve the connection.",
            )
        state.revoked.discard(account_id)
        answer = {"code": _codes(request).issue(account_id, scope), "scope": scope, **answer}
    separator = "&" if urlsplit(redirect_uri).query else "?"
    return RedirectResponse(f"{redirect_uri}{separator}{urlencode(answer)}", status_code=302)


async def _token(request: Request) -> Response:
    state: SandboxState = request.app.state.sandbox
    form = await _form(request)
    _authenticate(request, state, form.get("client_secret"))
    if form.get("grant_type") != "authorization_code":
        return oauth_error(
            400, "unsupported_grant_type", "Only grant_type=authorization_code is supported."
        )
    code = str(form.get("code") or "")
    if not code:
        return oauth_error(400, "invalid_request", "No authorization code provided.")
    grant = _codes(request).redeem(code)
    if grant is None:
        masked = f"{code[:6]}****"
        return oauth_error(400, "invalid_grant", f"Authorization code does not exist: {masked}")
    return json_response(
        {
            "access_token": f"sk_test_oauth_{secrets.token_hex(12)}",
            "livemode": False,
            "refresh_token": f"rt_{secrets.token_hex(12)}",
            "scope": grant.scope,
            "stripe_publishable_key": f"pk_test_{secrets.token_hex(12)}",
            "stripe_user_id": grant.account_id,
            "token_type": "bearer",
        }
    )


async def _deauthorize(request: Request) -> Response:
    state: SandboxState = request.app.state.sandbox
    form = await _form(request)
    _authenticate(request, state, form.get("client_secret"))
    if not str(form.get("client_id") or "").startswith("ca_"):
        return oauth_error(400, "invalid_request", "client_id is required.")
    account_id = str(form.get("stripe_user_id") or "")
    if state.store.account(account_id) is None or account_id in state.revoked:
        return oauth_error(
            401,
            "invalid_client",
            f"This application is not connected to stripe account {account_id}, or that "
            "account does not exist.",
        )
    state.revoked.add(account_id)
    return json_response({"stripe_user_id": account_id})


async def _issue_code(request: Request) -> Response:
    state = _control_state(request)
    try:
        body = json.loads(await request.body() or b"{}")
        account_id = body["account"]
    except (ValueError, KeyError, TypeError):
        raise StripeError(400, 'Send {"account": "acct_..."} to issue a code.') from None
    if state.store.account(account_id) is None:
        raise StripeError(404, f"No such account in the fixtures: '{account_id}'")
    state.revoked.discard(account_id)
    code = _codes(request).issue(account_id, str(body.get("scope", "read_only")))
    return json_response({"code": code, "account": account_id})


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded body the SDK sends (parsed here: Starlette's form parser needs an extra
    package the sandbox does without)."""
    return dict(parse_qsl((await request.body()).decode("utf-8", "replace")))


def _authenticate(request: Request, state: SandboxState, client_secret: object) -> None:
    """The platform's secret key, as Bearer auth (what the SDK sends) or `client_secret`."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    key = credentials.strip() if scheme.lower() == "bearer" else str(client_secret or "")
    if not key or not any(hmac.compare_digest(key.encode(), k.encode()) for k in state.api_keys):
        raise StripeError(401, "Invalid API Key provided: the platform's secret key is needed.")
