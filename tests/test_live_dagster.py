"""The live path through Dagster: the apply job, its materializations, and the sensor's rules.

The job runs for real on an ephemeral instance with the code location's assets, wired to a
scratch TRACE_HOME; the sensor is evaluated against real run records in that instance.
"""

from __future__ import annotations

import json
import threading
import time

import duckdb
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    RunRequest,
    SkipReason,
    build_sensor_context,
)
from dagster_duckdb import DuckDBResource

from tests.model_cases import at, charge, checkout_session, unix
from trace_pipelines.assets.trace_inputs import trace_input_assets
from trace_pipelines.live.assets import (
    LIVE_JOB_NAME,
    live_model_assets,
    stripe_live_apply_job,
    stripe_webhook_events,
)
from trace_pipelines.live.run import apply_and_refresh
from trace_pipelines.partitions import SITES
from trace_pipelines.resources.landing import landing_store_from_env
from trace_pipelines.resources.storage import TraceStorage
from trace_pipelines.sensors.stripe_events import build_stripe_events_sensor
from trace_pipelines.settings import TracePaths
from trace_pipelines.sites import SiteRegistry

ACCOUNT = "acct_1Dagster"


@pytest.fixture
def definitions(trace_home: TracePaths) -> Definitions:
    SiteRegistry(trace_home.registry).connect("site_a", "a.example.com", ACCOUNT)
    return Definitions(
        assets=[stripe_webhook_events, *trace_input_assets, live_model_assets],
        jobs=[stripe_live_apply_job],
        resources={
            "trace_storage": TraceStorage(home=str(trace_home.home)),
            "duckdb": DuckDBResource(database=str(trace_home.warehouse)),
        },
    )


def landed_purchase(event_id: str, charge_id: str) -> None:
    paid = charge(charge_id, 4200, payment_intent=f"pi_{charge_id}", created=at())
    session = checkout_session(
        f"cs_{charge_id}", visitor="v_live", payment_intent=f"pi_{charge_id}", created=at()
    )
    landing = landing_store_from_env()
    for suffix, kind, obj in (
        ("c", "charge.succeeded", paid),
        ("s", "checkout.session.completed", session),
    ):
        event = {
            "id": f"{event_id}_{suffix}",
            "type": kind,
            "created": unix(at()),
            "account": ACCOUNT,
            "data": {"object": obj},
        }
        landing.land(event, site_id="site_a")


def test_one_apply_run_applies_then_refreshes_and_marks_raw_partitions(trace_home, definitions):
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(SITES.name, ["site_a"])
        landed_purchase("evt_live_1", "ch_live_1")

        summary = apply_and_refresh(instance=instance, definitions=definitions)

        assert summary.applied_through_seq == summary.landed_through_seq == 2
        assert len(summary.runs) == 1
        charges = instance.fetch_materializations(AssetKey("stripe_charges"), limit=10).records
        assert [r.asset_materialization.partition for r in charges] == ["2026-03-01|site_a"]
        refreshed = instance.fetch_materializations(AssetKey("attributed_revenue"), limit=10)
        assert len(refreshed.records) == 1

    with duckdb.connect(str(trace_home.warehouse), read_only=True) as con:
        rows = con.execute(
            "select charge_id, net_amount, attribution_path, visitor_id "
            "from analytics.attributed_revenue"
        ).fetchall()
    assert rows == [("ch_live_1", 4200, "metadata", "v_live")]


# The sensor's rules, decided on one look at the landing store (no long poll).
decide_once = build_stripe_events_sensor(long_poll_seconds=0)


def evaluate(instance: DagsterInstance, cursor: str | None = None):
    context = build_sensor_context(instance=instance, cursor=cursor)
    return decide_once(context), context.cursor


def test_the_sensor_requests_one_run_per_backlog_and_never_twice(trace_home, definitions):
    with DagsterInstance.ephemeral() as instance:
        nothing, _ = evaluate(instance)
        assert isinstance(nothing, SkipReason)

        landed_purchase("evt_sensor_1", "ch_sensor_1")
        request, cursor = evaluate(instance)
        assert isinstance(request, RunRequest)
        assert json.loads(cursor) == {"requested_seq": 2, "runs": 1}

        # A run waiting to start covers everything landed so far.
        job = definitions.resolve_job_def(LIVE_JOB_NAME)
        queued = instance.create_run_for_job(
            job_def=job, status=DagsterRunStatus.NOT_STARTED, tags=job.tags
        )
        landed_purchase("evt_sensor_2", "ch_sensor_2")
        waiting, _ = evaluate(instance, cursor)
        assert isinstance(waiting, SkipReason) and "waiting" in waiting.skip_message

        # Once it executes, only events landed after the last request need another run.
        instance.report_run_canceled(queued)
        executing = instance.create_run_for_job(
            job_def=job, status=DagsterRunStatus.STARTED, tags=job.tags
        )
        assert executing.status == DagsterRunStatus.STARTED
        again, cursor = evaluate(instance, json.dumps({"requested_seq": 4, "runs": 1}))
        assert isinstance(again, SkipReason)
        newer, cursor = evaluate(instance, json.dumps({"requested_seq": 2, "runs": 1}))
        assert isinstance(newer, RunRequest) and newer.run_key == "live-apply-2"

        # Applied: nothing to do, whatever the runs say.
        apply_and_refresh(instance=instance, definitions=definitions)
        done, _ = evaluate(instance, cursor)
        assert isinstance(done, SkipReason) and "Every landed event is applied" in done.skip_message


def test_an_evaluation_with_nothing_to_do_waits_for_the_next_event(trace_home, definitions):
    """The long poll: an event landing mid-evaluation is requested by that same evaluation."""
    watcher = build_stripe_events_sensor(long_poll_seconds=30)
    lands = threading.Timer(0.5, landed_purchase, args=("evt_poll_1", "ch_poll_1"))
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(instance=instance)
        started = time.monotonic()
        lands.start()
        try:
            request = watcher(context)
        finally:
            lands.join()
        waited = time.monotonic() - started

    assert isinstance(request, RunRequest)
    assert json.loads(context.cursor) == {"requested_seq": 2, "runs": 1}
    # It answered once the event landed, not at the end of its 30-second watch.
    assert waited < 30


def test_an_evaluation_that_sees_no_event_skips_when_its_watch_ends(trace_home, definitions):
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(instance=instance)
        result = build_stripe_events_sensor(long_poll_seconds=0.3)(context)

    assert isinstance(result, SkipReason)
    assert "Every landed event is applied" in result.skip_message
