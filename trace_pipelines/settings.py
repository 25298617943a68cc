"""Where Trace keeps its state, read from the environment in one place.

Every setting has a documented environment variable (see the README); nothing else in the
package reads `os.environ` for these, so a newcomer can find every knob here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TracePaths:
    """The folders and files under TRACE_HOME that the pipeline reads and writes."""

    home: Path

    @property
    def warehouse(self) -> Path:
        """The DuckDB file users query: `raw.*` views and `analytics.*` tables."""
        return self.home / "warehouse.duckdb"

    @property
    def raw_dir(self) -> Path:
        """One Parquet file per raw table, site and month: the landing zone of the backfill."""
        return self.home / "raw"

    @property
    def registry(self) -> Path:
        """The SQLite site registry (sites, their Stripe accounts and connection status)."""
        return self.home / "sites.sqlite"

    @property
    def locks_dir(self) -> Path:
        """Lock and rate-limit state shared by every process on this machine."""
        return self.home / "locks"


def trace_home() -> Path:
    """TRACE_HOME, default `./data`, made absolute so child processes agree on it."""
    return Path(os.environ.get("TRACE_HOME", "data")).resolve()


def trace_paths() -> TracePaths:
    return TracePaths(trace_home())


def inputs_dir() -> Path | None:
    """TRACE_INPUTS_DIR: the folder with the Trace-side CSVs (touchpoints, identities, ...)."""
    value = os.environ.get("TRACE_INPUTS_DIR")
    return Path(value).resolve() if value else None


def stripe_api_base() -> str | None:
    """STRIPE_API_BASE: where the Stripe API is served; unset means api.stripe.com."""
    return os.environ.get("STRIPE_API_BASE") or None
