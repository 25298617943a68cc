"""The landing store: every Stripe event Trace receives, kept durably before it is acknowledged.

Webhooks arrive while Dagster runs hold the DuckDB warehouse, so events land elsewhere first:
an embedded SQLite file (WAL mode, synchronous commits) under TRACE_HOME by default, or
PostgreSQL in production (`TRACE_LANDING_URL=postgresql://...`). The store is append-only:
an event is written once, keyed by its Stripe id, and only site deletion removes events.
Readers follow `seq`, a number that only grows, so a sensor's cursor is one integer.

Beside the events the store keeps three small tables the live path needs in the same
transaction or database: `webhook_signatures` (signatures already accepted, to refuse a
replayed request for the 300 seconds Stripe's tolerance allows it), `stripe_events_held`
(events answered but never applied: unknown or disconnected accounts, counted per reason) and
`apply_watermarks` (the highest `seq` whose rows are in the raw tables, advanced only after
the rows are on disk, so a crashed apply is simply re-run).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

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


# What became of one signed webhook delivery.
STORED, DUPLICATE, REPLAYED, HELD = "stored", "duplicate", "replayed", "held"

# Accepted signatures are kept this long: Stripe's tolerance is 300 s, so an older replay is
# already refused as expired; keeping twice that covers clock skew between hosts.
SIGNATURE_RETENTION_SECONDS = 600
_PRUNE_EVERY = 500


@dataclass(frozen=True)
class SignedDelivery:
    """One verified webhook request: the event, where it goes, and the signature it bore.

    `held_reason` set means the event is answered but never applied (unknown account,
    disconnected site); it is recorded in `stripe_events_held` instead of the event stream.
    """

    event: Mapping[str, Any]
    site_id: str | None
    signature: str
    signed_at: int
    held_reason: str | None = None


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

    def defer_maintenance(self) -> None:
        """Keep this thread's commits free of housekeeping (see `do_maintenance`)."""

    def do_maintenance(self) -> None:
        """Housekeeping a writer runs while idle, instead of inside a commit."""

    def land_signed(self, deliveries: Iterable[SignedDelivery]) -> list[str]:
        """Record webhook deliveries in one transaction; one outcome per delivery.

        STORED (new event), DUPLICATE (event already stored: answer 2xx), HELD (recorded as
        not to be applied) or REPLAYED (this exact signature was accepted before: refuse).
        Committed before it returns, like `land`.
        """
        raise NotImplementedError

    def held_counts(self) -> dict[str, int]:
        """How many distinct events were held back, per reason."""
        raise NotImplementedError

    def watermark(self, name: str = "raw_apply") -> int:
        """The highest `seq` the named consumer has durably finished with (0 at first)."""
        raise NotImplementedError

    def advance_watermark(self, seq: int, name: str = "raw_apply") -> None:
        """Move the named watermark up to `seq` (never down), committed on return."""
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
        # orjson: the writer thread serialises every landed event while holding the GIL.
        orjson.dumps(event).decode(),
    )


_COLUMNS = "event_id, account_id, site_id, type, created, api_version, received_at, source, payload"
_HELD_COLUMNS = "event_id, account_id, site_id, type, created, reason, received_at, payload"


def _held_row(delivery: SignedDelivery) -> tuple:
    event_id, account, site, kind, created, _, received, _, payload = _row(
        delivery.event, delivery.site_id, "webhook"
    )
    return (event_id, account, site, kind, created, delivery.held_reason, received, payload)


def _extra_tables(seq_type: str, text_json: str) -> list[str]:
    """The tables beside `stripe_events` (see the module docstring), for either backend."""
    return [
        "create table if not exists webhook_signatures ("
        f" signature text primary key, signed_at {seq_type} not null)",
        "create index if not exists webhook_signatures_at on webhook_signatures (signed_at)",
        "create table if not exists stripe_events_held ("
        " event_id text primary key, account_id text, site_id text, type text not null,"
        f" created {seq_type} not null, reason text not null, received_at text not null,"
        f" payload {text_json} not null)",
        "create index if not exists stripe_events_held_site on stripe_events_held (site_id)",
        "create table if not exists apply_watermarks ("
        f" name text primary key, seq {seq_type} not null, updated_at text not null)",
    ]


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
        payload=orjson.loads(payload) if isinstance(payload, str) else payload,
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
            for statement in _extra_tables("integer", "text"):
                con.execute(statement)
        self._writes = 0

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
            con.execute("begin immediate")
            deleted = con.execute("delete from stripe_events where site_id = ?", (site_id,))
            count = deleted.rowcount
            con.execute("delete from stripe_events_held where site_id = ?", (site_id,))
            con.execute("commit")
            return count

    def defer_maintenance(self) -> None:
        # SQLite checkpoints the WAL inside whichever commit crosses 1,000 pages, and with
        # synchronous=full that commit waits for a full sync of the database file: a latency
        # spike for every sender in that group. The receiver's writer checkpoints when idle.
        with self._connection() as con:
            con.execute("pragma wal_autocheckpoint=0")

    def do_maintenance(self) -> None:
        with self._connection() as con:
            con.execute("pragma wal_checkpoint(passive)")

    def land_signed(self, deliveries) -> list[str]:
        deliveries = list(deliveries)
        rows = [
            _held_row(d) if d.held_reason else _row(d.event, d.site_id, "webhook")
            for d in deliveries
        ]
        outcomes = []
        with self._connection() as con:
            con.execute("begin immediate")
            try:
                for delivery, row in zip(deliveries, rows, strict=True):
                    fresh = con.execute(
                        "insert into webhook_signatures (signature, signed_at) values (?, ?) "
                        "on conflict (signature) do nothing",
                        (delivery.signature, delivery.signed_at),
                    ).rowcount
                    if not fresh:
                        outcomes.append(REPLAYED)
                    elif delivery.held_reason:
                        con.execute(
                            f"insert into stripe_events_held ({_HELD_COLUMNS}) "
                            "values (?,?,?,?,?,?,?,?) on conflict (event_id) do nothing",
                            row,
                        )
                        outcomes.append(HELD)
                    else:
                        inserted = con.execute(
                            f"insert into stripe_events ({_COLUMNS}) values (?,?,?,?,?,?,?,?,?) "
                            "on conflict (event_id) do nothing",
                            row,
                        ).rowcount
                        outcomes.append(STORED if inserted else DUPLICATE)
                self._writes += len(deliveries)
                if self._writes >= _PRUNE_EVERY:
                    self._writes = 0
                    con.execute(
                        "delete from webhook_signatures where signed_at < ?",
                        (int(datetime.now(UTC).timestamp()) - SIGNATURE_RETENTION_SECONDS,),
                    )
                con.execute("commit")
            except BaseException:
                con.execute("rollback")
                raise
        return outcomes

    def held_counts(self) -> dict[str, int]:
        with self._connection() as con:
            rows = con.execute(
                "select reason, count(*) from stripe_events_held group by reason"
            ).fetchall()
        return dict(rows)

    def watermark(self, name="raw_apply") -> int:
        with self._connection() as con:
            row = con.execute("select seq from apply_watermarks where name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def advance_watermark(self, seq, name="raw_apply") -> None:
        with self._connection() as con:
            con.execute(
                "insert into apply_watermarks (name, seq, updated_at) values (?, ?, ?) "
                "on conflict (name) do update set seq = max(apply_watermarks.seq, excluded.seq), "
                "updated_at = excluded.updated_at",
                (name, seq, datetime.now(UTC).isoformat()),
            )


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
            for statement in _extra_tables("bigint", "jsonb"):
                cur.execute(statement)
        self._writes = 0

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
            _serialize_writers(cur)
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
            count = cur.rowcount
            cur.execute("delete from stripe_events_held where site_id = %s", (site_id,))
            return count

    def land_signed(self, deliveries) -> list[str]:
        outcomes = []
        with self._cursor() as cur:
            _serialize_writers(cur)
            for delivery in deliveries:
                cur.execute(
                    "insert into webhook_signatures (signature, signed_at) values (%s, %s) "
                    "on conflict (signature) do nothing",
                    (delivery.signature, delivery.signed_at),
                )
                if not cur.rowcount:
                    outcomes.append(REPLAYED)
                elif delivery.held_reason:
                    cur.execute(
                        f"insert into stripe_events_held ({_HELD_COLUMNS}) "
                        "values (%s,%s,%s,%s,%s,%s,%s,%s) on conflict (event_id) do nothing",
                        _held_row(delivery),
                    )
                    outcomes.append(HELD)
                else:
                    cur.execute(
                        f"insert into stripe_events ({_COLUMNS}) "
                        "values (%s,%s,%s,%s,%s,%s,%s,%s,%s) on conflict (event_id) do nothing",
                        _row(delivery.event, delivery.site_id, "webhook"),
                    )
                    outcomes.append(STORED if cur.rowcount else DUPLICATE)
            self._writes += len(outcomes)
            if self._writes >= _PRUNE_EVERY:
                self._writes = 0
                cur.execute(
                    "delete from webhook_signatures where signed_at < %s",
                    (int(datetime.now(UTC).timestamp()) - SIGNATURE_RETENTION_SECONDS,),
                )
        return outcomes

    def held_counts(self) -> dict[str, int]:
        with self._cursor() as cur:
            cur.execute("select reason, count(*) from stripe_events_held group by reason")
            return {reason: int(count) for reason, count in cur.fetchall()}

    def watermark(self, name="raw_apply") -> int:
        with self._cursor() as cur:
            cur.execute("select seq from apply_watermarks where name = %s", (name,))
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def advance_watermark(self, seq, name="raw_apply") -> None:
        with self._cursor() as cur:
            cur.execute(
                "insert into apply_watermarks (name, seq, updated_at) values (%s, %s, %s) "
                "on conflict (name) do update set "
                "seq = greatest(apply_watermarks.seq, excluded.seq), "
                "updated_at = excluded.updated_at",
                (name, seq, datetime.now(UTC).isoformat()),
            )


def _serialize_writers(cur) -> None:
    """Take the store's write lock for the rest of the transaction.

    Readers follow `seq` and a watermark moves past every seq it has seen. A bigserial value
    is drawn at insert but becomes visible at commit, so two concurrent writers could commit
    seq 8 before seq 7, and a reader between the two commits would move past 7 for good.
    Serializing writers makes commit order equal seq order; each transaction is one short
    insert batch, so the cost is small.
    """
    cur.execute("select pg_advisory_xact_lock(8731406512)")


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
