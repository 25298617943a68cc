"""Trace-side inputs: touchpoints, identities and ad spend, loaded from CSV into `trace.*` tables.

Trace's own product data (which visitor came from which channel, which visitor later gave which
email, what each channel cost) arrives as three CSV files in TRACE_INPUTS_DIR:

    touchpoints.csv  site_id, visitor_id, occurred_at, source, medium, campaign
    identities.csv   site_id, visitor_id, email, identified_at
    ad_spend.csv     site_id, date, source, medium, campaign, amount, currency

Times are ISO-8601 text with an explicit offset (`2026-03-04T10:15:00+01:00` or `...Z`) and are
stored as UTC TIMESTAMPs; a time without an offset is refused rather than guessed. Ad spend is an
integer amount of minor units with a lowercase ISO currency beside it. Extra columns are ignored.

Each load validates the whole file before it writes, and replaces its table inside one DuckDB
transaction, so a bad row leaves the previous table in place and the error names the file, the
line and what to change. When TRACE_INPUTS_DIR is unset the tables are created empty, so the
models downstream still run (and simply attribute nothing).
"""

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from dagster import (
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)
from dagster_duckdb import DuckDBResource

from trace_pipelines.resources.storage import TraceStorage
from trace_pipelines.resources.warehouse import warehouse_writer
from trace_pipelines.settings import inputs_dir

TRACE_SCHEMA = "trace"
GROUP_NAME = "trace_inputs"

# A time must end in `Z` or a `+hh:mm` / `-hh:mm` / `+hhmm` / `+hh` offset: without one the
# same text means different instants on different machines.
_OFFSET_PATTERN = r"(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$"


@dataclass(frozen=True)
class InputColumn:
    """One column of a Trace input: how its CSV text becomes a typed value, and how to fix it."""

    name: str
    type: str
    description: str
    # SQL over the trimmed, non-empty text `{v}` giving the typed value, or NULL when the text
    # cannot be read.
    parse: str = "{v}"
    required: bool = True
    # What the user should write instead, for the error message.
    expected: str = "a value"


@dataclass(frozen=True)
class TraceInput:
    """A Trace-side CSV file and the `trace.*` table it becomes."""

    table: str
    file_name: str
    description: str
    columns: tuple[InputColumn, ...]

    @property
    def asset_name(self) -> str:
        return f"trace_{self.table}"

    @property
    def qualified_table(self) -> str:
        return f"{TRACE_SCHEMA}.{self.table}"

    @property
    def table_schema(self) -> TableSchema:
        return TableSchema(
            columns=[
                TableColumn(column.name, column.type, description=column.description)
                for column in self.columns
            ]
        )


_UTC_TIME = (
    f"case when regexp_matches({{v}}, '{_OFFSET_PATTERN}') "
    "then timezone('UTC', try_cast({v} as timestamptz)) end"
)
_TIME_EXPECTED = "an ISO-8601 time with an offset, such as 2026-03-04T10:15:00+01:00 or ...Z"

TOUCHPOINTS = TraceInput(
    table="touchpoints",
    file_name="touchpoints.csv",
    description="One row per visit Trace recorded: which visitor arrived from which channel.",
    columns=(
        InputColumn("site_id", "VARCHAR", "Trace site the visit belongs to."),
        InputColumn("visitor_id", "VARCHAR", "Trace's anonymous visitor id."),
        InputColumn(
            "occurred_at",
            "TIMESTAMP",
            "When the visit happened (UTC).",
            _UTC_TIME,
            True,
            _TIME_EXPECTED,
        ),
        InputColumn("source", "VARCHAR", "utm_source or referrer (empty: direct).", required=False),
        InputColumn("medium", "VARCHAR", "utm_medium (empty: none).", required=False),
        InputColumn("campaign", "VARCHAR", "utm_campaign, if any.", required=False),
    ),
)

IDENTITIES = TraceInput(
    table="identities",
    file_name="identities.csv",
    description="One row per time a visitor was identified by an email on a site.",
    columns=(
        InputColumn("site_id", "VARCHAR", "Trace site the identification belongs to."),
        InputColumn("visitor_id", "VARCHAR", "Trace's anonymous visitor id."),
        InputColumn(
            "email",
            "VARCHAR",
            "The email the visitor gave, lowercased and trimmed.",
            "case when position('@' in {v}) > 1 then lower({v}) end",
            expected="an email address such as ana@example.com",
        ),
        InputColumn(
            "identified_at",
            "TIMESTAMP",
            "When the visitor gave the email (UTC).",
            _UTC_TIME,
            True,
            _TIME_EXPECTED,
        ),
    ),
)

AD_SPEND = TraceInput(
    table="ad_spend",
    file_name="ad_spend.csv",
    description="One row per site, day and campaign of ad spend, in integer minor units.",
    columns=(
        InputColumn("site_id", "VARCHAR", "Trace site the spend is for."),
        InputColumn(
            "date",
            "DATE",
            "Day of the spend.",
            "try_cast({v} as date)",
            expected="a date such as 2026-03-04",
        ),
        InputColumn("source", "VARCHAR", "Channel source, as in touchpoints."),
        InputColumn("medium", "VARCHAR", "Channel medium, as in touchpoints."),
        InputColumn("campaign", "VARCHAR", "Campaign, if any.", required=False),
        InputColumn(
            "amount",
            "BIGINT",
            "Spend in integer minor units (cents).",
            # A strict pattern first: DuckDB would otherwise round `12.50` to 13 silently.
            "case when regexp_matches({v}, '^-?[0-9]+$') then try_cast({v} as bigint) end",
            expected="a whole number of minor units such as 1250 for 12.50",
        ),
        InputColumn(
            "currency",
            "VARCHAR",
            "Lowercase ISO 4217 currency of the amount.",
            "case when regexp_matches({v}, '^[A-Za-z]{3}$') then lower({v}) end",
            expected="a three-letter ISO currency such as usd",
        ),
    ),
)

TRACE_INPUTS: tuple[TraceInput, ...] = (TOUCHPOINTS, IDENTITIES, AD_SPEND)
TRACE_INPUTS_BY_TABLE: dict[str, TraceInput] = {spec.table: spec for spec in TRACE_INPUTS}


def read_input_csv(spec: TraceInput, path: Path) -> pa.Table:
    """The CSV as text columns plus its `line` numbers; raises Failure on an unreadable file."""
    if not path.is_file():
        raise Failure(
            f"{path} is missing; add {spec.file_name} with the header "
            f"{','.join(column.name for column in spec.columns)} (it may have no data rows)."
        )
    header = _read_header(path)
    missing = [column.name for column in spec.columns if column.name not in header]
    if missing:
        raise Failure(
            f"{path} line 1 lacks the column(s) {', '.join(missing)}; add them to the header "
            f"({','.join(column.name for column in spec.columns)})."
        )

    names = [column.name for column in spec.columns]
    try:
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                include_columns=names,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as error:
        line = _first_ragged_line(path, len(header))
        where = f"line {line}" if line else "a row"
        raise Failure(
            f"{path} {where} cannot be read as CSV ({error}); give every row "
            f"{len(header)} comma-separated fields matching the header."
        ) from error
    # Data starts on line 2; CSV fields here never span lines, so row i is line i + 2.
    lines = pa.array(np.arange(2, table.num_rows + 2, dtype=np.int64))
    return table.append_column("line", lines)


def _read_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise Failure(f"{path} is empty; add the header line and the rows (or only the header).")
    return [name.strip() for name in header]


def _first_ragged_line(path: Path, width: int) -> int | None:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        for row in reader:
            if row and len(row) != width:
                return reader.line_num
    return None


def _parsed_sql(spec: TraceInput) -> str:
    """Each row's typed values beside `problem`: what is wrong with it, NULL when nothing is.

    One pass parses every value once; the trimmed text (empty as NULL) is only kept long
    enough to explain a value that did not parse.
    """
    texts = ", ".join(
        f"nullif(trim({column.name}), '') as text_{column.name}" for column in spec.columns
    )
    typed = ", ".join(
        f"cast({column.parse.replace('{v}', f'text_{column.name}')} as {column.type}) "
        f"as {column.name}"
        for column in spec.columns
    )
    names = ", ".join(column.name for column in spec.columns)
    problems = ", ".join(_problem_sql(column) for column in spec.columns)
    return (
        f"select line, {names}, coalesce({problems}) as problem "
        f"from (select *, {typed} from (select line, {texts} from staged_input))"
    )


def _problem_sql(column: InputColumn) -> str:
    """SQL giving, for one parsed row, what is wrong with this column (NULL when nothing is)."""
    name, text = column.name, f"text_{column.name}"
    if_empty = f"'{name} is empty; fill in {column.expected}'" if column.required else "null"
    return (
        f"case when {text} is null then {if_empty} "
        f"when {name} is null then '{name} is \"' || {text} || '\"; write {column.expected}' end"
    )


def load_trace_input(
    spec: TraceInput, folder: Path | None, connection: duckdb.DuckDBPyConnection
) -> dict[str, object]:
    """Replace `trace.<table>` with the validated CSV (or an empty table); returns metadata."""
    if folder is None:
        staged = pa.table(
            {column.name: pa.array([], pa.string()) for column in spec.columns}
            | {"line": pa.array([], pa.int64())}
        )
        source = "TRACE_INPUTS_DIR is unset: created an empty table so the models still run."
    else:
        if not folder.is_dir():
            raise Failure(
                f"TRACE_INPUTS_DIR {folder} is not a folder; point it at the folder holding "
                "touchpoints.csv, identities.csv and ad_spend.csv, or unset it."
            )
        staged = read_input_csv(spec, folder / spec.file_name)
        source = str(folder / spec.file_name)

    # Written optimistically: the table and a flag for rows that did not parse come out of one
    # pass. Only when a row is flagged is the transaction rolled back and the first bad line
    # found, so a good file is parsed once and written once.
    connection.register("staged_input", staged)
    try:
        columns = ", ".join(column.name for column in spec.columns)
        connection.execute("begin transaction")
        try:
            connection.execute(f"create schema if not exists {TRACE_SCHEMA}")
            connection.execute(
                f"create or replace table {spec.qualified_table} as "
                f"select {columns}, problem is not null as unreadable from ({_parsed_sql(spec)})"
            )
            if connection.execute(
                f"select 1 from {spec.qualified_table} where unreadable limit 1"
            ).fetchall():
                connection.execute("rollback")
                [(line, problem)] = connection.execute(
                    f"select line, problem from ({_parsed_sql(spec)}) "
                    "where problem is not null order by line limit 1"
                ).fetchall()
                raise Failure(f"{source} line {line}: {problem}.")
            connection.execute(f"alter table {spec.qualified_table} drop column unreadable")
            connection.execute("commit")
        except Failure:
            raise
        except BaseException:
            connection.execute("rollback")
            raise
    finally:
        connection.unregister("staged_input")

    return {
        "dagster/row_count": staged.num_rows,
        "dagster/column_schema": spec.table_schema,
        "source": MetadataValue.text(source),
    }


def _build_input_asset(spec: TraceInput):
    @asset(
        name=spec.asset_name,
        group_name=GROUP_NAME,
        kinds={"csv", "duckdb"},
        description=(
            f"{spec.description} Loaded from {spec.file_name} in TRACE_INPUTS_DIR into "
            f"{spec.qualified_table}."
        ),
        metadata={"table": spec.qualified_table, "dagster/column_schema": spec.table_schema},
    )
    def _load(
        context: AssetExecutionContext, trace_storage: TraceStorage, duckdb: DuckDBResource
    ) -> MaterializeResult:
        folder = inputs_dir()
        started = time.perf_counter()
        with warehouse_writer(duckdb, trace_storage) as connection:
            metadata = load_trace_input(spec, folder, connection)
        metadata["build_seconds"] = MetadataValue.float(round(time.perf_counter() - started, 3))
        context.log.info(
            "Loaded %s rows into %s from %s",
            metadata["dagster/row_count"],
            spec.qualified_table,
            metadata["source"].value,
        )
        return MaterializeResult(metadata=metadata)

    return _load


trace_input_assets = [_build_input_asset(spec) for spec in TRACE_INPUTS]
