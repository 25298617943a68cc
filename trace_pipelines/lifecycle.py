"""A site's life with Trace: connect, disconnect, reconnect from where it stopped, delete.

The command line and the HTTP routes both call these functions, so a site behaves the same
whichever way its owner acts:

- `connect_site` records the connection and adds the site's Dagster partition, then plans
  what to read: a new site reads its last 12 months; a reconnected one resumes from its
  disconnect point (`plan_sync`) and never repeats the 12-month backfill.
- `disconnect_site` revokes Trace's access through Stripe OAuth and records when; every row
  stays. `handle_deauthorized` does the same when the owner disconnects from Stripe's side.
- `delete_site` removes everything that holds the site's id, in an order that a second run
  finishes if the first was interrupted: the registry row goes last.

Reading Stripe takes minutes, so connecting returns a `SyncPlan` and a launcher runs it:
`run_sync_plan` in the caller's process (the command line), or `BackgroundSync` in a thread
(the web callback, which must answer at once).
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

from dagster import AssetKey, DagsterInstance, RunsFilter

from trace_pipelines.assets.stripe_tables import RAW_TABLES
from trace_pipelines.partitions import SITES, backfill_months
from trace_pipelines.resources.stripe_oauth import StripeOAuth
from trace_pipelines.settings import TracePaths, inputs_dir, trace_paths
from trace_pipelines.sites import Site, SiteError, SiteRegistry

logger = logging.getLogger(__name__)

INITIAL_BACKFILL_MONTHS = 12
# Stripe keeps events for 30 days; an hour less leaves time to page through them all.
EVENTS_CATCH_UP_WINDOW = timedelta(days=30) - timedelta(hours=1)
# Events created just before the recorded disconnect are read again: landing them is
# idempotent, and this absorbs clock differences between Stripe and this machine.
EVENTS_OVERLAP = timedelta(minutes=10)
TRACE_INPUT_FILES = ("touchpoints.csv", "identities.csv", "ad_spend.csv", "sites.csv")
# Multi-partition runs carry one tag per dimension; the site dimension is named `site`.
SITE_PARTITION_TAG = "dagster/partition/site"


class LifecycleError(SiteError):
    """A lifecycle step refused or failed; the message says what to do and what changed."""


@dataclass(frozen=True)
class SyncPlan:
    """What to read from Stripe after a connect: nothing, whole months, or recent events."""

    site_id: str
    kind: Literal["none", "backfill", "months", "events"]
    today: date
    months: tuple[date, ...] = ()
    events_since: datetime | None = None

    def describe(self) -> str:
        """One sentence for the owner about what happens next."""
        if self.kind == "backfill":
            return f"Backfilling the last {len(self.months) - 1} months and this one."
        if self.kind == "months":
            return (
                f"Reading the {len(self.months)} months since the disconnect "
                f"({self.months[0]:%Y-%m} to {self.months[-1]:%Y-%m})."
            )
        if self.kind == "events":
            return f"Catching up on Stripe events since {self.events_since:%Y-%m-%d %H:%M} UTC."
        return "Nothing to read now."


@dataclass(frozen=True)
class ConnectOutcome:
    """A connect's result: the site as recorded, whether it was a reconnect, and the plan."""

    site: Site
    reconnected: bool
    plan: SyncPlan
    message: str


Launcher = Callable[[SyncPlan], None]


def plan_sync(site_id: str, previous: Site | None, *, backfill: bool, now: datetime) -> SyncPlan:
    """What a connect of `site_id` must read, given the site as it was before.

    A site disconnected for less than Stripe's event retention resumes from the events
    since its disconnect; after a longer gap, the months from the disconnect month to this
    one are read again (re-reading a month replaces it, so nothing is duplicated). A new site
    reads 12 months and this one when `backfill` is set. A site already connected reads
    nothing: its data is current.
    Shortcoming: after a gap over 30 days, a change during the gap to an object created
    before the disconnect month (a late refund) is only seen if that month is re-read.
    """
    today = now.date()
    if previous is None:
        if not backfill:
            return SyncPlan(site_id, "none", today)
        months = tuple(backfill_months(INITIAL_BACKFILL_MONTHS, today))
        return SyncPlan(site_id, "backfill", today, months=months)
    if previous.is_connected or previous.disconnected_at is None:
        return SyncPlan(site_id, "none", today)

    gap = now - previous.disconnected_at
    if gap <= EVENTS_CATCH_UP_WINDOW:
        return SyncPlan(
            site_id, "events", today, events_since=previous.disconnected_at - EVENTS_OVERLAP
        )
    first = previous.disconnected_at.date().replace(day=1)
    span = (today.year * 12 + today.month) - (first.year * 12 + first.month)
    return SyncPlan(site_id, "months", today, months=tuple(backfill_months(span, today)))


def connect_site(
    site_id: str,
    domain: str,
    stripe_account_id: str,
    *,
    backfill: bool = True,
    launch: Launcher | None = None,
    instance: DagsterInstance | None = None,
    now: datetime | None = None,
) -> ConnectOutcome:
    """Connect a site (or reconnect a disconnected one) and start reading what it needs.

    Refuses, changing nothing, an account already connected to another site and a known
    site asked to read a different account (its rows would mix two businesses). `launch`
    runs the plan; by default it runs here, to the end (`run_sync_plan`).
    """
    registry = SiteRegistry(trace_paths().registry)
    now = now or datetime.now(UTC)
    try:
        previous: Site | None = registry.get(site_id)
    except SiteError:
        previous = None
    if previous is not None and previous.stripe_account_id != stripe_account_id:
        raise LifecycleError(
            f"Site '{site_id}' reads Stripe account {previous.stripe_account_id}, not "
            f"{stripe_account_id}. To read another account, delete the site (`trace-pipelines "
            "sites delete`) and connect it again; nothing was changed."
        )

    plan = plan_sync(site_id, previous, backfill=backfill, now=now)
    site = registry.connect(site_id, domain, stripe_account_id)
    _register_partition(instance or DagsterInstance.get(), site_id)
    reconnected = previous is not None and not previous.is_connected
    logger.info("Site %s connected to %s; plan: %s", site_id, stripe_account_id, plan.kind)

    (launch or run_sync_plan)(plan)
    verb = "Reconnected" if reconnected else "Connected"
    if previous is not None and previous.is_connected:
        verb = "Already connected:"
    message = f"{verb} site {site_id} ({site.domain}) to {stripe_account_id}. {plan.describe()}"
    return ConnectOutcome(site=site, reconnected=reconnected, plan=plan, message=message)


def _register_partition(instance: DagsterInstance, site_id: str) -> None:
    from trace_pipelines.backfill import register_site_partition

    register_site_partition(instance, site_id)


@dataclass
class SyncResult:
    """What running a plan did: partition runs (and how many failed) and events landed."""

    plan: SyncPlan
    partitions: int = 0
    failed_partitions: int = 0
    events_landed: int = 0
    models_refreshed: bool = False

    @property
    def success(self) -> bool:
        return self.failed_partitions == 0


def run_sync_plan(
    plan: SyncPlan,
    *,
    on_outcome: Callable[..., None] = lambda outcome, done, total: None,
    refresh_models: bool = True,
) -> SyncResult:
    """Run a plan to the end in this process: partition runs through Dagster, or landing
    the missed events for the live apply path, then the revenue models.

    A plan of events falls back to re-reading the months since `events_since` when the
    live catch-up (`trace_pipelines.live.catch_up`) is not installed: slower, equally exact.
    """
    result = SyncResult(plan)
    if plan.kind == "none":
        return result

    if plan.kind == "events":
        landed = _land_missed_events(plan)
        if landed is None:
            assert plan.events_since is not None
            first = plan.events_since.date().replace(day=1)
            span = (plan.today.year * 12 + plan.today.month) - (first.year * 12 + first.month)
            months = tuple(backfill_months(span, plan.today))
            return run_sync_plan(
                SyncPlan(plan.site_id, "months", plan.today, months=months),
                on_outcome=on_outcome,
                refresh_models=refresh_models,
            )
        # Landed events are applied, and the models refreshed, by the live apply path.
        result.events_landed = landed
        return result

    from trace_pipelines.backfill import backfill

    outcomes = backfill(
        [plan.site_id], months=len(plan.months) - 1, today=plan.today, on_outcome=on_outcome
    )
    result.partitions = len(outcomes)
    result.failed_partitions = sum(not outcome.success for outcome in outcomes)
    if refresh_models:
        refresh_revenue_models()
        result.models_refreshed = True
    return result


def _land_missed_events(plan: SyncPlan) -> int | None:
    """Events since the disconnect, landed for the apply path; None without the live module."""
    try:
        from trace_pipelines.live.catch_up import land_missed_events
    except ImportError:
        logger.warning("No live catch-up installed; re-reading months for %s", plan.site_id)
        return None
    from trace_pipelines.resources.landing import landing_store_from_env
    from trace_pipelines.resources.stripe_reader import StripeReader
    from trace_pipelines.settings import stripe_api_base

    site = SiteRegistry(trace_paths().registry).get(plan.site_id)
    reader = StripeReader(api_key=os.environ.get("STRIPE_API_KEY", ""), api_base=stripe_api_base())
    account_reader = reader.for_account(site.stripe_account_id)
    landed = land_missed_events(account_reader, landing_store_from_env(), site, plan.events_since)
    logger.info("Landed %s missed events of site %s", landed, plan.site_id)
    return landed


def refresh_revenue_models(instance: DagsterInstance | None = None) -> None:
    """Refresh the Trace inputs and every SQL model, as one run on the instance.

    Declarative automation does the same when the daemon runs; this makes a connect from the
    command line (no daemon) end with current revenue tables too.
    """
    from dagster import materialize
    from dagster_duckdb import DuckDBResource

    from trace_pipelines.assets.sql_models import model_assets
    from trace_pipelines.assets.trace_inputs import trace_input_assets
    from trace_pipelines.resources.storage import TraceStorage

    paths = trace_paths()
    result = materialize(
        [*trace_input_assets, model_assets],
        instance=instance or DagsterInstance.get(),
        resources={
            "trace_storage": TraceStorage(home=str(paths.home)),
            "duckdb": DuckDBResource(database=str(paths.warehouse)),
        },
        tags={"trace/launched_by": "site-lifecycle"},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        raise_on_error=False,
    )
    if not result.success:
        logger.error("The model refresh after a connect failed; see run %s", result.run_id)


class BackgroundSync:
    """Runs plans in background threads, so a web request can start a backfill and answer.

    A thread in the web process, rather than runs queued for the daemon: it needs nothing
    but the instance (no daemon, no loaded workspace), and it is the exact code path the
    command line runs, partition runs included, so they show in the UI the same way.
    Shortcoming: a plan interrupted by a restart of the web process is not resumed;
    `trace-pipelines backfill SITE_ID --months N` finishes it (re-running months is safe).
    """

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self.results: list[SyncResult] = []
        self.errors: list[BaseException] = []

    def __call__(self, plan: SyncPlan) -> None:
        if plan.kind == "none":
            return
        thread = threading.Thread(
            target=self._run, args=(plan,), name=f"site-sync-{plan.site_id}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _run(self, plan: SyncPlan) -> None:
        try:
            self.results.append(run_sync_plan(plan))
        except BaseException as error:  # noqa: BLE001 - a thread must report, not vanish
            logger.exception("Reading Stripe for site %s failed", plan.site_id)
            self.errors.append(error)

    def wait(self, timeout_seconds: float | None = None) -> bool:
        """Wait for every started plan; True when all finished in time."""
        for thread in list(self._threads):
            thread.join(timeout_seconds)
        return not any(thread.is_alive() for thread in self._threads)


# --- Disconnect ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DisconnectOutcome:
    """A disconnect's result and the sentence to show the owner."""

    site: Site
    revoked: bool
    message: str


def oauth_from_env() -> StripeOAuth | None:
    """The platform's OAuth client, or None where Trace is not a Connect platform
    (STRIPE_CLIENT_ID unset: sites read through restricted keys their owners gave)."""
    if not os.environ.get("STRIPE_CLIENT_ID"):
        return None
    return StripeOAuth.from_env()


def disconnect_site(
    site_id: str, *, oauth: StripeOAuth | None = None, at: datetime | None = None
) -> DisconnectOutcome:
    """Revoke Trace's access to the site's Stripe account, then record the disconnect.

    Revoking comes first: if Stripe cannot be reached nothing is recorded, and the command
    can simply be repeated. Every row stays; from now on the site's events are not applied
    and the schedules skip it. Disconnecting a disconnected site changes nothing.
    """
    registry = SiteRegistry(trace_paths().registry)
    site = registry.get(site_id)
    if not site.is_connected:
        return DisconnectOutcome(site, False, f"Site {site_id} is already disconnected.")

    oauth = oauth or oauth_from_env()
    revoked = oauth.deauthorize(site.stripe_account_id) if oauth is not None else False
    site = registry.disconnect(site_id, at)
    if oauth is None:
        note = (
            " Trace is not a Connect platform here (STRIPE_CLIENT_ID is unset): also delete "
            "the restricted key you gave Trace in the Stripe dashboard."
        )
    else:
        note = " Trace's access to the Stripe account is revoked."
    message = f"Disconnected site {site_id} from {site.stripe_account_id}; its rows stay.{note}"
    return DisconnectOutcome(site, revoked, message)


def handle_deauthorized(account_id: str, at: datetime) -> Site | None:
    """Record that an account disconnected Trace from Stripe's side (its webhook).

    Returns the site disconnected, or None when no connected site reads the account or the
    event predates the site's latest connect (a late redelivery must not undo a reconnect).
    """
    registry = SiteRegistry(trace_paths().registry)
    site = registry.site_for_account(account_id)
    if site is None or not site.is_connected or site.stripe_account_id != account_id:
        return None
    if at < site.connected_at:
        logger.info("Ignoring a deauthorization of %s older than its reconnect", account_id)
        return None
    return registry.disconnect(site.site_id, at)


def on_deauthorized_webhook(site: Site, event: dict) -> None:
    """The webhook receiver's hook for `account.application.deauthorized` events."""
    handle_deauthorized(site.stripe_account_id, datetime.fromtimestamp(int(event["created"]), UTC))


# --- Delete ----------------------------------------------------------------------------------


@dataclass
class DeleteOutcome:
    """What a deletion removed, step by step, and the sentence to show the owner."""

    site_id: str
    raw_folders: int = 0
    landed_events: int = 0
    warehouse_rows: dict[str, int] = field(default_factory=dict)
    input_rows: dict[str, int] = field(default_factory=dict)
    dagster_runs: int = 0
    message: str = ""


def delete_site(
    site_id: str,
    confirm_domain: str | None,
    *,
    oauth: StripeOAuth | None = None,
    instance: DagsterInstance | None = None,
) -> DeleteOutcome:
    """Delete a site and everything that holds its id, once its domain is retyped.

    Steps, each safe to repeat: revoke access and record the disconnect; the raw Parquet
    folders; the landed events; rows in every warehouse table with a `site_id` column; the
    site's rows in the Trace input CSVs (so a later refresh cannot bring them back); its
    Dagster runs (and with them its materialization history) and partition; and last the
    registry row, so an interrupted deletion is finished by running it again.
    Shortcoming: a partition run already in flight for the site can write its month after
    the raw files are removed; running the deletion again removes it.
    """
    registry = SiteRegistry(trace_paths().registry)
    site = registry.get(site_id)
    typed = (confirm_domain or "").strip().lower()
    if typed != site.domain:
        raise LifecycleError(
            f"The domain typed ('{typed}') is not site {site_id}'s domain ({site.domain}); "
            "nothing was deleted. Retype the domain exactly to confirm."
        )

    outcome = DeleteOutcome(site_id)
    if site.is_connected:
        disconnect_site(site_id, oauth=oauth)

    paths = trace_paths()
    outcome.raw_folders = _delete_raw_folders(paths, site_id)
    outcome.landed_events = _delete_landed_events(site_id)
    outcome.warehouse_rows = _delete_warehouse_rows(paths, site_id)
    outcome.input_rows = _delete_input_rows(site_id)
    outcome.dagster_runs = _delete_dagster_history(instance or DagsterInstance.get(), site_id)
    registry.delete(site_id)

    outcome.message = (
        f"Deleted site {site_id} ({site.domain}): {outcome.raw_folders} raw folders, "
        f"{outcome.landed_events} landed events, {sum(outcome.warehouse_rows.values())} "
        f"warehouse rows, {sum(outcome.input_rows.values())} input rows and "
        f"{outcome.dagster_runs} Dagster runs."
    )
    logger.info(outcome.message)
    return outcome


def _delete_raw_folders(paths: TracePaths, site_id: str) -> int:
    # Every `site_id=<site>` folder under raw/, however deep: the backfill's month files and
    # any other layout (such as live updates) kept per site.
    folders = [p for p in paths.raw_dir.glob(f"**/site_id={site_id}") if p.is_dir()]
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    return len(folders)


def _delete_landed_events(site_id: str) -> int:
    from trace_pipelines.resources.landing import landing_store_from_env

    return landing_store_from_env().delete_site(site_id)


def _delete_warehouse_rows(paths: TracePaths, site_id: str) -> dict[str, int]:
    """Delete the site's rows from every base table with a `site_id` column (views follow)."""
    from trace_pipelines.resources.warehouse import connect_warehouse, warehouse_lock

    if not paths.warehouse.exists():
        return {}
    deleted: dict[str, int] = {}
    with warehouse_lock(paths), connect_warehouse(paths) as con:
        tables = con.execute(
            "select t.table_schema, t.table_name from information_schema.tables t "
            "join information_schema.columns c on c.table_catalog = t.table_catalog "
            "and c.table_schema = t.table_schema and c.table_name = t.table_name "
            "where t.table_type = 'BASE TABLE' and c.column_name = 'site_id' "
            "and t.table_catalog = current_database() order by 1, 2"
        ).fetchall()
        con.execute("begin transaction")
        for schema, table in tables:
            name = f'"{schema}"."{table}"'
            [(count,)] = con.execute(
                f"select count(*) from {name} where site_id = ?", [site_id]
            ).fetchall()
            if count:
                con.execute(f"delete from {name} where site_id = ?", [site_id])
                deleted[f"{schema}.{table}"] = count
        con.execute("commit")
    return deleted


def _delete_input_rows(site_id: str) -> dict[str, int]:
    """Drop the site's rows from the Trace input CSVs, each rewritten atomically."""
    folder = inputs_dir()
    if folder is None:
        return {}
    removed: dict[str, int] = {}
    for name in TRACE_INPUT_FILES:
        path = folder / name
        if path.is_file():
            count = _rewrite_without_site(path, site_id)
            if count:
                removed[name] = count
    return removed


def _rewrite_without_site(path: Path, site_id: str) -> int:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or "site_id" not in [column.strip() for column in header]:
            return 0
        index = [column.strip() for column in header].index("site_id")
        rows = list(reader)
    kept = [row for row in rows if len(row) <= index or row[index].strip() != site_id]
    if len(kept) == len(rows):
        return 0
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(temp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(kept)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    return len(rows) - len(kept)


def _delete_dagster_history(instance: DagsterInstance, site_id: str) -> int:
    """Delete the site's partition runs (their events hold its materializations) and its
    dynamic partition. Runs spanning several sites, such as model refreshes, stay."""
    runs = instance.get_runs(RunsFilter(tags={SITE_PARTITION_TAG: site_id}))
    for run in runs:
        instance.delete_run(run.run_id)

    asset_keys = [AssetKey(table.name) for table in RAW_TABLES]
    keys = _site_partition_keys(instance, site_id)
    try:
        for asset_key in asset_keys:
            instance.wipe_asset_partitions(asset_key, keys)
    except NotImplementedError:
        # Open-source storages cannot wipe single partitions; the runs deleted above took
        # their materialization events along, and the cached partition status is rebuilt.
        instance.wipe_asset_cached_status(asset_keys)
    if instance.has_dynamic_partition(SITES.name, site_id):
        instance.delete_dynamic_partition(SITES.name, site_id)
    return len(runs)


def _site_partition_keys(instance: DagsterInstance, site_id: str) -> list[str]:
    found: set[str] = set()
    for table in RAW_TABLES:
        for key in instance.get_materialized_partitions(AssetKey(table.name)):
            if key.split("|")[-1] == site_id:
                found.add(key)
    return sorted(found)
