"""End-to-end latency: webhook POST to the row in `analytics.attributed_revenue`, daemon running.

Starts, in a scratch TRACE_HOME and DAGSTER_HOME (with deploy/dagster.yaml): the Dagster
daemon (`dagster-daemon run`, which runs the stripe_events sensor and the run queue) and the
webhook receiver. It applies once to build the warehouse, then posts `--events` signed
`charge.succeeded` events `--every` seconds apart and polls the warehouse (read-only) until
each charge is in `analytics.attributed_revenue`. Prints p50/p95/max. Goal: p95 <= 10 s.

    .venv/bin/python bench/bench_live_latency.py [--events 50] [--every 2]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import httpx

REPO = Path(__file__).resolve().parents[1]
SECRET = "whsec_bench_latency"
ACCOUNT = "acct_1BenchLatency"


def sign(body: str) -> str:
    t = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def charge_event(i: int) -> str:
    now = int(time.time())
    charge = {
        "id": f"ch_latency_{i:05d}",
        "object": "charge",
        "created": now,
        "amount": 1000 + i,
        "amount_captured": 1000 + i,
        "amount_refunded": 0,
        "currency": "usd",
        "status": "succeeded",
        "paid": True,
        "captured": True,
        "disputed": False,
        "billing_details": {"email": f"buyer{i}@example.com"},
        "metadata": {"trace_visitor_id": f"v_latency_{i}"},
    }
    return json.dumps(
        {
            "id": f"evt_latency_{i:05d}_{now}",
            "object": "event",
            "type": "charge.succeeded",
            "created": now,
            "account": ACCOUNT,
            "data": {"object": charge},
        }
    )


def visible(warehouse: Path, charge_ids: list[str]) -> set[str]:
    try:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            rows = con.execute(
                "select charge_id from analytics.attributed_revenue where charge_id in "
                "(select unnest($ids))",
                {"ids": charge_ids},
            ).fetchall()
    except duckdb.Error:
        return set()  # a model refresh holds the file; try again
    return {row[0] for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--every", type=float, default=2.0)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench_latency_"))
    env = {
        **os.environ,
        "TRACE_HOME": str(root / "trace"),
        "DAGSTER_HOME": str(root / "dagster"),
        "STRIPE_API_KEY": "sk_test_unused_by_this_benchmark",
        "STRIPE_WEBHOOK_SECRET": SECRET,
    }
    (root / "dagster").mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "dagster.yaml", root / "dagster" / "dagster.yaml")
    os.environ.update(env)

    from dagster import DagsterInstance

    from trace_pipelines.live.run import apply_and_refresh
    from trace_pipelines.partitions import SITES
    from trace_pipelines.sites import SiteRegistry

    SiteRegistry(root / "trace" / "sites.sqlite").connect("site_bench", "b.example.com", ACCOUNT)
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(SITES.name, ["site_bench"])
        apply_and_refresh(instance=instance)  # builds the warehouse and every table once

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bin_dir = Path(sys.executable).parent
    daemon = subprocess.Popen(
        [str(bin_dir / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    receiver = subprocess.Popen(
        [sys.executable, "-c", f"from trace_pipelines.web.app import serve; serve(port={port})"],
        env=env,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}/stripe/webhooks"
    warehouse = root / "trace" / "warehouse.duckdb"
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    try:
        for _ in range(600):
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        time.sleep(10)  # the daemon loads the code location and starts the sensor
        next_send = time.monotonic()
        i = 0
        deadline = None
        while len(seen) < args.events:
            now = time.monotonic()
            if i < args.events and now >= next_send:
                body = charge_event(i)
                started = time.monotonic()
                response = httpx.post(url, content=body, headers={"Stripe-Signature": sign(body)})
                response.raise_for_status()
                sent[f"ch_latency_{i:05d}"] = started
                i += 1
                next_send += args.every
                if i == args.events:
                    deadline = time.monotonic() + 120
            pending = [c for c in sent if c not in seen]
            if pending:
                for charge_id in visible(warehouse, pending):
                    seen[charge_id] = time.monotonic()
            if deadline and time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        receiver.terminate()
        daemon.terminate()
        receiver.wait(timeout=30)
        daemon.wait(timeout=60)

    latencies = sorted(seen[c] - sent[c] for c in seen)
    missing = len(sent) - len(seen)
    if not latencies:
        raise SystemExit("no event reached analytics.attributed_revenue")

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    print(f"events: {len(sent)} sent every {args.every}s, {len(seen)} visible, {missing} missing")
    print(f"latency p50: {pct(0.5):.1f} s, p95: {pct(0.95):.1f} s, max: {latencies[-1]:.1f} s")


if __name__ == "__main__":
    main()
