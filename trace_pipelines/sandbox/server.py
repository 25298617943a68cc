"""Running the sandbox: in the foreground for the CLI, or in the background for tests.

`serve` blocks, as `trace-pipelines sandbox serve` wants. `running_sandbox` starts one on a
free port in a thread of the calling process, for tests; `running_sandbox_process` starts
one in a child process so a benchmark can give the server a core of its own. Both yield a
`SandboxHandle` that knows the `api_base` to point the Stripe SDK at and drives the control
API.
"""

from __future__ import annotations

import gc
import json
import logging
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from trace_pipelines.sandbox.app import DEFAULT_API_KEY, create_app
from trace_pipelines.sandbox.store import load_fixtures
from trace_pipelines.serving import serving_in_thread

logger = logging.getLogger(__name__)

DEFAULT_PORT = 12111


def build_app(
    fixtures_dir: str | Path,
    *,
    api_keys: Sequence[str] = (DEFAULT_API_KEY,),
    latency_ms: float = 0,
    rate_limit_per_endpoint: int | None = None,
    now: float | Callable[[], float] | None = None,
) -> Starlette:
    """Load `fixtures_dir` and build the sandbox app; see `create_app` for the options."""
    return create_app(
        load_fixtures(fixtures_dir),
        api_keys=api_keys,
        latency_ms=latency_ms,
        rate_limit_per_endpoint=rate_limit_per_endpoint,
        now=now,
    )


def serve(
    fixtures_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    api_keys: Sequence[str] = (DEFAULT_API_KEY,),
    latency_ms: float = 0,
    rate_limit_per_endpoint: int | None = None,
    now: float | None = None,
    access_log: bool = False,
) -> None:
    """Serve the sandbox on host:port until interrupted (Ctrl-C).

    Logging goes through `logging`; the caller configures handlers. Uvicorn's access log is
    off by default because formatting a line per request costs more than a page at 100+
    requests per second; the control API's request log records every request anyway.
    """
    app = build_app(
        fixtures_dir,
        api_keys=api_keys,
        latency_ms=latency_ms,
        rate_limit_per_endpoint=rate_limit_per_endpoint,
        now=now,
    )
    # The fixtures live as long as the process: moving them out of the collector's sight
    # spares every later full collection a walk over millions of objects (pauses of seconds).
    gc.freeze()
    logger.info(
        "Stripe sandbox on http://%s:%d (latency %sms, rate limit %s/s per endpoint)",
        host,
        port,
        latency_ms,
        rate_limit_per_endpoint or "no",
    )
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=access_log, lifespan="off"
    )
    uvicorn.Server(config).run()


@dataclass
class SandboxHandle:
    """A running sandbox: where to reach it and how to steer it through its control API."""

    api_base: str
    api_key: str = DEFAULT_API_KEY
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def requests(self) -> list[dict[str, Any]]:
        """Every /v1 request served so far, oldest first (method, path, query, endpoint,
        stripe_account, status, timestamp, request_id)."""
        return self._call("GET", "/_sandbox/requests")["data"]

    def clear_requests(self) -> None:
        """Empty the request log, e.g. between the phases of a benchmark."""
        self._call("DELETE", "/_sandbox/requests")

    def inject_fault(
        self,
        status: int = 500,
        count: int = 1,
        path_prefix: str = "/v1",
        retry_after: int | None = None,
    ) -> None:
        """Make the next `count` /v1 requests under `path_prefix` fail with `status`."""
        body = {"status": status, "count": count, "path_prefix": path_prefix}
        if retry_after is not None:
            body["retry_after"] = retry_after
        self._call("POST", "/_sandbox/faults", body)

    def clear_faults(self) -> None:
        """Drop any injected faults not yet used."""
        self._call("DELETE", "/_sandbox/faults")

    def revoke(self, account_id: str) -> None:
        """Answer for `account_id` as Stripe does once it has disconnected the platform."""
        self._call("POST", f"/_sandbox/accounts/{account_id}/revoke")

    def restore(self, account_id: str) -> None:
        """Undo `revoke`."""
        self._call("POST", f"/_sandbox/accounts/{account_id}/restore")

    def simulate_webhooks(self, **request: Any) -> dict[str, Any]:
        """Make a purchase, renewal, refund or dispute and post its events signed; the
        fields are those of `POST /_sandbox/webhooks/simulate` (see `delivery`)."""
        return self._call("POST", "/_sandbox/webhooks/simulate", request)

    def health(self) -> dict[str, Any]:
        """The sandbox's health answer: status, accounts served and accounts revoked."""
        return self._call("GET", "/_sandbox/health")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.api_base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise RuntimeError(f"Sandbox control call {method} {path} failed: {detail}") from None


@contextmanager
def running_sandbox(
    fixtures_dir: str | Path,
    *,
    api_keys: Sequence[str] = (DEFAULT_API_KEY,),
    latency_ms: float = 0,
    rate_limit_per_endpoint: int | None = None,
    now: float | Callable[[], float] | None = None,
    startup_timeout_s: float = 30,
) -> Iterator[SandboxHandle]:
    """Run a sandbox on a free local port in a background thread for the `with` block.

    Fixture errors are raised here, before the block runs. The port is bound before the
    server starts, so there is no window in which another process could take it.
    """
    app = build_app(
        fixtures_dir,
        api_keys=api_keys,
        latency_ms=latency_ms,
        rate_limit_per_endpoint=rate_limit_per_endpoint,
        now=now,
    )
    with serving_in_thread(app, "Stripe sandbox", startup_timeout_s) as api_base:
        yield SandboxHandle(api_base, api_key=api_keys[0])


@contextmanager
def running_sandbox_process(
    fixtures_dir: str | Path,
    *,
    api_keys: Sequence[str] = (DEFAULT_API_KEY,),
    latency_ms: float = 0,
    rate_limit_per_endpoint: int | None = None,
    now: float | None = None,
    startup_timeout_s: float = 300,
) -> Iterator[SandboxHandle]:
    """Run a sandbox in a child process (`python -m trace_pipelines.sandbox`) for the block.

    For benchmarks: the server gets its own interpreter and core instead of competing with
    the client for one GIL. The timeout is generous because loading benchmark-sized
    fixtures takes a while.
    """
    port = _free_port()
    command = [
        sys.executable, "-m", "trace_pipelines.sandbox",
        "--fixtures", str(fixtures_dir), "--port", str(port), "--latency-ms", str(latency_ms),
    ]  # fmt: skip
    for key in api_keys:
        command += ["--api-key", key]
    if rate_limit_per_endpoint:
        command += ["--rate-limit", str(rate_limit_per_endpoint)]
    if now is not None:
        command += ["--now", str(now)]

    process = subprocess.Popen(command)
    handle = SandboxHandle(f"http://127.0.0.1:{port}", api_key=api_keys[0], process=process)
    try:
        _wait_until_healthy(handle, process, startup_timeout_s)
        yield handle
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _free_port() -> int:
    # The child binds the port itself, so another process could take it in between; for a
    # local benchmark that race is negligible, and the health wait would report it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_healthy(
    handle: SandboxHandle, process: subprocess.Popen[bytes], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"The Stripe sandbox process exited with code {process.returncode} before "
                "it was ready; its error is printed above."
            )
        try:
            handle.health()
            return
        except (OSError, RuntimeError):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"The Stripe sandbox process was not ready within {timeout_s:.0f}s."
                ) from None
            time.sleep(0.1)
