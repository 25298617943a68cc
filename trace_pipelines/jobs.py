"""Jobs a user launches (or a schedule starts) from the Dagster UI."""

from dagster import AssetSelection, define_asset_job, in_process_executor

from trace_pipelines.partitions import SITE_MONTHS

# One step per run, so the in-process executor saves a subprocess per partition run.
stripe_backfill_job = define_asset_job(
    name="stripe_backfill",
    selection=AssetSelection.groups("stripe_raw"),
    partitions_def=SITE_MONTHS,
    executor_def=in_process_executor,
    description="Read one site-month of Stripe objects into the raw tables.",
)
