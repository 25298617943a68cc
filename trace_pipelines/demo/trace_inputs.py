"""The Trace side of the demo: sites, touchpoints, identities and ad spend as CSV files.

These are what `TRACE_INPUTS_DIR` points at. Touchpoints and identities come from the same
plan as the Stripe objects, so a visitor id in a Checkout Session's metadata, or an email on a
charge, leads back to the visitor's journey; ad spend is laid over the whole window for the
channels somebody pays for.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TextIO

from trace_pipelines.demo.catalog import DIRECT, PAID_MEDIUMS, Site
from trace_pipelines.demo.plan import DAY, GROWTH, Persona, SitePlan, Visitor

SITES_HEADER = ("site_id", "domain", "stripe_account_id")
TOUCHPOINTS_HEADER = ("site_id", "visitor_id", "occurred_at", "source", "medium", "campaign")
IDENTITIES_HEADER = ("site_id", "visitor_id", "email", "identified_at")
AD_SPEND_HEADER = ("site_id", "date", "source", "medium", "campaign", "amount", "currency")


class RowWriter(Protocol):
    """What the standard `csv.writer` offers and these functions use."""

    def writerow(self, row: Iterable[Any], /) -> Any: ...


def open_csv(handle: TextIO, header: tuple[str, ...]) -> RowWriter:
    """A CSV writer on `handle` with `header` already written; `\\n` line ends everywhere."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(header)
    return writer


def _iso(moment: int, visitor: Visitor) -> str:
    """`moment` as ISO 8601 in the visitor's own offset, e.g. `2026-03-04T12:11:12+02:00`."""
    return datetime.fromtimestamp(moment, visitor.offset).isoformat()


class TraceInputs:
    """Collects one site's touchpoints and identities, then writes them in time order."""

    def __init__(self, site: Site, seed: int, now: int) -> None:
        self.site = site
        self.now = now
        self.rng = random.Random(f"trace-demo:{seed}:{site.site_id}:trace")
        self.touchpoints: list[tuple[int, str, str, str, str, str]] = []
        self.identities: list[tuple[int, str, str, str]] = []

    def add_plan(self, plan: SitePlan) -> None:
        """Record the journeys of every buyer and every prospect of the plan."""
        for persona in plan.personas:
            self._add_persona(persona)
        for visitor, moment in zip(plan.prospects, plan.prospect_times, strict=True):
            self._add_visitor(visitor, moment)

    def _add_persona(self, persona: Persona) -> None:
        for slot, visitor in enumerate(persona.visitors):
            # A second device's journey leads up to the moment it was identified.
            anchor = persona.acquired_at if slot == 0 else visitor.identified_at
            assert anchor is not None  # second visitors always carry an identity
            self._add_visitor(visitor, anchor)

    def _add_visitor(self, visitor: Visitor, anchor: int) -> None:
        """Touchpoints around `anchor` (the purchase), plus the visitor's identity if any."""
        rng = self.rng
        if visitor.identity_email is not None and visitor.identified_at is not None:
            self.identities.append(
                (
                    visitor.identified_at,
                    visitor.visitor_id,
                    visitor.identity_email,
                    _iso(visitor.identified_at, visitor),
                )
            )
        if visitor.touch_mode == "none":
            return

        count = rng.randint(1, 4)
        if visitor.touch_mode == "before":
            first = anchor - rng.randint(600, 21 * DAY)
            later_end = min(self.now, anchor + 30 * DAY)
            moments = [first] + [rng.randint(first, later_end) for _ in range(count - 1)]
        else:
            # Seen only after paying, e.g. back from a receipt email: no touch to credit.
            low = min(anchor + 60, self.now)
            high = max(low, min(self.now, anchor + 20 * DAY))
            moments = [rng.randint(low, high) for _ in range(count)]
        moments.sort()

        for position, moment in enumerate(moments):
            if position == 0:
                channel, campaign = visitor.channel, visitor.campaign
            else:
                channel = rng.choice(self.site.channels)
                campaign = rng.choice(channel.campaigns)
            self.touchpoints.append(
                (
                    moment,
                    visitor.visitor_id,
                    _iso(moment, visitor),
                    channel.source,
                    channel.medium,
                    campaign,
                )
            )

    def write(self, touchpoints: RowWriter, identities: RowWriter) -> tuple[int, int]:
        """Append this site's rows, oldest first; return (touchpoints, identities) written."""
        site_id = self.site.site_id
        self.touchpoints.sort()
        for _, visitor_id, occurred_at, source, medium, campaign in self.touchpoints:
            touchpoints.writerow((site_id, visitor_id, occurred_at, source, medium, campaign))
        self.identities.sort()
        for _, visitor_id, email, identified_at in self.identities:
            identities.writerow((site_id, visitor_id, email, identified_at))
        return len(self.touchpoints), len(self.identities)


def write_ad_spend(writer: RowWriter, site: Site, seed: int, window_start: int, now: int) -> int:
    """Daily spend per paid campaign over the window, growing with the shop; returns rows."""
    rng = random.Random(f"trace-demo:{seed}:{site.site_id}:spend")
    first_day = datetime.fromtimestamp(window_start, UTC).date()
    last_day = datetime.fromtimestamp(now, UTC).date()
    days = (last_day - first_day).days + 1
    paid = [c for c in site.channels if c.medium in PAID_MEDIUMS and (c.source, c.medium) != DIRECT]

    rows = 0
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        # Budgets follow the same growth curve as new customers; weekends spend less.
        growth = math.exp(GROWTH * (offset / max(1, days - 1) - 1))
        weekday = 0.8 if day.weekday() >= 5 else 1.0
        for channel in paid:
            for campaign in channel.campaigns:
                share = channel.daily_budget / len(channel.campaigns)
                amount = round(share * growth * weekday * rng.uniform(0.75, 1.25))
                writer.writerow(
                    (
                        site.site_id,
                        day.isoformat(),
                        channel.source,
                        channel.medium,
                        campaign,
                        amount,
                        "usd",
                    )
                )
                rows += 1
    return rows
