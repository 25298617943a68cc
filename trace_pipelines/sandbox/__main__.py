"""`python -m trace_pipelines.sandbox`: the sandbox as a process of its own.

Benchmarks start it this way so the server has a core to itself; day-to-day use goes through
`trace-pipelines sandbox serve`, which takes the same options.
"""

from __future__ import annotations

import argparse
import logging
import sys

from trace_pipelines.sandbox.app import DEFAULT_API_KEY
from trace_pipelines.sandbox.server import DEFAULT_PORT, serve
from trace_pipelines.sandbox.store import FixtureError


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve until interrupted; 2 on a fixtures problem."""
    parser = argparse.ArgumentParser(
        prog="python -m trace_pipelines.sandbox",
        description="Serve Stripe's read API from a fixtures folder on localhost.",
    )
    parser.add_argument("--fixtures", required=True, help="folder with one acct_... subfolder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help=f"secret key to accept (repeatable; default {DEFAULT_API_KEY})",
    )
    parser.add_argument("--latency-ms", type=float, default=0, help="delay every /v1 response")
    parser.add_argument(
        "--rate-limit", type=int, default=None, help="requests/s per account and endpoint"
    )
    parser.add_argument("--now", type=float, default=None, help="fixed clock, Unix seconds")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        serve(
            args.fixtures,
            host=args.host,
            port=args.port,
            api_keys=args.api_keys or (DEFAULT_API_KEY,),
            latency_ms=args.latency_ms,
            rate_limit_per_endpoint=args.rate_limit,
            now=args.now,
            access_log=args.access_log,
        )
    except FixtureError as e:
        # The one line a user needs, without a traceback.
        sys.stderr.write(f"error: {e}\n")
        return 2
    except KeyboardInterrupt:
        # Uvicorn re-raises Ctrl-C after its graceful shutdown; that shutdown is the answer.
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
