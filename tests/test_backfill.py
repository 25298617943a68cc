"""Whole backfills through the command line, on persistent instances (SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from tests.stripe_fixtures import FixtureFolder
from trace_pipelines.backfill import (
    WORKER_ALLOCATOR_ENV,
    process_peak_rss_mb,
    worker_environment,
)
from trace_pipelines.cli import main
from trace_pipelines.partitions import backfill_months
from trace_pipelines.resources.raw_store import release_free_memory
from trace_pipelines.sandbox.server import running_sandbox

REPO = Path(__file__).resolve().parents[1]
ACCOUNT = "acct_1TraceBackfill"


def thirteen_months_of_charges(root: Path, per_month: int = 5) -> tuple[Path, int]:
    """A fixture folder with `per_month` charges in each month of a 12-month backfill."""
    fixtures = FixtureFolder(root)
    months = backfill_months(12)
    for month in months:
        start = int(datetime(month.year, month.month, 2, tzinfo=UTC).timestamp())
        for i in range(per_month):
            fixtures.charge(ACCOUNT, start + i * 3600)
    return fixtures.write(), per_month * len(months)


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TRACE_HOME and a DAGSTER_HOME holding the repository's local deploy/dagster.yaml."""
    home = tmp_path / "trace_home"
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    monkeypatch.setenv("TRACE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_trace_sandbox")
    return home


def run_cli_backfill(monkeypatch, sandbox, capsys) -> tuple[int, str]:
    monkeypatch.setenv("STRIPE_API_BASE", sandbox.api_base)
    code = main(
        ["sites", "connect", "site_a", "--domain", "a.example", "--stripe-account", ACCOUNT]
    )
    assert code == 0
    code = main(["backfill", "site_a", "--months", "12", "--concurrency", "4"])
    return code, capsys.readouterr().out


@pytest.mark.slow
def test_a_thirteen_month_backfill_with_four_runs_at_a_time_succeeds_with_only_gets(
    cli_env, tmp_path, monkeypatch, capsys
):
    fixtures, charges = thirteen_months_of_charges(tmp_path / "stripe")
    with running_sandbox(fixtures) as sandbox:
        code, out = run_cli_backfill(monkeypatch, sandbox, capsys)
        methods = {request["method"] for request in sandbox.requests()}

    assert code == 0, out
    assert "13 of 13 partitions succeeded" in out
    assert methods == {"GET"}

    instance = DagsterInstance.get()
    runs = instance.get_runs(RunsFilter(job_name="stripe_backfill"))
    assert len(runs) == 13
    assert {run.status for run in runs} == {DagsterRunStatus.SUCCESS}
    partitions = instance.get_materialized_partitions(AssetKey("stripe_charges"))
    assert len(partitions) == 13

    import duckdb

    with duckdb.connect(str(cli_env / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from raw.stripe_charges").fetchone() == (charges,)


def test_backfill_of_an_unknown_site_says_how_to_register_it(cli_env, capsys):
    assert main(["backfill", "site_nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown site 'site_nope'. Register it first")
    assert err.count("\n") == 1


def test_backfill_exits_1_when_a_partition_fails(cli_env, tmp_path, monkeypatch, capsys):
    fixtures, _ = thirteen_months_of_charges(tmp_path / "stripe", per_month=1)
    with running_sandbox(fixtures) as sandbox:
        sandbox.revoke(ACCOUNT)
        monkeypatch.setenv("STRIPE_API_BASE", sandbox.api_base)
        main(["sites", "connect", "site_a", "--domain", "a.example", "--stripe-account", ACCOUNT])
        code = main(["backfill", "site_a", "--months", "0"])
    out = capsys.readouterr().out
    assert code == 1
    assert "0 of 1 partitions succeeded" in out
    assert f"Stripe refused access to account {ACCOUNT} (HTTP 403)" in out


@pytest.fixture
def postgres_dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A DAGSTER_HOME using deploy/dagster.postgres.yaml on a scratch database."""
    database = f"trace_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'create database "{database}"')
    dagster_home = tmp_path / "dagster_home_pg"
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.postgres.yaml", dagster_home / "dagster.yaml")
    for name, value in {
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": database,
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "TRACE_HOME": str(tmp_path / "trace_home"),
        "STRIPE_API_KEY": "sk_test_trace_sandbox",
    }.items():
        monkeypatch.setenv(name, value)
    yield database
    admin.cursor().execute(f'drop database "{database}" with (force)')
    admin.close()


@pytest.mark.slow
def test_backfill_on_a_postgres_instance_records_runs_and_materializations(
    postgres_dagster_home, tmp_path, monkeypatch, capsys
):
    fixtures, _ = thirteen_months_of_charges(tmp_path / "stripe", per_month=3)
    with running_sandbox(fixtures) as sandbox:
        monkeypatch.setenv("STRIPE_API_BASE", sandbox.api_base)
        main(["sites", "connect", "site_a", "--domain", "a.example", "--stripe-account", ACCOUNT])
        code = main(["backfill", "site_a", "--months", "2", "--concurrency", "3"])
    assert code == 0, capsys.readouterr().out

    # Read back through a fresh instance, i.e. from PostgreSQL, not from process memory.
    with DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = instance.get_runs(RunsFilter(job_name="stripe_backfill"))
        assert sorted(run.tags["dagster/partition"] for run in runs) == sorted(
            f"{month:%Y-%m-%d}|site_a" for month in backfill_months(2)
        )
        assert all(run.status == DagsterRunStatus.SUCCESS for run in runs)
        events = instance.fetch_materializations(AssetKey("stripe_charges"), limit=10).records
        counts = {
            e.partition_key: e.asset_materialization.metadata["dagster/row_count"].value
            for e in events
        }
        assert counts == {f"{month:%Y-%m-%d}|site_a": 3 for month in backfill_months(2)}


def _report_peak(queue) -> None:
    queue.put(process_peak_rss_mb())


def test_a_spawned_worker_reports_its_own_peak_memory_not_its_parents():
    # exec carries the replaced process's high-water mark into ru_maxrss, so a worker spawned
    # by a large parent used to report the parent's size as its own peak.
    ballast = bytearray(400 * 1024 * 1024)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page so it is resident
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(target=_report_peak, args=(queue,))
    worker.start()
    worker_peak = queue.get(timeout=60)
    worker.join()

    assert process_peak_rss_mb() > 400
    assert 0 < worker_peak < 300
    del ballast


def _read_allocator_env(queue) -> None:
    queue.put({name: os.environ.get(name) for name in WORKER_ALLOCATOR_ENV})


def test_backfill_workers_start_with_the_allocator_settings_and_a_users_own_win(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    with worker_environment():
        worker = context.Process(target=_read_allocator_env, args=(queue,))
        worker.start()
    seen = queue.get(timeout=60)
    worker.join()

    assert seen == {"MALLOC_ARENA_MAX": "2", "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}
    # The CLI's own environment is left as it was.
    assert "MALLOC_ARENA_MAX" not in os.environ
    assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "jemalloc"


def _resident_mb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS:"))


def _free_scattered_blocks_and_release(queue) -> None:
    # 16 KiB blocks come from the heap, not from mmap; freeing every other one leaves 160 MiB
    # of whole free pages between live blocks, which glibc keeps until asked.
    blocks = [bytearray(16 * 1024) for _ in range(20_000)]
    del blocks[::2]
    before = _resident_mb()
    release_free_memory()
    queue.put((before, _resident_mb()))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim, Linux")
def test_release_free_memory_hands_freed_heap_pages_back():
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(target=_free_scattered_blocks_and_release, args=(queue,))
    worker.start()
    before, after = queue.get(timeout=60)
    worker.join()

    assert before - after > 80
