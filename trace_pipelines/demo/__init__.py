"""The demo store: a reproducible pair of Stripe merchants and the Trace data about them.

`generate_demo_store` writes Stripe fixtures for the local sandbox and the CSV inputs Trace
reads, covering every attribution, refund, dispute and subscription case the pipeline handles.
"""

from trace_pipelines.demo.generate import DemoSummary, SiteSummary, generate_demo_store

__all__ = ["DemoSummary", "SiteSummary", "generate_demo_store"]
