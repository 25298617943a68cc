"""Receiver load: 5,000 signed events from 50 concurrent senders on loopback.

The receiver runs in its own process (uvicorn, the real app, SQLite landing store under a
scratch TRACE_HOME), as `trace-pipelines webhooks serve` runs it. Fifty senders post 5,000
distinct events, then re-send 500 of them as Stripe's retries would (fresh signatures); the
script checks that exactly 5,000 events are stored, once each, and prints acknowledgement
latency percentiles. Goal: p99 under 50 ms.

    .venv/bin/python bench/bench_webhooks.py [--events 5000] [--senders 50]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SECRET = "whsec_bench_receiver"
ACCOUNT = "acct_1BenchLoad"

_SERVER = """
import sys, uvicorn
from trace_pipelines.resources.landing import SqliteLandingStore
from trace_pipelines.sites import SiteRegistry
from trace_pipelines.web.app import create_app
home, port = sys.argv[1], int(sys.argv[2])
app = create_app(landing=SqliteLandingStore(home + "/landing.sqlite"),
                 registry=SiteRegistry(home + "/sites.sqlite"), secrets=[sys.argv[3]])
uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
            lifespan="off")
"""


def sign(body: str, timestamp: int) -> str:
    digest = hmac.new(SECRET.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def event(i: int) -> str:
    now = int(time.time())
    return json.dumps(
        {
            "id": f"evt_bench_{i:07d}",
            "object": "event",
            "type": "charge.succeeded",
            "created": now,
            "account": ACCOUNT,
            "api_version": "2026-10-28.endive",
            "data": {
                "object": {
                    "id": f"ch_bench_{i:07d}",
                    "object": "charge",
                    "created": now,
                    "amount": 1000 + i,
                    "currency": "usd",
                    "status": "succeeded",
                    "paid": True,
                    "captured": True,
                    "metadata": {"trace_visitor_id": f"v_{i}"},
                }
            },
        }
    )


async def send_all(url: str, numbers: list[int], senders: int, retry: bool) -> list[float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in numbers:
        queue.put_nowait(n)
    latencies: list[float] = []
    failures: list[int] = []

    async def sender() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            while not queue.empty():
                n = queue.get_nowait()
                body = event(n)
                # A retry is signed at another second, as Stripe signs each attempt.
                headers = {"Stripe-Signature": sign(body, int(time.time()) - (1 if retry else 0))}
                started = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    failures.append(response.status_code)

    await asyncio.gather(*(sender() for _ in range(senders)))
    if failures:
        raise SystemExit(f"{len(failures)} deliveries were not acknowledged: {failures[:5]}")
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--senders", type=int, default=50)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench_webhooks_"))
    from trace_pipelines.resources.landing import SqliteLandingStore
    from trace_pipelines.sites import SiteRegistry

    SiteRegistry(home / "sites.sqlite").connect("site_bench", "bench.example.com", ACCOUNT)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(home), str(port), SECRET],
        env={**os.environ, "TRACE_HOME": str(home)},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        url = f"{base}/stripe/webhooks"
        started = time.perf_counter()
        latencies = asyncio.run(send_all(url, list(range(args.events)), args.senders, False))
        seconds = time.perf_counter() - started
        retries = list(range(0, args.events, 10))
        retry_latencies = asyncio.run(send_all(url, retries, args.senders, True))
        stats = httpx.get(f"{base}/stripe/webhooks/stats").json()
    finally:
        server.terminate()
        server.wait(timeout=10)

    landing = SqliteLandingStore(home / "landing.sqlite")
    stored = landing.read_after(0, limit=args.events * 2)
    distinct = {e.event_id for e in stored}
    print(f"events sent: {args.events} from {args.senders} senders, then {len(retries)} retries")
    print(f"stored: {len(stored)} rows, {len(distinct)} distinct (expected {args.events})")
    print(f"answers: {stats['responses']}")
    print(f"throughput: {args.events / seconds:.0f} events/s")
    everything = latencies + retry_latencies
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        print(f"ack {name}: {percentile(everything, q) * 1000:.1f} ms")
    mean_ms, max_ms = statistics.mean(everything) * 1000, max(everything) * 1000
    print(f"ack mean: {mean_ms:.1f} ms, max {max_ms:.1f} ms")
    ok = len(stored) == len(distinct) == args.events
    print("exactly once:", "yes" if ok else "NO")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
