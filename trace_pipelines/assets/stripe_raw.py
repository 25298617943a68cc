"""Raw Stripe assets: one per object type, materialized together per site and month.

All eight raw tables of a site-month come from one run step: the charges page that brings a
charge also brings its refunds and its customer, and an invoices page brings the invoice
payments, so fetching them apart would repeat requests. Each table is still its own asset, with
its own schema, row count and lineage in the UI.
"""

import time
from collections.abc import Iterator
from datetime import date

from dagster import (
    AssetExecutionContext,
    AssetSpec,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    multi_asset,
)

from trace_pipelines.assets.stripe_fetch import ENDPOINTS_BY_TABLE, MonthFetch
from trace_pipelines.assets.stripe_tables import RAW_TABLES, RawTable
from trace_pipelines.partitions import SITE_MONTHS, MonthWindow
from trace_pipelines.resources.storage import TraceStorage
from trace_pipelines.resources.stripe_reader import StripeReader, StripeReadError
from trace_pipelines.resources.warehouse import ensure_raw_views
from trace_pipelines.sites import SiteError, SiteRegistry

RAW_GROUP = "stripe_raw"


def _column_schema(table: RawTable) -> TableSchema:
    descriptions = table.column_descriptions()
    return TableSchema(
        columns=[
            TableColumn(name=field.name, type=str(field.type), description=descriptions[field.name])
            for field in table.arrow_schema
        ]
    )


def _spec(table: RawTable) -> AssetSpec:
    return AssetSpec(
        key=table.name,
        description=f"{table.description} Queried as `raw.{table.name}`.",
        group_name=RAW_GROUP,
        kinds={"stripe", "duckdb"},
        metadata={
            "dagster/column_schema": _column_schema(table),
            "dagster/table_name": f"raw.{table.name}",
        },
    )


@multi_asset(
    name="stripe_raw_objects",
    specs=[_spec(table) for table in RAW_TABLES],
    partitions_def=SITE_MONTHS,
    can_subset=False,
)
def stripe_raw_objects(
    context: AssetExecutionContext, stripe: StripeReader, trace_storage: TraceStorage
) -> Iterator[MaterializeResult]:
    """Every Stripe object of one site created in one month, read from its connected account.

    Re-running a partition re-reads the month and replaces its files, which is how the daily
    schedule picks up refunds, disputes and status changes of recent charges.
    """
    keys = context.partition_key.keys_by_dimension
    site_id, month = keys["site"], date.fromisoformat(keys["month"])
    paths = trace_storage.paths
    try:
        site = SiteRegistry(paths.registry).get(site_id)
    except SiteError as error:
        raise Failure(description=str(error)) from None

    reader = stripe.for_account(site.stripe_account_id)
    store = trace_storage.raw_store
    started = time.monotonic()
    try:
        with store.partition(site_id, month) as writer:
            MonthFetch(
                reader=reader,
                store=store,
                writer=writer,
                site_id=site_id,
                month=month,
                window_start=min(site.backfill_start or month, month),
                log=context.log.info,
            ).run()
    except StripeReadError as error:
        raise Failure(description=str(error)) from None
    seconds = time.monotonic() - started

    ensure_raw_views(paths)

    window = MonthWindow(month)
    context.log.info(
        "Site %s, %s: %s rows in %.1fs with %s requests (%s).",
        site_id,
        f"{month:%Y-%m}",
        sum(writer.row_counts.values()),
        seconds,
        sum(reader.requests.values()),
        dict(reader.requests),
    )
    for table in RAW_TABLES:
        yield MaterializeResult(
            asset_key=table.name,
            metadata={
                "dagster/row_count": writer.row_counts[table.name],
                "window_start": MetadataValue.text(window.start.isoformat()),
                "window_end": MetadataValue.text(window.end.isoformat()),
                "stripe_account": MetadataValue.text(site.stripe_account_id),
                "api_requests": sum(reader.requests[e] for e in ENDPOINTS_BY_TABLE[table.name]),
                "api_requests_partition_total": sum(reader.requests.values()),
                "fetch_seconds": round(seconds, 2),
            },
        )
