"""A local stand-in for Stripe's read API, served over real HTTP from fixture files.

Stripe cannot be reached from where the pipeline is developed and tested, so the pipeline's
real Stripe SDK code runs against this sandbox instead (`api_base` pointed at it). It serves
the list and retrieve endpoints the pipeline reads, behaves as Stripe does on paging,
filters, `expand[]`, auth, Connect accounts and errors, and can add latency, rate limits and
injected failures. `store` loads the fixtures (its docstring documents their format), `app`
answers requests, `server` runs it.
"""

from trace_pipelines.sandbox.app import DEFAULT_API_KEY, create_app
from trace_pipelines.sandbox.server import (
    DEFAULT_PORT,
    SandboxHandle,
    build_app,
    running_sandbox,
    running_sandbox_process,
    serve,
)
from trace_pipelines.sandbox.store import FixtureError, load_fixtures

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_PORT",
    "FixtureError",
    "SandboxHandle",
    "build_app",
    "create_app",
    "load_fixtures",
    "running_sandbox",
    "running_sandbox_process",
    "serve",
]
