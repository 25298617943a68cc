"""Where applied webhook events live on disk: "live" Parquet files beside the backfill's.

    $TRACE_HOME/raw/<table>/site_id=<site>/live/<first_seq>-<last_seq>.parquet

A file holds the rows one apply (or one compaction) wrote for a table and site, named by the
range of landing-store `seq` it covers. Live files have the raw table's columns plus
`state_rank` (see `trace_pipelines.live.events.state_rank`); the raw views glob them with
the backfill's files and keep the newest state of each object. `_live_empty.parquet`, a
zero-row file per table, gives the views the `state_rank` column before any live file exists.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from trace_pipelines.assets.stripe_tables import RAW_TABLES, RawTable
from trace_pipelines.resources.raw_store import RawStore

# The asset that writes live files; models reading `raw.*` depend on it (see sql_models).
LIVE_EVENTS_ASSET = "stripe_webhook_events"
LIVE_DIR_NAME = "live"
LIVE_SCHEMA_FILE = "_live_empty.parquet"
_RANGE_NAME = re.compile(r"^(\d+)-(\d+)\.parquet$")


def live_arrow_schema(table: RawTable) -> pa.Schema:
    """The raw table's schema plus the nullable `state_rank` tie-break column."""
    return table.arrow_schema.append(pa.field("state_rank", pa.int64()))


def live_dir(store: RawStore, table: RawTable, site_id: str) -> Path:
    return store.site_dir(table, site_id) / LIVE_DIR_NAME


def range_file_name(first_seq: int, last_seq: int) -> str:
    # Zero-padded so a directory listing sorts in seq order.
    return f"{first_seq:012d}-{last_seq:012d}.parquet"


@dataclass(frozen=True)
class LiveFile:
    """One live file and the seq range it covers."""

    path: Path
    first_seq: int
    last_seq: int


def live_files(store: RawStore, table: RawTable, site_id: str) -> list[LiveFile]:
    """The live files of one table and site, in seq order (temporary files excluded)."""
    folder = live_dir(store, table, site_id)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _RANGE_NAME.match(path.name)
        if match:
            found.append(LiveFile(path, int(match.group(1)), int(match.group(2))))
    return sorted(found, key=lambda f: (f.first_seq, f.last_seq))


def live_sites(store: RawStore, table: RawTable) -> list[str]:
    """Sites that have a live folder for this table."""
    root = store.table_dir(table)
    if not root.is_dir():
        return []
    return sorted(
        path.parent.name.removeprefix("site_id=")
        for path in root.glob(f"site_id=*/{LIVE_DIR_NAME}")
        if path.is_dir()
    )


def ensure_live_schema_files(store: RawStore) -> None:
    """Write each table's zero-row live schema file, so the views can order by state_rank."""
    for table in RAW_TABLES:
        path = store.table_dir(table) / LIVE_SCHEMA_FILE
        schema = live_arrow_schema(table)
        if path.exists() and pq.read_schema(path).equals(schema):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        pq.write_table(schema.empty_table(), temp)
        temp.replace(path)
