"""The sensor that turns landed Stripe events into live apply runs within seconds.

Its cursor follows the landing store: it remembers the highest `seq` it has asked a run to
apply and how many runs it has requested (the run key, so one evaluation retried by the daemon
never requests twice). An evaluation asks for a run when:

- landed events are past the durable apply watermark, and
- no apply run is waiting to start (one that has not started reads every event landed so
  far when it does), and
- no apply run is executing, or events landed after the last request (the executing run may
  have read its range before them: the new run queues behind it on the apply lock, its
  start-up overlapping the other's work), or the executing run looks stuck.

Dagster's sensor daemon starts an evaluation at most every 5 seconds, whatever
`minimum_interval_seconds` says, so an event landing just after one would wait up to 5 seconds
for the next. Instead an evaluation that finds nothing to do keeps watching the landing store
(two indexed reads every `POLL_SECONDS`) for most of that interval and asks for a run as soon
as an event lands: a long poll. The daemon's next evaluation starts right after this one ends.

A run killed mid-apply leaves the watermark behind the landed events, so the next evaluation
asks again and the range is re-applied (see `trace_pipelines.live.apply`). After a failed run
the sensor waits `FAILURE_BACKOFF_SECONDS` before asking again, so a persistent error (say,
a broken model) does not start a run a second.
"""

import json
import time

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from trace_pipelines.live.apply import WATERMARK
from trace_pipelines.live.assets import LIVE_JOB_NAME, LIVE_RUN_TAG, stripe_live_apply_job
from trace_pipelines.resources.landing import landing_store_from_env

FAILURE_BACKOFF_SECONDS = 30
# An apply run executing longer than this is presumed dead (its process killed without the
# instance noticing) and no longer holds back a new run.
STUCK_RUN_SECONDS = 600
# How long one evaluation watches for new events: most of the daemon's 5-second interval, and
# far inside the 60 seconds the daemon allows an evaluation.
LONG_POLL_SECONDS = 4.5
POLL_SECONDS = 0.1

_FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
_WAITING = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING]


def build_stripe_events_sensor(long_poll_seconds: float = LONG_POLL_SECONDS) -> SensorDefinition:
    """The stripe_events sensor, watching the landing store for `long_poll_seconds` at most."""

    @sensor(
        name="stripe_events_sensor",
        job=stripe_live_apply_job,
        minimum_interval_seconds=1,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Starts a stripe_live_apply run when landed Stripe events await applying; each "
            f"evaluation watches the landing store for up to {long_poll_seconds:g} s."
        ),
    )
    def stripe_events_sensor(context: SensorEvaluationContext):
        """Request a live apply run as soon as events wait and no run will pick them up."""
        landing = landing_store_from_env()

        def look() -> tuple[int, int]:
            """The last landed seq and the apply watermark."""
            return landing.last_seq(), landing.watermark(WATERMARK)

        deadline = time.monotonic() + long_poll_seconds
        while True:
            seen = look()
            decision = _decide(context, *seen)
            if isinstance(decision, RunRequest):
                return decision
            # Only a new event or a moved watermark can change the decision before the next
            # evaluation; a run finishing or failing alone is left to that evaluation.
            while time.monotonic() < deadline and look() == seen:
                time.sleep(POLL_SECONDS)
            if time.monotonic() >= deadline:
                return decision

    return stripe_events_sensor


def _decide(context: SensorEvaluationContext, landed: int, applied: int) -> RunRequest | SkipReason:
    """Given what the landing store holds, and the apply runs: ask for a run, or say why not."""
    if landed <= applied:
        return SkipReason(f"Every landed event is applied (through seq {applied}).")

    cursor = json.loads(context.cursor) if context.cursor else {"requested_seq": 0, "runs": 0}
    instance = context.instance
    if _runs(instance, _WAITING):
        return SkipReason("An apply run waiting to start will pick the new events up.")
    executing = [
        record
        for record in _runs(instance, [DagsterRunStatus.STARTED])
        if record.start_time is None or time.time() - record.start_time < STUCK_RUN_SECONDS
    ]
    if executing and landed <= cursor["requested_seq"]:
        return SkipReason("The executing apply run was requested after these events landed.")
    [last_finished] = _runs(instance, _FINISHED, limit=1) or [None]
    if (
        last_finished is not None
        and last_finished.dagster_run.status == DagsterRunStatus.FAILURE
        and time.time() - (last_finished.end_time or 0) < FAILURE_BACKOFF_SECONDS
    ):
        return SkipReason(
            f"The last apply run failed; retrying {FAILURE_BACKOFF_SECONDS}s after it ended."
        )

    runs = cursor["runs"] + 1
    context.update_cursor(json.dumps({"requested_seq": landed, "runs": runs}))
    context.log.info("Requesting an apply run for events %s..%s", applied + 1, landed)
    return RunRequest(run_key=f"live-apply-{runs}", tags={"trace/landed_seq": str(landed)})


def _runs(instance: DagsterInstance, statuses, limit: int = 5):
    return instance.get_run_records(
        RunsFilter(job_name=LIVE_JOB_NAME, statuses=statuses, tags={LIVE_RUN_TAG: "true"}),
        limit=limit,
    )


stripe_events_sensor = build_stripe_events_sensor()
