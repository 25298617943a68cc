"""The Dagster code location `trace_pipelines`: every asset, job, schedule and resource."""

from dagster import Definitions, EnvVar
from dagster_duckdb import DuckDBResource

from trace_pipelines.assets.sql_models import analytics_models_job
from trace_pipelines.assets.stripe_raw import stripe_raw_objects
from trace_pipelines.assets.trace_inputs import trace_input_assets
from trace_pipelines.jobs import stripe_backfill_job
from trace_pipelines.live.assets import (
    live_model_assets,
    stripe_live_apply_job,
    stripe_webhook_events,
)
from trace_pipelines.resources.storage import TraceStorage
from trace_pipelines.resources.stripe_reader import StripeReader
from trace_pipelines.sensors.missed_events import hourly_missed_events, stripe_missed_events_job
from trace_pipelines.sensors.schedules import daily_stripe_refresh
from trace_pipelines.sensors.stripe_events import stripe_events_sensor
from trace_pipelines.settings import stripe_api_base, trace_paths

defs = Definitions(
    assets=[
        stripe_raw_objects,
        stripe_webhook_events,
        *trace_input_assets,
        live_model_assets,
    ],
    jobs=[
        stripe_backfill_job,
        analytics_models_job,
        stripe_live_apply_job,
        stripe_missed_events_job,
    ],
    schedules=[daily_stripe_refresh, hourly_missed_events],
    sensors=[stripe_events_sensor],
    resources={
        "stripe": StripeReader(api_key=EnvVar("STRIPE_API_KEY"), api_base=stripe_api_base()),
        "trace_storage": TraceStorage(),
        "duckdb": DuckDBResource(database=str(trace_paths().warehouse)),
    },
)
