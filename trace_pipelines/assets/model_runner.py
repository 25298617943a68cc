"""Refreshing many SQL models in one process: builds in dependency order, checks alongside.

One DuckDB query rarely keeps both cores busy: joins build their hash tables on one thread and a
`create table` ends with a single-threaded write. The runner therefore keeps two pieces of work
in flight at once, each on its own cursor of the one warehouse connection: a model build next to
another model whose upstream tables are ready, or next to the checks of a model already built.
A model waits only for the models it reads, and for their blocking checks, so a broken grain
still stops everything downstream of it before it is read.

Work is taken builds first (the builds are the critical path; checks only report), and at most
`workers` queries run at a time, which also bounds the memory the refresh can take.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    from trace_pipelines.assets.sql_models import BuildOutcome, ModelCheck, SqlModel

# Two queries in flight: one per core of the machines this runs on; more only adds memory.
DEFAULT_WORKERS = 2


@dataclass
class ModelRun:
    """What happened to one model of the refresh."""

    model: SqlModel
    outcome: BuildOutcome | None = None
    seconds: float = 0.0
    error: BaseException | None = None
    # Set when the model was not built because a model it reads failed or failed a blocking check.
    held_back_by: str | None = None
    pending_checks: int = 0


@dataclass
class _Task:
    run: ModelRun
    check: ModelCheck | None = None  # None: the build itself


@dataclass
class RefreshPlan:
    """The models to build, in dependency order, and which of them each one reads."""

    models: Sequence[SqlModel]
    upstream: Mapping[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, models: Sequence[SqlModel]) -> RefreshPlan:
        names = {model.name for model in models}
        upstream = {
            model.name: {table for _, table in model.upstream_tables if table in names}
            for model in models
        }
        return cls(models=models, upstream=upstream)


def refresh_models(
    connection: duckdb.DuckDBPyConnection,
    plan: RefreshPlan,
    build: Callable[[duckdb.DuckDBPyConnection, SqlModel], BuildOutcome],
    later_checks: Callable[[SqlModel], Sequence[ModelCheck]],
    *,
    workers: int = DEFAULT_WORKERS,
) -> Iterator[ModelRun]:
    """Build every model of the plan and run its checks; yields each model once it is done.

    `build` replaces the model's table and runs its blocking checks (their results are in the
    outcome it returns); `later_checks` are the model's other checks, run once it is built. A
    model is finished when its build and all its checks are, or with `error` or `held_back_by`
    set when it could not be built. Models are yielded in dependency order (Dagster requires it
    of a multi-asset's outputs), each as soon as it and the models it reads are finished. The
    caller's thread does the yielding, so it can report one model while the next ones run.
    """
    runs = {model.name: ModelRun(model) for model in plan.models}
    waiting = {name: set(upstream) for name, upstream in plan.upstream.items()}
    downstream: dict[str, list[str]] = {name: [] for name in runs}
    for name, upstream in plan.upstream.items():
        for parent in upstream:
            downstream[parent].append(name)

    finished: set[str] = set()
    released: set[str] = set()

    def release(run: ModelRun) -> Iterator[ModelRun]:
        """Yield every finished model whose upstream models have all been yielded."""
        finished.add(run.model.name)
        progress = True
        while progress:
            progress = False
            for model in plan.models:
                name = model.name
                if name in finished - released and plan.upstream[name] <= released:
                    released.add(name)
                    progress = True
                    yield runs[name]

    ready_builds = [runs[name] for name, parents in waiting.items() if not parents]
    ready_checks: list[_Task] = []
    in_flight: dict[Future, _Task] = {}

    def execute(task: _Task) -> object:
        cursor = connection.cursor()
        try:
            if task.check is None:
                started = time.perf_counter()
                outcome = build(cursor, task.run.model)
                task.run.seconds = time.perf_counter() - started
                return outcome
            return task.check.evaluate(cursor, task.run.model)
        finally:
            cursor.close()

    def hold_back(name: str, reason: str) -> Iterator[ModelRun]:
        """Mark everything downstream of `name` as not built, and report it."""
        for child in downstream[name]:
            run = runs[child]
            if run.held_back_by is None and run.outcome is None and run.error is None:
                run.held_back_by = reason
                yield from release(run)
                yield from hold_back(child, reason)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="model") as pool:
        while ready_builds or ready_checks or in_flight:
            while len(in_flight) < workers and (ready_builds or ready_checks):
                task = _Task(ready_builds.pop(0)) if ready_builds else ready_checks.pop(0)
                in_flight[pool.submit(execute, task)] = task
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)

            for future in done:
                task = in_flight.pop(future)
                run = task.run
                if task.check is not None:
                    run.outcome.check_results.append(future.result())
                    run.pending_checks -= 1
                    if run.pending_checks == 0:
                        yield from release(run)
                    continue

                error = future.exception()
                if error is not None:
                    run.error = error
                    yield from release(run)
                    yield from hold_back(run.model.name, f"{run.model.table} failed to build")
                    continue

                run.outcome = future.result()
                broken = [r.check_name for r in run.outcome.check_results if not r.passed]
                if broken:
                    reason = f"{run.model.table} failed its blocking check {', '.join(broken)}"
                    yield from hold_back(run.model.name, reason)
                else:
                    for child in downstream[run.model.name]:
                        waiting[child].discard(run.model.name)
                        if not waiting[child] and runs[child].held_back_by is None:
                            ready_builds.append(runs[child])

                checks = [_Task(run, check) for check in later_checks(run.model)]
                run.pending_checks = len(checks)
                ready_checks.extend(checks)
                if not checks:
                    yield from release(run)
