"""The landing store keeps each event once, in order, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg2
import pytest

from trace_pipelines.resources.landing import (
    LandingStore,
    PostgresLandingStore,
    SqliteLandingStore,
)


@pytest.fixture(params=["sqlite", "postgres"])
def landing(request, tmp_path: Path) -> LandingStore:
    if request.param == "sqlite":
        yield SqliteLandingStore(tmp_path / "landing.sqlite")
        return
    database = f"trace_landing_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'create database "{database}"')
    yield PostgresLandingStore(f"postgresql://postgres@127.0.0.1:5432/{database}")
    admin.cursor().execute(f'drop database "{database}" with (force)')
    admin.close()


def event(event_id: str, account: str = "acct_1A", created: int = 1_780_000_000) -> dict:
    return {
        "id": event_id,
        "object": "event",
        "type": "charge.succeeded",
        "account": account,
        "created": created,
        "api_version": "2026-10-28.endive",
        "data": {"object": {"id": "ch_1", "object": "charge", "amount": 1234}},
    }


def test_an_event_is_stored_once_however_often_it_is_landed(landing: LandingStore):
    assert landing.land(event("evt_1"), site_id="site_a") is True
    assert landing.land(event("evt_1"), site_id="site_a") is False
    assert landing.land_many([event("evt_1"), event("evt_2")], site_id="site_a", source="api") == 1
    assert landing.count() == 2


def test_readers_follow_seq_in_landing_order(landing: LandingStore):
    for i in range(5):
        landing.land(event(f"evt_{i}"), site_id="site_a")
    first = landing.read_after(0, limit=3)
    rest = landing.read_after(first[-1].seq)
    assert [e.event_id for e in first + rest] == [f"evt_{i}" for i in range(5)]
    assert first[0].payload["data"]["object"]["amount"] == 1234
    assert (first[0].account_id, first[0].site_id, first[0].source) == (
        "acct_1A",
        "site_a",
        "webhook",
    )
    assert landing.last_seq() == rest[-1].seq


def test_deleting_a_site_removes_only_its_events(landing: LandingStore):
    landing.land(event("evt_a"), site_id="site_a")
    landing.land(event("evt_b", account="acct_1B"), site_id="site_b")
    assert landing.delete_site("site_a") == 1
    assert landing.count("site_a") == 0
    assert landing.count("site_b") == 1


def test_an_event_without_an_id_is_refused_and_nothing_is_stored(landing: LandingStore):
    with pytest.raises(ValueError, match="needs a string `id`"):
        landing.land_many([event("evt_ok"), {"type": "charge.succeeded"}], site_id=None, source="x")
    assert landing.count() == 0
