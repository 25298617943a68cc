"""Generate the demo store: Stripe fixtures for each demo site plus the Trace-side CSV inputs.

`generate_demo_store` writes a folder that stands in for real merchants: what their connected
Stripe accounts hold (served by the local Stripe sandbox) and what Trace itself recorded
(touchpoints, identities, ad spend). Every scenario the revenue pipeline must get right is in
it at least once: visitor ids only on Checkout Sessions, guests known only by email, emails
that differ in case, renewals of subscriptions older than the history, refunds, disputes,
failed and uncaptured charges, euro charges, and events in both API shapes.

History is laid out relative to `now`: `months` calendar months ending with `now`'s month,
so the default of 14 gives 13 full months plus the current one. The output is a pure function
of (seed, now, customers, sites, months): two runs write byte-identical files.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from trace_pipelines.demo.catalog import SITES
from trace_pipelines.demo.ids import account_id
from trace_pipelines.demo.plan import plan_site, window_start_of
from trace_pipelines.demo.render import SiteRenderer
from trace_pipelines.demo.trace_inputs import (
    AD_SPEND_HEADER,
    IDENTITIES_HEADER,
    SITES_HEADER,
    TOUCHPOINTS_HEADER,
    TraceInputs,
    open_csv,
    write_ad_spend,
)

log = logging.getLogger(__name__)

STRIPE_DIR = "stripe"
TRACE_DIR = "trace"


@dataclass(frozen=True)
class SiteSummary:
    """What was generated for one demo site."""

    site_id: str
    domain: str
    stripe_account_id: str
    # Objects per fixture file (`charges`, `refunds`, ..., `events`, `account`) and rows per
    # Trace input (`touchpoints`, `identities`, `ad_spend`).
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoSummary:
    """What `generate_demo_store` wrote and with which parameters, for the CLI to report."""

    out_dir: Path
    stripe_dir: Path
    trace_dir: Path
    seed: int
    now: datetime
    window_start: datetime
    customers: int
    months: int
    sites: tuple[SiteSummary, ...]
    seconds: float

    def total(self, kind: str) -> int:
        """The count of `kind` (e.g. `charges`) summed over every site."""
        return sum(site.counts.get(kind, 0) for site in self.sites)

    def lines(self) -> list[str]:
        """A short human-readable report, one line per site plus a header."""
        lines = [
            f"Demo store in {self.out_dir} (seed {self.seed}, {self.customers} customers a site,"
            f" {self.window_start:%Y-%m-%d} to {self.now.isoformat()}, {self.seconds:.1f}s)"
        ]
        for site in self.sites:
            counts = ", ".join(f"{count} {kind}" for kind, count in site.counts.items())
            lines.append(f"  {site.site_id} {site.domain} {site.stripe_account_id}: {counts}")
        return lines


def default_now() -> datetime:
    """The current UTC time truncated to the hour: stable across runs within one hour."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def generate_demo_store(
    out_dir: Path,
    *,
    customers: int = 2000,
    seed: int = 7,
    now: datetime | None = None,
    sites: int = 2,
    months: int = 14,
) -> DemoSummary:
    """Write the demo store under `out_dir` and return what it holds.

    Layout: `out_dir/stripe/acct_<16>/{charges,refunds,disputes,invoices,invoice_payments,
    customers,subscriptions,checkout_sessions,events}.json` (JSON arrays, newest first) plus
    `account.json` (one object) for each site, and
    `out_dir/trace/{sites,touchpoints,identities,ad_spend}.csv`.
    `customers` is per site and yields about 7.5 charges each. `now` (default: this hour,
    UTC; a naive value is read as UTC) ends the history. `sites` is 1 (site_a) or 2.

    The `stripe` and `trace` folders are rebuilt from scratch beside each other and swapped
    in at the end, so a failed run never leaves half a store; other content of `out_dir` is
    left alone.
    """
    if not 1 <= sites <= len(SITES):
        raise ValueError(f"sites={sites} is not supported; choose 1 to {len(SITES)}")
    if months < 2:
        raise ValueError(f"months={months} is too short; use at least 2")
    now = default_now() if now is None else _as_utc(now)
    started = time.perf_counter()

    out_dir = Path(out_dir)
    build = out_dir / ".demo-build"
    if build.exists():
        shutil.rmtree(build)
    stripe_dir, trace_dir = build / STRIPE_DIR, build / TRACE_DIR
    stripe_dir.mkdir(parents=True)
    trace_dir.mkdir()

    summaries = []
    with (
        open(trace_dir / "sites.csv", "w", encoding="utf-8", newline="") as sites_file,
        open(trace_dir / "touchpoints.csv", "w", encoding="utf-8", newline="") as touch_file,
        open(trace_dir / "identities.csv", "w", encoding="utf-8", newline="") as ident_file,
        open(trace_dir / "ad_spend.csv", "w", encoding="utf-8", newline="") as spend_file,
    ):
        sites_csv = open_csv(sites_file, SITES_HEADER)
        touch_csv = open_csv(touch_file, TOUCHPOINTS_HEADER)
        ident_csv = open_csv(ident_file, IDENTITIES_HEADER)
        spend_csv = open_csv(spend_file, AD_SPEND_HEADER)

        for slot, site in enumerate(SITES[:sites]):
            account = account_id(seed, slot)
            plan = plan_site(
                random.Random(f"trace-demo:{seed}:{site.site_id}:plan"),
                site,
                customers,
                now,
                months,
            )
            folder = stripe_dir / account
            folder.mkdir()
            counts = SiteRenderer(site, account, slot, seed, folder).render(plan)

            inputs = TraceInputs(site, seed, plan.now)
            inputs.add_plan(plan)
            counts["touchpoints"], counts["identities"] = inputs.write(touch_csv, ident_csv)
            counts["ad_spend"] = write_ad_spend(spend_csv, site, seed, plan.window_start, plan.now)
            sites_csv.writerow((site.site_id, site.domain, account))
            log.info("Generated %s (%s): %s", site.site_id, account, counts)
            summaries.append(SiteSummary(site.site_id, site.domain, account, counts))

    for name in (STRIPE_DIR, TRACE_DIR):
        target = out_dir / name
        if target.exists():
            shutil.rmtree(target)
        (build / name).rename(target)
    build.rmdir()

    return DemoSummary(
        out_dir=out_dir,
        stripe_dir=out_dir / STRIPE_DIR,
        trace_dir=out_dir / TRACE_DIR,
        seed=seed,
        now=now,
        window_start=window_start_of(now, months),
        customers=customers,
        months=months,
        sites=tuple(summaries),
        seconds=time.perf_counter() - started,
    )


def _as_utc(moment: datetime) -> datetime:
    """`moment` in UTC to the whole second; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: `python -m trace_pipelines.demo --out DIR ...`; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the store to")
    parser.add_argument("--customers", type=int, default=2000, help="customers per site")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sites", type=int, default=2, help="1 (site_a) or 2 (site_a, site_b)")
    parser.add_argument("--months", type=int, default=14, help="months of history")
    parser.add_argument(
        "--now",
        type=datetime.fromisoformat,
        default=None,
        help="ISO 8601 end of the history (default: this hour, UTC)",
    )
    args = parser.parse_args(argv)
    try:
        summary = generate_demo_store(
            args.out,
            customers=args.customers,
            seed=args.seed,
            now=args.now,
            sites=args.sites,
            months=args.months,
        )
    except ValueError as error:
        parser.error(str(error))
    print("\n".join(summary.lines()))
    return 0
