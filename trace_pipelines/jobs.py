"""Jobs a user launches (or a schedule starts) from the Dagster UI."""

from dagster import AssetSelection, define_asset_job, in_process_executor

# Partitioned by site and month, like the assets it selects. A run has one step, so the
# in-process executor saves starting a subprocess per partition run.
stripe_backfill_job = define_asset_job(
    name="stripe_backfill",
    selection=AssetSelection.groups("stripe_raw"),
    executor_def=in_process_executor,
    description="Read one site-month of Stripe objects into the raw tables.",
)
