"""The hourly catch-up: land Stripe events the webhook receiver missed, for every site.

Each run lists `GET /v1/events` of the last three days for every connected site and lands
what the store lacks (see `trace_pipelines.live.catch_up`); the stripe_events sensor then
applies them. Disconnected sites are skipped: their events are not applied until they
reconnect, and reconnecting catches up from the disconnect point.
"""

from datetime import UTC, datetime

from dagster import (
    Failure,
    MetadataValue,
    OpExecutionContext,
    Output,
    ScheduleDefinition,
    in_process_executor,
    job,
    op,
)

from trace_pipelines.live.catch_up import CATCH_UP_WINDOW, land_missed_events
from trace_pipelines.resources.landing import landing_store_from_env
from trace_pipelines.resources.storage import TraceStorage
from trace_pipelines.resources.stripe_reader import StripeReader, StripeReadError
from trace_pipelines.sites import SiteRegistry


@op(description="List recent events of every connected site and land the missed ones.")
def land_missed_stripe_events(
    context: OpExecutionContext, stripe: StripeReader, trace_storage: TraceStorage
) -> Output[int]:
    """Catch every connected site up; one site's failure does not stop the others."""
    landing = landing_store_from_env()
    since = datetime.now(UTC) - CATCH_UP_WINDOW
    sites = [s for s in SiteRegistry(trace_storage.paths.registry).list() if s.is_connected]

    landed: dict[str, int] = {}
    failures: dict[str, str] = {}
    for site in sites:
        try:
            landed[site.site_id] = land_missed_events(
                stripe.for_account(site.stripe_account_id), landing, site, since
            )
        except StripeReadError as error:
            failures[site.site_id] = str(error)
            context.log.warning("Could not catch up site %s: %s", site.site_id, error)
        else:
            context.log.info("Site %s: %s missed events landed", site.site_id, landed[site.site_id])

    if failures:
        raise Failure(
            description=(
                f"{len(failures)} of {len(sites)} sites could not be caught up: "
                + "; ".join(f"{site}: {message}" for site, message in failures.items())
            ),
            metadata={"landed": MetadataValue.json(landed)},
        )
    return Output(
        sum(landed.values()),
        metadata={
            "sites": MetadataValue.int(len(sites)),
            "landed_per_site": MetadataValue.json(landed),
            "since": MetadataValue.text(since.isoformat()),
        },
    )


@job(
    name="stripe_missed_events",
    executor_def=in_process_executor,
    description="Land the Stripe events of the last 3 days that webhooks missed.",
)
def stripe_missed_events_job():
    land_missed_stripe_events()


hourly_missed_events = ScheduleDefinition(
    name="hourly_missed_stripe_events",
    job=stripe_missed_events_job,
    cron_schedule="17 * * * *",
    execution_timezone="UTC",
    description="Every hour: land Stripe events of the last 3 days that webhooks missed.",
)
