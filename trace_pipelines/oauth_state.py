"""The OAuth `state`: a signed, site-bound ticket that lets one Stripe authorization back in.

Stripe hands `state` back unchanged on the callback, so it is the only thing tying a callback
to the connect click that started it. The ticket carries the site id, its domain, when it was
issued and a random nonce, signed with HMAC-SHA256 under TRACE_STATE_SECRET. The callback
accepts it only when the signature matches, it is under 10 minutes old, and its nonce has not
been used before: a forged, stale or replayed callback cannot attach a Stripe account to a
site. Used nonces are kept (hashed, without the site id) in a small SQLite table beside the
site registry until they expire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

STATE_TTL_SECONDS = 600
# A ticket from a clock slightly ahead (another web worker) is still honest.
_CLOCK_SKEW_SECONDS = 60
_MIN_SECRET_LENGTH = 32


class StateError(ValueError):
    """A `state` the callback must refuse; the message is safe to show to the site owner."""


@dataclass(frozen=True)
class ConnectTicket:
    """What a valid `state` vouches for: connect this site, with this domain."""

    site_id: str
    domain: str
    issued_at: int
    nonce: str


def state_secret_from_env() -> bytes:
    """TRACE_STATE_SECRET as bytes; refuses a missing or short one instead of inventing one.

    A default secret would let anyone who reads this code forge a state, so there is none.
    """
    value = os.environ.get("TRACE_STATE_SECRET", "")
    if len(value) < _MIN_SECRET_LENGTH:
        raise StateError(
            "TRACE_STATE_SECRET is missing or shorter than 32 characters: set it to a long "
            "random value (for example the output of `openssl rand -hex 32`) before serving "
            "the Stripe connect routes."
        )
    return value.encode()


class StateSigner:
    """Issues and redeems connect tickets; redeeming is single-use across processes."""

    def __init__(self, secret: bytes, used_db: Path, ttl_seconds: int = STATE_TTL_SECONDS):
        if len(secret) < _MIN_SECRET_LENGTH:
            raise StateError("The state secret must be at least 32 bytes long.")
        self._secret = secret
        self._used_db = Path(used_db)
        self.ttl_seconds = ttl_seconds

    def issue(self, site_id: str, domain: str, now: float | None = None) -> str:
        """A fresh `state` for the connect click of `site_id`."""
        payload = {
            "site": site_id,
            "domain": domain,
            "iat": int(now if now is not None else time.time()),
            "nonce": secrets.token_urlsafe(16),
        }
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{self._sign(body)}"

    def redeem(self, state: str | None, now: float | None = None) -> ConnectTicket:
        """The ticket `state` stands for, marked used; StateError if it must be refused."""
        ticket = self.verify(state, now)
        self._mark_used(ticket, now)
        return ticket

    def verify(self, state: str | None, now: float | None = None) -> ConnectTicket:
        """Check signature and age without using the ticket up."""
        now = now if now is not None else time.time()
        body, dot, signature = (state or "").partition(".")
        if not dot or not hmac.compare_digest(signature, self._sign(body)):
            raise StateError(
                "The Stripe connection could not be verified (its state is missing or was "
                "altered). Start again from Settings > Connect Stripe."
            )
        try:
            payload = json.loads(_unb64(body))
            ticket = ConnectTicket(
                site_id=str(payload["site"]),
                domain=str(payload["domain"]),
                issued_at=int(payload["iat"]),
                nonce=str(payload["nonce"]),
            )
        except (ValueError, KeyError, TypeError):
            # Only reachable with the secret, i.e. a ticket from an incompatible version.
            raise StateError(
                "The Stripe connection link is from an older version of Trace. Start again "
                "from Settings > Connect Stripe."
            ) from None
        age = now - ticket.issued_at
        if age > self.ttl_seconds or age < -_CLOCK_SKEW_SECONDS:
            raise StateError(
                f"The Stripe connection link expired (links last {self.ttl_seconds // 60} "
                "minutes). Start again from Settings > Connect Stripe."
            )
        return ticket

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())

    def _mark_used(self, ticket: ConnectTicket, now: float | None) -> None:
        now = now if now is not None else time.time()
        digest = hashlib.sha256(ticket.nonce.encode()).hexdigest()
        self._used_db.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self._used_db, timeout=30, isolation_level=None)
        try:
            con.execute("pragma journal_mode=wal")
            con.execute(
                "create table if not exists oauth_used_states "
                "(nonce_sha256 text primary key, expires_at integer not null)"
            )
            con.execute("begin immediate")
            con.execute("delete from oauth_used_states where expires_at < ?", (int(now),))
            inserted = con.execute(
                "insert into oauth_used_states values (?, ?) on conflict do nothing",
                (digest, ticket.issued_at + self.ttl_seconds + _CLOCK_SKEW_SECONDS),
            ).rowcount
            con.execute("commit")
        finally:
            con.close()
        if inserted != 1:
            raise StateError(
                "This Stripe connection link was already used. Start again from Settings > "
                "Connect Stripe."
            )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
