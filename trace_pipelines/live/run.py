"""Running the live apply without the daemon: `trace-pipelines webhooks apply`.

The same `stripe_live_apply` job the sensor starts, executed in this process on the instance
in DAGSTER_HOME (so the run, its materializations and the raw partitions it changed show in
the UI), repeated until every event landed before the call is applied and the models that
read them are refreshed. For operators catching up while the daemon is off, and for scripts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dagster import DagsterInstance, Definitions

from trace_pipelines.live.apply import WATERMARK
from trace_pipelines.live.assets import LIVE_JOB_NAME
from trace_pipelines.resources.landing import LandingStore, landing_store_from_env

logger = logging.getLogger(__name__)


class LiveApplyError(RuntimeError):
    """The apply run failed; the message names the run to open in the UI."""


@dataclass(frozen=True)
class LiveApplySummary:
    """What `apply_and_refresh` did."""

    runs: list[str]
    applied_through_seq: int
    landed_through_seq: int


def apply_and_refresh(
    instance: DagsterInstance | None = None,
    landing: LandingStore | None = None,
    definitions: Definitions | None = None,
    max_runs: int = 10,
) -> LiveApplySummary:
    """Apply every event landed so far and refresh the models; returns when done.

    `definitions` defaults to the code location's (tests pass their own resources).

    Raises LiveApplyError when a run fails (the events stay landed; run it again once the
    cause is fixed: nothing is lost or applied twice).
    """
    if definitions is None:
        from trace_pipelines.definitions import defs as definitions  # loads every asset

    instance = instance or DagsterInstance.get()
    landing = landing or landing_store_from_env()
    target = landing.last_seq()
    job = definitions.resolve_job_def(LIVE_JOB_NAME)
    runs: list[str] = []
    while True:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        runs.append(result.run_id)
        if not result.success:
            raise LiveApplyError(
                f"The {LIVE_JOB_NAME} run {result.run_id} failed; open it in the Dagster UI "
                "for the step that failed, fix the cause and run the apply again (landed "
                "events are kept and applied exactly once)."
            )
        applied = landing.watermark(WATERMARK)
        if applied >= target or len(runs) >= max_runs:
            break
    logger.info("Applied landed events through seq %s in %s run(s)", applied, len(runs))
    return LiveApplySummary(runs=runs, applied_through_seq=applied, landed_through_seq=target)
