"""HTTP routes of a site's Stripe lifecycle: one-click connect, disconnect and delete.

    GET  /stripe/connect?site_id=...[&domain=...]  -> 302 to Stripe's OAuth consent page
    GET  /stripe/connect/callback                  -> 302 to the dashboard, with a message
    POST /sites/{site_id}/disconnect               -> JSON: the site, disconnected
    POST /sites/{site_id}/delete  {"confirm_domain": "shop.example.com"}  -> JSON

The connect routes answer a browser, so every outcome, good or bad, is a redirect to the
dashboard's Attribution tab (TRACE_DASHBOARD_URL, `{site_id}` filled in) with `stripe=connected`
or `stripe=error` and a `message` to show. The callback changes nothing unless the `state` is
valid and Stripe hands over the account; the backfill it starts runs in the background.

Settings: STRIPE_API_KEY, STRIPE_CLIENT_ID, STRIPE_CONNECT_BASE (see `stripe_oauth`),
TRACE_CONNECT_REDIRECT_URI (this app's callback URL as registered with Stripe),
TRACE_DASHBOARD_URL and TRACE_STATE_SECRET (see `oauth_state`).
Shortcoming: these routes trust their caller; serve them only behind the dashboard's
authenticated proxy, or anyone could connect, disconnect or delete a site they do not own.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from trace_pipelines import lifecycle
from trace_pipelines.oauth_state import StateError, StateSigner, state_secret_from_env
from trace_pipelines.resources.stripe_oauth import StripeOAuth, StripeOAuthError
from trace_pipelines.settings import inputs_dir, trace_paths
from trace_pipelines.sites import DOMAIN_PATTERN, SiteError, SiteRegistry, validate_site_id

logger = logging.getLogger(__name__)


class ConnectConfigError(RuntimeError):
    """The connect routes cannot start; the message names the setting to fix."""


@dataclass(frozen=True)
class ConnectSettings:
    """Everything the routes need, read once when the app starts."""

    oauth: StripeOAuth
    signer: StateSigner
    redirect_uri: str
    dashboard_url: str

    @classmethod
    def from_env(cls) -> ConnectSettings:
        """From the environment; raises ConnectConfigError naming what is missing."""
        try:
            oauth = StripeOAuth.from_env()
            secret = state_secret_from_env()
        except (StripeOAuthError, StateError) as error:
            raise ConnectConfigError(str(error)) from None
        values = {}
        for name in ("TRACE_CONNECT_REDIRECT_URI", "TRACE_DASHBOARD_URL"):
            value = os.environ.get(name, "")
            if urlsplit(value).scheme not in ("http", "https"):
                raise ConnectConfigError(
                    f"{name} must be an http(s) URL (the connect callback of this app, and "
                    "the dashboard's Attribution tab, where `{site_id}` is filled in)."
                )
            values[name] = value
        signer = StateSigner(secret, trace_paths().home / "oauth_states.sqlite")
        return cls(
            oauth=oauth,
            signer=signer,
            redirect_uri=values["TRACE_CONNECT_REDIRECT_URI"],
            dashboard_url=values["TRACE_DASHBOARD_URL"],
        )


def connect_routes(
    settings: ConnectSettings | None = None, launch: lifecycle.Launcher | None = None
) -> list[Route]:
    """The lifecycle routes, to mount in the app that also receives Stripe's webhooks.

    `launch` runs what a connect must read; by default a `BackgroundSync`, so the callback
    answers at once. Settings default to the environment and are checked here, at start-up.
    """
    settings = settings or ConnectSettings.from_env()
    launch = launch or lifecycle.BackgroundSync()
    handlers = _Handlers(settings, launch)
    return [
        Route("/stripe/connect", handlers.start, methods=["GET"]),
        Route("/stripe/connect/callback", handlers.callback, methods=["GET"]),
        Route("/sites/{site_id}/disconnect", handlers.disconnect, methods=["POST"]),
        Route("/sites/{site_id}/delete", handlers.delete, methods=["POST"]),
    ]


class _Handlers:
    def __init__(self, settings: ConnectSettings, launch: lifecycle.Launcher):
        self.settings = settings
        self.launch = launch

    async def start(self, request: Request) -> Response:
        site_id = request.query_params.get("site_id", "")
        try:
            validate_site_id(site_id)
            domain = _domain_of(site_id, request.query_params.get("domain"))
        except SiteError as error:
            return self._back(site_id, ok=False, message=str(error))
        state = self.settings.signer.issue(site_id, domain)
        url = self.settings.oauth.authorize_url(self.settings.redirect_uri, state)
        return RedirectResponse(url, status_code=302)

    async def callback(self, request: Request) -> Response:
        params = request.query_params
        if params.get("error"):
            # The owner declined (access_denied) or Stripe refused the request.
            logger.info("Stripe connect ended with error %s", params.get("error"))
            site_id = self._site_of_unverified(params.get("state"))
            if params.get("error") == "access_denied":
                message = "Stripe was not connected: the authorization was declined."
            else:
                message = f"Stripe was not connected ({params.get('error')}). Try again."
            return self._back(site_id, ok=False, message=message)
        try:
            ticket = self.settings.signer.redeem(params.get("state"))
        except StateError as error:
            return self._back("", ok=False, message=str(error))
        try:
            # Blocking calls (Stripe, SQLite, the Dagster instance) run off the event loop.
            account = await run_in_threadpool(
                self.settings.oauth.exchange_code, params.get("code") or ""
            )
            outcome = await run_in_threadpool(
                lifecycle.connect_site,
                ticket.site_id,
                ticket.domain,
                account,
                backfill=True,
                launch=self.launch,
            )
        except (StripeOAuthError, SiteError) as error:
            return self._back(ticket.site_id, ok=False, message=str(error))
        return self._back(ticket.site_id, ok=True, message=outcome.message)

    async def disconnect(self, request: Request) -> Response:
        site_id = request.path_params["site_id"]
        try:
            outcome = await run_in_threadpool(
                lifecycle.disconnect_site, site_id, oauth=self.settings.oauth
            )
        except (StripeOAuthError, SiteError) as error:
            return _json_error(error)
        return JSONResponse(
            {
                "site_id": site_id,
                "status": outcome.site.status,
                "disconnected_at": _iso(outcome.site.disconnected_at),
                "message": outcome.message,
            }
        )

    async def delete(self, request: Request) -> Response:
        site_id = request.path_params["site_id"]
        confirm = await _field(request, "confirm_domain")
        try:
            outcome = await run_in_threadpool(
                lifecycle.delete_site, site_id, confirm, oauth=self.settings.oauth
            )
        except (StripeOAuthError, SiteError) as error:
            return _json_error(error)
        return JSONResponse({"site_id": site_id, "deleted": True, "message": outcome.message})

    def _back(self, site_id: str, *, ok: bool, message: str) -> RedirectResponse:
        url = self.settings.dashboard_url.replace("{site_id}", site_id)
        query = urlencode({"stripe": "connected" if ok else "error", "message": message})
        separator = "&" if urlsplit(url).query else "?"
        return RedirectResponse(f"{url}{separator}{query}", status_code=302)

    def _site_of_unverified(self, state: str | None) -> str:
        # Only picks the dashboard page to return to; nothing is changed on its word.
        try:
            return self.settings.signer.verify(state).site_id
        except StateError:
            return ""


def _domain_of(site_id: str, given: str | None) -> str:
    """The site's domain: as registered, else as given, else from the inputs' sites.csv."""
    try:
        return SiteRegistry(trace_paths().registry).get(site_id).domain
    except SiteError:
        pass
    if given:
        domain = given.strip().lower()
        if not DOMAIN_PATTERN.match(domain):
            raise SiteError(f"'{domain}' is not a domain name: pass one like shop.example.com.")
        return domain
    folder = inputs_dir()
    sites_csv = folder / "sites.csv" if folder else None
    if sites_csv is not None and sites_csv.is_file():
        import csv

        with open(sites_csv, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if (row.get("site_id") or "").strip() == site_id and row.get("domain"):
                    return row["domain"].strip().lower()
    raise SiteError(
        f"Site '{site_id}' is not registered and no domain was given: open the connect link "
        "with `&domain=shop.example.com`, or list the site in sites.csv."
    )


async def _field(request: Request, name: str) -> str | None:
    """A field from a JSON or form body."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return None
        value = body.get(name) if isinstance(body, dict) else None
        return value if isinstance(value, str) else None
    # Parsed by hand: Starlette's form parser needs python-multipart, not installed here.
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    return form.get(name)


def _json_error(error: Exception) -> JSONResponse:
    status = 404 if str(error).startswith("Unknown site") else 400
    if isinstance(error, StripeOAuthError):
        status = 502
    return JSONResponse({"error": str(error)}, status_code=status)


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None
