"""Applying landed events: every event after the watermark becomes raw rows in live files.

Exactly once under crashes, in three steps per batch:

1. write one live file per (table, site) touched, to a temporary name, fsync, rename into
   place, fsync the folder;
2. advance the durable watermark (`apply_watermarks` in the landing store) to the batch's
   last `seq`;
3. only then move on.

A crash before step 2 leaves the watermark where it was, so the next apply reads the same
events again. It first deletes live files that start past the watermark (written by the
crashed attempt and never acknowledged), then writes the rows again: the same rows with the
same `observed_at`, which the raw views would keep once anyway. One apply runs at a time on a
machine (a file lock), so a watermark never moves under a running apply.

Small files stay bounded: when a table and site have more than `COMPACT_AFTER_FILES` live
files, they are merged into one holding only the newest state of each object, named by the
whole seq range it covers. The merged file is renamed in before the old ones are deleted
(deletion under the warehouse lock, so a model refresh never globs a file that vanishes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from trace_pipelines.assets.stripe_tables import RAW_TABLES, RawTable
from trace_pipelines.live.events import (
    APPLIED_EVENT_TYPES,
    EventShapeError,
    LiveRow,
    rows_for_event,
)
from trace_pipelines.live.files import (
    live_arrow_schema,
    live_dir,
    live_files,
    live_sites,
    range_file_name,
)
from trace_pipelines.resources.landing import LandedEvent, LandingStore
from trace_pipelines.resources.locks import exclusive_file_lock
from trace_pipelines.resources.raw_store import RawStore
from trace_pipelines.resources.warehouse import ensure_raw_views, warehouse_lock
from trace_pipelines.settings import TracePaths
from trace_pipelines.sites import Site, SiteRegistry

logger = logging.getLogger(__name__)

WATERMARK = "raw_apply"
BATCH_EVENTS = 5_000
# A site-table gets one live file per apply that touches it; past this many they are merged.
# 32 keeps a glob cheap while merging only every few minutes at one event per second.
COMPACT_AFTER_FILES = 32


@dataclass
class ApplyResult:
    """What one apply did: counts for logs, and the raw partitions it changed."""

    first_seq: int
    last_seq: int
    events_read: int = 0
    events_applied: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    rows_by_table: Counter[str] = field(default_factory=Counter)
    # (table name, site id, month) of every row written.
    partitions: set[tuple[str, str, date]] = field(default_factory=set)
    files_written: int = 0
    files_compacted: int = 0

    @property
    def applied_anything(self) -> bool:
        return self.events_read > 0


def apply_landed_events(
    paths: TracePaths,
    landing: LandingStore,
    *,
    batch_events: int = BATCH_EVENTS,
    compact_after_files: int = COMPACT_AFTER_FILES,
    before_watermark: Callable[[int], None] | None = None,
) -> ApplyResult:
    """Apply every event landed so far (up to the last `seq` seen at the start).

    `before_watermark(seq)` is called after a batch's files are in place and before the
    watermark moves; tests use it to kill an apply at the worst moment.
    """
    store = RawStore(paths.raw_dir)
    registry = SiteRegistry(paths.registry)
    with _apply_lock(paths):
        ensure_raw_views(paths)
        watermark = landing.watermark(WATERMARK)
        target = landing.last_seq()
        result = ApplyResult(first_seq=watermark, last_seq=watermark)
        _remove_unacknowledged_files(store, watermark)

        sites: dict[str, Site | None] = {}
        while watermark < target:
            events = [e for e in landing.read_after(watermark, batch_events) if e.seq <= target]
            if not events:
                break
            rows = _rows_of(events, registry, sites, result)
            first, last = events[0].seq, events[-1].seq
            result.files_written += _write_batch(store, rows, first, last)
            if before_watermark is not None:
                before_watermark(last)
            landing.advance_watermark(last, WATERMARK)
            watermark = result.last_seq = last

        for table in RAW_TABLES:
            for site_id in live_sites(store, table):
                result.files_compacted += _compact(
                    paths, store, table, site_id, compact_after_files
                )

    logger.info(
        "Applied events %s..%s: %s read, %s applied, skipped %s, rows %s, %s files, %s merged",
        result.first_seq + 1,
        result.last_seq,
        result.events_read,
        result.events_applied,
        dict(result.skipped) or "none",
        dict(result.rows_by_table) or "none",
        result.files_written,
        result.files_compacted,
    )
    return result


def pending_events(landing: LandingStore) -> int:
    """How many landed events wait to be applied (by seq; some may be skipped types)."""
    return max(landing.last_seq() - landing.watermark(WATERMARK), 0)


def _apply_lock(paths: TracePaths) -> contextlib.AbstractContextManager[None]:
    return exclusive_file_lock(paths.locks_dir / "live_apply.lock")


def _rows_of(
    events: list[LandedEvent],
    registry: SiteRegistry,
    sites: dict[str, Site | None],
    result: ApplyResult,
) -> dict[tuple[RawTable, str], list[LiveRow]]:
    rows: dict[tuple[RawTable, str], list[LiveRow]] = defaultdict(list)
    for event in events:
        result.events_read += 1
        if event.type not in APPLIED_EVENT_TYPES:
            result.skipped["not_applied_type"] += 1
            continue
        site = _site(event.site_id, registry, sites)
        if site is None:
            # Landed for a site since deleted (or, from an older receiver, for none).
            result.skipped["no_site"] += 1
            continue
        # Applied even if the site has disconnected since: the event was received (or
        # caught up) while it was connected, and happened before the disconnect.
        try:
            produced = rows_for_event(event.payload, site.site_id, site.backfill_start)
        except (EventShapeError, KeyError, TypeError, ValueError) as error:
            logger.warning("Skipping malformed event %s: %s", event.event_id, error)
            result.skipped["malformed"] += 1
            continue
        for live_row in produced:
            rows[(live_row.table, site.site_id)].append(live_row)
            result.rows_by_table[live_row.table.name] += 1
            result.partitions.add((live_row.table.name, site.site_id, live_row.month))
        result.events_applied += 1
    return rows


def _site(site_id: str | None, registry: SiteRegistry, cache: dict[str, Site | None]):
    if site_id is None:
        return None
    if site_id not in cache:
        cache[site_id] = next((s for s in registry.list() if s.site_id == site_id), None)
    return cache[site_id]


def _write_batch(
    store: RawStore, rows: dict[tuple[RawTable, str], list[LiveRow]], first: int, last: int
) -> int:
    for (table, site_id), table_rows in rows.items():
        folder = live_dir(store, table, site_id)
        folder.mkdir(parents=True, exist_ok=True)
        arrow = pa.Table.from_pylist([r.row for r in table_rows], schema=live_arrow_schema(table))
        _write_durably(folder / range_file_name(first, last), arrow)
    return len(rows)


def _write_durably(path: Path, table: pa.Table) -> None:
    """Temp file, fsync, rename, fsync the folder: on disk before the watermark moves."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    pq.write_table(table, temp, compression="zstd")
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, path)
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_unacknowledged_files(store: RawStore, watermark: int) -> None:
    for table in RAW_TABLES:
        for site_id in live_sites(store, table):
            for live in live_files(store, table, site_id):
                if live.first_seq > watermark:
                    logger.info("Removing %s, written by an apply that did not finish", live.path)
                    live.path.unlink(missing_ok=True)
            folder = live_dir(store, table, site_id)
            for temp in folder.glob(".*.tmp"):
                temp.unlink(missing_ok=True)


def _compact(
    paths: TracePaths, store: RawStore, table: RawTable, site_id: str, threshold: int
) -> int:
    files = live_files(store, table, site_id)
    if len(files) <= threshold:
        return 0
    first, last = files[0].first_seq, max(f.last_seq for f in files)
    target = live_dir(store, table, site_id) / range_file_name(first, last)
    with duckdb.connect() as con:
        merged = con.sql(
            "select * from read_parquet($files, union_by_name = true) "
            "qualify row_number() over (partition by site_id, id "
            "order by observed_at desc, state_rank desc nulls last) = 1 "
            "order by id",
            params={"files": [str(f.path) for f in files]},
        ).to_arrow_table()
    _write_durably(
        target, merged.select(live_arrow_schema(table).names).cast(live_arrow_schema(table))
    )
    with warehouse_lock(paths):
        for old in files:
            if old.path != target:
                old.path.unlink(missing_ok=True)
    logger.info("Merged %s live files of %s for site %s", len(files), table.name, site_id)
    return len(files)
