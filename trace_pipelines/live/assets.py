"""The Dagster side of live revenue: the asset that applies landed events, and its job.

`stripe_webhook_events` applies every landed event to the raw tables (`apply.py`) and reports
each raw (month, site) partition it changed as a materialization of that raw asset, so the
UI shows live updates on the same partitions the backfill fills. The SQL models that read
`raw.*` depend on it (`live_model_assets`), so `stripe_live_apply` (this asset and what
`analytics.attributed_revenue` is built from) applies first and then refreshes the revenue
tables, in one process: a small run starts fast, and the models write one DuckDB file
under one lock anyway.
"""

from datetime import UTC, date, datetime

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
    in_process_executor,
)

from trace_pipelines.assets.sql_models import build_model_assets
from trace_pipelines.assets.stripe_tables import RAW_TABLES_BY_NAME
from trace_pipelines.live.apply import apply_landed_events, pending_events
from trace_pipelines.live.files import LIVE_EVENTS_ASSET
from trace_pipelines.partitions import MONTHS, SITES, partition_key
from trace_pipelines.resources.landing import landing_store_from_env
from trace_pipelines.resources.storage import TraceStorage

LIVE_GROUP = "stripe_live"
LIVE_JOB_NAME = "stripe_live_apply"
# Marks live apply runs: the sensor finds them by it, and the run queue may prioritise them.
LIVE_RUN_TAG = "trace/live_apply"
# The table a live run brings up to date.
LIVE_REVENUE_TABLE = "attributed_revenue"


@asset(
    name=LIVE_EVENTS_ASSET,
    group_name=LIVE_GROUP,
    kinds={"stripe", "parquet"},
    description=(
        "Stripe webhook events (and events caught up from GET /v1/events) applied to the raw "
        "tables as live Parquet files: each event's object becomes that object's newest known "
        "state, ordered by Stripe's event time. Landed first in the landing store "
        "(TRACE_LANDING_URL, else TRACE_HOME/landing.sqlite)."
    ),
)
def stripe_webhook_events(
    context: AssetExecutionContext, trace_storage: TraceStorage
) -> MaterializeResult:
    """Apply every landed event up to now; materialize the raw partitions it touched."""
    landing = landing_store_from_env()
    result = apply_landed_events(trace_storage.paths, landing)

    known_sites = set(context.instance.get_dynamic_partitions(SITES.name))
    newest_month = _newest_month()
    counts: dict[tuple[str, str, date], int] = {}
    for key in result.partitions:
        counts[key] = counts.get(key, 0) + 1
    for table, site_id, month in sorted(result.partitions):
        # Rows outside the partition space (a site never backfilled, a month before 2023)
        # are in the raw tables all the same; only the UI has no partition to show them on.
        if site_id not in known_sites or not (_first_month() <= month <= newest_month):
            continue
        context.log_event(
            AssetMaterialization(
                asset_key=table,
                partition=partition_key(site_id, month),
                description="Updated by Stripe webhook events.",
                metadata={
                    "source": MetadataValue.text("stripe webhooks"),
                    "applied_through_seq": MetadataValue.int(result.last_seq),
                },
            )
        )
    context.log.info(
        "Applied %s of %s events (seq %s..%s); %s raw partitions changed; skipped %s",
        result.events_applied,
        result.events_read,
        result.first_seq + 1,
        result.last_seq,
        len(result.partitions),
        dict(result.skipped) or "none",
    )
    return MaterializeResult(
        metadata={
            "events_read": MetadataValue.int(result.events_read),
            "events_applied": MetadataValue.int(result.events_applied),
            "events_skipped": MetadataValue.json(dict(result.skipped)),
            "rows_by_table": MetadataValue.json(dict(result.rows_by_table)),
            "applied_through_seq": MetadataValue.int(result.last_seq),
            "partitions_changed": MetadataValue.int(len(result.partitions)),
            "files_written": MetadataValue.int(result.files_written),
            "files_merged": MetadataValue.int(result.files_compacted),
            "still_pending": MetadataValue.int(pending_events(landing)),
        }
    )


def _first_month() -> date:
    return date.fromisoformat(MONTHS.get_first_partition_key())


def _newest_month() -> date:
    today = datetime.now(UTC).date()
    index = today.year * 12 + today.month  # the month after this one (end_offset=1)
    return date(index // 12, index % 12 + 1, 1)


# The SQL models as the code location defines them: those reading `raw.*` also depend on the
# live apply, so a live run applies events first and then refreshes what reads them.
live_model_assets = build_model_assets(raw_writers=[AssetKey(LIVE_EVENTS_ASSET)])

stripe_live_apply_job = define_asset_job(
    name=LIVE_JOB_NAME,
    # Only what analytics.attributed_revenue needs (with the Trace inputs it joins: a fresh
    # warehouse may not have them yet), so a live run stays small; the USD views, cohorts and
    # channel performance follow through their own automation conditions.
    selection=AssetSelection.assets(LIVE_REVENUE_TABLE).upstream()
    - AssetSelection.assets(*RAW_TABLES_BY_NAME),
    executor_def=in_process_executor,
    tags={LIVE_RUN_TAG: "true", "dagster/priority": "10"},
    description=(
        "Apply landed Stripe events to the raw tables, then refresh the revenue models that "
        "read them. Started by the stripe_events sensor within seconds of a webhook."
    ),
)
