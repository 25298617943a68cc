"""The sandbox's HTTP face: Stripe's read API served from fixtures, plus a control API.

`create_app` builds a Starlette app whose `/v1` routes answer as Stripe does (auth,
`Stripe-Account`, list paging and filters, `expand[]`, error JSON, `Request-Id`), so the
pipeline runs its real `stripe` SDK code against it. Routes come from the resource table in
`store.RESOURCES`, not from a handler per resource.

Without a `Stripe-Account` header a request reads the platform account, which has no data:
lists are empty and retrieves are 404, as they would be for a platform that only reads its
connected accounts. `GET /v1/account` without the header returns the platform account.

`/_sandbox/...` is the control API for tests and benchmarks (no auth, local clients only):
`GET health`, `POST|GET|DELETE faults`, `GET|DELETE requests`,
`POST accounts/{acct}/revoke|restore` and `POST webhooks/simulate` (signed webhook delivery,
see `delivery`). Only `/v1` and `/oauth` (see `oauth`) requests are logged and delayed.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trace_pipelines.sandbox.expand import Expander, ExpandError, parse_path
from trace_pipelines.sandbox.faults import (
    Fault,
    FaultQueue,
    LoggedRequest,
    RequestLog,
    SlidingWindowLimiter,
    retry_after_header,
)
from trace_pipelines.sandbox.store import (
    RESOURCES,
    Account,
    Collection,
    IncludeSpec,
    ListQuery,
    ResourceSpec,
    SandboxStore,
)

logger = logging.getLogger(__name__)

DEFAULT_API_KEY = "sk_test_trace_sandbox"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
_KEY_PREFIXES = ("sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_")
# `expand[]`, `expand[0]`, `types[]`: Stripe's encodings of an array parameter.
_ARRAY_KEY = re.compile(r"^(?P<name>[a-z_]+)\[\d*\]$")
_CREATED_KEY = re.compile(r"^created\[(?P<op>gt|gte|lt|lte)\]$")


class StripeError(Exception):
    """An error answered in Stripe's JSON shape: `{"error": {"type", "message", ...}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """An error with HTTP `status` and the fields Stripe puts in its error object."""
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"type": type, "message": message}
        if code is not None:
            self.body["code"] = code
        if param is not None:
            self.body["param"] = param
        self.headers = headers or {}

    def response(self) -> Response:
        """The HTTP response Stripe would send for this error."""
        return json_response({"error": self.body}, self.status, self.headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialized once, compactly: the hot path of every list page."""
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def mask_key(key: str) -> str:
    """An API key fit for an error message: its kind prefix and at most its last 4 characters."""
    prefix = next((p for p in _KEY_PREFIXES if key.startswith(p)), "")
    secret = key[len(prefix) :]
    # A short key would be mostly given away by its last 4 characters; show none of it.
    return f"{prefix}****{secret[-4:] if len(secret) >= 12 else ''}"


@dataclass
class SandboxState:
    """Everything a request handler needs: data, keys, clock and the configured faults."""

    store: SandboxStore
    api_keys: tuple[str, ...]
    latency_s: float = 0.0
    limiter: SlidingWindowLimiter | None = None
    clock: Callable[[], float] = time.time
    faults: FaultQueue = field(default_factory=FaultQueue)
    log: RequestLog = field(default_factory=RequestLog)
    revoked: set[str] = field(default_factory=set)

    def oldest_allowed(self, spec: ResourceSpec) -> int | None:
        """The oldest `created` a resource may show now (events: 30 days back), or None."""
        if spec.max_age_seconds is None:
            return None
        return int(self.clock()) - spec.max_age_seconds


def create_app(
    store: SandboxStore,
    *,
    api_keys: Sequence[str] = (DEFAULT_API_KEY,),
    latency_ms: float = 0,
    rate_limit_per_endpoint: int | None = None,
    now: float | Callable[[], float] | None = None,
) -> Starlette:
    """The sandbox app serving `store`.

    `api_keys` are the secret keys accepted; `latency_ms` delays every /v1 response;
    `rate_limit_per_endpoint` caps requests per second per (account, route) with 429s;
    `now` fixes the clock (Unix seconds, or a callable) that bounds the events window.
    """
    if isinstance(api_keys, str):
        api_keys = (api_keys,)
    if not api_keys:
        raise ValueError("the sandbox needs at least one API key to accept")
    if now is None:
        clock: Callable[[], float] = time.time
    elif callable(now):
        clock = now
    else:
        fixed = float(now)

        def clock() -> float:
            return fixed

    state = SandboxState(
        store=store,
        api_keys=tuple(api_keys),
        latency_s=latency_ms / 1000,
        limiter=SlidingWindowLimiter(rate_limit_per_endpoint) if rate_limit_per_endpoint else None,
        clock=clock,
        revoked={a.id for a in store.accounts.values() if a.revoked},
    )

    # Both import this module.
    from trace_pipelines.sandbox.delivery import delivery_routes
    from trace_pipelines.sandbox.oauth import oauth_routes

    app = Starlette(
        routes=_stripe_routes() + _control_routes() + oauth_routes() + delivery_routes(),
        exception_handlers={StripeError: _stripe_error, HTTPException: _http_error},
    )
    app.state.sandbox = state
    app.add_middleware(_SandboxMiddleware)
    return app


# --- Stripe routes -------------------------------------------------------------------------

Handler = Callable[[Request, Account], Awaitable[Response]]


def _stripe_routes() -> list[Route]:
    routes: list[Route] = []
    for spec in RESOURCES.values():
        routes.append(_route(spec.url, _list_handler(spec)))
        for include in spec.includes:
            url = f"{spec.url}/{{id}}/{include.field}"
            routes.append(_route(url, _embedded_list_handler(spec, include)))
        routes.append(_route(f"{spec.url}/{{id}}", _retrieve_handler(spec)))
    routes.append(_route("/v1/account", _retrieve_account))
    routes.append(Route("/v1/{rest:path}", _unknown_path, methods=ALL_METHODS))
    return routes


def _route(template: str, handler: Handler) -> Route:
    """A /v1 route whose handler runs only after the checks every Stripe request passes."""

    async def endpoint(request: Request) -> Response:
        state: SandboxState = request.app.state.sandbox
        request.scope["sandbox.endpoint"] = template
        if request.method != "GET":
            raise StripeError(
                405,
                f"The Stripe sandbox is read-only and does not serve {request.method} "
                f"{request.url.path}; it answers GET requests from its fixtures.",
            )
        _authenticate(request, state)
        account = _account(request, state)

        if state.limiter is not None:
            wait = state.limiter.acquire(account.id, template)
            if wait is not None:
                raise _rate_limited(wait)
        fault = state.faults.take(request.url.path)
        if fault is not None:
            raise _injected(fault)

        return await handler(request, account)

    return Route(template, endpoint, methods=ALL_METHODS)


def _authenticate(request: Request, state: SandboxState) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    key: str | None = None
    if scheme.lower() == "bearer" and credentials.strip():
        key = credentials.strip()
    elif scheme.lower() == "basic":
        # Stripe also takes the key as the Basic auth user name (as curl -u sends it).
        try:
            key = base64.b64decode(credentials, validate=True).decode().partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            key = None
    if not key:
        raise StripeError(
            401,
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY').",
        )
    if not any(hmac.compare_digest(key.encode(), k.encode()) for k in state.api_keys):
        raise StripeError(401, f"Invalid API Key provided: {mask_key(key)}")


def _account(request: Request, state: SandboxState) -> Account:
    account_id = request.headers.get("stripe-account")
    if not account_id:
        return state.store.platform
    account = state.store.account(account_id)
    if account is None or account_id in state.revoked:
        raise StripeError(
            403,
            f"The provided key does not have access to account '{account_id}' (or that "
            "account does not exist). Application access may have been revoked.",
            code="account_invalid",
        )
    return account


def _rate_limited(wait_s: float) -> StripeError:
    return StripeError(
        429,
        "Too many requests hit the API too quickly. We recommend an exponential backoff of "
        "your requests.",
        code="rate_limit",
        headers={"Retry-After": retry_after_header(wait_s), "Stripe-Should-Retry": "true"},
    )


def _injected(fault: Fault) -> StripeError:
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    if fault.status == 429:
        error = _rate_limited(fault.retry_after or 1)
        error.headers.update(headers)
        return error
    return StripeError(
        fault.status,
        f"An error occurred with our connection to Stripe (injected sandbox fault, HTTP "
        f"{fault.status}). Request the same page again.",
        type="api_error",
        headers=headers,
    )


def _list_handler(spec: ResourceSpec) -> Handler:
    async def handler(request: Request, account: Account) -> Response:
        state: SandboxState = request.app.state.sandbox
        collection = account.collections[spec.name]
        query, expand = _parse_params(request, spec, listing=True)
        return _list_response(state, account, collection, query, expand, spec.url)

    return handler


def _embedded_list_handler(parent: ResourceSpec, include: IncludeSpec) -> Handler:
    """`/v1/charges/{id}/refunds` and the like: the child list of one parent object."""
    child = RESOURCES[include.resource]

    async def handler(request: Request, account: Account) -> Response:
        state: SandboxState = request.app.state.sandbox
        parent_id = request.path_params["id"]
        if account.collections[parent.name].get(parent_id) is None:
            raise _missing(parent, parent_id, "id")
        query, expand = _parse_params(
            request, child, listing=True, fixed_filters=(include.foreign_key,)
        )
        query.filters[include.foreign_key] = (parent_id,)
        url = f"{parent.url}/{parent_id}/{include.field}"
        collection = account.collections[child.name]
        return _list_response(state, account, collection, query, expand, url)

    return handler


def _list_response(
    state: SandboxState,
    account: Account,
    collection: Collection,
    query: ListQuery,
    expand: list[str],
    url: str,
) -> Response:
    if query.starting_after is not None and query.ending_before is not None:
        raise StripeError(
            400,
            "You may only specify one of these parameters: ending_before, starting_after.",
        )
    for param in ("starting_after", "ending_before"):
        cursor = getattr(query, param)
        if cursor is not None and collection.get(cursor) is None:
            raise _missing(collection.spec, cursor, param)

    paths = _expand_paths(expand, in_list=True)
    page = collection.query(query, oldest_allowed=state.oldest_allowed(collection.spec))
    data = page.data
    if paths:
        expander = Expander(account)
        data = [_apply(expander, obj, paths) for obj in data]
    return json_response({"object": "list", "data": data, "has_more": page.has_more, "url": url})


def _retrieve_handler(spec: ResourceSpec) -> Handler:
    async def handler(request: Request, account: Account) -> Response:
        state: SandboxState = request.app.state.sandbox
        object_id = request.path_params["id"]
        _, expand = _parse_params(request, spec, listing=False)
        paths = _expand_paths(expand, in_list=False)

        obj = account.collections[spec.name].get(object_id)
        oldest = state.oldest_allowed(spec)
        if obj is None or (oldest is not None and obj["created"] < oldest):
            raise _missing(spec, object_id, "id")
        if paths:
            obj = _apply(Expander(account), obj, paths)
        return json_response(obj)

    return handler


async def _retrieve_account(request: Request, account: Account) -> Response:
    _, expand = _parse_params(request, None, listing=False)
    if expand:
        raise StripeError(400, f"This property cannot be expanded ({expand[0]}).", param="expand")
    return json_response(account.profile)


async def _unknown_path(request: Request) -> Response:
    _authenticate(request, request.app.state.sandbox)
    raise StripeError(
        404,
        f"Unrecognized request URL ({request.method}: {request.url.path}). The Stripe sandbox "
        "serves the read endpoints of charges, refunds, disputes, invoices, invoice_payments, "
        "customers, subscriptions, checkout/sessions, events and account.",
    )


def _missing(spec: ResourceSpec, object_id: str, param: str) -> StripeError:
    return StripeError(
        404 if param == "id" else 400,
        f"No such {spec.object.replace('.', ' ')}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


def _expand_paths(expand: list[str], *, in_list: bool) -> list[tuple[list[str], str]]:
    try:
        return [(parse_path(p, in_list=in_list), p) for p in expand]
    except ExpandError as e:
        raise StripeError(400, str(e), param="expand") from None


def _apply(
    expander: Expander, obj: dict[str, Any], paths: list[tuple[list[str], str]]
) -> dict[str, Any]:
    try:
        for segments, full_path in paths:
            obj = expander.expand(obj, segments, full_path)
    except ExpandError as e:
        raise StripeError(400, str(e), param="expand") from None
    return obj


def _parse_params(
    request: Request,
    spec: ResourceSpec | None,
    *,
    listing: bool,
    fixed_filters: tuple[str, ...] = (),
) -> tuple[ListQuery, list[str]]:
    """Validate the query string into a ListQuery and expand paths, as Stripe does: an
    unknown parameter is an error, never silently ignored."""
    query = ListQuery()
    expand: list[str] = []
    for key, value in request.query_params.multi_items():
        array = _ARRAY_KEY.match(key)
        name = array.group("name") if array else key
        created = _CREATED_KEY.match(key)

        if name == "expand":
            expand.append(value)
        elif not listing or spec is None:
            raise _unknown_param(key)
        elif key == "limit":
            query.limit = _integer(value, key)
            if not 1 <= query.limit <= 100:
                raise StripeError(
                    400,
                    f"Invalid limit: must be an integer between 1 and 100, got {value}.",
                    param="limit",
                )
        elif key in ("starting_after", "ending_before"):
            setattr(query, key, value)
        elif key == "created" or created:
            ts = _integer(value, key)
            op = created.group("op") if created else "eq"
            if op in ("eq", "gte", "gt"):
                gte = ts + 1 if op == "gt" else ts
                query.created_gte = (
                    gte if query.created_gte is None else max(query.created_gte, gte)
                )
            if op in ("eq", "lt", "lte"):
                lt = ts if op == "lt" else ts + 1
                query.created_lt = lt if query.created_lt is None else min(query.created_lt, lt)
        else:
            filter_spec = spec.filter(name)
            if filter_spec is None or name in fixed_filters or bool(array) != filter_spec.many:
                raise _unknown_param(key)
            previous = query.filters.get(name, ()) if filter_spec.many else ()
            query.filters[name] = (*previous, value)
    return query, expand


def _integer(value: str, param: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise StripeError(400, f"Invalid integer: {value}", param=param) from None


def _unknown_param(key: str) -> StripeError:
    return StripeError(
        400, f"Received unknown parameter: {key}", code="parameter_unknown", param=key
    )


async def _stripe_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StripeError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = f"Unrecognized request URL ({request.method}: {request.url.path})."
    return StripeError(exc.status_code, message).response()


# --- Control API -----------------------------------------------------------------------------


def _control_routes() -> list[Route]:
    return [
        Route("/_sandbox/health", _health, methods=["GET"]),
        Route("/_sandbox/faults", _faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sandbox/requests", _requests, methods=["GET", "DELETE"]),
        Route("/_sandbox/accounts/{account}/{action:str}", _revocation, methods=["POST"]),
    ]


def _control_state(request: Request) -> SandboxState:
    # The control API has no auth, so only a client on this machine may use it even when
    # the sandbox listens on a public interface.
    host = request.client.host if request.client else "127.0.0.1"
    if not (host.startswith("127.") or host in ("::1", "localhost", "testclient")):
        raise StripeError(403, "The sandbox control API only answers clients on localhost.")
    return request.app.state.sandbox


async def _health(request: Request) -> Response:
    state = _control_state(request)
    return json_response(
        {
            "status": "ok",
            "accounts": sorted(state.store.accounts),
            "revoked": sorted(state.revoked),
        }
    )


async def _faults(request: Request) -> Response:
    state = _control_state(request)
    if request.method == "POST":
        try:
            fault = Fault.from_json(json.loads(await request.body() or b"{}"))
        except ValueError as e:
            raise StripeError(400, f"Cannot queue that fault: {e}.") from None
        state.faults.add(fault)
        logger.info("Queued sandbox fault %s", fault)
    elif request.method == "DELETE":
        state.faults.clear()
    return json_response({"pending": [f.to_json() for f in state.faults.pending()]})


async def _requests(request: Request) -> Response:
    state = _control_state(request)
    if request.method == "DELETE":
        state.log.clear()
        return json_response({"object": "list", "data": []})
    return json_response({"object": "list", "data": state.log.to_json()})


async def _revocation(request: Request) -> Response:
    state = _control_state(request)
    account_id, action = request.path_params["account"], request.path_params["action"]
    if state.store.account(account_id) is None:
        raise StripeError(404, f"No such account in the fixtures: '{account_id}'", param="account")
    if action == "revoke":
        state.revoked.add(account_id)
    elif action == "restore":
        state.revoked.discard(account_id)
    else:
        raise StripeError(404, f"Unknown account action '{action}'; use revoke or restore.")
    logger.info("Sandbox account %s: %s", account_id, action)
    return json_response({"account": account_id, "revoked": account_id in state.revoked})


# --- Middleware ------------------------------------------------------------------------------


class _SandboxMiddleware:
    """Gives every response a `Request-Id`, delays and logs /v1 requests, and turns any
    unexpected exception into Stripe's 500 JSON instead of a stack trace."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{uuid.uuid4().hex[:14]}"
        path: str = scope["path"]
        is_stripe = path.startswith(("/v1/", "/oauth/")) or path == "/v1"
        state: SandboxState = scope["app"].state.sandbox if "app" in scope else None
        status = 500
        started = False
        # The latency is spent before the answer rather than before the handler: Stripe counts
        # a request against its rate limit when it arrives, and a handler run only after a
        # 150 ms timer would judge arrivals by when a busy event loop got round to the timer,
        # bunching requests the client had spaced evenly into 429s real Stripe would not send.
        answer_at = time.monotonic() + (state.latency_s if is_stripe and state else 0.0)

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                delay = answer_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                status, started = message["status"], True
                headers = [*message.get("headers", []), (b"request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("Sandbox failed on %s %s (%s)", scope["method"], path, request_id)
            if started:
                raise
            error = StripeError(
                500, "The Stripe sandbox hit an unexpected error; see its log.", type="api_error"
            )
            await error.response()(scope, receive, send_with_id)
        finally:
            if is_stripe and state is not None:
                headers = dict(scope["headers"])
                account = headers.get(b"stripe-account")
                state.log.append(
                    LoggedRequest(
                        method=scope["method"],
                        path=path,
                        query=scope.get("query_string", b"").decode("latin-1"),
                        stripe_account=account.decode("latin-1") if account else None,
                        endpoint=scope.get("sandbox.endpoint"),
                        status=status,
                        timestamp=time.time(),
                        request_id=request_id,
                    )
                )
