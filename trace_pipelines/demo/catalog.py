"""The fixed cast of the demo store: its sites, what they sell, and the channels that bring buyers.

Everything here is constant data. Keeping it apart from the generator means the generator reads
as the steps it performs, and a change of product line or campaign name touches one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Channel:
    """A marketing channel as Trace stores it: `source/medium`, with the campaigns it runs."""

    source: str
    medium: str
    campaigns: tuple[str, ...]
    # Share of new customers this channel acquires; the weights of a site sum to about 1.
    weight: float
    # Daily ad budget per campaign in USD cents; zero for channels nobody pays for.
    daily_budget: int = 0


@dataclass(frozen=True)
class Plan:
    """A monthly subscription plan: what a renewal invoice bills."""

    key: str
    name: str
    amounts: dict[str, int]  # currency -> monthly price in minor units


@dataclass(frozen=True)
class Site:
    """One demo merchant: a Trace site with its own connected Stripe account."""

    site_id: str
    domain: str
    business_name: str
    statement_descriptor: str
    # One-off products as (name, USD cents, EUR cents).
    products: tuple[tuple[str, int, int], ...]
    basic_plan: Plan
    premium_plan: Plan
    channels: tuple[Channel, ...]
    # Events of this site are rendered in this Stripe API version; see `LEGACY_API_VERSION`.
    api_version: str


# The version the pinned Stripe SDK speaks: invoices link to money through invoice payments.
CURRENT_API_VERSION = "2026-10-28.endive"
# An account still pinned before `2025-03-31.basil`: its events carry `charge.invoice`,
# `invoice.charge`, `invoice.subscription` and `invoice.payment_intent`, and no `parent`.
LEGACY_API_VERSION = "2024-06-20"

DIRECT = ("(direct)", "(none)")
PAID_MEDIUMS = frozenset({"cpc", "paid_social"})

SITES: tuple[Site, ...] = (
    Site(
        site_id="site_a",
        domain="northwind-coffee.example",
        business_name="Northwind Coffee",
        statement_descriptor="NORTHWIND COFFEE",
        products=(
            ("House Blend 340g", 1450, 1390),
            ("Single Origin Ethiopia 340g", 1800, 1750),
            ("Espresso Roast 1kg", 3200, 2990),
            ("Decaf Colombia 340g", 1600, 1550),
            ("Pour-over Starter Kit", 4600, 4390),
            ("Burr Grinder", 12900, 11900),
            ("Gift Box: Three Origins", 5200, 4900),
        ),
        basic_plan=Plan("club", "Coffee Club", {"usd": 1800, "eur": 1700}),
        premium_plan=Plan("club_plus", "Coffee Club Plus", {"usd": 3200, "eur": 2900}),
        channels=(
            Channel("google", "cpc", ("brand-search", "coffee-beans-generic"), 0.28, 5200),
            Channel(
                "facebook", "paid_social", ("prospecting-lookalike", "cart-retargeting"), 0.20, 3900
            ),
            Channel("bing", "cpc", ("brand-search",), 0.06, 1300),
            Channel("reddit", "post", ("r-coffee-roaster-ama",), 0.08),
            Channel("newsletter", "email", ("weekly-roast", "winback"), 0.12),
            Channel(*DIRECT, ("",), 0.26),
        ),
        api_version=CURRENT_API_VERSION,
    ),
    Site(
        site_id="site_b",
        domain="lumen-yoga.example",
        business_name="Lumen Yoga",
        statement_descriptor="LUMEN YOGA",
        products=(
            ("Drop-in Class", 2200, 2000),
            ("5-Class Pack", 9500, 8900),
            ("10-Class Pack", 17500, 16500),
            ("Cork Yoga Mat", 7800, 7400),
            ("Weekend Workshop", 6500, 5900),
            ("Gift Card", 5000, 5000),
        ),
        basic_plan=Plan("studio", "Studio Membership", {"usd": 2900, "eur": 2700}),
        premium_plan=Plan("unlimited", "Unlimited Membership", {"usd": 4900, "eur": 4500}),
        channels=(
            Channel("google", "cpc", ("brand-search", "yoga-classes-near-me"), 0.24, 4100),
            Channel("facebook", "paid_social", ("new-student-offer", "retargeting"), 0.25, 4700),
            Channel("bing", "cpc", ("brand-search",), 0.05, 900),
            Channel("reddit", "post", ("r-yoga-beginner-thread",), 0.07),
            Channel("newsletter", "email", ("monthly-flow", "winback"), 0.14),
            Channel(*DIRECT, ("",), 0.25),
        ),
        api_version=LEGACY_API_VERSION,
    ),
)

FIRST_NAMES = (
    "Maya",
    "Liam",
    "Sofia",
    "Noah",
    "Aisha",
    "Mateo",
    "Hana",
    "Oliver",
    "Priya",
    "Lucas",
    "Elena",
    "Kenji",
    "Amara",
    "Jonas",
    "Zara",
    "Diego",
    "Ingrid",
    "Omar",
    "Chloe",
    "Tariq",
    "Freya",
    "Rafael",
    "Mei",
    "Samuel",
    "Leila",
    "Felix",
    "Nadia",
    "Hugo",
    "Yara",
    "Theo",
    "Ines",
    "Kwame",
    "Astrid",
    "Luca",
    "Selin",
    "Arjun",
    "Clara",
    "Emeka",
    "Rosa",
    "Ivan",
)
LAST_NAMES = (
    "Chen",
    "Okafor",
    "Garcia",
    "Nakamura",
    "Schmidt",
    "Haddad",
    "Kowalski",
    "Silva",
    "Nguyen",
    "Johansson",
    "Patel",
    "Rossi",
    "Dubois",
    "Murphy",
    "Kim",
    "Novak",
    "Mensah",
    "Larsen",
    "Ortega",
    "Yilmaz",
    "Fischer",
    "Costa",
    "Ahmed",
    "Bauer",
    "Moreau",
    "Tanaka",
    "Byrne",
    "Ivanova",
    "Santos",
    "Weber",
    "Lindqvist",
    "Mwangi",
    "Romano",
    "Park",
    "Jensen",
    "Alvarez",
)
# Reserved example domains, so no generated address can belong to a real person.
MAIL_DOMAINS = ("example.com", "example.net", "example.org", "mail.example")

# Offsets a visitor's browser may report; most traffic arrives in UTC.
TOUCH_OFFSETS_MINUTES = (0, 0, 0, 0, 0, 0, 60, 120, 120, -300, -480, 330, 540)

FAILURES = (
    ("card_declined", "Your card was declined."),
    ("insufficient_funds", "Your card has insufficient funds."),
    ("expired_card", "Your card has expired."),
    ("incorrect_cvc", "Your card's security code is incorrect."),
)
REFUND_REASONS = ("requested_by_customer", "requested_by_customer", "duplicate", None)
DISPUTE_REASONS = ("fraudulent", "product_not_received", "subscription_canceled", "general")
CARD_BRANDS = ("visa", "visa", "visa", "mastercard", "mastercard", "amex")
