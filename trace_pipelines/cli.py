"""`trace-pipelines`: what a user does outside the Dagster UI.

    trace-pipelines sandbox serve --fixtures DIR [--port PORT]
    trace-pipelines demo generate --out DIR [--customers N] [--seed S]
    trace-pipelines demo run
    trace-pipelines sites connect SITE_ID --domain DOMAIN --stripe-account ACCOUNT_ID [--backfill]
    trace-pipelines sites disconnect SITE_ID
    trace-pipelines sites delete SITE_ID [--confirm DOMAIN]
    trace-pipelines sites list
    trace-pipelines backfill SITE_ID [--months 12] [--concurrency 4]
    trace-pipelines webhooks serve [--port 8787]
    trace-pipelines webhooks apply

Every failure a user can cause ends in one line on stderr naming the cause and what to do, and
exit status 2; a backfill with a failed partition exits 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from trace_pipelines.settings import trace_paths


class UsageError(Exception):
    """A problem the user can fix; printed as one line without a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - only the known user errors are caught below
        message = _user_message(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def _user_message(error: Exception) -> str | None:
    from dagster._core.errors import DagsterHomeNotSetError, DagsterInvariantViolationError

    from trace_pipelines.live.run import LiveApplyError
    from trace_pipelines.resources.stripe_oauth import StripeOAuthError
    from trace_pipelines.sandbox.store import FixtureError
    from trace_pipelines.sites import SiteError
    from trace_pipelines.web.connect import ConnectConfigError
    from trace_pipelines.web.webhooks import WebhookConfigError

    known = (
        UsageError,
        SiteError,
        FixtureError,
        StripeOAuthError,
        WebhookConfigError,
        ConnectConfigError,
        LiveApplyError,
    )
    if isinstance(error, known):
        return str(error)
    dagster_home_errors = DagsterHomeNotSetError | DagsterInvariantViolationError
    if isinstance(error, dagster_home_errors) and "DAGSTER_HOME" in str(error):
        return (
            "DAGSTER_HOME is not set or does not exist: point it at the folder holding "
            "dagster.yaml (the Makefile uses ./data/dagster_home)."
        )
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trace-pipelines", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    sandbox = commands.add_parser("sandbox", help="the local Stripe sandbox")
    sandbox_commands = sandbox.add_subparsers(required=True, metavar="COMMAND")
    serve = sandbox_commands.add_parser("serve", help="serve the Stripe API from fixtures")
    serve.add_argument("--fixtures", required=True, type=Path, help="folder of acct_* folders")
    serve.add_argument("--port", type=int, default=12111)
    serve.add_argument("--latency-ms", type=float, default=0, help="delay every response")
    serve.add_argument("--rate-limit", type=int, default=None, help="requests/s per endpoint")
    serve.set_defaults(handler=_sandbox_serve)

    demo = commands.add_parser("demo", help="the demo store and the demo walkthrough")
    demo_commands = demo.add_subparsers(required=True, metavar="COMMAND")
    generate = demo_commands.add_parser("generate", help="write a deterministic demo store")
    generate.add_argument("--out", required=True, type=Path)
    generate.add_argument("--customers", type=int, default=2000, help="customers per site")
    generate.add_argument("--seed", type=int, default=7)
    generate.add_argument("--sites", type=int, default=2, choices=(1, 2))
    generate.add_argument("--now", help="ISO time the history ends at (default: this hour)")
    generate.set_defaults(handler=_demo_generate)
    run = demo_commands.add_parser("run", help="what `make demo` runs")
    run.add_argument("--no-ui", action="store_true", help="stop after the summary (DEMO_UI=0)")
    run.set_defaults(handler=_demo_run)

    sites = commands.add_parser("sites", help="register and list sites")
    site_commands = sites.add_subparsers(required=True, metavar="COMMAND")
    connect = site_commands.add_parser("connect", help="record a site and its Stripe account")
    connect.add_argument("site_id")
    connect.add_argument("--domain", required=True)
    connect.add_argument("--stripe-account", required=True, dest="stripe_account")
    connect.add_argument("--backfill", action="store_true", help="also backfill 12 months")
    connect.set_defaults(handler=_sites_connect)
    disconnect = site_commands.add_parser("disconnect", help="revoke Stripe access; rows stay")
    disconnect.add_argument("site_id")
    disconnect.set_defaults(handler=_sites_disconnect)
    delete = site_commands.add_parser("delete", help="delete a site and everything tied to it")
    delete.add_argument("site_id")
    delete.add_argument("--confirm", metavar="DOMAIN", help="the site's domain, retyped")
    delete.set_defaults(handler=_sites_delete)
    listing = site_commands.add_parser("list", help="show every registered site")
    listing.set_defaults(handler=_sites_list)

    backfill = commands.add_parser("backfill", help="backfill a site's Stripe data")
    backfill.add_argument("site_id")
    backfill.add_argument("--months", type=int, default=12, help="full months before this one")
    backfill.add_argument("--concurrency", type=int, default=4, help="partition runs at once")
    backfill.set_defaults(handler=_backfill)

    webhooks = commands.add_parser("webhooks", help="receive and apply Stripe webhooks")
    webhook_commands = webhooks.add_subparsers(required=True, metavar="COMMAND")
    receive = webhook_commands.add_parser("serve", help="run the webhook receiver")
    receive.add_argument("--port", type=int, default=8787)
    receive.add_argument("--host", default="127.0.0.1")
    receive.set_defaults(handler=_webhooks_serve)
    apply = webhook_commands.add_parser("apply", help="apply every landed event, then return")
    apply.set_defaults(handler=_webhooks_apply)
    return parser


def _webhooks_serve(args: argparse.Namespace) -> int:
    from trace_pipelines.web.service import serve_service

    logging.getLogger().setLevel(logging.INFO)
    serve_service(port=args.port, host=args.host)
    return 0


def _webhooks_apply(args: argparse.Namespace) -> int:
    from trace_pipelines.live.run import apply_and_refresh

    summary = apply_and_refresh()
    print(
        f"Applied every landed event through #{summary.applied_through_seq} "
        f"in {len(summary.runs)} run(s); the models are refreshed."
    )
    return 0


def _sandbox_serve(args: argparse.Namespace) -> int:
    import os

    from trace_pipelines.sandbox.app import DEFAULT_API_KEY
    from trace_pipelines.sandbox.server import serve

    if not args.fixtures.is_dir():
        raise UsageError(f"Fixtures folder {args.fixtures} does not exist.")
    logging.getLogger().setLevel(logging.INFO)
    serve(
        args.fixtures,
        port=args.port,
        api_keys=(os.environ.get("STRIPE_API_KEY") or DEFAULT_API_KEY,),
        latency_ms=args.latency_ms,
        rate_limit_per_endpoint=args.rate_limit,
    )
    return 0


def _demo_generate(args: argparse.Namespace) -> int:
    from trace_pipelines.demo import generate_demo_store

    now = None
    if args.now:
        try:
            now = datetime.fromisoformat(args.now)
        except ValueError:
            message = f"--now {args.now!r} is not an ISO time like 2026-12-01T00:00+00:00."
            raise UsageError(message) from None
        now = now if now.tzinfo else now.replace(tzinfo=UTC)
    if args.customers < 1:
        raise UsageError("--customers must be at least 1.")
    summary = generate_demo_store(
        args.out, customers=args.customers, seed=args.seed, now=now, sites=args.sites
    )
    print(f"Wrote the demo store to {args.out}")
    for site in summary.sites:
        counts = ", ".join(f"{count:,} {name}" for name, count in site.counts.items())
        print(f"  {site.site_id} ({site.domain}, {site.stripe_account_id}): {counts}")
    return 0


def _demo_run(args: argparse.Namespace) -> int:
    from trace_pipelines.demo.walkthrough import run_demo

    return run_demo(serve_ui=not args.no_ui)


def _sites_connect(args: argparse.Namespace) -> int:
    from trace_pipelines import lifecycle

    results = []

    def run_now(plan) -> None:
        results.append(lifecycle.run_sync_plan(plan, on_outcome=print_outcome))

    outcome = lifecycle.connect_site(
        args.site_id,
        args.domain,
        args.stripe_account,
        backfill=args.backfill,
        launch=run_now,
    )
    print(outcome.message)
    return 1 if any(not result.success for result in results) else 0


def _sites_disconnect(args: argparse.Namespace) -> int:
    from trace_pipelines import lifecycle

    print(lifecycle.disconnect_site(args.site_id).message)
    return 0


def _sites_delete(args: argparse.Namespace) -> int:
    from trace_pipelines import lifecycle
    from trace_pipelines.sites import SiteRegistry

    typed = args.confirm
    if typed is None:
        site = SiteRegistry(trace_paths().registry).get(args.site_id)
        print(f"Deleting {site.site_id} removes every row, file and event tied to it, for good.")
        typed = input(f"Type {site.domain} to delete it: ")
    print(lifecycle.delete_site(args.site_id, typed).message)
    return 0


def _sites_list(args: argparse.Namespace) -> int:
    from trace_pipelines.sites import SiteRegistry

    sites = SiteRegistry(trace_paths().registry).list()
    if not sites:
        print("No sites yet. Add one with `trace-pipelines sites connect`.")
        return 0
    header = ("SITE", "DOMAIN", "STRIPE ACCOUNT", "STATUS", "CONNECTED AT", "DISCONNECTED AT")
    rows = [
        (
            s.site_id,
            s.domain,
            s.stripe_account_id,
            s.status,
            s.connected_at.isoformat(),
            s.disconnected_at.isoformat() if s.disconnected_at else "-",
        )
        for s in sites
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(value).ljust(width) for value, width in zip(row, widths, strict=True)))
    return 0


def _backfill(args: argparse.Namespace) -> int:
    if args.months < 0 or args.concurrency < 1:
        raise UsageError("--months must be 0 or more and --concurrency at least 1.")
    return _run_backfill([args.site_id], months=args.months, concurrency=args.concurrency)


def print_outcome(outcome, done: int, total: int) -> None:
    """Print one partition's progress line as soon as its run ends."""
    from trace_pipelines.backfill import format_outcome

    print(format_outcome(outcome, done, total), flush=True)


def _run_backfill(site_ids: list[str], *, months: int, concurrency: int) -> int:
    from trace_pipelines.backfill import backfill

    outcomes = backfill(site_ids, months=months, concurrency=concurrency, on_outcome=print_outcome)
    failed = [outcome for outcome in outcomes if not outcome.success]
    rows = sum(outcome.rows for outcome in outcomes)
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} partitions succeeded, {rows:,} rows.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
