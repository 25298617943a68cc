"""The landing store: every Stripe event Trace receives, kept durably before it is acknowledged.

Webhooks arrive while Dagster runs hold the DuckDB warehouse, so events land elsewhere first:
an embedded SQLite file (WAL mode, synchronous commits) under TRACE_HOME by default, or
PostgreSQL in production (`TRACE_LANDING_URL=postgresql://...`). The store is append-only:
an event is written once, keyed by its Stripe id, and only site deletion removes events.
Readers follow `seq`, a number that only grows, so a sensor's cursor is one integer.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trace_pipelines.settings import trace_paths


@dataclass(frozen=True)
class LandedEvent:
    """One stored event and where it came from."""

    seq: int
    event_id: str
    account_id: str | None
    site_id: str | None
    type: str
    created: int
    api_version: str | None
    received_at: datetime
    source: str
    payload: dict[str, Any]


class LandingStore:
    """What both backends offer; see `landing_store_from_env` for choosing one."""

    def land(
        self, event: Mapping[str, Any], *, site_id: str | None, source: str = "webhook"
    ) -> bool:
        """Store `event` unless its id is already stored; True when it was new.

        Returns only after the write is committed to disk, so the caller may acknowledge.
        """
        raise NotImplementedError

    def land_many(
        self, events: Iterable[Mapping[str, Any]], *, site_id: str | None, source: str
    ) -> int:
        """Store several events in one transaction; returns how many were new."""
        raise NotImplementedError

    def read_after(self, seq: int, limit: int = 1000) -> list[LandedEvent]:
        """Events with `seq` greater than `seq`, in landing order."""
        raise NotImplementedError

    def last_seq(self) -> int:
        raise NotImplementedError

    def count(self, site_id: str | None = None) -> int:
        raise NotImplementedError

    def delete_site(self, site_id: str) -> int:
        """Remove every event of a site (site deletion only); returns how many."""
        raise NotImplementedError


def _row(event: Mapping[str, Any], site_id: str | None, source: str) -> tuple:
    if not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise ValueError("a Stripe event needs a string `id` and `type`")
    return (
        event["id"],
        event.get("account"),
        site_id,
        event["type"],
        int(event.get("created") or 0),
        event.get("api_version"),
        datetime.now(UTC).isoformat(),
        source,
        json.dumps(event, separators=(",", ":")),
    )


_COLUMNS = "event_id, account_id, site_id, type, created, api_version, received_at, source, payload"


def _landed(row: tuple) -> LandedEvent:
    seq, event_id, account, site, kind, created, version, received, source, payload = row
    if isinstance(received, str):
        received = datetime.fromisoformat(received)
    return LandedEvent(
        seq=int(seq),
        event_id=event_id,
        account_id=account,
        site_id=site,
        type=kind,
        created=int(created),
        api_version=version,
        received_at=received,
        source=source,
        payload=json.loads(payload) if isinstance(payload, str) else payload,
    )


class SqliteLandingStore(LandingStore):
    """Events in one SQLite file; WAL lets the sensor read while the receiver writes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connection() as con:
            con.execute(
                "create table if not exists stripe_events ("
                " seq integer primary key autoincrement,"
                " event_id text not null unique,"
                " account_id text, site_id text, type text not null,"
                " created integer not null, api_version text,"
                " received_at text not null, source text not null, payload text not null)"
            )
            con.execute("create index if not exists stripe_events_site on stripe_events (site_id)")

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        # One connection per thread: the receiver writes from a thread pool.
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            con.execute("pragma journal_mode=wal")
            con.execute("pragma synchronous=full")  # committed means on disk
            self._local.con = con
        yield con

    def land(self, event, *, site_id, source="webhook") -> bool:
        return self.land_many([event], site_id=site_id, source=source) == 1

    def land_many(self, events, *, site_id, source) -> int:
        rows = [_row(event, site_id, source) for event in events]
        with self._connection() as con:
            con.execute("begin immediate")
            try:
                before = con.total_changes
                con.executemany(
                    f"insert into stripe_events ({_COLUMNS}) values (?,?,?,?,?,?,?,?,?) "
                    "on conflict (event_id) do nothing",
                    rows,
                )
                inserted = con.total_changes - before
                con.execute("commit")
            except BaseException:
                con.execute("rollback")
                raise
        return inserted

    def read_after(self, seq, limit=1000):
        with self._connection() as con:
            rows = con.execute(
                f"select seq, {_COLUMNS} from stripe_events where seq > ? order by seq limit ?",
                (seq, limit),
            ).fetchall()
        return [_landed(row) for row in rows]

    def last_seq(self) -> int:
        with self._connection() as con:
            return con.execute("select coalesce(max(seq), 0) from stripe_events").fetchone()[0]

    def count(self, site_id=None) -> int:
        with self._connection() as con:
            if site_id is None:
                return con.execute("select count(*) from stripe_events").fetchone()[0]
            return con.execute(
                "select count(*) from stripe_events where site_id = ?", (site_id,)
            ).fetchone()[0]

    def delete_site(self, site_id) -> int:
        with self._connection() as con:
            return con.execute("delete from stripe_events where site_id = ?", (site_id,)).rowcount


class PostgresLandingStore(LandingStore):
    """Events in a PostgreSQL table, for deployments where several hosts receive webhooks."""

    def __init__(self, url: str):
        import psycopg2

        self._connect = lambda: psycopg2.connect(url)
        self._local = threading.local()
        with self._cursor() as cur:
            cur.execute(
                "create table if not exists stripe_events ("
                " seq bigserial primary key,"
                " event_id text not null unique,"
                " account_id text, site_id text, type text not null,"
                " created bigint not null, api_version text,"
                " received_at timestamptz not null, source text not null, payload jsonb not null)"
            )
            cur.execute("create index if not exists stripe_events_site on stripe_events (site_id)")

    @contextmanager
    def _cursor(self):
        con = getattr(self._local, "con", None)
        if con is None or con.closed:
            con = self._connect()
            self._local.con = con
        try:
            with con.cursor() as cur:
                yield cur
            con.commit()
        except BaseException:
            con.rollback()
            raise

    def land(self, event, *, site_id, source="webhook") -> bool:
        return self.land_many([event], site_id=site_id, source=source) == 1

    def land_many(self, events, *, site_id, source) -> int:
        inserted = 0
        with self._cursor() as cur:
            for row in (_row(event, site_id, source) for event in events):
                cur.execute(
                    f"insert into stripe_events ({_COLUMNS}) "
                    "values (%s,%s,%s,%s,%s,%s,%s,%s,%s) on conflict (event_id) do nothing",
                    row,
                )
                inserted += cur.rowcount
        return inserted

    def read_after(self, seq, limit=1000):
        with self._cursor() as cur:
            cur.execute(
                f"select seq, {_COLUMNS.replace('payload', 'payload::text')} from stripe_events "
                "where seq > %s order by seq limit %s",
                (seq, limit),
            )
            return [_landed(row) for row in cur.fetchall()]

    def last_seq(self) -> int:
        with self._cursor() as cur:
            cur.execute("select coalesce(max(seq), 0) from stripe_events")
            return int(cur.fetchone()[0])

    def count(self, site_id=None) -> int:
        with self._cursor() as cur:
            if site_id is None:
                cur.execute("select count(*) from stripe_events")
            else:
                cur.execute("select count(*) from stripe_events where site_id = %s", (site_id,))
            return int(cur.fetchone()[0])

    def delete_site(self, site_id) -> int:
        with self._cursor() as cur:
            cur.execute("delete from stripe_events where site_id = %s", (site_id,))
            return cur.rowcount


def landing_store_from_env() -> LandingStore:
    """TRACE_LANDING_URL (a postgresql:// URL) if set, else SQLite at TRACE_HOME/landing.sqlite."""
    url = os.environ.get("TRACE_LANDING_URL")
    if url:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "TRACE_LANDING_URL must be a postgresql:// URL; unset it to use SQLite."
            )
        return PostgresLandingStore(url)
    return SqliteLandingStore(trace_paths().home / "landing.sqlite")
