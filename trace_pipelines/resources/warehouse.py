"""The DuckDB warehouse users query, and the one lock every writer of it takes.

DuckDB allows one writing process per database file. Raw partitions never write the warehouse
(they write Parquet, see `raw_store`); the few writers left (view creation, model refreshes,
site deletion) take an exclusive file lock first, so they queue for each other in order
instead of failing on DuckDB's own lock after a timeout.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
from dagster import Failure
from dagster_duckdb import DuckDBResource

from trace_pipelines.assets.stripe_tables import RAW_TABLES
from trace_pipelines.live.files import ensure_live_schema_files
from trace_pipelines.resources.locks import exclusive_file_lock
from trace_pipelines.resources.raw_store import RawStore
from trace_pipelines.resources.storage import TraceStorage
from trace_pipelines.settings import TracePaths

# Bump when the view definitions change, so existing warehouses pick the new ones up.
RAW_VIEWS_VERSION = "3"


def warehouse_lock(paths: TracePaths) -> contextlib.AbstractContextManager[None]:
    """Hold the machine-wide write lock of the warehouse."""
    return exclusive_file_lock(paths.locks_dir / "warehouse.lock")


@contextlib.contextmanager
def warehouse_writer(
    duckdb_resource: DuckDBResource, storage: TraceStorage
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A warehouse connection for writing, held under the machine-wide warehouse lock.

    Connections come from dagster-duckdb's `DuckDBResource` so every writer shares one
    connection config (set once in Definitions) and its retry when another process still holds
    DuckDB's file lock. The lock file itself makes writers queue in order instead of racing.
    """
    paths = storage.paths
    configured = Path(duckdb_resource.database).expanduser().resolve()
    if configured != paths.warehouse.resolve():
        raise Failure(
            f"The duckdb resource points at {configured} but trace_storage's warehouse is "
            f"{paths.warehouse}; set DuckDBResource(database=...) to the trace_storage warehouse."
        )
    paths.home.mkdir(parents=True, exist_ok=True)
    with warehouse_lock(paths), duckdb_resource.get_connection() as connection:
        try:
            # DuckDB 2.0's DICT_FSST string compression doubles the time to write our
            # high-cardinality id columns; dictionary and FSST still compress them.
            connection.execute("set disabled_compression_methods = 'dict_fsst'")
            yield connection
        finally:
            # get_connection closes only on success; a failed statement must not leave the
            # file open in this process (the next open with another config would fail).
            connection.close()


def connect_warehouse(
    paths: TracePaths, *, read_only: bool = False, timeout_seconds: float = 120.0
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, waiting while another process holds DuckDB's file lock."""
    paths.home.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_seconds
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(paths.warehouse), read_only=read_only)
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def raw_view_sql(store: RawStore) -> list[str]:
    """Statements that (re)create the `raw.stripe_*` views over the Parquet files.

    A referenced object can be stored by several month partitions, and webhook events add
    states of an object as live files (`trace_pipelines.live.files`); the view keeps the most
    recently observed state of each object, so every view has one row per (site_id, id).
    Two live states observed in the same second are ordered by `state_rank` (how far along
    its life the object is); backfill rows have none and lose such a tie.

    Most objects are stored once, so only the ids stored more than once are ranked: finding
    them is a hash aggregate over two columns, where ranking every row would sort whole rows
    (on a million charges that sort was most of the cost of reading the view).
    """
    statements = ["create schema if not exists raw"]
    for table in RAW_TABLES:
        glob = store.glob(table).replace("'", "''")
        statements.append(
            f"create or replace view raw.{table.name} as "
            f"with stored as (select * from read_parquet('{glob}', union_by_name = true)), "
            "stored_twice as ("
            "select site_id, id from stored group by site_id, id having count(*) > 1) "
            "select * from stored anti join stored_twice using (site_id, id) "
            "union all ("
            "select * from stored semi join stored_twice using (site_id, id) "
            "qualify row_number() over (partition by site_id, id "
            "order by observed_at desc, state_rank desc nulls last) = 1)"
        )
    return statements


def ensure_raw_views(paths: TracePaths) -> None:
    """Create the raw views once per warehouse (and again when their definition changes)."""
    store = RawStore(paths.raw_dir)
    marker = paths.raw_dir / f".views-v{RAW_VIEWS_VERSION}-{paths.warehouse.name}"
    if marker.exists() and paths.warehouse.exists():
        return
    store.ensure_schema_files()
    ensure_live_schema_files(store)
    with warehouse_lock(paths):
        if marker.exists() and paths.warehouse.exists():
            return
        with connect_warehouse(paths) as con:
            for statement in raw_view_sql(store):
                con.execute(statement)
        marker.touch()
