"""The `trace_storage` resource: where the warehouse, raw files and site registry live."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from trace_pipelines.resources.raw_store import RawStore
from trace_pipelines.settings import TracePaths, trace_home


class TraceStorage(ConfigurableResource):
    """TRACE_HOME as a resource, so assets get their paths from Dagster config, not globals."""

    home: str = Field(
        default_factory=lambda: str(trace_home()),
        description="Folder for the warehouse, the raw Parquet files and the site registry.",
    )

    @property
    def paths(self) -> TracePaths:
        return TracePaths(Path(self.home))

    @property
    def raw_store(self) -> RawStore:
        return RawStore(self.paths.raw_dir)
