"""How raw Stripe data is partitioned: by site (dynamic) and by calendar month (UTC).

A site's backfill covers its last 12 full months and the current month. Multi-partition keys
list their dimensions alphabetically, so a key reads `2026-03-01|site_a`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from dagster import (
    DynamicPartitionsDefinition,
    MonthlyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
)

SITES = DynamicPartitionsDefinition(name="sites")

# The first month any site can be backfilled from; `end_offset=1` adds the current month, which
# the daily schedule refreshes while it is still filling up.
MONTHS = MonthlyPartitionsDefinition(start_date="2023-01-01", end_offset=1)

SITE_MONTHS = MultiPartitionsDefinition({"month": MONTHS, "site": SITES})


@dataclass(frozen=True)
class MonthWindow:
    """One calendar month in UTC as Stripe's `created` filter wants it: [start, end) seconds."""

    month: date

    @property
    def start(self) -> datetime:
        return datetime(self.month.year, self.month.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        year, month = divmod(self.month.year * 12 + self.month.month, 12)
        return datetime(year, month + 1, 1, tzinfo=UTC)

    @property
    def start_unix(self) -> int:
        return int(self.start.timestamp())

    @property
    def end_unix(self) -> int:
        return int(self.end.timestamp())

    def slices(self, count: int) -> list[tuple[int, int]]:
        """The month cut into `count` contiguous [gte, lt) second ranges, for parallel paging."""
        bounds = [
            self.start_unix + (self.end_unix - self.start_unix) * i // count
            for i in range(count + 1)
        ]
        return list(zip(bounds[:-1], bounds[1:], strict=True))


def partition_key(site_id: str, month: date) -> MultiPartitionKey:
    return MultiPartitionKey({"site": site_id, "month": month.strftime("%Y-%m-%d")})


def backfill_months(months: int, today: date | None = None) -> list[date]:
    """The last `months` full months plus the current one, oldest first."""
    today = today or datetime.now(UTC).date()
    index = today.year * 12 + today.month - 1
    return [date(i // 12, i % 12 + 1, 1) for i in range(index - months, index + 1)]
