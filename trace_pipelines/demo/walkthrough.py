"""`make demo`: the whole pipeline on the embedded demo store, then the Dagster UI.

Steps: generate the demo store (once; it is kept under TRACE_HOME), serve it with the local
Stripe sandbox, register the demo sites, backfill 12 months of both through Dagster on the
persistent instance, refresh the revenue models, print a summary, and serve the UI with the
daemon until Ctrl-C. DEMO_UI=0 (or `--no-ui`) stops after the summary, for scripts.

While the UI runs, the webhook receiver runs beside it and the sandbox makes a purchase on the
first demo site every DEMO_PURCHASE_SECONDS (default 5; 0 turns it off) and posts its events,
signed, to the receiver; the daemon's sensor applies them, so new revenue appears in
`analytics.attributed_revenue` within seconds.
"""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

from dagster import DagsterInstance

from trace_pipelines.assets.stripe_tables import RAW_TABLES
from trace_pipelines.backfill import PartitionOutcome, backfill, register_site_partition
from trace_pipelines.cli import UsageError, print_outcome
from trace_pipelines.resources.warehouse import connect_warehouse
from trace_pipelines.sandbox.app import DEFAULT_API_KEY
from trace_pipelines.sandbox.server import running_sandbox_process
from trace_pipelines.settings import TracePaths, trace_paths
from trace_pipelines.sites import SiteRegistry

UI_ADDRESS = ("127.0.0.1", 3000)
RECEIVER_PORT = 8787


def run_demo(*, serve_ui: bool = True) -> int:
    """Run the demo; returns the process exit status."""
    serve_ui = serve_ui and os.environ.get("DEMO_UI", "1") != "0"
    paths = trace_paths()
    _check_dagster_home()
    store = _demo_store(paths)

    api_key = os.environ.get("STRIPE_API_KEY") or DEFAULT_API_KEY
    os.environ["STRIPE_API_KEY"] = api_key
    os.environ["TRACE_INPUTS_DIR"] = str(store / "trace")
    print("Starting the local Stripe sandbox ...", flush=True)
    with contextlib.ExitStack() as stack:
        try:
            sandbox = stack.enter_context(
                running_sandbox_process(store / "stripe", api_keys=(api_key,))
            )
        except RuntimeError:
            raise UsageError(
                f"The Stripe sandbox could not serve {store / 'stripe'} (its error is above). "
                "Fix the fixtures, or delete the demo store to generate it again."
            ) from None
        # Child processes (partition runs, the UI's code server and daemon) inherit these.
        os.environ["STRIPE_API_BASE"] = sandbox.api_base
        _configure_live_services(sandbox.api_base)
        site_ids = _register_sites(paths, store / "trace" / "sites.csv")

        print(f"Backfilling 12 months for {', '.join(site_ids)} (4 runs at a time) ...")
        started = time.monotonic()
        outcomes = backfill(site_ids, months=12, concurrency=4, on_outcome=print_outcome)
        backfill_seconds = time.monotonic() - started

        models_seconds = _refresh_models()
        _print_summary(paths, site_ids, outcomes, backfill_seconds, models_seconds)
        if any(not outcome.success for outcome in outcomes):
            return 1
        if serve_ui:
            return _serve_ui(sandbox, store, site_ids[0])
    return 0


def _configure_live_services(sandbox_base: str) -> None:
    """Settings for the receiver and the Connect routes, fresh secrets for every demo run."""
    receiver = f"http://127.0.0.1:{RECEIVER_PORT}"
    os.environ.setdefault("STRIPE_WEBHOOK_SECRET", "whsec_" + secrets.token_hex(24))
    os.environ.setdefault("TRACE_STATE_SECRET", secrets.token_hex(32))
    os.environ.setdefault("STRIPE_CLIENT_ID", "ca_trace_demo")
    os.environ.setdefault("STRIPE_CONNECT_BASE", sandbox_base)
    os.environ.setdefault("TRACE_CONNECT_REDIRECT_URI", f"{receiver}/stripe/connect/callback")
    host, port = UI_ADDRESS
    os.environ.setdefault("TRACE_DASHBOARD_URL", f"http://{host}:{port}/assets")


def _check_dagster_home() -> None:
    home = os.environ.get("DAGSTER_HOME")
    if not home or not (Path(home) / "dagster.yaml").is_file():
        raise UsageError(
            "DAGSTER_HOME must name a folder holding dagster.yaml; `make demo` sets it up "
            "(./data/dagster_home)."
        )


def _demo_store(paths: TracePaths) -> Path:
    from trace_pipelines.demo import generate_demo_store

    store = paths.home / "demo_store"
    if (store / "trace" / "sites.csv").is_file():
        print(f"Using the demo store in {store} (delete it to generate a fresh one).")
        return store
    print(f"Generating the demo store in {store} ...", flush=True)
    started = time.monotonic()
    generate_demo_store(store)
    print(f"  done in {time.monotonic() - started:.1f}s")
    return store


def _register_sites(paths: TracePaths, sites_csv: Path) -> list[str]:
    registry = SiteRegistry(paths.registry)
    instance = DagsterInstance.get()
    site_ids = []
    with open(sites_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            site = registry.connect(row["site_id"], row["domain"], row["stripe_account_id"])
            register_site_partition(instance, site.site_id)
            site_ids.append(site.site_id)
    return site_ids


def _refresh_models() -> float | None:
    """Materialize the Trace inputs and every SQL model once, so the tables exist right away."""
    from trace_pipelines.definitions import defs

    if not any(job.name == "analytics_models" for job in defs.jobs or []):
        return None
    print("Refreshing the revenue models ...", flush=True)
    started = time.monotonic()
    result = defs.resolve_job_def("analytics_models").execute_in_process(
        instance=DagsterInstance.get(),
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        raise_on_error=False,
    )
    if not result.success:
        print("  the model refresh failed; open its run in the UI for the logs.")
    return time.monotonic() - started


def _print_summary(
    paths: TracePaths,
    site_ids: list[str],
    outcomes: list[PartitionOutcome],
    backfill_seconds: float,
    models_seconds: float | None,
) -> None:
    requests: dict[str, int] = defaultdict(int)
    for outcome in outcomes:
        requests[outcome.site_id] += outcome.requests
    failed = sum(not outcome.success for outcome in outcomes)

    with connect_warehouse(paths, read_only=True) as con:
        counts = {
            (site_id, table.name): count
            for table in RAW_TABLES
            for site_id, count in con.execute(
                f"select site_id, count(*) from raw.{table.name} group by site_id"
            ).fetchall()
        }

    print()
    print(f"Backfill: {len(outcomes) - failed} of {len(outcomes)} partitions succeeded "
          f"in {backfill_seconds:.1f}s.")  # fmt: skip
    name_width = max(len(table.name) for table in RAW_TABLES)
    print("  " + "object".ljust(name_width) + "".join(f"{s:>12}" for s in site_ids))
    for table in RAW_TABLES:
        cells = "".join(f"{counts.get((s, table.name), 0):>12,}" for s in site_ids)
        print("  " + table.name.ljust(name_width) + cells)
    cells = "".join(f"{requests[s]:>12,}" for s in site_ids)
    print("  " + "Stripe API requests".ljust(name_width) + cells)
    if models_seconds is not None:
        print(f"Models refreshed in {models_seconds:.1f}s.")
    print(f"Warehouse: {paths.warehouse}")


def _serve_ui(sandbox, store: Path, site_id: str) -> int:
    from trace_pipelines.sandbox.delivery import run_purchase_loop, visitor_ids_from_inputs

    workspace = Path.cwd() / "workspace.yaml"
    if not workspace.is_file():
        raise UsageError("Run the demo from the repository root, where workspace.yaml is.")
    host, port = UI_ADDRESS
    receiver = subprocess.Popen(
        [sys.executable, "-m", "trace_pipelines.cli", "webhooks", "serve"]
        + ["--port", str(RECEIVER_PORT)]
    )
    print(f"\nServing the Dagster UI on http://{host}:{port} with the daemon; Ctrl-C stops all.")
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace)]
    ui = subprocess.Popen([*command, "-h", host, "-p", str(port)])

    stop = threading.Event()
    every = float(os.environ.get("DEMO_PURCHASE_SECONDS", "5"))
    if every > 0 and _wait_for_receiver(f"http://127.0.0.1:{RECEIVER_PORT}/healthz"):
        account = _account_of(store / "trace" / "sites.csv", site_id)
        print(f"A purchase on {site_id} every {every:g}s arrives through the webhook receiver.")
        threading.Thread(
            target=run_purchase_loop,
            args=(sandbox, account, f"http://127.0.0.1:{RECEIVER_PORT}/stripe/webhooks"),
            kwargs={
                "secret": os.environ["STRIPE_WEBHOOK_SECRET"].split(",")[0],
                "every_seconds": every,
                "visitor_ids": visitor_ids_from_inputs(store / "trace", site_id),
                "stop": stop,
            },
            daemon=True,
        ).start()
    try:
        return ui.wait()
    except KeyboardInterrupt:
        # dagster dev and the receiver received the same Ctrl-C and shut down on their own.
        return 0
    finally:
        stop.set()
        if receiver.poll() is None:
            receiver.terminate()  # uvicorn finishes the requests in flight on SIGTERM
        for process in (ui, receiver):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_receiver(health_url: str, timeout_seconds: float = 60) -> bool:
    """True once the receiver answers, so the first purchases are not posted into the void."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(health_url, timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    print("The webhook receiver did not start; no purchases will be simulated.")
    return False


def _account_of(sites_csv: Path, site_id: str) -> str:
    with open(sites_csv, newline="") as handle:
        return next(
            r["stripe_account_id"] for r in csv.DictReader(handle) if r["site_id"] == site_id
        )
