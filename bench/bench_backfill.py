"""Benchmark: a 12-month backfill of a large account from the sandbox, as Stripe would pace it.

The sandbox runs in its own process with a realistic 150 ms per request and Stripe's limit of
25 requests per second on any one endpoint enforced (429 above it); the client is given a live
key, so the per-account limit is Stripe's live 100/s. Two account sizes are run so that memory
can be compared as the account grows.

    .venv/bin/python bench/bench_backfill.py                     # 200,000 and 50,000 charges
    .venv/bin/python bench/bench_backfill.py --customers 6700    # one size only

Reports, per size: wall time, objects stored per second, answered (200) requests per second
per endpoint over the time that endpoint was in use, as a fraction of the 25/s ceiling, the
429s received, and the peak resident memory of a backfill worker process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
API_KEY = "sk_live_trace_bench"
CEILING = 25


def generate_store(customers: int) -> Path:
    """The benchmark store for `customers`, generated once a day and reused."""
    from trace_pipelines.demo import generate_demo_store

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    store = OUT / f"store-{customers}-{today:%Y%m%d}"
    if not (store / "trace" / "sites.csv").exists():
        print(f"generating a store of {customers:,} customers ...", flush=True)
        generate_demo_store(store, customers=customers, sites=1, seed=11, now=today)
    return store


def run_size(customers: int, latency_ms: float, concurrency: int) -> dict:
    store = generate_store(customers)
    home = OUT / f"run-{customers}"
    shutil.rmtree(home, ignore_errors=True)
    (home / "dagster_home").mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster_home" / "dagster.yaml")
    os.environ.update(
        TRACE_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster_home"),
        STRIPE_API_KEY=API_KEY,
    )

    from trace_pipelines.backfill import backfill
    from trace_pipelines.sandbox.server import running_sandbox_process
    from trace_pipelines.settings import trace_paths
    from trace_pipelines.sites import SiteRegistry

    site = (store / "trace" / "sites.csv").read_text().splitlines()[1].split(",")
    print(f"starting the sandbox on {store.name} ...", flush=True)
    with running_sandbox_process(
        store / "stripe",
        api_keys=(API_KEY,),
        latency_ms=latency_ms,
        rate_limit_per_endpoint=CEILING,
    ) as sandbox:
        os.environ["STRIPE_API_BASE"] = sandbox.api_base
        SiteRegistry(trace_paths().registry).connect(site[0], site[1], site[2])
        print("backfilling ...", flush=True)
        started = time.monotonic()
        outcomes = backfill([site[0]], months=12, concurrency=concurrency)
        seconds = time.monotonic() - started
        log = sandbox.requests()
    # The sandbox's request log, for reading where a run lost time (429s, idle endpoints).
    (home / "requests.json").write_text(json.dumps(log))

    failed = [o for o in outcomes if not o.success]
    if failed:
        sys.exit(f"{len(failed)} partitions failed: {failed[0].error}")
    by_endpoint: dict[str, list[float]] = defaultdict(list)
    statuses: Counter[int] = Counter()
    for request in log:
        statuses[request["status"]] += 1
        # The ceiling is about answered requests: a 429 is a request Stripe refused.
        if request["status"] == 200:
            by_endpoint[request["endpoint"]].append(request["timestamp"])
    endpoints = {}
    for endpoint, stamps in sorted(by_endpoint.items(), key=lambda item: -len(item[1])):
        active = max(stamps) - min(stamps)
        rate = (len(stamps) - 1) / active if active > 0 else 0.0
        endpoints[endpoint] = {
            "requests": len(stamps),
            "active_seconds": round(active, 1),
            "requests_per_second": round(rate, 2),
            "fraction_of_ceiling": round(rate / CEILING, 3),
        }
    rows = sum(o.rows for o in outcomes)
    with duckdb.connect(str(trace_paths().warehouse), read_only=True) as con:
        (charges_stored,) = con.execute("select count(*) from raw.stripe_charges").fetchone()
    return {
        "customers": customers,
        "charges_stored": charges_stored,
        "rows_stored": rows,
        "seconds": round(seconds, 1),
        "objects_per_second": round(rows / seconds),
        "requests": len(log),
        "status_429": statuses.get(429, 0),
        "peak_worker_rss_mb": round(max(o.peak_rss_mb for o in outcomes)),
        "endpoints": endpoints,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, nargs="*", default=[27_000, 6_700])
    parser.add_argument("--latency-ms", type=float, default=150)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    results = [run_size(n, args.latency_ms, args.concurrency) for n in args.customers]
    (OUT / "backfill_results.json").write_text(json.dumps(results, indent=2))
    for result in results:
        charges = result["endpoints"].get("/v1/charges", {})
        print(
            f"\n{result['customers']:,} customers, {result['charges_stored']:,} charges: "
            f"{result['rows_stored']:,} objects in "
            f"{result['seconds']}s = {result['objects_per_second']:,} objects/s; "
            f"{result['requests']:,} requests, {result['status_429']} answered 429; "
            f"peak worker memory {result['peak_worker_rss_mb']} MB"
        )
        print(
            f"  /v1/charges: {charges.get('requests', 0):,} requests at "
            f"{charges.get('requests_per_second', 0)}/s = "
            f"{charges.get('fraction_of_ceiling', 0):.0%} of the {CEILING}/s ceiling"
        )
        for endpoint, figures in result["endpoints"].items():
            print(
                f"  {endpoint:<28} {figures['requests']:>6,} requests "
                f"{figures['requests_per_second']:>6}/s ({figures['fraction_of_ceiling']:.0%})"
            )
    print(f"\nfull results: {OUT / 'backfill_results.json'}")


if __name__ == "__main__":
    main()
