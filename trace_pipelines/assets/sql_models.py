"""The SQL models: one DuckDB `.sql` file in `dbt_like_sql/` is one Dagster asset and one table.

Adding a model is adding a file. Its name decides its layer, schema and asset group:

    stg_<name>.sql  -> staging.stg_<name>        cleaned raw objects, one per Stripe object
    int_<name>.sql  -> intermediate.int_<name>   joins and resolutions the marts share
    <name>.sql      -> analytics.<name>          the tables dashboards query

Its dependencies are the tables its SQL reads, found with sqlglot: `raw.stripe_*` is the raw
asset of that name, `trace.<table>` the Trace input asset `trace_<table>`, and another model's
table that model's asset. Nobody keeps a list by hand.

Each file starts with a comment saying what one row is (the asset's description), then
directive lines: `-- key: col, col` names the grain, which an asset check proves unique and
never null; `-- materialized: view` makes a view instead of a table. A model named `<x>_usd`
is the USD slice of model `<x>`; its metadata counts the rows it leaves out.

A refresh replaces the table with `create or replace table ... as <sql>` in one transaction,
under the machine-wide warehouse lock, then runs the model's checks on the new table and
reports its column schema, row count and column-level lineage (traced through the SQL by
sqlglot over the DuckDB schema of the upstream tables, down to the raw Stripe columns).
"""

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import sqlglot
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    AssetSpec,
    AutomationCondition,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableColumnDep,
    TableColumnLineage,
    TableSchema,
    define_asset_job,
    in_process_executor,
    multi_asset,
)
from dagster_duckdb import DuckDBResource
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import lineage

from trace_pipelines.assets.model_runner import ModelRun, RefreshPlan, refresh_models
from trace_pipelines.assets.stripe_tables import RAW_TABLES_BY_NAME
from trace_pipelines.assets.trace_inputs import (
    TRACE_INPUTS_BY_TABLE,
    TRACE_SCHEMA,
    trace_input_assets,
)
from trace_pipelines.resources.storage import TraceStorage
from trace_pipelines.resources.warehouse import ensure_raw_views, warehouse_writer

MODELS_DIR = Path(__file__).resolve().parents[2] / "dbt_like_sql"
RAW_SCHEMA = "raw"
LAYERS: tuple[tuple[str, str], ...] = (("stg_", "staging"), ("int_", "intermediate"))
MARTS_SCHEMA = "analytics"
USD_SUFFIX = "_usd"

# Eager, minus two guards. `any_deps_missing` would hold every model back while any monthly
# raw partition has not been fetched (most never are for a young site), and
# `any_deps_in_progress` while a backfill runs; raw partitions are committed atomically, so a
# refresh mid-backfill reads a consistent set of months and the tables fill in as months land.
MODEL_AUTOMATION = (
    AutomationCondition.eager()
    .without(~AutomationCondition.any_deps_missing())
    .without(~AutomationCondition.any_deps_in_progress())
)


class ModelDefinitionError(ValueError):
    """A `.sql` file the factory cannot turn into an asset; the message says what to change."""


@dataclass(frozen=True)
class SqlModel:
    """One model file: its SQL, what one row is, its key and the tables it reads."""

    name: str
    path: Path
    sql: str
    description: str
    key: tuple[str, ...]
    materialized: str
    schema: str
    upstream_tables: tuple[tuple[str, str], ...]

    @property
    def table(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def group_name(self) -> str:
        return self.schema


def model_schema(name: str) -> str:
    """The schema a model's table lives in, decided by its file name's prefix."""
    for prefix, schema in LAYERS:
        if name.startswith(prefix):
            return schema
    return MARTS_SCHEMA


def parse_model(path: Path) -> SqlModel:
    """Read one model file: header comment, directives, SQL and the tables it references."""
    name = path.stem
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ModelDefinitionError(
            f"{path}: rename the file to lowercase letters, digits and underscores; the name "
            "becomes the table and asset name."
        )
    text = path.read_text(encoding="utf-8")

    description_lines: list[str] = []
    directives: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        content = line[2:].strip()
        directive = re.fullmatch(r"(key|materialized):\s*(.*)", content)
        if directive:
            directives[directive.group(1)] = directive.group(2).strip()
        else:
            description_lines.append(content)
    description = " ".join(part for part in description_lines if part)
    if not description:
        raise ModelDefinitionError(
            f"{path}: start the file with a `--` comment saying what one row of the table is."
        )
    key = tuple(column.strip() for column in directives.get("key", "").split(",") if column)
    if not key:
        raise ModelDefinitionError(
            f"{path}: add a `-- key: column, ...` line naming the columns that identify a row."
        )
    materialized = directives.get("materialized", "table")
    if materialized not in ("table", "view"):
        raise ModelDefinitionError(f"{path}: `materialized:` must be table or view.")

    try:
        expression = sqlglot.parse_one(text, dialect="duckdb")
    except SqlglotError as error:
        raise ModelDefinitionError(f"{path}: the SQL does not parse ({error}); fix it.") from error
    if not isinstance(expression, exp.Query):
        raise ModelDefinitionError(f"{path}: the file must hold one select query, nothing else.")

    return SqlModel(
        name=name,
        path=path,
        sql=text,
        description=description,
        key=key,
        materialized=materialized,
        schema=model_schema(name),
        upstream_tables=referenced_tables(expression, path),
    )


def referenced_tables(expression: exp.Expr, path: Path) -> tuple[tuple[str, str], ...]:
    """The (schema, table) pairs a query reads, leaving out its own CTEs."""
    cte_names = {cte.alias_or_name for cte in expression.find_all(exp.CTE)}
    tables: set[tuple[str, str]] = set()
    for table in expression.find_all(exp.Table):
        if not table.name:
            continue  # a table function such as range()
        if not table.db:
            if table.name in cte_names:
                continue
            raise ModelDefinitionError(
                f"{path}: qualify `{table.name}` with its schema (raw., trace., staging., "
                "intermediate. or analytics.) so its dependency can be found."
            )
        tables.add((table.db, table.name))
    return tuple(sorted(tables))


def load_models(models_dir: Path = MODELS_DIR) -> list[SqlModel]:
    """Every model in the folder, checked for references the factory cannot resolve."""
    models = [parse_model(path) for path in sorted(Path(models_dir).glob("*.sql"))]
    by_table = {(model.schema, model.name): model for model in models}
    for model in models:
        for schema, table in model.upstream_tables:
            table_asset_key(schema, table, by_table, model.path)
    return models


def table_asset_key(
    schema: str, table: str, models_by_table: Mapping[tuple[str, str], SqlModel], path: Path
) -> AssetKey:
    """The asset that produces a warehouse table the model reads."""
    if schema == RAW_SCHEMA and table in RAW_TABLES_BY_NAME:
        return AssetKey(table)
    if schema == TRACE_SCHEMA and table in TRACE_INPUTS_BY_TABLE:
        return AssetKey(TRACE_INPUTS_BY_TABLE[table].asset_name)
    if (schema, table) in models_by_table:
        return AssetKey(table)
    raise ModelDefinitionError(
        f"{path}: it reads {schema}.{table}, which is no raw Stripe table, Trace input or "
        "model; correct the name or add a model file for it."
    )


# ---------------------------------------------------------------------------------------------
# Checks


@dataclass(frozen=True)
class ModelCheck:
    """An asset check written as SQL: the query returns the rows that break the rule.

    `{table}` in the SQL stands for the model's table. No rows means the check passed; the
    rows found are shown in the check's metadata. `metadata_sql` optionally returns
    (label, value) rows reported whatever the outcome.
    """

    name: str
    description: str
    violations_sql: str
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR
    blocking: bool = False
    metadata_sql: str | None = None

    def spec(self, asset_key: AssetKey) -> AssetCheckSpec:
        return AssetCheckSpec(
            name=self.name,
            asset=asset_key,
            description=self.description,
            blocking=self.blocking,
        )

    def evaluate(self, connection: duckdb.DuckDBPyConnection, model: SqlModel) -> AssetCheckResult:
        """Run the check against the model's freshly built table."""
        cursor = connection.execute(self.violations_sql.format(table=model.table))
        columns = [column[0] for column in cursor.description]
        rows = cursor.fetchall()
        metadata: dict[str, Any] = {"violations": len(rows)}
        if rows:
            metadata["examples"] = MetadataValue.md(_markdown_table(columns, rows[:20]))
        if self.metadata_sql:
            for label, value in connection.execute(
                self.metadata_sql.format(table=model.table)
            ).fetchall():
                metadata[str(label)] = value
        return AssetCheckResult(
            asset_key=AssetKey(model.name),
            check_name=self.name,
            passed=not rows,
            severity=self.severity,
            metadata=metadata,
            description=(
                self.description
                if not rows
                else f"{len(rows)} row(s) break this rule: {_describe_rows(columns, rows)}"
            ),
        )


def _markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _describe_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    shown = "; ".join(
        ", ".join(f"{column}={value}" for column, value in zip(columns, row, strict=True))
        for row in rows[:3]
    )
    return shown + ("; ..." if len(rows) > 3 else "")


def key_check(model: SqlModel) -> ModelCheck:
    """The grain check every model gets: its key columns are never null and never repeat."""
    key = ", ".join(model.key)
    not_null = " or ".join(f"{column} is null" for column in model.key)
    return ModelCheck(
        name="key_is_unique",
        description=f"One row per ({key}), none of them null.",
        violations_sql=(
            f"select {key}, count(*) as rows from {{table}} group by all having count(*) > 1 "
            f"union all select {key}, count(*) from {{table}} where {not_null} group by all "
            "limit 100"
        ),
        # A broken grain would be multiplied by every model downstream.
        blocking=True,
    )


_RAW_NET_REVENUE_SQL = """
with succeeded_charges as (
    select site_id, id, payment_intent_id, invoice_id, currency,
        coalesce(amount_captured, amount) as gross, coalesce(amount_refunded, 0) as refunded
    from raw.stripe_charges
    where status = 'succeeded' and captured
),
refunds as (
    select charges.site_id, charges.id, sum(refunds.amount) as refunded
    from raw.stripe_refunds as refunds
    join succeeded_charges as charges
        on refunds.site_id = charges.site_id
        and refunds.charge_id = charges.id
    where refunds.status in ('succeeded', 'pending')
    group by all
    union all
    select charges.site_id, charges.id, sum(refunds.amount)
    from raw.stripe_refunds as refunds
    join succeeded_charges as charges
        on refunds.site_id = charges.site_id
        and refunds.payment_intent_id = charges.payment_intent_id
    where refunds.status in ('succeeded', 'pending') and refunds.charge_id is null
    group by all
),
lost_disputes as (
    select charges.site_id, charges.id, sum(disputes.amount) as lost
    from raw.stripe_disputes as disputes
    join succeeded_charges as charges
        on disputes.site_id = charges.site_id
        and disputes.charge_id = charges.id
    where disputes.status = 'lost'
    group by all
    union all
    select charges.site_id, charges.id, sum(disputes.amount)
    from raw.stripe_disputes as disputes
    join succeeded_charges as charges
        on disputes.site_id = charges.site_id
        and disputes.payment_intent_id = charges.payment_intent_id
    where disputes.status = 'lost' and disputes.charge_id is null
    group by all
),
charge_net as (
    select charges.site_id, charges.currency,
        sum(charges.gross - greatest(charges.refunded, coalesce(refunds.refunded, 0))
            - coalesce(lost_disputes.lost, 0)) as net
    from succeeded_charges as charges
    left join (select site_id, id, sum(refunded) as refunded from refunds group by all) as refunds
        on charges.site_id = refunds.site_id and charges.id = refunds.id
    left join (select site_id, id, sum(lost) as lost from lost_disputes group by all)
        as lost_disputes
        on charges.site_id = lost_disputes.site_id and charges.id = lost_disputes.id
    group by all
),
invoices as (
    select site_id, id, status, amount_paid, currency, charge_id, payment_intent_id
    from raw.stripe_invoices
),
invoice_payments as (
    select site_id, invoice_id, charge_id, payment_intent_id
    from raw.stripe_invoice_payments
    where coalesce(status, '') != 'canceled'
),
invoices_with_a_charge as (
    select payments.site_id, payments.invoice_id
    from invoice_payments as payments
    join succeeded_charges as charges
        on payments.site_id = charges.site_id and payments.charge_id = charges.id
    union
    select payments.site_id, payments.invoice_id
    from invoice_payments as payments
    join succeeded_charges as charges
        on payments.site_id = charges.site_id
        and payments.payment_intent_id = charges.payment_intent_id
    union
    select site_id, invoice_id from succeeded_charges where invoice_id is not null
    union
    select invoices.site_id, invoices.id
    from invoices
    join succeeded_charges as charges
        on invoices.site_id = charges.site_id and invoices.charge_id = charges.id
    union
    select invoices.site_id, invoices.id
    from invoices
    join succeeded_charges as charges
        on invoices.site_id = charges.site_id
        and invoices.payment_intent_id = charges.payment_intent_id
),
invoice_only_net as (
    select invoices.site_id, invoices.currency, sum(invoices.amount_paid) as net
    from invoices
    anti join invoices_with_a_charge as linked
        on invoices.site_id = linked.site_id and invoices.id = linked.invoice_id
    where invoices.status = 'paid' and invoices.amount_paid > 0
    group by all
),
raw_net as (
    select site_id, currency, sum(net) as net
    from (select * from charge_net union all select * from invoice_only_net)
    group by all
),
model_net as (
    select site_id, currency, sum(net_amount) as net from {table} group by all
)
select
    coalesce(model_net.site_id, raw_net.site_id) as site_id,
    coalesce(model_net.currency, raw_net.currency) as currency,
    model_net.net as revenue_net_amount,
    raw_net.net as raw_net_amount
from model_net
full join raw_net
    on model_net.site_id = raw_net.site_id and model_net.currency = raw_net.currency
where model_net.net is distinct from raw_net.net
"""

MODEL_CHECKS: dict[str, tuple[ModelCheck, ...]] = {
    "revenue": (
        ModelCheck(
            name="charge_in_one_row",
            description="No Stripe charge is counted in more than one revenue row.",
            violations_sql=(
                "select site_id, charge_id, count(*) as rows from {table} "
                "where charge_id is not null group by all having count(*) > 1 limit 100"
            ),
        ),
        ModelCheck(
            name="invoice_in_one_row",
            description="No Stripe invoice is counted in more than one revenue row.",
            violations_sql=(
                "select site_id, invoice_id, count(*) as rows from {table} "
                "where invoice_id is not null group by all having count(*) > 1 limit 100"
            ),
        ),
        ModelCheck(
            name="amounts_add_up",
            description=(
                "net = gross - refunded - disputed on every row, amounts are never null, and "
                "every currency is a lowercase three-letter code."
            ),
            violations_sql=(
                "select site_id, revenue_id, currency, gross_amount, refunded_amount, "
                "disputed_amount, net_amount from {table} "
                "where net_amount is distinct from gross_amount - refunded_amount - disputed_amount"
                " or gross_amount is null or refunded_amount is null or disputed_amount is null"
                " or not regexp_matches(coalesce(currency, ''), '^[a-z]{{3}}$') limit 100"
            ),
        ),
        ModelCheck(
            name="reconciles_with_raw_stripe",
            description=(
                "Net revenue per site and currency equals succeeded, captured charges minus "
                "refunds minus lost disputes, plus paid invoices no charge paid, computed "
                "straight from the raw Stripe tables."
            ),
            violations_sql=_RAW_NET_REVENUE_SQL,
        ),
        ModelCheck(
            name="usd_only",
            description=(
                "Trace v1 reports in USD: warns when a site has revenue in another currency, "
                "which stays in its own currency rows and out of the *_usd views."
            ),
            violations_sql=(
                "select site_id, currency, count(*) as payments, "
                "cast(sum(net_amount) as bigint) as net_amount_minor_units from {table} "
                "where currency != 'usd' group by all order by all"
            ),
            severity=AssetCheckSeverity.WARN,
        ),
    ),
    "attributed_revenue": (
        ModelCheck(
            name="one_attribution_path",
            description=(
                "Every revenue row is attributed by exactly one path (metadata, email or "
                "unattributed), with a visitor and channel exactly when attributed, and no "
                "revenue row is lost or repeated on the way."
            ),
            violations_sql=(
                "select site_id, revenue_id, attribution_path, visitor_id, channel "
                "from {table} "
                "where attribution_path is null "
                "or attribution_path not in ('metadata', 'email', 'unattributed') "
                "or (attribution_path = 'unattributed') != (visitor_id is null) "
                "or channel is null "
                "or (attribution_path = 'unattributed') != (channel = 'unattributed') "
                "union all "
                "select null, 'row count differs from analytics.revenue', "
                "cast((select count(*) from {table}) as varchar), "
                "cast((select count(*) from analytics.revenue) as varchar), null "
                "where (select count(*) from {table}) != (select count(*) from analytics.revenue) "
                "limit 100"
            ),
            metadata_sql=(
                "with shares as ("
                "  select currency, attribution_path, count(*) as payments,"
                "    cast(sum(net_amount) as bigint) as net,"
                "    sum(sum(net_amount)) over (partition by currency) as currency_net"
                "  from {table} group by currency, attribution_path)"
                " select currency || ' ' || attribution_path || ' share of net revenue',"
                "   case when currency_net != 0 then round(net / currency_net, 4) end"
                " from shares"
                " union all"
                " select currency || ' ' || attribution_path || ' payments', payments from shares"
                " order by 1"
            ),
        ),
        ModelCheck(
            name="customers_keep_first_attribution",
            description=(
                "Every payment of a customer carries the visitor, path, channel and acquisition "
                "time of the customer's first payment, and none is paid before it."
            ),
            violations_sql=(
                "select site_id, customer_key from {table} group by all "
                "having min(coalesce(visitor_id, '')) != max(coalesce(visitor_id, '')) "
                "or min(attribution_path) != max(attribution_path) "
                "or min(channel) != max(channel) "
                "or min(acquired_at) != max(acquired_at) "
                "or min(paid_at) != min(acquired_at) limit 100"
            ),
        ),
    ),
    "cohort_ltv": (
        ModelCheck(
            name="matches_attributed_revenue",
            description=(
                "Per site and currency the cohorts hold exactly the net revenue of "
                "analytics.attributed_revenue, and every cohort curve runs from month 0 with "
                "no gap."
            ),
            violations_sql=(
                "with ltv as (select site_id, currency, cast(sum(net_revenue) as bigint) as net"
                "  from {table} group by all),"
                " revenue as (select site_id, currency, cast(sum(net_amount) as bigint) as net"
                "  from analytics.attributed_revenue group by all)"
                " select coalesce(ltv.site_id, revenue.site_id) as site_id,"
                "  coalesce(ltv.currency, revenue.currency) as currency,"
                "  ltv.net as cohort_net, revenue.net as revenue_net, null as cohort_month"
                " from ltv full join revenue"
                "  on ltv.site_id = revenue.site_id and ltv.currency = revenue.currency"
                " where ltv.net is distinct from revenue.net"
                " union all"
                " select site_id, currency, null, null, cohort_month from {table} group by"
                "  site_id, cohort_month, channel, currency"
                " having min(months_since_acquisition) != 0"
                "  or count(*) != max(months_since_acquisition) + 1"
                " limit 100"
            ),
        ),
    ),
    "channel_performance": (
        ModelCheck(
            name="matches_inputs",
            description=(
                "Per site and currency the table holds all the ad spend of trace.ad_spend and "
                "every acquired customer once."
            ),
            violations_sql=(
                "with performance as (select site_id, currency,"
                "  cast(sum(ad_spend) as bigint) as spend, sum(new_customers) as customers"
                "  from {table} group by all),"
                " spend as (select site_id, currency, cast(sum(amount) as bigint) as spend"
                "  from trace.ad_spend group by all),"
                " customers as (select site_id, acquisition_currency as currency,"
                "  count(*) as customers from intermediate.int_customer_acquisitions group by all),"
                " expected as (select site_id, currency, sum(spend) as spend,"
                "  sum(customers) as customers from ("
                "   select site_id, currency, spend, 0 as customers from spend"
                "   union all select site_id, currency, 0, customers from customers)"
                "  group by all)"
                " select coalesce(performance.site_id, expected.site_id) as site_id,"
                "  coalesce(performance.currency, expected.currency) as currency,"
                "  performance.spend, expected.spend as input_spend,"
                "  performance.customers, expected.customers as acquired_customers"
                " from performance full join expected"
                "  on performance.site_id = expected.site_id"
                "  and performance.currency = expected.currency"
                " where coalesce(performance.spend, 0) != coalesce(expected.spend, 0)"
                "  or coalesce(performance.customers, 0) != coalesce(expected.customers, 0)"
            ),
        ),
    ),
}


def checks_for(model: SqlModel) -> tuple[ModelCheck, ...]:
    """The grain check plus any rule written for this model by name."""
    return (key_check(model), *MODEL_CHECKS.get(model.name, ()))


def blocking_checks(model: SqlModel) -> tuple[ModelCheck, ...]:
    return tuple(check for check in checks_for(model) if check.blocking)


def later_checks(model: SqlModel) -> tuple[ModelCheck, ...]:
    """The checks nothing downstream waits for; they run beside the next builds."""
    return tuple(check for check in checks_for(model) if not check.blocking)


# ---------------------------------------------------------------------------------------------
# Building a model


@dataclass
class BuildOutcome:
    """What a refresh learned while it held the warehouse; lineage is computed afterwards."""

    columns: dict[str, str]
    row_count: int
    upstream_columns: dict[tuple[str, str], dict[str, str]]
    check_results: list[AssetCheckResult]
    extra_metadata: dict[str, Any] = field(default_factory=dict)


def build_model(
    connection: duckdb.DuckDBPyConnection, model: SqlModel, models: Mapping[str, SqlModel]
) -> BuildOutcome:
    """Replace the model's table (or view) in one transaction, then read back what it made.

    The outcome holds the results of the model's blocking checks; `later_checks` are left to
    the caller.
    """
    kind = "view" if model.materialized == "view" else "table"
    connection.execute("begin transaction")
    try:
        existing = connection.execute(
            "select table_type from information_schema.tables "
            "where table_schema = ? and table_name = ?",
            [model.schema, model.name],
        ).fetchall()
        # A model switched between table and view: `create or replace` cannot change the kind.
        if existing and existing[0][0] != ("VIEW" if kind == "view" else "BASE TABLE"):
            other = "table" if kind == "view" else "view"
            connection.execute(f"drop {other} {model.table}")
        connection.execute(f"create or replace {kind} {model.table} as\n{model.sql}")
        connection.execute("commit")
    except BaseException:
        connection.execute("rollback")
        raise

    columns = table_columns(connection, model.schema, model.name)
    row_count = connection.execute(f"select count(*) from {model.table}").fetchall()[0][0]
    upstream = {table: table_columns(connection, *table) for table in model.upstream_tables}
    check_results = [check.evaluate(connection, model) for check in blocking_checks(model)]

    extra: dict[str, Any] = {}
    whole = models.get(model.name.removesuffix(USD_SUFFIX))
    if model.name.endswith(USD_SUFFIX) and whole is not None:
        [(left_out,)] = connection.execute(
            f"select count(*) from {whole.table} where currency is distinct from 'usd'"
        ).fetchall()
        extra["excluded_non_usd_rows"] = MetadataValue.int(left_out)
        extra["excluded_from"] = MetadataValue.text(whole.table)
    return BuildOutcome(columns, row_count, upstream, check_results, extra)


def table_columns(connection: duckdb.DuckDBPyConnection, schema: str, table: str) -> dict[str, str]:
    """Column names and DuckDB types of a table or view, in order."""
    rows = connection.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = ? and table_name = ? order by ordinal_position",
        [schema, table],
    ).fetchall()
    return dict(rows)


def column_lineage(
    model: SqlModel,
    upstream_columns: Mapping[tuple[str, str], Mapping[str, str]],
    models_by_table: Mapping[tuple[str, str], SqlModel],
) -> TableColumnLineage:
    """For each output column, the upstream table columns it is computed from."""
    schema: dict[str, dict[str, dict[str, str]]] = {}
    for (table_schema, table), columns in upstream_columns.items():
        schema.setdefault(table_schema, {})[table] = {name: "text" for name in columns}
    nodes = lineage(
        None, model.sql, schema=schema, dialect="duckdb", copy=False, trim_selects=False
    )

    deps_by_column: dict[str, list[TableColumnDep]] = {}
    for column, node in nodes.items():
        deps: set[tuple[AssetKey, str]] = set()
        for step in node.walk():
            source = step.expression
            if isinstance(source, exp.Table) and source.db:
                key = table_asset_key(source.db, source.name, models_by_table, model.path)
                deps.add((key, step.name.split(".")[-1]))
        deps_by_column[column] = [
            TableColumnDep(asset_key=key, column_name=name)
            for key, name in sorted(deps, key=lambda dep: (dep[0].to_user_string(), dep[1]))
        ]
    return TableColumnLineage(deps_by_column=deps_by_column)


def _model_spec(
    model: SqlModel,
    models_by_table: Mapping[tuple[str, str], SqlModel],
    raw_writers: Sequence[AssetKey],
) -> AssetSpec:
    deps = sorted(
        {
            table_asset_key(schema, t, models_by_table, model.path)
            for schema, t in model.upstream_tables
        },
        key=AssetKey.to_user_string,
    )
    if any(schema == RAW_SCHEMA for schema, _ in model.upstream_tables):
        # Assets that write raw rows besides the raw assets (the live webhook apply): the edge
        # makes one live run apply events before it refreshes the models that read them.
        deps.extend(raw_writers)
    return AssetSpec(
        key=AssetKey(model.name),
        deps=deps,
        group_name=model.group_name,
        kinds={"duckdb", "sql"},
        description=model.description,
        metadata={
            "table": model.table,
            "grain": f"one row per ({', '.join(model.key)})",
            "sql_file": str(model.path.name),
            "materialized": model.materialized,
        },
        automation_condition=MODEL_AUTOMATION,
    )


def _materialize_result(
    context: AssetExecutionContext,
    run: ModelRun,
    models_by_table: Mapping[tuple[str, str], SqlModel],
) -> MaterializeResult:
    """The model's materialization: schema, row count, lineage and its selected checks."""
    model, outcome = run.model, run.outcome
    context.log.info("Built %s: %s rows in %.2fs", model.table, outcome.row_count, run.seconds)
    metadata: dict[str, Any] = {
        "dagster/row_count": MetadataValue.int(outcome.row_count),
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(name, data_type) for name, data_type in outcome.columns.items()]
        ),
        "build_seconds": MetadataValue.float(round(run.seconds, 3)),
        **outcome.extra_metadata,
    }
    try:
        metadata["dagster/column_lineage"] = column_lineage(
            model, outcome.upstream_columns, models_by_table
        )
    except SqlglotError as error:
        # Lineage is documentation: a query sqlglot cannot trace still refreshes.
        context.log.warning("No column lineage for %s: %s", model.table, error)

    asset_key = AssetKey(model.name)
    selected = context.selected_asset_check_keys
    check_results = [
        result
        for result in outcome.check_results
        if AssetCheckKey(asset_key, result.check_name) in selected
    ]
    for result in check_results:
        if not result.passed:
            context.log.warning(
                "Check %s on %s failed: %s", result.check_name, model.table, result.description
            )
    return MaterializeResult(asset_key=asset_key, metadata=metadata, check_results=check_results)


def build_model_assets(
    models_dir: Path = MODELS_DIR, raw_writers: Sequence[AssetKey] = ()
) -> AssetsDefinition:
    """One asset per `.sql` file in the folder, with its checks, all refreshed by one step.

    Like dagster-dbt's `@dbt_assets`, the models are one subsettable multi-asset: the UI shows
    and materializes each model on its own, while a run of several builds them in one process
    over one warehouse connection (`model_runner`), overlapping builds and checks instead of
    paying a step, a connection and a lock per model.

    `raw_writers` are extra upstream assets of every model that reads `raw.*` (the code
    location passes the live webhook apply, see `trace_pipelines.live.assets`).
    """
    models = load_models(models_dir)
    by_name = {model.name: model for model in models}
    by_table = {(model.schema, model.name): model for model in models}

    @multi_asset(
        name="sql_models",
        specs=[_model_spec(model, by_table, raw_writers) for model in models],
        check_specs=[
            check.spec(AssetKey(model.name)) for model in models for check in checks_for(model)
        ],
        can_subset=True,
    )
    def sql_models(
        context: AssetExecutionContext, trace_storage: TraceStorage, duckdb: DuckDBResource
    ) -> Iterator[MaterializeResult]:
        ensure_raw_views(trace_storage.paths)
        selected = [
            model for model in models if AssetKey(model.name) in context.selected_asset_keys
        ]

        not_built: list[ModelRun] = []
        with warehouse_writer(duckdb, trace_storage) as connection:
            for schema in sorted({model.schema for model in selected}):
                connection.execute(f"create schema if not exists {schema}")
            runs = refresh_models(
                connection,
                RefreshPlan.of(selected),
                build=partial(build_model, models=by_name),
                later_checks=later_checks,
            )
            for run in runs:
                if run.outcome is None:
                    not_built.append(run)
                    context.log.error(
                        "Did not refresh %s: %s", run.model.table, run.error or run.held_back_by
                    )
                else:
                    yield _materialize_result(context, run, by_table)

        errors = [run for run in not_built if run.error is not None]
        if errors:
            first = errors[0]
            skipped = [run.model.name for run in not_built if run is not first]
            also = f" Not refreshed because of it: {', '.join(skipped)}." if skipped else ""
            raise Failure(
                f"{first.model.path.name} failed to build: {first.error}. Fix the model's SQL "
                f"and materialize it again.{also}"
            ) from first.error
        # A failed blocking check fails the step on its own once its result is reported.

    return sql_models


def build_models_job(model_assets_def: AssetsDefinition, name: str = "analytics_models"):
    """An asset job refreshing the Trace inputs and every model (with their checks).

    It runs in one process: every step writes the same DuckDB file under one lock, so
    separate step processes would only add start-up time, never parallelism.
    """
    return define_asset_job(
        name=name,
        selection=AssetSelection.assets(*trace_input_assets, model_assets_def),
        executor_def=in_process_executor,
        description=(
            "Full refresh of the Trace inputs and every SQL model in dbt_like_sql/, with "
            "their asset checks."
        ),
    )


model_assets = build_model_assets()
analytics_models_job = build_models_job(model_assets)
