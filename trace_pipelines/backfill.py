"""Backfilling sites from the command line: one Dagster run per site-month, several at a time.

Each partition is a run of the `stripe_backfill` job on the persistent instance in DAGSTER_HOME,
so its run, logs and materializations show in the UI exactly as if launched there. Runs execute
in a pool of worker processes rather than through the daemon's queue, so a backfill works (and
reports progress) without the daemon, as scripts and `make demo` need. Concurrent months are
safe: each run writes only its own Parquet files, and the Stripe rate limit is shared.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import date

from dagster import DagsterInstance

from trace_pipelines.partitions import SITES, backfill_months, partition_key
from trace_pipelines.sensors.schedules import STRIPE_ACCOUNT_TAG
from trace_pipelines.settings import trace_paths
from trace_pipelines.sites import Site, SiteError, SiteRegistry

# Allocator settings for the worker processes, read by glibc and pyarrow when a process starts.
# A partition run's 16 fetching threads each get a glibc arena, and pyarrow's mimalloc pool
# keeps what it freed; both kept memory the run no longer used, so a worker's peak grew with the
# size of the months it fetched. Measured on the 200,000-charge benchmark (BENCHMARKS.md): peak
# worker memory 563 MB with the defaults, 393 MB with these, at the same speed. A value already
# in the environment wins. `make demo` exports the same for the runs the daemon launches.
WORKER_ALLOCATOR_ENV = {"MALLOC_ARENA_MAX": "2", "ARROW_DEFAULT_MEMORY_POOL": "system"}


@dataclass(frozen=True)
class PartitionOutcome:
    """What one partition run did."""

    site_id: str
    month: date
    run_id: str
    success: bool
    rows: int
    requests: int
    seconds: float
    # Peak resident memory of the worker process so far (workers run several partitions).
    peak_rss_mb: float = 0.0
    error: str | None = None


def register_site_partition(instance: DagsterInstance, site_id: str) -> None:
    """Add the site to the `sites` dynamic partitions, so its months exist in Dagster."""
    if not instance.has_dynamic_partition(SITES.name, site_id):
        instance.add_dynamic_partitions(SITES.name, [site_id])


def backfill(
    site_ids: Sequence[str],
    *,
    months: int = 12,
    concurrency: int = 4,
    today: date | None = None,
    on_outcome: Callable[[PartitionOutcome, int, int], None] = lambda outcome, done, total: None,
) -> list[PartitionOutcome]:
    """Run the last `months` full months and the current month of each site.

    Raises SiteError before starting anything when a site is unknown or disconnected.
    """
    registry = SiteRegistry(trace_paths().registry)
    sites = [_connected(registry, site_id) for site_id in site_ids]
    month_list = backfill_months(months, today)

    instance = DagsterInstance.get()
    for site in sites:
        register_site_partition(instance, site.site_id)
        registry.extend_backfill_window(site.site_id, month_list[0])

    work = [(site, month) for month in month_list for site in sites]
    return list(_run_all(work, concurrency, on_outcome))


def _connected(registry: SiteRegistry, site_id: str) -> Site:
    site = registry.get(site_id)
    if not site.is_connected:
        raise SiteError(
            f"Site '{site_id}' is disconnected from Stripe. Reconnect it with `trace-pipelines "
            "sites connect` before backfilling."
        )
    return site


def _run_all(
    work: list[tuple[Site, date]],
    concurrency: int,
    on_outcome: Callable[[PartitionOutcome, int, int], None],
) -> Iterable[PartitionOutcome]:
    # Spawned, not forked: the parent may hold threads and open SQLite handles.
    context = multiprocessing.get_context("spawn")
    with (
        worker_environment(),
        ProcessPoolExecutor(max_workers=concurrency, mp_context=context) as pool,
    ):
        futures = [
            pool.submit(run_partition, site.site_id, site.stripe_account_id, month)
            for site, month in work
        ]
        for done, future in enumerate(as_completed(futures), start=1):
            outcome = future.result()
            on_outcome(outcome, done, len(work))
            yield outcome


@contextlib.contextmanager
def worker_environment() -> Iterator[None]:
    """Spawned workers copy this process's environment: add the allocator settings meanwhile."""
    added = {name: value for name, value in WORKER_ALLOCATOR_ENV.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def run_partition(site_id: str, stripe_account_id: str, month: date) -> PartitionOutcome:
    """Execute one partition run in this process on the DAGSTER_HOME instance."""
    from trace_pipelines.definitions import defs  # loaded in the worker process

    key = partition_key(site_id, month)
    started = time.monotonic()
    result = defs.resolve_job_def("stripe_backfill").execute_in_process(
        partition_key=key,
        instance=DagsterInstance.get(),
        # The run's full log is in the instance (and the UI); the terminal shows progress lines.
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        tags={STRIPE_ACCOUNT_TAG: stripe_account_id, "trace/launched_by": "cli-backfill"},
        raise_on_error=False,
    )
    materializations = result.asset_materializations_for_node("stripe_raw_objects")
    rows = sum(int(m.metadata["dagster/row_count"].value) for m in materializations)
    requests = (
        int(materializations[0].metadata["api_requests_partition_total"].value)
        if materializations
        else 0
    )
    return PartitionOutcome(
        site_id=site_id,
        month=month,
        run_id=result.run_id,
        success=result.success,
        rows=rows,
        requests=requests,
        seconds=time.monotonic() - started,
        peak_rss_mb=process_peak_rss_mb(),
        error=None if result.success else _failure_message(result),
    )


def process_peak_rss_mb() -> float:
    """The most memory this process has held resident, in MiB.

    Linux's `VmHWM`, counted from the process's own start. `ru_maxrss` is not: exec keeps the
    high-water mark of the process it replaced, so a worker spawned by a large parent would
    report the parent's size.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # the line reads "VmHWM:  123456 kB"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _failure_message(result) -> str:
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            if error is None:
                continue
            user_error = error.cause or error
            # A dagster.Failure carries the sentence meant for the user as its description.
            return (
                user_error.message.strip()
                .split("\n")[0]
                .removeprefix("dagster._core.definitions.events.Failure: ")
            )
    return "the run failed; open it in the Dagster UI for its logs"


def format_outcome(outcome: PartitionOutcome, done: int, total: int) -> str:
    """One progress line, e.g. `[ 3/13] site_a 2026-03 ok  4,123 rows  57 requests  2.1s`."""
    width = len(str(total))
    status = "ok    " if outcome.success else "FAILED"
    line = (
        f"[{done:>{width}}/{total}] {outcome.site_id} {outcome.month:%Y-%m} {status} "
        f"{outcome.rows:>8,} rows {outcome.requests:>5} requests {outcome.seconds:6.1f}s"
    )
    if outcome.error:
        line += f"\n    {outcome.error}"
    return line
