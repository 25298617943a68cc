"""The site registry: which Trace sites exist and which Stripe account each one reads.

A small SQLite file under TRACE_HOME rather than a DuckDB table: the command line and the
partition runs read it while model runs hold the warehouse's single write lock, and SQLite
allows many readers beside one writer.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

SITE_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ACCOUNT_ID_PATTERN = re.compile(r"^acct_[A-Za-z0-9]{1,64}$")
DOMAIN_PATTERN = re.compile(r"^(?=.{1,253}$)([a-z0-9-]{1,63}\.)+[a-z0-9-]{1,63}$")

_SCHEMA = """
create table if not exists sites (
    site_id text primary key,
    domain text not null,
    stripe_account_id text not null,
    status text not null check (status in ('connected', 'disconnected')),
    connected_at text not null,
    disconnected_at text,
    backfill_start text
)
"""


class SiteError(ValueError):
    """A site command that cannot be carried out; the message says what to do instead."""


@dataclass(frozen=True)
class Site:
    """One registered site and its Stripe connection."""

    site_id: str
    domain: str
    stripe_account_id: str
    status: str
    connected_at: datetime
    disconnected_at: datetime | None
    backfill_start: date | None

    @property
    def is_connected(self) -> bool:
        return self.status == "connected"


class SiteRegistry:
    """Reads and writes the registry file."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            con.execute("pragma journal_mode=wal")
            con.execute(_SCHEMA)
            yield con
        finally:
            con.close()

    def connect(self, site_id: str, domain: str, stripe_account_id: str) -> Site:
        """Register a site with its account, or reconnect a known one.

        Refuses an account already connected to another site: one Stripe account feeds at most
        one site at a time, or its revenue would be counted twice.
        """
        validate_site_id(site_id)
        domain = domain.strip().lower()
        if not DOMAIN_PATTERN.match(domain):
            raise SiteError(f"'{domain}' is not a domain name: pass one like shop.example.com.")
        if not ACCOUNT_ID_PATTERN.match(stripe_account_id):
            raise SiteError(
                f"'{stripe_account_id}' is not a Stripe account id: it looks like acct_1Abc..., "
                "shown in the Stripe dashboard under Settings > Account details."
            )
        now = _now()
        with self._connection() as con:
            con.execute("begin immediate")
            owner = con.execute(
                "select site_id from sites where stripe_account_id = ? and status = 'connected' "
                "and site_id != ?",
                (stripe_account_id, site_id),
            ).fetchone()
            if owner:
                con.execute("rollback")
                raise SiteError(
                    f"Stripe account {stripe_account_id} is already connected to site "
                    f"'{owner[0]}'. Disconnect it there first; an account feeds one site."
                )
            con.execute(
                "insert into sites (site_id, domain, stripe_account_id, status, connected_at) "
                "values (?, ?, ?, 'connected', ?) "
                "on conflict (site_id) do update set domain = excluded.domain, "
                "stripe_account_id = excluded.stripe_account_id, status = 'connected', "
                "connected_at = excluded.connected_at, disconnected_at = null",
                (site_id, domain, stripe_account_id, now.isoformat()),
            )
            con.execute("commit")
        return self.get(site_id)

    def get(self, site_id: str) -> Site:
        """The site, or a SiteError naming the command that registers it."""
        with self._connection() as con:
            row = con.execute("select * from sites where site_id = ?", (site_id,)).fetchone()
        if row is None:
            raise SiteError(
                f"Unknown site '{site_id}'. Register it first with `trace-pipelines sites "
                "connect SITE_ID --domain DOMAIN --stripe-account ACCOUNT_ID`."
            )
        return _site(row)

    def site_for_account(self, stripe_account_id: str) -> Site | None:
        """The site an account feeds: the connected one, else the most recently disconnected."""
        with self._connection() as con:
            row = con.execute(
                "select * from sites where stripe_account_id = ? "
                "order by status = 'connected' desc, coalesce(disconnected_at, '') desc limit 1",
                (stripe_account_id,),
            ).fetchone()
        return _site(row) if row else None

    def disconnect(self, site_id: str, at: datetime | None = None) -> Site:
        """Mark a site disconnected from `at` (default now); its rows stay. Idempotent."""
        site = self.get(site_id)
        if not site.is_connected:
            return site
        with self._connection() as con:
            con.execute(
                "update sites set status = 'disconnected', disconnected_at = ? where site_id = ?",
                ((at or _now()).isoformat(), site_id),
            )
        return self.get(site_id)

    def delete(self, site_id: str) -> None:
        """Forget a site entirely (the last step of site deletion). Idempotent."""
        with self._connection() as con:
            con.execute("delete from sites where site_id = ?", (site_id,))

    def list(self) -> list[Site]:
        with self._connection() as con:
            rows = con.execute("select * from sites order by site_id").fetchall()
        return [_site(row) for row in rows]

    def extend_backfill_window(self, site_id: str, start: date) -> None:
        """Record the earliest month backfilled; older objects count as pre-window references."""
        with self._connection() as con:
            con.execute(
                "update sites set backfill_start = min(coalesce(backfill_start, ?), ?) "
                "where site_id = ?",
                (start.isoformat(), start.isoformat(), site_id),
            )


def validate_site_id(site_id: str) -> None:
    if not SITE_ID_PATTERN.match(site_id):
        raise SiteError(
            f"'{site_id}' is not a valid site id: use 1 to 63 lowercase letters, digits, '-' "
            "or '_', starting with a letter or digit."
        )


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _site(row: tuple) -> Site:
    site_id, domain, account, status, connected_at, disconnected_at, backfill_start = row
    return Site(
        site_id=site_id,
        domain=domain,
        stripe_account_id=account,
        status=status,
        connected_at=datetime.fromisoformat(connected_at),
        disconnected_at=datetime.fromisoformat(disconnected_at) if disconnected_at else None,
        backfill_start=date.fromisoformat(backfill_start) if backfill_start else None,
    )
