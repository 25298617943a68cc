"""The Dagster code location `trace_pipelines`: every asset, job, schedule and resource."""

from dagster import Definitions, EnvVar

from trace_pipelines.assets.stripe_raw import stripe_raw_objects
from trace_pipelines.jobs import stripe_backfill_job
from trace_pipelines.resources.storage import TraceStorage
from trace_pipelines.resources.stripe_reader import StripeReader
from trace_pipelines.sensors.schedules import daily_stripe_refresh
from trace_pipelines.settings import stripe_api_base

defs = Definitions(
    assets=[stripe_raw_objects],
    jobs=[stripe_backfill_job],
    schedules=[daily_stripe_refresh],
    resources={
        "stripe": StripeReader(api_key=EnvVar("STRIPE_API_KEY"), api_base=stripe_api_base()),
        "trace_storage": TraceStorage(),
    },
)
