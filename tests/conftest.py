"""Shared fixtures: a scratch TRACE_HOME, a Dagster instance, and running raw partitions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, materialize

from trace_pipelines.assets.stripe_raw import stripe_raw_objects
from trace_pipelines.partitions import SITES, partition_key
from trace_pipelines.resources.storage import TraceStorage
from trace_pipelines.resources.stripe_reader import StripeReader
from trace_pipelines.settings import TracePaths
from trace_pipelines.sites import SiteRegistry

SANDBOX_KEY = "sk_test_trace_sandbox"


@pytest.fixture
def trace_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TracePaths:
    """An empty TRACE_HOME for one test."""
    home = tmp_path / "trace_home"
    monkeypatch.setenv("TRACE_HOME", str(home))
    return TracePaths(home)


@dataclass
class Ingestion:
    """Runs raw partitions of registered sites against one Stripe base address."""

    paths: TracePaths
    instance: DagsterInstance
    api_base: str
    api_key: str = SANDBOX_KEY
    max_attempts: int = 8

    def connect(self, site_id: str, account: str, backfill_start: date | None = None) -> None:
        registry = SiteRegistry(self.paths.registry)
        registry.connect(site_id, f"{site_id.replace('_', '-')}.example", account)
        if backfill_start:
            registry.extend_backfill_window(site_id, backfill_start)
        if not self.instance.has_dynamic_partition(SITES.name, site_id):
            self.instance.add_dynamic_partitions(SITES.name, [site_id])

    def resources(self) -> dict:
        return {
            "stripe": StripeReader(
                api_key=self.api_key,
                api_base=self.api_base,
                max_attempts=self.max_attempts,
                max_backoff_seconds=2,
                rate_state_dir=str(self.paths.locks_dir / "ratelimit"),
            ),
            "trace_storage": TraceStorage(home=str(self.paths.home)),
        }

    def run(self, site_id: str, month: date):
        return materialize(
            [stripe_raw_objects],
            partition_key=partition_key(site_id, month),
            instance=self.instance,
            resources=self.resources(),
            raise_on_error=False,
        )

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.paths.warehouse), read_only=True) as con:
            return con.execute(sql).fetchall()


@pytest.fixture
def dagster_instance() -> DagsterInstance:
    with DagsterInstance.ephemeral() as instance:
        yield instance


def failure_message(result) -> str:
    """The user-facing message of a failed materialization."""
    for event in result.all_events:
        if event.is_step_failure:
            return event.step_failure_data.user_failure_data.description
    raise AssertionError("the run did not fail")
