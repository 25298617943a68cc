"""A receiver process killed after storing an event but before answering loses nothing.

The receiver runs in its own process with the real app and a real SQLite landing store whose
commit is followed by the process dying (`os._exit`), the worst moment: the event is on disk,
Stripe saw no answer. A fresh receiver then gets Stripe's retry (re-signed, as Stripe does)
and must answer 2xx and keep the event once.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.test_webhooks import ACCOUNT_A, SECRET, charge_event, post, sign
from trace_pipelines.resources.landing import SqliteLandingStore
from trace_pipelines.sites import SiteRegistry
from trace_pipelines.web.app import running_receiver

_DYING_RECEIVER = """
import os, sys
import uvicorn
from trace_pipelines.resources.landing import SqliteLandingStore
from trace_pipelines.sites import SiteRegistry
from trace_pipelines.web.app import create_app

home, port, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class DiesAfterCommit(SqliteLandingStore):
    def land_signed(self, deliveries):
        outcomes = super().land_signed(deliveries)
        os._exit(17)  # committed, not answered

app = create_app(
    landing=DiesAfterCommit(home + "/landing.sqlite"),
    registry=SiteRegistry(home + "/sites.sqlite"),
    secrets=[secret],
)
uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_receiver_killed_after_storing_gets_the_retry_and_stores_once(tmp_path: Path):
    registry = SiteRegistry(tmp_path / "sites.sqlite")
    registry.connect("site_a", "a.example.com", ACCOUNT_A)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _DYING_RECEIVER, str(tmp_path), str(port), SECRET]
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the receiver did not start"
                time.sleep(0.05)

        event = charge_event()
        body = json.dumps(event)
        try:
            answer = httpx.post(
                f"http://127.0.0.1:{port}/stripe/webhooks",
                content=body,
                headers={"Stripe-Signature": sign(body)},
                timeout=10,
            )
        except httpx.TransportError:
            answer = None
        assert answer is None, "the sender saw no answer"
        assert process.wait(timeout=10) == 17
    finally:
        process.kill()
        process.wait()

    landing = SqliteLandingStore(tmp_path / "landing.sqlite")
    assert [e.event_id for e in landing.read_after(0)] == [event["id"]], "stored before dying"

    with running_receiver(landing=landing, registry=registry, secrets=[SECRET]) as receiver:
        retry = post(receiver, body, sign(body, timestamp=int(time.time()) + 1))

    assert (retry.status_code, retry.json()["outcome"]) == (200, "duplicate")
    assert landing.count() == 1
