"""The daily refresh: re-read the current and the previous month of every connected site.

Webhooks keep tables current within seconds, but a refund, dispute or status change can still
be missed (an outage on either side); re-reading the two most recent months every night closes
that gap at the cost of a few hundred requests per site.
"""

from datetime import UTC, datetime

from dagster import RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from trace_pipelines.jobs import stripe_backfill_job
from trace_pipelines.partitions import SITES, backfill_months, partition_key
from trace_pipelines.settings import trace_paths
from trace_pipelines.sites import SiteRegistry

STRIPE_ACCOUNT_TAG = "trace/stripe_account"


@schedule(job=stripe_backfill_job, cron_schedule="0 3 * * *", execution_timezone="UTC")
def daily_stripe_refresh(context: ScheduleEvaluationContext):
    """One run per connected site for the current and the previous month."""
    sites = [site for site in SiteRegistry(trace_paths().registry).list() if site.is_connected]
    if not sites:
        return SkipReason("No connected site: register one with `trace-pipelines sites connect`.")

    today = (context.scheduled_execution_time or datetime.now(UTC)).date()
    known = set(context.instance.get_dynamic_partitions(SITES.name))
    requests = []
    for site in sites:
        if site.site_id not in known:
            context.log.warning("Site %s has no Dagster partition; skipping it.", site.site_id)
            continue
        for month in backfill_months(1, today):
            key = partition_key(site.site_id, month)
            requests.append(
                RunRequest(
                    run_key=f"{key}:{today.isoformat()}",
                    partition_key=key,
                    tags={STRIPE_ACCOUNT_TAG: site.stripe_account_id},
                )
            )
    return requests
