"""Shared pieces of the lifecycle and connect tests: the environment, an app served over real
HTTP, and queries that read a TRACE_HOME back. Holds no tests itself."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from trace_pipelines.sandbox import DEFAULT_API_KEY as SANDBOX_KEY

REPO = Path(__file__).resolve().parents[1]
CLIENT_ID = "ca_trace_test_platform"
STATE_SECRET = "test-state-secret-0123456789abcdef0123456789abcdef"
DASHBOARD = "http://dashboard.test/sites/{site_id}/attribution"


def set_lifecycle_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, api_base: str, callback_url: str
) -> Path:
    """TRACE_HOME, DAGSTER_HOME (the repository's deploy/dagster.yaml) and the Stripe settings
    pointing at the sandbox; returns TRACE_HOME."""
    home = tmp_path / "trace_home"
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    settings = {
        "TRACE_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "STRIPE_API_KEY": SANDBOX_KEY,
        "STRIPE_API_BASE": api_base,
        "STRIPE_CONNECT_BASE": api_base,
        "STRIPE_CLIENT_ID": CLIENT_ID,
        "TRACE_STATE_SECRET": STATE_SECRET,
        "TRACE_CONNECT_REDIRECT_URI": callback_url,
        "TRACE_DASHBOARD_URL": DASHBOARD,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    for name in ("TRACE_INPUTS_DIR", "TRACE_LANDING_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


def bound_socket() -> tuple[socket.socket, str]:
    """A socket bound to a free local port, and its base URL: the URL is known (for the
    OAuth redirect URI) before the app that will serve it is built."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def serving(routes: list[Route], sock: socket.socket) -> Iterator[None]:
    """Serve the routes with uvicorn on `sock` in a thread for the block."""
    config = uvicorn.Config(Starlette(routes=routes), log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def query(home: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def non_get_requests(sandbox) -> list[tuple[str, str]]:
    """(method, path) of every request the sandbox served that was not a GET."""
    return [(r["method"], r["path"]) for r in sandbox.requests() if r["method"] != "GET"]
