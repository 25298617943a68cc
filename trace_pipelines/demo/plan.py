"""Who buys what and when on one demo site: the plan the object builders then render.

Planning first and rendering second keeps every scenario the pipeline must survive countable
before a single object is written. Rare scenarios (guests, shared emails, pre-window
subscribers, euro buyers, visitors without touchpoints, ...) are dealt out as exact counts
with a floor of one or two, so even a 60-customer store contains each of them; common choices
are plain draws from the site's seeded generator.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from trace_pipelines.demo.catalog import (
    FIRST_NAMES,
    LAST_NAMES,
    MAIL_DOMAINS,
    TOUCH_OFFSETS_MINUTES,
    Channel,
    Site,
)

HOUR = 3_600
DAY = 86_400
MONTH = 2_629_746  # an average Gregorian month, for spreading dates, never for billing
CHARGES_PER_CUSTOMER = 7.5
# New customers per month grow about e**GROWTH-fold (3.3x) from the first month to the last.
GROWTH = 1.2
MIN_CUSTOMERS = 20

# How the first purchase of each kind of customer carries (or lacks) a Trace visitor id.
#   session      - only in the Checkout Session's metadata
#   charge       - on the PaymentIntent and so on the charge (via a Session or not)
#   subscription - in the Session's and the subscription's metadata
#   invoice      - only in each invoice's metadata, stamped there by the merchant
#   email        - nowhere; the customer's email matches a Trace identity
#   none         - nowhere, and no identity either: unattributed
BUYER_PATHS = {"session": 0.35, "charge": 0.25, "email": 0.25, "none": 0.15}
GUEST_PATHS = {"email": 0.7, "none": 0.3}
SUBSCRIBER_PATHS = {
    "session": 0.37,
    "subscription": 0.23,
    "invoice": 0.05,
    "email": 0.20,
    "none": 0.15,
}
LEGACY_PATHS = {"session": 0.5, "subscription": 0.3, "email": 0.2}


@dataclass(slots=True)
class Visitor:
    """A browser Trace knows by its visitor id, with its touchpoints and maybe an identity."""

    visitor_id: str
    channel: Channel
    campaign: str
    # "before": the first touch precedes the purchase; "after_only": every touch follows it;
    # "none": Trace never recorded a touch for this visitor.
    touch_mode: str
    offset: timezone
    identified_at: int | None = None
    identity_email: str | None = None


@dataclass(slots=True)
class SubscriptionPlan:
    """The billing history of one subscription up to `now`."""

    plan_key: str
    period_starts: list[int]  # one paid invoice per entry, the first at creation
    period_end: int  # end of the last billed period
    upgrade_period: int | None  # index of the period in which the customer upgraded
    upgrade_at: int | None
    canceled_at: int | None
    ended_at: int | None


@dataclass(slots=True)
class Persona:
    """One customer of the site (a Stripe customer, or a guest known only by email)."""

    index: int
    kind: str  # "buyer", "subscriber" or "legacy" (subscribed before the history window)
    path: str
    acquired_at: int
    name: str
    email: str  # the canonical address, lowercase
    stripe_email: str  # as Stripe holds it, sometimes with other case or stray spaces
    guest: bool
    guest_email_in: str  # for guests: "billing", "receipt" or "both"
    currency: str
    pays_by_sepa: bool
    # For the "charge" path: whether the first purchase went through a Checkout Session
    # that carried the visitor id to the PaymentIntent but kept none in its own metadata.
    charge_via_session: bool = False
    visitors: list[Visitor] = field(default_factory=list)
    purchase_times: list[int] = field(default_factory=list)
    subscription: SubscriptionPlan | None = None


@dataclass(slots=True)
class SitePlan:
    """Everything decided about one site before its objects are written."""

    personas: list[Persona]
    window_start: int
    now: int
    prospects: list[Visitor]  # visitors who never bought, some with an identity
    prospect_times: list[int]


def window_start_of(now: datetime, months: int) -> datetime:
    """Midnight UTC on the first day of the month `months - 1` months before `now`'s month."""
    index = now.year * 12 + now.month - 1 - (months - 1)
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def add_months(moment: datetime, count: int) -> datetime:
    """`moment` moved by `count` calendar months, clamped to the month's last day like Stripe."""
    index = moment.year * 12 + moment.month - 1 + count
    year, month = index // 12, index % 12 + 1
    next_index = index + 1
    last_day = (datetime(next_index // 12, next_index % 12 + 1, 1) - timedelta(days=1)).day
    return moment.replace(year=year, month=month, day=min(moment.day, last_day))


def deal(rng: random.Random, count: int, shares: dict[str, float], floor: int = 1) -> list[str]:
    """`count` labels in the given shares, each at least `floor` times, in shuffled order."""
    labels = list(shares)
    counts = {label: max(floor, round(count * shares[label])) for label in labels[1:]}
    counts[labels[0]] = count - sum(counts.values())
    if counts[labels[0]] < floor:
        raise ValueError(f"cannot deal {count} items into {labels} with at least {floor} each")
    dealt = [label for label in labels for _ in range(counts[label])]
    rng.shuffle(dealt)
    return dealt


def pick_indices(rng: random.Random, population: list[int], share: float, floor: int) -> set[int]:
    """A random `share` of `population` (at least `floor` of them, at most all)."""
    size = min(len(population), max(floor, round(len(population) * share)))
    return set(rng.sample(population, size))


def _growth_time(rng: random.Random, start: int, end: int) -> int:
    """A moment in [start, end) drawn so that later months are denser, as a growing shop's."""
    unit = rng.random()
    fraction = math.log1p(unit * math.expm1(GROWTH)) / GROWTH
    return start + int(fraction * (end - start))


def _visitor_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _pick_channel(rng: random.Random, site: Site) -> tuple[Channel, str]:
    channel = rng.choices(site.channels, weights=[c.weight for c in site.channels])[0]
    return channel, rng.choice(channel.campaigns)


def _offset(rng: random.Random) -> timezone:
    return timezone(timedelta(minutes=rng.choice(TOUCH_OFFSETS_MINUTES)))


def _email_variant(rng: random.Random, email: str) -> str:
    """The same address as a person might type it: capitalised, shouted or padded."""
    local, domain = email.split("@")
    style = rng.randrange(3)
    if style == 0:
        return ".".join(part.capitalize() for part in local.split(".")) + "@" + domain
    if style == 1:
        return email.upper()
    return " " + local.capitalize() + "@" + domain.capitalize() + " "


def _plan_subscription(
    rng: random.Random, persona: Persona, churns: bool, now: int, window_start: int
) -> SubscriptionPlan:
    """Bill a subscription monthly from its start; a churner cancels after some periods."""
    anchor = datetime.fromtimestamp(persona.acquired_at, UTC)
    cancel_after = None
    if persona.kind == "legacy":
        # Long-time subscribers mostly stay; those who leave do so inside the window, so
        # every one of them renews at least once in it.
        months_before = 1 + int((window_start - persona.acquired_at) / MONTH)
        if rng.random() < 0.25:
            cancel_after = months_before + rng.randint(1, 8)
    elif churns:
        # Churners leave after a few months, and always by the end of a period already over,
        # so each of them shows a finished cancellation.
        completed = 0
        while add_months(anchor, completed + 1).timestamp() <= now:
            completed += 1
        cancel_after = max(1, min(1 + int(rng.expovariate(1 / 5)), completed))

    starts: list[int] = []
    while True:
        start = int(add_months(anchor, len(starts)).timestamp())
        if start > now or (cancel_after is not None and len(starts) >= cancel_after):
            break
        starts.append(start)
    period_end = int(add_months(anchor, len(starts)).timestamp())

    canceled_at = ended_at = None
    if cancel_after is not None and len(starts) == cancel_after:
        # The customer asks to cancel during the last paid period; it ends at the period's end.
        requested = starts[-1] + rng.randint(DAY, 25 * DAY)
        if requested <= now:
            canceled_at = requested
            ended_at = period_end if period_end <= now else None

    return SubscriptionPlan(
        plan_key="premium" if rng.random() < 0.3 else "basic",
        period_starts=starts,
        period_end=period_end,
        upgrade_period=None,
        upgrade_at=None,
        canceled_at=canceled_at,
        ended_at=ended_at,
    )


def _plan_upgrades(rng: random.Random, personas: list[Persona]) -> None:
    """Move some basic subscribers to the premium plan in the middle of a period."""
    candidates = [
        p.index
        for p in personas
        if p.subscription is not None
        and p.subscription.plan_key == "basic"
        and len(p.subscription.period_starts) >= 3
    ]
    chosen = pick_indices(rng, candidates, 0.12, floor=1)
    for persona in personas:
        if persona.index in chosen:
            plan = persona.subscription
            assert plan is not None  # only subscribers are candidates
            # Never in the last period, so the upgrade is over before `now`.
            plan.upgrade_period = rng.randrange(1, len(plan.period_starts) - 1)
            start = plan.period_starts[plan.upgrade_period]
            plan.upgrade_at = start + rng.randint(3 * DAY, 20 * DAY)


def plan_site(
    rng: random.Random, site: Site, customers: int, now: datetime, months: int
) -> SitePlan:
    """Decide every customer of `site`: kind, attribution path, visitors and purchase dates."""
    if customers < MIN_CUSTOMERS:
        raise ValueError(
            f"customers={customers} is too few to hold every demo scenario; "
            f"use at least {MIN_CUSTOMERS}"
        )
    now_ts = int(now.timestamp())
    window_start = int(window_start_of(now, months).timestamp())

    kinds = deal(rng, customers, {"buyer": 0.67, "subscriber": 0.30, "legacy": 0.03}, floor=2)
    buyer_indices = [i for i, kind in enumerate(kinds) if kind == "buyer"]
    guests = pick_indices(rng, buyer_indices, 0.15, floor=3)
    guest_email_in = dict(
        zip(
            sorted(guests),
            deal(rng, len(guests), {"both": 0.4, "billing": 0.4, "receipt": 0.2}),
            strict=True,
        )
    )
    paths: dict[int, str] = {}
    for indices, shares in (
        ([i for i in buyer_indices if i not in guests], BUYER_PATHS),
        (sorted(guests), GUEST_PATHS),
        ([i for i, kind in enumerate(kinds) if kind == "subscriber"], SUBSCRIBER_PATHS),
        ([i for i, kind in enumerate(kinds) if kind == "legacy"], LEGACY_PATHS),
    ):
        floor = 1 if len(indices) >= len(shares) else 0
        paths.update(zip(indices, deal(rng, len(indices), shares, floor=floor), strict=True))
    euro = pick_indices(
        rng, [i for i, kind in enumerate(kinds) if kind != "legacy"], 0.035, floor=1
    )
    charge_buyers = sorted(i for i in buyer_indices if paths[i] == "charge")
    halves = deal(rng, len(charge_buyers), {"yes": 0.5, "no": 0.5}, floor=len(charge_buyers) // 2)
    via_session = dict(zip(charge_buyers, halves, strict=True))

    personas = []
    for index, kind in enumerate(kinds):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = f"{first}.{last}{index}@{rng.choice(MAIL_DOMAINS)}".lower()
        if kind == "legacy":
            acquired_at = window_start - rng.randint(4 * MONTH, 16 * MONTH)
        else:
            acquired_at = _growth_time(rng, window_start, now_ts - HOUR)
        personas.append(
            Persona(
                index=index,
                kind=kind,
                path=paths[index],
                acquired_at=acquired_at,
                name=f"{first} {last}",
                email=email,
                stripe_email=email,
                guest=index in guests,
                guest_email_in=guest_email_in.get(index, "both"),
                currency="eur" if index in euro else "usd",
                pays_by_sepa=index in euro and rng.random() < 0.4,
                charge_via_session=via_session.get(index) == "yes",
            )
        )

    _plan_visitors(rng, site, personas, now_ts)
    subscribers = [p.index for p in personas if p.kind == "subscriber"]
    seasoned = [
        p.index for p in personas if p.kind == "subscriber" and p.acquired_at < now_ts - 70 * DAY
    ]
    churners = {index for index in subscribers if rng.random() < 0.4}
    if seasoned and not churners.intersection(seasoned):
        churners.add(rng.choice(seasoned))
    for persona in personas:
        if persona.kind != "buyer":
            churns = persona.index in churners
            persona.subscription = _plan_subscription(rng, persona, churns, now_ts, window_start)
    _plan_upgrades(rng, personas)
    _plan_purchases(rng, personas, customers, now_ts)

    prospects, prospect_times = _plan_prospects(rng, site, customers, window_start, now_ts)
    # Writing customers in the order they arrived keeps related objects near each other.
    personas.sort(key=lambda p: (p.acquired_at, p.index))
    return SitePlan(personas, window_start, now_ts, prospects, prospect_times)


def _plan_visitors(rng: random.Random, site: Site, personas: list[Persona], now: int) -> None:
    """Give each attributable customer a visitor, identities, shared emails and case quirks."""
    for persona in personas:
        if persona.path == "none":
            continue
        channel, campaign = _pick_channel(rng, site)
        visitor = Visitor(_visitor_id(rng), channel, campaign, "before", _offset(rng))
        # Email-path customers need an identity; tagged ones often have one as well.
        if persona.path == "email" or rng.random() < 0.4:
            visitor.identity_email = persona.email
            if rng.random() < 0.5:
                visitor.identified_at = persona.acquired_at - rng.randint(HOUR, 30 * DAY)
            else:
                visitor.identified_at = persona.acquired_at + rng.randint(5, 300)
        persona.visitors.append(visitor)

    identified = [p.index for p in personas if p.visitors and p.visitors[0].identity_email]
    by_index = {p.index: p for p in personas}
    for index in sorted(pick_indices(rng, identified, 0.04, floor=2)):
        # The same person on a second device, identified later with the same email.
        persona = by_index[index]
        first = persona.visitors[0]
        channel, campaign = _pick_channel(rng, site)
        later = min(now - 60, persona.acquired_at + rng.randint(10 * DAY, 120 * DAY))
        second = Visitor(_visitor_id(rng), channel, campaign, "before", _offset(rng))
        second.identity_email = persona.email
        second.identified_at = max(later, first.identified_at + 60)
        persona.visitors.append(second)

    quirky = sorted(pick_indices(rng, identified, 0.2, floor=2))
    rng.shuffle(quirky)
    for position, index in enumerate(quirky):
        persona = by_index[index]
        variant = _email_variant(rng, persona.email)
        # The first differs on the Stripe side and the second in Trace's identity, so both
        # directions occur; the rest mostly on the Stripe side, where typing happens.
        if position == 0 or (position > 1 and rng.random() < 0.7):
            persona.stripe_email = variant
        else:
            persona.visitors[0].identity_email = variant

    with_visitor = [p.index for p in personas if p.visitors]
    silent = pick_indices(rng, with_visitor, 0.02, floor=2)
    # Late visitors are among those whose id is on a Stripe object, so the pipeline meets a
    # tagged purchase whose every touch came after it.
    tagged = [i for i in with_visitor if i not in silent and by_index[i].path != "email"]
    late = pick_indices(rng, tagged, 0.03, floor=2)
    for index in sorted(silent | late):
        by_index[index].visitors[0].touch_mode = "none" if index in silent else "after_only"


def _plan_purchases(rng: random.Random, personas: list[Persona], customers: int, now: int) -> None:
    """Spread one-off purchases so the site holds about 7.5 charges per customer."""
    subscription_charges = 0
    for persona in personas:
        plan = persona.subscription
        if plan is not None:
            subscription_charges += len(plan.period_starts) + (plan.upgrade_at is not None)
    buyers = [p for p in personas if p.kind == "buyer"]
    target = round(customers * CHARGES_PER_CUSTOMER)
    extra = max(0, target - subscription_charges - len(buyers))

    # Repeat purchases go to loyal buyers in proportion to how long they have been around.
    weights = []
    for persona in buyers:
        activity = 0.0 if rng.random() < 0.3 else rng.lognormvariate(0, 0.8)
        weights.append((now - persona.acquired_at) * activity)
    total = sum(weights) or 1.0
    for persona, weight in zip(buyers, weights, strict=True):
        share = extra * weight / total
        repeats = int(share) + (rng.random() < share - int(share))
        later = sorted(rng.randint(persona.acquired_at + HOUR, now) for _ in range(repeats))
        persona.purchase_times = [persona.acquired_at, *later]


def _plan_prospects(
    rng: random.Random, site: Site, customers: int, window_start: int, now: int
) -> tuple[list[Visitor], list[int]]:
    """Visitors who browsed and never bought; a fifth of them left an email (newsletter)."""
    prospects, times = [], []
    for number in range(customers // 2):
        channel, campaign = _pick_channel(rng, site)
        visitor = Visitor(_visitor_id(rng), channel, campaign, "before", _offset(rng))
        moment = _growth_time(rng, window_start, now - HOUR)
        if rng.random() < 0.2:
            visitor.identity_email = f"reader{number}@{rng.choice(MAIL_DOMAINS)}"
            visitor.identified_at = moment + rng.randint(60, HOUR)
        prospects.append(visitor)
        times.append(moment)
    return prospects, times
