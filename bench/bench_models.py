"""Benchmark: a full refresh of the SQL models over a million Stripe charges.

Writes a synthetic raw store straight as Parquet (Arrow tables built column-wise with each raw
table's own schema, no per-row dicts), plus Trace input CSVs, under `bench/out/models/`. Then
runs the `analytics_models` job (Trace inputs and every model, with their checks) three times,
each in a fresh child process so its peak memory can be read, and prints the median wall time
and the largest peak RSS.

The proportions follow a subscription-heavy shop: about 40% of charges pay invoices (70% of
those in the basil shape with invoice payments, 30% in the legacy one), 5% fail and 1% stay
pending or uncaptured, 5% are refunded, 0.6% disputed, half the payments come through
Checkout Sessions, and most buyers have a visitor with touchpoints and an identity. raw_json is
kept to a few hundred bytes per object; real objects are larger but no model reads raw_json.

    .venv/bin/python bench/bench_models.py [--charges N] [--runs 3] [--home DIR]

Goal: under 10 s wall and 2 GB peak on 2 cores for 1,000,000 charges.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trace_pipelines.assets.stripe_tables import (
    CHARGES,
    CHECKOUT_SESSIONS,
    CUSTOMERS,
    DISPUTES,
    INVOICE_PAYMENTS,
    INVOICES,
    REFUNDS,
    SUBSCRIPTIONS,
    RawTable,
)
from trace_pipelines.resources.raw_store import RawStore

SITES = ("site_bench_a", "site_bench_b")
WINDOW_START = datetime(2025, 12, 1, tzinfo=UTC)
WINDOW_SECONDS = 365 * 86400
OBSERVED_AT = np.datetime64("2026-12-01T00:00:00", "us")


def ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    """`prefix` followed by each number, as an Arrow string array, built without Python loops."""
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def pick(mask: np.ndarray, values: pa.Array) -> pa.Array:
    """`values` where `mask` holds, null elsewhere."""
    return pc.if_else(pa.array(mask), values, pa.nulls(len(values), values.type))


def to_timestamps(seconds: np.ndarray) -> pa.Array:
    return pa.array((seconds * 1_000_000).astype("datetime64[us]"), pa.timestamp("us"))


def raw_json(object_type: str, object_ids: pa.Array) -> pa.Array:
    body = json.dumps({"object": object_type, "livemode": False, "metadata": {}})[1:-1]
    return pc.binary_join_element_wise('{"id":"', object_ids, f'",{body}}}', "")


def finish(table: RawTable, columns: dict[str, pa.Array], site: np.ndarray, created: np.ndarray):
    """Add the common columns and return the table in the raw table's own schema."""
    n = len(site)
    object_ids = columns["id"]
    created_ts = to_timestamps(created)
    months = pc.cast(pc.floor_temporal(created_ts, unit="month"), pa.date32())
    full = {
        "site_id": pc.take(pa.array(SITES), pa.array(site)),
        "created": created_ts,
        "month": months,
        **columns,
        "observed_at": pa.array(np.full(n, OBSERVED_AT), pa.timestamp("us")),
        "raw_json": raw_json(table.stripe_object, object_ids),
    }
    if table.has_referenced_rows:
        full["is_referenced"] = pa.array(np.zeros(n, dtype=bool))
    schema = table.arrow_schema
    arrays = []
    for field in schema:
        value = full.get(field.name)
        arrays.append(pa.nulls(n, field.type) if value is None else pc.cast(value, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def build_raw(charges: int, seed: int = 7) -> tuple[dict[RawTable, pa.Table], np.ndarray]:
    """Every raw table for `charges` charges over two sites and twelve months.

    Also returns the site index of each customer, so the Trace inputs put buyers on their site.
    """
    rng = np.random.default_rng(seed)
    n = charges
    n_customers = max(1, int(n * 0.4))

    # Customers and the visitor each one was before buying.
    customer_site = rng.integers(0, len(SITES), n_customers)
    customer_created = WINDOW_START.timestamp() + rng.integers(0, WINDOW_SECONDS, n_customers)
    customer_numbers = np.arange(n_customers)
    emails = pc.binary_join_element_wise(
        "buyer", pc.cast(pa.array(customer_numbers), pa.string()), "@example.com", ""
    )

    # Charges: repeat buyers are common (a skewed pick of customers), a fifth are guests.
    buyer = np.minimum((rng.pareto(1.2, n) * n_customers / 8).astype(np.int64), n_customers - 1)
    guest = rng.random(n) < 0.2
    site = customer_site[buyer]
    created = np.maximum(
        customer_created[buyer] + rng.integers(0, 90 * 86400, n),
        WINDOW_START.timestamp(),
    ).astype(np.int64)
    created = np.minimum(created, WINDOW_START.timestamp() + WINDOW_SECONDS - 1).astype(np.int64)
    roll = rng.random(n)
    status = np.where(roll < 0.05, "failed", np.where(roll < 0.055, "pending", "succeeded"))
    captured = (status == "succeeded") & (rng.random(n) > 0.005)
    amount = rng.integers(500, 20000, n)
    currency = np.where(rng.random(n) < 0.03, "eur", "usd")
    charge_numbers = np.arange(n)
    charge_ids = ids("ch_", charge_numbers)
    intent_ids = ids("pi_", charge_numbers)
    customer_ids = ids("cus_", buyer)
    succeeded = (status == "succeeded") & captured

    # Invoices: 40% of succeeded, non-guest charges pay one.
    invoiced = succeeded & ~guest & (rng.random(n) < 0.4)
    legacy = invoiced & (rng.random(n) < 0.3)
    refunded = succeeded & (rng.random(n) < 0.05)
    refund_amount = np.where(rng.random(n) < 0.5, amount, amount // 3)
    amount_refunded = np.where(refunded, refund_amount, 0)
    charge_visitor = succeeded & (rng.random(n) < 0.1)
    visitor_ids = ids("vis_", buyer)

    tables: dict[RawTable, pa.Table] = {}
    tables[CHARGES] = finish(
        CHARGES,
        {
            "id": charge_ids,
            "status": pa.array(status),
            "paid": pa.array(status == "succeeded"),
            "captured": pa.array(captured),
            "amount": pa.array(amount),
            "amount_captured": pa.array(np.where(captured, amount, 0)),
            "amount_refunded": pa.array(amount_refunded),
            "currency": pa.array(currency),
            "disputed": pa.array(np.zeros(n, dtype=bool)),
            "customer_id": pick(~guest, customer_ids),
            "payment_intent_id": intent_ids,
            "invoice_id": pick(legacy, ids("in_", charge_numbers)),
            "billing_email": pick(guest, pc.take(emails, pa.array(buyer))),
            "receipt_email": pc.take(emails, pa.array(buyer)),
            "metadata_json": pa.array(np.full(n, "{}")),
            "trace_visitor_id": pick(charge_visitor, visitor_ids),
        },
        site,
        created,
    )

    # Subscriptions: one per customer with invoiced charges; first invoice creates it.
    inv = np.flatnonzero(invoiced)
    order = np.lexsort((created[inv], buyer[inv]))
    inv = inv[order]
    first = np.ones(len(inv), dtype=bool)
    first[1:] = buyer[inv][1:] != buyer[inv][:-1]
    subscription_ids = ids("sub_", buyer[inv])
    invoice_ids = ids("in_", inv)
    inv_legacy = legacy[inv]
    # A few paid invoices with no charge (paid out of band) and zero-amount trial invoices.
    tables[INVOICES] = finish(
        INVOICES,
        {
            "id": invoice_ids,
            "status": pa.array(np.full(len(inv), "paid")),
            "billing_reason": pa.array(
                np.where(first, "subscription_create", "subscription_cycle")
            ),
            "customer_id": pc.take(customer_ids, pa.array(inv)),
            "customer_email": pc.take(emails, pa.array(buyer[inv])),
            "subscription_id": subscription_ids,
            "charge_id": pick(inv_legacy, pc.take(charge_ids, pa.array(inv))),
            "payment_intent_id": None,
            "amount_due": pa.array(amount[inv]),
            "amount_paid": pa.array(amount[inv]),
            "currency": pa.array(currency[inv]),
            "paid_at": to_timestamps(created[inv]),
            "metadata_json": pa.array(np.full(len(inv), "{}")),
        },
        site[inv],
        created[inv],
    )
    basil = inv[~inv_legacy]
    tables[INVOICE_PAYMENTS] = finish(
        INVOICE_PAYMENTS,
        {
            "id": ids("inpay_", basil),
            "invoice_id": ids("in_", basil),
            "payment_type": pa.array(np.full(len(basil), "payment_intent")),
            "payment_intent_id": ids("pi_", basil),
            "amount_paid": pa.array(amount[basil]),
            "currency": pa.array(currency[basil]),
            "status": pa.array(np.full(len(basil), "paid")),
            "is_default": pa.array(np.ones(len(basil), dtype=bool)),
            "paid_at": to_timestamps(created[basil]),
        },
        site[basil],
        created[basil],
    )
    sub_rows = inv[first]
    tables[SUBSCRIPTIONS] = finish(
        SUBSCRIPTIONS,
        {
            "id": ids("sub_", buyer[sub_rows]),
            "customer_id": ids("cus_", buyer[sub_rows]),
            "status": pa.array(np.full(len(sub_rows), "active")),
            "currency": pa.array(currency[sub_rows]),
            "metadata_json": pa.array(np.full(len(sub_rows), "{}")),
        },
        site[sub_rows],
        created[sub_rows],
    )

    # Refunds and disputes.
    ref = np.flatnonzero(refunded)
    tables[REFUNDS] = finish(
        REFUNDS,
        {
            "id": ids("re_", ref),
            "charge_id": ids("ch_", ref),
            "payment_intent_id": ids("pi_", ref),
            "amount": pa.array(amount_refunded[ref]),
            "currency": pa.array(currency[ref]),
            "status": pa.array(np.full(len(ref), "succeeded")),
            "reason": pa.array(np.full(len(ref), "requested_by_customer")),
        },
        site[ref],
        created[ref],
    )
    dis = np.flatnonzero(succeeded & (rng.random(n) < 0.006))
    dispute_roll = rng.random(len(dis))
    tables[DISPUTES] = finish(
        DISPUTES,
        {
            "id": ids("dp_", dis),
            "charge_id": ids("ch_", dis),
            "payment_intent_id": ids("pi_", dis),
            "amount": pa.array(amount[dis]),
            "currency": pa.array(currency[dis]),
            "status": pa.array(
                np.where(
                    dispute_roll < 0.5, "lost", np.where(dispute_roll < 0.8, "won", "under_review")
                )
            ),
            "reason": pa.array(np.full(len(dis), "fraudulent")),
        },
        site[dis],
        created[dis],
    )

    # Customers.
    tables[CUSTOMERS] = finish(
        CUSTOMERS,
        {
            "id": ids("cus_", customer_numbers),
            "email": emails,
            "metadata_json": pa.array(np.full(n_customers, "{}")),
        },
        customer_site,
        customer_created.astype(np.int64),
    )

    # Checkout Sessions: half the one-off payments (by PaymentIntent) and every subscription.
    one_off_sessions = np.flatnonzero(~invoiced & (status == "succeeded") & (rng.random(n) < 0.5))
    session_rows = np.concatenate([one_off_sessions, sub_rows])
    session_is_sub = np.concatenate(
        [np.zeros(len(one_off_sessions), bool), np.ones(len(sub_rows), bool)]
    )
    with_visitor = rng.random(len(session_rows)) < 0.6
    tables[CHECKOUT_SESSIONS] = finish(
        CHECKOUT_SESSIONS,
        {
            "id": ids("cs_", np.arange(len(session_rows))),
            "mode": pa.array(np.where(session_is_sub, "subscription", "payment")),
            "status": pa.array(np.full(len(session_rows), "complete")),
            "payment_status": pa.array(np.full(len(session_rows), "paid")),
            "customer_id": pick(~guest[session_rows], ids("cus_", buyer[session_rows])),
            "customer_email": pc.take(emails, pa.array(buyer[session_rows])),
            "payment_intent_id": pick(~session_is_sub, ids("pi_", session_rows)),
            "subscription_id": pick(session_is_sub, ids("sub_", buyer[session_rows])),
            "currency": pa.array(currency[session_rows]),
            "metadata_json": pa.array(np.full(len(session_rows), "{}")),
            "trace_visitor_id": pick(with_visitor, ids("vis_", buyer[session_rows])),
        },
        site[session_rows],
        created[session_rows],
    )
    return tables, customer_site


def write_raw(home: Path, tables: dict[RawTable, pa.Table]) -> None:
    """One Parquet file per raw table, site and month, where the RawStore keeps them."""
    store = RawStore(home / "raw")
    store.ensure_schema_files()
    for table, data in tables.items():
        keys = pc.unique(
            pc.binary_join_element_wise(data["site_id"], pc.cast(data["month"], pa.string()), "|")
        ).to_pylist()
        for key in keys:
            site_id, month = key.split("|")
            rows = data.filter(
                pc.and_(
                    pc.equal(data["site_id"], site_id),
                    pc.equal(data["month"], date.fromisoformat(month)),
                )
            )
            path = store.partition_file(table, site_id, date.fromisoformat(month))
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(rows, path, compression="zstd")


def write_inputs(folder: Path, customer_site: np.ndarray, seed: int = 11) -> dict[str, int]:
    """Touchpoints for most buyers plus prospects, identities for most, daily ad spend."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_customers = len(customer_site)
    visitors = np.arange(int(n_customers * 1.5))  # a third more visitors never buy
    site = customer_site
    visitor_site = np.concatenate([site, rng.integers(0, len(SITES), len(visitors) - n_customers)])
    touches_per_visitor = rng.integers(1, 4, len(visitors))
    who = np.repeat(visitors, touches_per_visitor)
    when = WINDOW_START.timestamp() - 30 * 86400 + rng.integers(0, WINDOW_SECONDS, len(who))
    channels = np.array(
        ["google/cpc", "facebook/paid_social", "reddit/post", "newsletter/email", "/"]
    )
    channel = channels[rng.integers(0, len(channels), len(who))]
    source_medium = np.char.split(channel.astype(str), "/")
    sources = np.array([parts[0] for parts in source_medium])
    mediums = np.array([parts[1] for parts in source_medium])
    times = pc.strftime(to_timestamps(when.astype(np.int64)), format="%Y-%m-%dT%H:%M:%SZ")
    touchpoints = pa.table(
        {
            "site_id": pc.take(pa.array(SITES), pa.array(visitor_site[who])),
            "visitor_id": ids("vis_", who),
            "occurred_at": times,
            "source": pa.array(sources),
            "medium": pa.array(mediums),
            "campaign": pa.array(np.full(len(who), "always_on")),
        }
    )
    identified = np.flatnonzero(rng.random(n_customers) < 0.7)
    identity_times = WINDOW_START.timestamp() + rng.integers(0, WINDOW_SECONDS, len(identified))
    identities = pa.table(
        {
            "site_id": pc.take(pa.array(SITES), pa.array(site[identified])),
            "visitor_id": ids("vis_", identified),
            "email": pc.binary_join_element_wise(
                "buyer", pc.cast(pa.array(identified), pa.string()), "@example.com", ""
            ),
            "identified_at": pc.strftime(
                to_timestamps(identity_times.astype(np.int64)), format="%Y-%m-%dT%H:%M:%SZ"
            ),
        }
    )
    days = np.arange(np.datetime64("2025-12-01"), np.datetime64("2026-12-01"))
    spend_rows = [
        (site_id, str(day), source, medium, "always_on", int(rng.integers(1000, 50000)), "usd")
        for site_id in SITES
        for day in days
        for source, medium in (("google", "cpc"), ("facebook", "paid_social"))
    ]
    ad_spend = pa.table(
        dict(
            zip(
                ["site_id", "date", "source", "medium", "campaign", "amount", "currency"],
                map(list, zip(*spend_rows, strict=True)),
                strict=True,
            )
        )
    )
    for name, table in (
        ("touchpoints.csv", touchpoints),
        ("identities.csv", identities),
        ("ad_spend.csv", ad_spend),
    ):
        pacsv.write_csv(table, folder / name)
    return {"touchpoints": touchpoints.num_rows, "identities": identities.num_rows}


def refresh_once(home: Path) -> None:
    """Child process: run the analytics_models job once against the bench warehouse."""
    from dagster import DagsterInstance, Definitions
    from dagster_duckdb import DuckDBResource

    from trace_pipelines.assets.sql_models import analytics_models_job, model_assets
    from trace_pipelines.assets.trace_inputs import trace_input_assets
    from trace_pipelines.backfill import process_peak_rss_mb
    from trace_pipelines.resources.storage import TraceStorage

    defs = Definitions(
        assets=[*trace_input_assets, model_assets],
        jobs=[analytics_models_job],
        resources={
            "trace_storage": TraceStorage(home=str(home)),
            "duckdb": DuckDBResource(database=str(home / "warehouse.duckdb")),
        },
    )
    # The instance exists before a run starts, as the webserver's and daemon's do; creating it
    # is not part of the refresh.
    instance = DagsterInstance.ephemeral()
    started = time.perf_counter()
    result = defs.resolve_job_def("analytics_models").execute_in_process(instance=instance)
    seconds = time.perf_counter() - started
    timings = {}
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        if "build_seconds" in metadata:
            timings[event.asset_key.to_user_string()] = metadata["build_seconds"].value
    steps = {
        stats.step_key: stats.end_time - stats.start_time
        for stats in instance.get_run_step_stats(result.run_id)
    }
    failed = [
        f"{e.asset_check_key.asset_key.to_user_string()}.{e.asset_check_key.name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed
    ]
    print(
        json.dumps(
            {
                "seconds": seconds,
                "success": result.success,
                "builds": timings,
                "steps": steps,
                "failed_checks": failed,
                "peak_rss_mb": process_peak_rss_mb(),
            }
        )
    )


def run_child(home: Path) -> tuple[dict, int]:
    """Run one refresh in a child process; returns its report and peak RSS in bytes."""
    env = {**os.environ, "TRACE_HOME": str(home), "TRACE_INPUTS_DIR": str(home / "inputs")}
    env.setdefault("DAGSTER_HOME", str(home / "dagster_home"))
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, __file__, "--refresh-only", "--home", str(home)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(
            f"The refresh failed (status {status}); run with --refresh-only to see why."
        )
    report = json.loads(output.strip().splitlines()[-1])
    # CPU seconds do not grow when other processes compete for the cores; wall seconds do.
    report["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    # The child's own high-water mark: ru_maxrss would be at least this parent's size, which
    # exec carries over (and this parent holds the generated store).
    return report, int(report["peak_rss_mb"] * 1024 * 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charges", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--home", type=Path, default=Path(__file__).parent / "out" / "models")
    parser.add_argument("--refresh-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    home = args.home.resolve()
    if args.refresh_only:
        refresh_once(home)
        return

    shutil.rmtree(home, ignore_errors=True)
    started = time.perf_counter()
    tables, customer_site = build_raw(args.charges)
    write_raw(home, tables)
    inputs = write_inputs(home / "inputs", customer_site)
    counts = {table.name: data.num_rows for table, data in tables.items()} | inputs
    print(f"wrote the raw store and inputs in {time.perf_counter() - started:.1f}s: {counts}")

    walls, peaks, cpus = [], [], []
    for run in range(1, args.runs + 1):
        report, peak = run_child(home)
        walls.append(report["seconds"])
        peaks.append(peak)
        cpus.append(report["cpu_seconds"])
        slowest = sorted(report["builds"].items(), key=lambda item: -item[1])[:5]
        steps = report["steps"]
        inputs = sum(s for name, s in steps.items() if name.startswith("trace_"))
        models = sum(s for name, s in steps.items() if not name.startswith("trace_"))
        print(
            f"run {run}: {report['seconds']:.2f}s (steps: Trace inputs {inputs:.2f}s, models "
            f"and checks {models:.2f}s), cpu {report['cpu_seconds']:.1f}s, "
            f"peak {peak / 2**20:.0f} MiB, "
            f"success={report['success']}, failed checks={report['failed_checks']}, "
            f"slowest={slowest}"
        )
    print(
        f"charges={args.charges:,} median={statistics.median(walls):.2f}s "
        f"median_cpu={statistics.median(cpus):.1f}s peak_rss={max(peaks) / 2**20:.0f} MiB "
        f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
