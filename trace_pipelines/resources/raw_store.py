"""The raw store: one Parquet file per raw table, site and month, read by DuckDB through views.

Why Parquet files and not DuckDB tables: DuckDB lets one process write a database file at a
time, and a backfill runs several month partitions in separate processes at once. Each
partition run writes only its own files (to a temporary name, renamed into place when every
table of the partition is complete), so concurrent runs never contend for a lock, a failed run
leaves the previous files untouched, and re-running a partition replaces exactly its rows.
The warehouse exposes the files as `raw.stripe_*` views over a glob, so a new file is visible
to the next query without touching the database.

Layout under `$TRACE_HOME/raw/`:

    stripe_charges/_empty.parquet                 zero rows, fixes the view's schema
    stripe_charges/site_id=site_a/2026-03.parquet one partition
    stripe_checkout_sessions/site_id=site_a/referenced-<id>.parquet
                                                  pre-window objects looked up once per site
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from trace_pipelines.assets.stripe_tables import RAW_TABLES, RawTable
from trace_pipelines.resources.locks import exclusive_file_lock

# Rows held in memory per table before they go to disk as a row group: keeps memory flat
# however large a month is.
ROW_GROUP_ROWS = 2_000


class RawStore:
    """Reads and writes the raw Parquet files under one folder."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def table_dir(self, table: RawTable) -> Path:
        return self.root / table.name

    def site_dir(self, table: RawTable, site_id: str) -> Path:
        return self.table_dir(table) / f"site_id={site_id}"

    def partition_file(self, table: RawTable, site_id: str, month: date) -> Path:
        return self.site_dir(table, site_id) / f"{month:%Y-%m}.parquet"

    def glob(self, table: RawTable) -> str:
        return str(self.table_dir(table) / "**" / "*.parquet")

    def ensure_schema_files(self) -> None:
        """Write each table's empty schema file, so its view exists before any partition."""
        for table in RAW_TABLES:
            path = self.table_dir(table) / "_empty.parquet"
            if path.exists() and pq.read_schema(path).equals(table.arrow_schema):
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, table.arrow_schema.empty_table())

    @contextlib.contextmanager
    def partition(self, site_id: str, month: date) -> Iterator[PartitionWriter]:
        """Write every raw table of one site-month; all files appear together or none do."""
        self.ensure_schema_files()
        writer = PartitionWriter(self, site_id, month)
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.commit()

    @contextlib.contextmanager
    def lookup_claims(self, table: RawTable, site_id: str, wanted: set[str]) -> Iterator[set[str]]:
        """Claim the ids in `wanted` that no run of the site has looked up or is looking up.

        Concurrent partition runs of one site meet the same objects from before the backfill
        window; claiming them first makes each cost one request however many months refer to
        it, without one run waiting for another's lookups. The claimed ids are marked done when
        the block ends, and released if it fails; a claim older than an hour (its run was
        killed) can be taken again.
        """
        with self._claims(table, site_id) as claims:
            now = time.time()
            mine = {
                object_id
                for object_id in wanted
                if object_id not in claims
                or (claims[object_id][0] == "claimed" and now - claims[object_id][1] > 3600)
            }
            claims.update({object_id: ("claimed", now) for object_id in mine})
        try:
            yield mine
        except BaseException:
            with self._claims(table, site_id) as claims:
                for object_id in mine:
                    claims.pop(object_id, None)
            raise
        with self._claims(table, site_id) as claims:
            claims.update({object_id: ("done", time.time()) for object_id in mine})

    @contextlib.contextmanager
    def _claims(self, table: RawTable, site_id: str) -> Iterator[dict[str, tuple[str, float]]]:
        """The site's lookup claims, read and written back under an exclusive file lock."""
        folder = self.site_dir(table, site_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "_lookup_claims.json"
        with exclusive_file_lock(folder / "_lookup_claims.lock"):
            raw = json.loads(path.read_text()) if path.exists() else {}
            claims = {object_id: (state, at) for object_id, (state, at) in raw.items()}
            yield claims
            temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
            temp.write_text(json.dumps(claims))
            os.replace(temp, path)

    def write_site_rows(self, table: RawTable, site_id: str, rows: list[Mapping[str, Any]]) -> None:
        """Rows that belong to the site rather than to one month, in a file of their own."""
        if rows:
            path = self.site_dir(table, site_id) / f"referenced-{uuid.uuid4().hex[:12]}.parquet"
            _write_atomically(path, pa.Table.from_pylist(rows, schema=table.arrow_schema))

    def delete_site(self, site_id: str) -> None:
        """Remove every raw file of a site; safe to repeat."""
        for table in RAW_TABLES:
            shutil.rmtree(self.site_dir(table, site_id), ignore_errors=True)


class PartitionWriter:
    """Streams rows of one site-month into temporary Parquet files, one per raw table.

    Thread-safe: the fetchers of different endpoints add rows from their own threads.
    """

    def __init__(self, store: RawStore, site_id: str, month: date):
        self.store = store
        self.site_id = site_id
        self.month = month
        self.row_counts: dict[str, int] = {table.name: 0 for table in RAW_TABLES}
        self._token = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._buffers: dict[str, list[Mapping[str, Any]]] = {t.name: [] for t in RAW_TABLES}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._tables = {table.name: table for table in RAW_TABLES}

    def _temp_file(self, table: RawTable) -> Path:
        final = self.store.partition_file(table, self.site_id, self.month)
        return final.with_name(f".{final.name}.{self._token}.tmp")

    def add(self, table: RawTable, rows: Iterable[Mapping[str, Any]]) -> None:
        rows = list(rows)
        with self._lock:
            buffer = self._buffers[table.name]
            buffer.extend(rows)
            self.row_counts[table.name] += len(rows)
            flushed = len(buffer) >= ROW_GROUP_ROWS
            if flushed:
                self._flush(table)
        if flushed:
            release_free_memory()

    def _flush(self, table: RawTable) -> None:
        buffer = self._buffers[table.name]
        if not buffer and table.name in self._writers:
            return
        writer = self._writers.get(table.name)
        if writer is None:
            path = self._temp_file(table)
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(path, table.arrow_schema, compression="zstd")
            self._writers[table.name] = writer
        writer.write_table(pa.Table.from_pylist(buffer, schema=table.arrow_schema))
        buffer.clear()

    def commit(self) -> None:
        """Close every file and rename it over the partition's previous file."""
        with self._lock:
            for table in RAW_TABLES:
                self._flush(table)
                self._writers.pop(table.name).close()
                temp = self._temp_file(table)
                _fsync(temp)
                os.replace(temp, self.store.partition_file(table, self.site_id, self.month))

    def abort(self) -> None:
        """Drop the temporary files; the partition keeps what it had before this run."""
        with self._lock:
            for name, writer in self._writers.items():
                with contextlib.suppress(Exception):
                    writer.close()
                self._temp_file(self._tables[name]).unlink(missing_ok=True)
            self._writers.clear()


def release_free_memory() -> None:
    """Hand the memory the C allocator holds free back to the system (glibc only).

    A month's fetch frees a row group's worth of rows and pages at every flush, scattered
    among the objects still alive; glibc keeps those holes, so a worker's resident memory crept
    up with the size of the months it fetched. `malloc_trim` returns every free page; at about
    6 ms a call it is done once per flush, not per page. Measured on the 200,000-charge
    benchmark (BENCHMARKS.md): worker peak 405 MB without it, 357-362 MB with it.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None  # not glibc (macOS, musl): nothing to trim
    return libc if hasattr(libc, "malloc_trim") else None


_LIBC = _load_glibc()


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _write_atomically(path: Path, table: pa.Table) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    pq.write_table(table, temp)
    os.replace(temp, path)
