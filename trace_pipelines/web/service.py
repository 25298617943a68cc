"""The production app: the webhook receiver plus, on a Connect platform, the lifecycle routes.

`trace-pipelines webhooks serve` runs this. The Stripe Connect routes (one-click connect,
disconnect, delete) are mounted when STRIPE_CLIENT_ID says Trace is a Connect platform;
without it the app only receives webhooks, which is all a site that gave a restricted key
needs, and no OAuth secret has to be configured for that.
"""

from __future__ import annotations

import logging
import os

from starlette.applications import Starlette

from trace_pipelines import lifecycle
from trace_pipelines.web.app import DEFAULT_PORT, serve
from trace_pipelines.web.connect import ConnectSettings, connect_routes

logger = logging.getLogger(__name__)


def service_app_options() -> dict:
    """`create_app` options for the whole service, read from the environment."""
    options: dict = {"on_deauthorized": lifecycle.on_deauthorized_webhook}
    if os.environ.get("STRIPE_CLIENT_ID"):
        options["extra_routes"] = connect_routes(ConnectSettings.from_env())
    else:
        logger.info("STRIPE_CLIENT_ID is unset: serving webhooks without the Connect routes.")
    return options


def serve_service(port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> None:
    """Serve the receiver (and the Connect routes) until interrupted."""
    serve(host=host, port=port, **service_app_options())


def build_service_app() -> Starlette:
    """The same app, built without serving it (for an ASGI server of the operator's choice)."""
    from trace_pipelines.web.app import create_app

    return create_app(**service_app_options())
