"""Catching up on missed webhooks from Stripe's events list.

Webhooks can be missed: the receiver was down longer than Stripe retries, a network path
broke, or the site was disconnected for a while. `GET /v1/events` keeps 30 days of events;
listing a connected site's recent ones and landing those the store lacks (through the same
idempotent, keyed-by-event-id path as the receiver) closes the gap, and the sensor then applies
them like any webhook. Events already landed are not counted and change nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from trace_pipelines.live.events import LANDED_EVENT_TYPES
from trace_pipelines.resources.landing import LandingStore
from trace_pipelines.resources.stripe_reader import StripeAccountReader
from trace_pipelines.sites import Site

logger = logging.getLogger(__name__)

EVENTS_SOURCE = "events_api"
# How far back the hourly schedule looks: three days covers a long weekend of receiver
# downtime; Stripe keeps 30, which is what a reconnect may ask for.
CATCH_UP_WINDOW = timedelta(days=3)
STRIPE_EVENTS_RETENTION = timedelta(days=30)
_LAND_BATCH = 500


def land_missed_events(
    reader: StripeAccountReader, landing: LandingStore, site: Site, since: datetime
) -> int:
    """Land every event of the site's account created at or after `since` that the store
    lacks; returns how many were newly landed.

    `since` earlier than Stripe's 30 days is clamped to them (older events are gone; the
    caller re-reads those months instead). Only the types Trace lands are asked for. Events
    listed for a connected account may omit `account`; it is filled in, as a webhook has it.
    """
    oldest = datetime.now(UTC) - STRIPE_EVENTS_RETENTION + timedelta(minutes=1)
    since = max(_aware(since), oldest)
    params = {"created": {"gte": int(since.timestamp())}, "types": sorted(LANDED_EVENT_TYPES)}

    landed, batch = 0, []
    for event in reader.list("/v1/events", params):
        if event.get("type") not in LANDED_EVENT_TYPES:
            continue
        if not event.get("account"):
            event = {**event, "account": site.stripe_account_id}
        batch.append(event)
        if len(batch) >= _LAND_BATCH:
            landed += landing.land_many(batch, site_id=site.site_id, source=EVENTS_SOURCE)
            batch = []
    if batch:
        landed += landing.land_many(batch, site_id=site.site_id, source=EVENTS_SOURCE)
    logger.info("Caught up site %s since %s: %s missed events landed", site.site_id, since, landed)
    return landed


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
