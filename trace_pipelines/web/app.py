"""The ASGI app Trace serves to the outside world, and ways to run it.

`create_app` assembles a list of routes: the health check, the webhook receiver and whatever
a caller adds through `extra_routes` (the Stripe Connect routes plug in there), so every
public route lives in one app served by one uvicorn. `serve` runs it in the foreground for
`trace-pipelines webhooks serve`; `running_receiver` runs it on a free port in a thread, for
tests and benchmarks.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from trace_pipelines.resources.landing import LandingStore, landing_store_from_env
from trace_pipelines.serving import serving_in_thread
from trace_pipelines.settings import trace_paths
from trace_pipelines.sites import SiteRegistry
from trace_pipelines.web.webhooks import (
    DeauthorizedHook,
    WebhookReceiver,
    webhook_secrets_from_env,
)

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8787


def create_app(
    *,
    landing: LandingStore | None = None,
    registry: SiteRegistry | None = None,
    secrets: Sequence[str] | None = None,
    on_deauthorized: DeauthorizedHook | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The app: `GET /healthz`, `POST /stripe/webhooks`, `GET /stripe/webhooks/stats`.

    Unset arguments come from the environment: the landing store from TRACE_LANDING_URL (else
    SQLite under TRACE_HOME), the site registry under TRACE_HOME, the signing secrets from
    STRIPE_WEBHOOK_SECRET. `on_deauthorized(site, event)` is called when Stripe reports that
    a site owner disconnected Trace from Stripe's side; without it the event is only landed.
    """
    receiver = WebhookReceiver(
        landing or landing_store_from_env(),
        registry or SiteRegistry(trace_paths().registry),
        list(secrets) if secrets is not None else webhook_secrets_from_env(),
        on_deauthorized=on_deauthorized,
    )

    async def healthz(request: Request) -> JSONResponse:
        """200 when the landing store answers, 503 (with no detail) when it does not."""
        try:
            await run_in_threadpool(receiver.landing.last_seq)
        except Exception as error:  # noqa: BLE001 - reported as unhealthy, not raised
            logger.error("Health check: the landing store failed (%s)", type(error).__name__)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        *receiver.routes(),
        *extra_routes,
    ]
    app = Starlette(routes=routes)
    app.state.webhooks = receiver
    return app


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, **app_options) -> None:
    """Serve the app until interrupted (Ctrl-C); `app_options` go to `create_app`."""
    app = create_app(**app_options)
    # What is built by now lives as long as the process: frozen, the collector stops walking
    # it, and a larger first generation means fewer collections. Collection pauses were the
    # receiver's slowest acknowledgements under load (bench/bench_webhooks.py).
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    logger.info("Stripe webhook receiver on http://%s:%d/stripe/webhooks", host, port)
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )
    uvicorn.Server(config).run()


@dataclass
class ReceiverHandle:
    """A receiver running in the background: its address and its app (for its counters)."""

    url: str
    app: Starlette

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/stripe/webhooks"


@contextmanager
def running_receiver(startup_timeout_s: float = 30, **app_options) -> Iterator[ReceiverHandle]:
    """Run the app on a free local port in a background thread for the `with` block."""
    app = create_app(**app_options)
    with serving_in_thread(app, "webhook receiver", startup_timeout_s) as url:
        yield ReceiverHandle(url, app)
