"""Turn one site's plan into Stripe objects, streamed into that account's fixture files.

The renderer walks the customers in the order they arrived and, for each, writes every object
Stripe would hold: the customer, Checkout Sessions, subscriptions, invoices and their invoice
payments, charges, refunds, disputes, and the events of the last 30 days. What happens to a
charge afterwards (refunds, a dispute) is decided before the charge is written, so the charge
goes out once, already in its final state, and nothing needs to be kept to patch it later.

Not modelled: renewals that fail and are retried (every invoice here is paid at the first
attempt), PaymentIntents as objects of their own (only their ids appear), and event types
beyond the nine Trace subscribes to; the dunning path of the pipeline gets no demo data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trace_pipelines.demo import stripe_shapes as shapes
from trace_pipelines.demo.catalog import (
    CARD_BRANDS,
    DISPUTE_REASONS,
    FAILURES,
    LEGACY_API_VERSION,
    REFUND_REASONS,
    Site,
)
from trace_pipelines.demo.ids import IdFactory, random_token
from trace_pipelines.demo.plan import DAY, HOUR, Persona, SitePlan, add_months
from trace_pipelines.demo.writers import JsonArrayWriter, dumps

FIXTURE_FILES = (
    "charges",
    "refunds",
    "disputes",
    "invoices",
    "invoice_payments",
    "customers",
    "subscriptions",
    "checkout_sessions",
    "events",
)
EVENT_WINDOW = 30 * DAY
# Scenarios every site must contain at least once. They are forced onto the first eligible
# charges old enough for the refund or dispute to have played out before `now`.
FORCED_AFTERMATHS = ("multi_refund", "full_refund", "partial_refund", "dispute_won", "dispute_lost")
FORCED_OUTCOMES = ("failed", "uncaptured")
FORCE_AGE = 120 * DAY


@dataclass(slots=True)
class _Aftermath:
    """What happens to a succeeded charge after it is made."""

    refunds: list[tuple[int, int]]  # (created, amount), oldest first
    dispute: tuple[int, int, str, str] | None  # (created, closes_at, status, reason)


@dataclass(slots=True)
class _Bill:
    """One paid invoice of a subscription, before it is rendered."""

    created: int
    paid_at: int
    amount: int
    reason: str  # the invoice's billing_reason
    price: tuple[dict[str, Any], dict[str, Any], str]  # (price, plan, plan name)
    period: tuple[int, int]  # what the line bills
    previous_start: int  # start of the period before, reported on renewal invoices
    proration: bool


@dataclass(slots=True)
class _Wallet:
    """How one customer pays: the payment method id and its charge-ready details."""

    payment_method: str
    details: dict[str, Any]
    brand: str
    country: str
    postal_code: str


class SiteRenderer:
    """Writes the Stripe fixtures of one site into `folder` (its `acct_...` directory)."""

    def __init__(self, site: Site, account_id: str, slot: int, seed: int, folder: Path) -> None:
        self.site = site
        self.account_id = account_id
        self.rng = random.Random(f"trace-demo:{seed}:{site.site_id}:objects")
        self.ids = IdFactory(
            random.Random(f"trace-demo:{seed}:{site.site_id}:ids"), slot, account_id
        )
        self.legacy = site.api_version == LEGACY_API_VERSION
        self.out = {name: JsonArrayWriter(folder / f"{name}.json") for name in FIXTURE_FILES}
        self.folder = folder
        self.now = 0
        self.window_start = 0
        self.event_cutoff = 0
        self._forced_aftermaths = list(FORCED_AFTERMATHS)
        self._forced_outcomes = list(FORCED_OUTCOMES)
        self._prices: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any], str]] = {}

    # -- the whole site --------------------------------------------------------------------

    def render(self, plan: SitePlan) -> dict[str, int]:
        """Write every object of the plan; return the number of objects per fixture file."""
        self.now = plan.now
        self.window_start = plan.window_start
        self.event_cutoff = plan.now - EVENT_WINDOW
        first_moment = min(plan.window_start, plan.personas[0].acquired_at) - 60 * DAY
        self._make_prices(first_moment)

        for persona in plan.personas:
            if persona.kind == "buyer":
                self._render_buyer(persona)
            else:
                self._render_subscriber(persona)

        counts = {name: writer.close() for name, writer in self.out.items()}
        account = shapes.account(
            account_id=self.account_id,
            created=first_moment,
            email=f"billing@{self.site.domain}",
            domain=self.site.domain,
            business_name=self.site.business_name,
            statement_descriptor=self.site.statement_descriptor,
        )
        # The account is one object, not a list: `GET /v1/account` returns it bare.
        (self.folder / "account.json").write_text(dumps(account) + "\n", encoding="utf-8")
        counts["account"] = 1
        return counts

    def _make_prices(self, created: int) -> None:
        for plan in (self.site.basic_plan, self.site.premium_plan):
            product_id = self.ids.new("prod_", 14)
            for currency, amount in sorted(plan.amounts.items()):
                price = shapes.price(
                    price_id=self.ids.new("price_"),
                    product_id=product_id,
                    created=created,
                    currency=currency,
                    unit_amount=amount,
                    nickname=plan.name,
                )
                key = "basic" if plan is self.site.basic_plan else "premium"
                self._prices[(key, currency)] = (price, shapes.plan_of(price), plan.name)

    # -- customers -------------------------------------------------------------------------

    def _wallet(self, persona: Persona) -> _Wallet:
        rng = self.rng
        europe = persona.currency == "eur"
        country = rng.choice(("DE", "FR", "NL", "IE")) if europe else "US"
        postal = f"{rng.randint(10000, 99999)}"
        if persona.pays_by_sepa:
            details = shapes.sepa_details(
                country=country,
                last4=f"{rng.randint(0, 9999):04d}",
                fingerprint=random_token(rng, 16),
                mandate=self.ids.new("mandate_"),
            )
            return _Wallet(self.ids.new("pm_"), details, "sepa_debit", country, postal)
        brand = rng.choice(CARD_BRANDS)
        details = shapes.card_details(
            brand=brand,
            last4=f"{rng.randint(0, 9999):04d}",
            exp_month=rng.randint(1, 12),
            exp_year=datetime.fromtimestamp(self.now, UTC).year + rng.randint(1, 5),
            fingerprint=random_token(rng, 16),
            country=country,
        )
        return _Wallet(self.ids.new("pm_"), details, brand, country, postal)

    def _write_customer(
        self,
        persona: Persona,
        customer_id: str,
        created: int,
        invoices: int,
        wallet: _Wallet,
        prefix: str,
    ) -> None:
        subscribed = persona.subscription is not None
        customer = shapes.customer(
            customer_id=customer_id,
            created=created,
            email=persona.stripe_email,
            name=persona.name,
            currency=persona.currency if subscribed else None,
            invoice_prefix=prefix,
            next_invoice_sequence=invoices + 1,
            default_payment_method=wallet.payment_method if subscribed else None,
            country=wallet.country,
            postal_code=wallet.postal_code,
        )
        self.out["customers"].add(customer, created)
        if created >= self.event_cutoff:
            self._event(created, "customer.created", {**customer, "next_invoice_sequence": 1})

    def _render_buyer(self, persona: Persona) -> None:
        wallet = self._wallet(persona)
        customer_id = None
        if not persona.guest:
            customer_id = self.ids.new("cus_", 14)
        for number, moment in enumerate(persona.purchase_times):
            self._purchase(persona, moment, number == 0, customer_id, wallet)
        if customer_id is not None:
            created = persona.acquired_at - self.rng.randint(2, 40)
            self._write_customer(persona, customer_id, created, 0, wallet, self._prefix())

    def _prefix(self) -> str:
        return f"{self.rng.getrandbits(32):08X}"

    # -- one-off purchases -----------------------------------------------------------------

    def _purchase(
        self,
        persona: Persona,
        moment: int,
        first: bool,
        customer_id: str | None,
        wallet: _Wallet,
    ) -> None:
        rng = self.rng
        path = persona.path if first or rng.random() < 0.7 else "plain"
        visitor = persona.visitors[0].visitor_id if persona.visitors else None

        if path == "session":
            via_session = True
        elif first and path == "charge":
            via_session = persona.charge_via_session
        else:
            via_session = rng.random() < 0.5

        # Checkout retries a declined card on its own page, so only direct payments end in a
        # failed or an uncaptured (manual-capture) charge.
        outcome = "succeeded"
        if not via_session and not persona.pays_by_sepa:
            if self._forced_outcomes and self._forceable(moment):
                outcome = self._forced_outcomes.pop(0)
            else:
                draw = rng.random()
                outcome = "failed" if draw < 0.07 else "uncaptured" if draw < 0.08 else outcome

        name, usd, eur = rng.choice(self.site.products)
        quantity = rng.choices((1, 2, 3), weights=(85, 10, 5))[0]
        amount = (eur if persona.currency == "eur" else usd) * quantity
        description = name if quantity == 1 else f"{quantity} x {name}"
        payment_intent = self.ids.new("pi_")

        if via_session:
            session = shapes.checkout_session(
                session_id=self.ids.checkout_session(),
                created=moment - rng.randint(60, 900),
                domain=self.site.domain,
                mode="payment",
                amount=amount,
                currency=persona.currency,
                customer_id=customer_id,
                email=persona.stripe_email,
                name=persona.name,
                country=wallet.country,
                metadata={"trace_visitor_id": visitor} if path == "session" else {},
                payment_intent=payment_intent,
                subscription_id=None,
                invoice_id=None,
            )
            self.out["checkout_sessions"].add(session, session["created"])
            if moment >= self.event_cutoff:
                self._event(moment, "checkout.session.completed", session)

        if persona.guest:
            billing_email = persona.stripe_email if persona.guest_email_in != "receipt" else None
            receipt_email = persona.stripe_email if persona.guest_email_in != "billing" else None
        else:
            billing_email = receipt_email = persona.stripe_email
        self._charge(
            persona=persona,
            wallet=wallet,
            created=moment,
            amount=amount,
            customer_id=customer_id,
            description=description,
            metadata={"trace_visitor_id": visitor} if path == "charge" else {},
            payment_intent=payment_intent,
            outcome=outcome,
            billing_email=billing_email,
            receipt_email=receipt_email,
            invoice_id=None,
        )

    # -- charges and what follows them -----------------------------------------------------

    def _forceable(self, moment: int) -> bool:
        """Whether a forced scenario may land here: inside the window and long enough ago."""
        return self.window_start <= moment < self.now - FORCE_AGE

    def _aftermath(self, created: int, amount: int, card: bool) -> _Aftermath:
        rng = self.rng
        kind = None
        if self._forced_aftermaths and self._forceable(created) and card:
            kind = self._forced_aftermaths.pop(0)
        else:
            draw = rng.random()
            if draw < 0.025:
                kind = "full_refund"
            elif draw < 0.04:
                kind = "partial_refund"
            elif draw < 0.045:
                kind = "multi_refund"
            elif draw < 0.051 and card:
                kind = "dispute_won" if rng.random() < 0.45 else "dispute_lost"

        refunds: list[tuple[int, int]] = []
        dispute = None
        if kind == "full_refund":
            refunds = [(created + rng.randint(HOUR, 20 * DAY), amount)]
        elif kind == "partial_refund":
            refunds = [(created + rng.randint(HOUR, 20 * DAY), _part(rng, amount, 0.15, 0.6))]
        elif kind == "multi_refund":
            # Two partial refunds, and for some a third that returns the rest.
            moment = created + rng.randint(HOUR, 5 * DAY)
            first = _part(rng, amount, 0.15, 0.35)
            second = _part(rng, amount, 0.15, 0.35)
            refunds = [(moment, first), (moment + rng.randint(DAY, 10 * DAY), second)]
            if rng.random() < 0.5:
                refunds.append(
                    (refunds[-1][0] + rng.randint(DAY, 10 * DAY), amount - first - second)
                )
        elif kind is not None:
            opened = created + rng.randint(7 * DAY, 45 * DAY)
            closes = opened + rng.randint(20 * DAY, 60 * DAY)
            status = "won" if kind == "dispute_won" else "lost"
            if opened <= self.now:
                dispute = (
                    opened,
                    closes,
                    status if closes <= self.now else "needs_response",
                    rng.choice(DISPUTE_REASONS),
                )
        # A refund dated after `now` has not happened yet.
        return _Aftermath([r for r in refunds if r[0] <= self.now], dispute)

    def _charge(
        self,
        *,
        persona: Persona,
        wallet: _Wallet,
        created: int,
        amount: int,
        customer_id: str | None,
        description: str,
        metadata: dict[str, str],
        payment_intent: str,
        outcome: str,
        billing_email: str | None,
        receipt_email: str | None,
        invoice_id: str | None,
    ) -> str:
        rng = self.rng
        sepa = persona.pays_by_sepa
        # Stripe names bank-debit payments `py_`; card charges are `ch_`.
        charge_id = self.ids.new("py_" if sepa else "ch_")
        succeeded = outcome != "failed"
        captured = outcome == "succeeded"
        failure = rng.choice(FAILURES) if outcome == "failed" else None

        after = _Aftermath([], None)
        if captured:
            after = self._aftermath(created, amount, card=not sepa)
        refunded = sum(value for _, value in after.refunds)
        charge = shapes.charge(
            charge_id=charge_id,
            created=created,
            amount=amount,
            currency=persona.currency,
            customer=customer_id,
            description=description,
            metadata=metadata,
            payment_intent=payment_intent,
            payment_method=wallet.payment_method,
            payment_method_details=wallet.details,
            billing=shapes.billing_details(
                email=billing_email,
                name=persona.name,
                country=wallet.country,
                postal_code=wallet.postal_code,
            ),
            receipt_email=receipt_email,
            status="succeeded" if succeeded else "failed",
            captured=captured,
            amount_refunded=refunded,
            disputed=after.dispute is not None,
            failure=failure,
            balance_transaction=self.ids.new("txn_") if captured else None,
            statement_descriptor=self.site.statement_descriptor,
            receipt_url=(
                f"https://pay.stripe.com/receipts/payment/{self.account_id}/{charge_id}"
                if succeeded
                else None
            ),
            outcome=shapes.outcome(failure=failure, risk_score=rng.randint(2, 60)),
        )
        self.out["charges"].add(charge, created)

        if succeeded and created >= self.event_cutoff:
            snapshot = {**charge, "amount_refunded": 0, "refunded": False, "disputed": False}
            self._charge_event(created, "charge.succeeded", snapshot, invoice_id)
        returned = 0
        for moment, value in after.refunds:
            returned += value
            refund = shapes.refund(
                # Refunds of bank debits are `pyr_`, like the payments they return.
                refund_id=self.ids.new("pyr_" if sepa else "re_"),
                created=moment,
                amount=value,
                currency=persona.currency,
                charge_id=charge_id,
                payment_intent=payment_intent,
                balance_transaction=self.ids.new("txn_"),
                reason=rng.choice(REFUND_REASONS),
                card=not sepa,
            )
            self.out["refunds"].add(refund, moment)
            if moment >= self.event_cutoff:
                snapshot = {**charge, "amount_refunded": returned, "refunded": returned == amount}
                self._charge_event(moment, "charge.refunded", snapshot, invoice_id)
        if after.dispute is not None:
            self._dispute(charge, after.dispute, wallet, persona, invoice_id)
        return charge_id

    def _dispute(
        self,
        charge: dict[str, Any],
        plan: tuple[int, int, str, str],
        wallet: _Wallet,
        persona: Persona,
        invoice_id: str | None,
    ) -> None:
        opened, closes, status, reason = plan
        fields = {
            "dispute_id": self.ids.new("dp_"),
            "created": opened,
            "amount": charge["amount"],
            "currency": charge["currency"],
            "charge_id": charge["id"],
            "payment_intent": charge["payment_intent"],
            "reason": reason,
            "brand": wallet.brand,
            "evidence_email": persona.email,
            "due_by": opened + 21 * DAY - 1,
        }
        dispute = shapes.dispute(status=status, **fields)
        self.out["disputes"].add(dispute, opened)
        if opened >= self.event_cutoff:
            opened_state = shapes.dispute(status="needs_response", **fields)
            self._event(opened, "charge.dispute.created", opened_state, automatic=True)
        if status != "needs_response" and closes >= self.event_cutoff:
            self._event(closes, "charge.dispute.closed", dispute, automatic=True)

    # -- subscriptions ---------------------------------------------------------------------

    def _render_subscriber(self, persona: Persona) -> None:
        rng = self.rng
        plan = persona.subscription
        assert plan is not None  # planned for every subscriber
        wallet = self._wallet(persona)
        start = persona.acquired_at
        customer_id = self.ids.new("cus_", 14)
        subscription_id = self.ids.new("sub_")
        item_id = self.ids.new("si_", 14)
        prefix = self._prefix()
        visitor = persona.visitors[0].visitor_id if persona.visitors else None
        tagged = persona.path in ("session", "subscription")
        sub_metadata = {"trace_visitor_id": visitor} if persona.path == "subscription" else {}
        invoice_metadata = {"trace_visitor_id": visitor} if persona.path == "invoice" else {}
        anchor = datetime.fromtimestamp(start, UTC)

        first_price = self._prices[(plan.plan_key, persona.currency)]
        bills: list[_Bill] = []
        for number, period_start in enumerate(plan.period_starts):
            upgraded = plan.upgrade_period is not None and number > plan.upgrade_period
            price = self._prices[("premium", persona.currency)] if upgraded else first_price
            period_end = int(add_months(anchor, number + 1).timestamp())
            if number == 0:
                paid_at, reason = start + 2, "subscription_create"
            else:
                # Stripe drafts a renewal, finalises it about an hour later and then charges.
                paid_at = min(period_start + HOUR + rng.randint(1, 90), self.now)
                reason = "subscription_cycle"
            previous = plan.period_starts[number - 1] if number else period_start
            amount = price[0]["unit_amount"]
            bills.append(
                _Bill(
                    period_start,
                    paid_at,
                    amount,
                    reason,
                    price,
                    (period_start, period_end),
                    previous,
                    proration=False,
                )
            )
            if number == plan.upgrade_period and plan.upgrade_at is not None:
                # An upgrade bills the price difference for the rest of the period at once.
                premium = self._prices[("premium", persona.currency)]
                left = (period_end - plan.upgrade_at) / (period_end - period_start)
                prorated = round((premium[0]["unit_amount"] - amount) * left)
                bills.append(
                    _Bill(
                        plan.upgrade_at,
                        plan.upgrade_at + 3,
                        prorated,
                        "subscription_update",
                        premium,
                        (plan.upgrade_at, period_end),
                        period_start,
                        proration=True,
                    )
                )

        invoice_ids = [
            self._invoice(
                persona=persona,
                wallet=wallet,
                customer_id=customer_id,
                subscription_id=subscription_id,
                item_id=item_id,
                sub_metadata=sub_metadata,
                invoice_metadata=invoice_metadata,
                number=f"{prefix}-{sequence:04d}",
                bill=bill,
            )
            for sequence, bill in enumerate(bills, start=1)
        ]
        first_invoice, last_invoice = invoice_ids[0], invoice_ids[-1]

        session = shapes.checkout_session(
            session_id=self.ids.checkout_session(),
            created=start - rng.randint(120, 900),
            domain=self.site.domain,
            mode="subscription",
            amount=first_price[0]["unit_amount"],
            currency=persona.currency,
            customer_id=customer_id,
            email=persona.stripe_email,
            name=persona.name,
            country=wallet.country,
            metadata={"trace_visitor_id": visitor} if tagged else {},
            payment_intent=None,
            subscription_id=subscription_id,
            invoice_id=first_invoice,
        )
        self.out["checkout_sessions"].add(session, session["created"])
        if start >= self.event_cutoff:
            self._event(start + 3, "checkout.session.completed", session)

        last_price = bills[-1].price
        last_start = plan.period_starts[-1]
        final_item = shapes.subscription_item(
            item_id=item_id,
            created=start,
            subscription_id=subscription_id,
            price_obj=last_price[0],
            plan_obj=last_price[1],
            period_start=last_start,
            period_end=plan.period_end,
        )
        subscription = shapes.subscription(
            subscription_id=subscription_id,
            created=start,
            customer_id=customer_id,
            currency=persona.currency,
            item=final_item,
            metadata=sub_metadata,
            status="canceled" if plan.ended_at else "active",
            cancel_at=plan.period_end if plan.canceled_at else None,
            canceled_at=plan.canceled_at,
            ended_at=plan.ended_at,
            latest_invoice=last_invoice,
            default_payment_method=wallet.payment_method,
        )
        self.out["subscriptions"].add(subscription, start)
        if start >= self.event_cutoff:
            first_item = {
                **final_item,
                "price": first_price[0],
                "plan": first_price[1],
                "current_period_start": start,
                "current_period_end": int(add_months(anchor, 1).timestamp()),
            }
            created_state = {
                **subscription,
                "items": {**subscription["items"], "data": [first_item]},
                "status": "active",
                "cancel_at": None,
                "cancel_at_period_end": False,
                "canceled_at": None,
                "cancellation_details": {"comment": None, "feedback": None, "reason": None},
                "ended_at": None,
                "latest_invoice": first_invoice,
            }
            self._event(start + 1, "customer.subscription.created", created_state)

        self._write_customer(persona, customer_id, start - 2, len(bills), wallet, prefix)

    def _invoice(
        self,
        *,
        persona: Persona,
        wallet: _Wallet,
        customer_id: str,
        subscription_id: str,
        item_id: str,
        sub_metadata: dict[str, str],
        invoice_metadata: dict[str, str],
        number: str,
        bill: _Bill,
    ) -> str:
        created, paid_at, amount, reason = bill.created, bill.paid_at, bill.amount, bill.reason
        period, proration = bill.period, bill.proration
        invoice_id = self.ids.new("in_")
        payment_intent = self.ids.new("pi_")
        price_obj, _, plan_name = bill.price
        unit = f"{price_obj['unit_amount'] / 100:.2f}"
        if proration:
            stamp = datetime.fromtimestamp(period[0], UTC).strftime("%d %b %Y")
            description = f"Remaining time on {plan_name} after {stamp}"
        else:
            symbol = "€" if persona.currency == "eur" else "$"
            description = f"1 × {plan_name} (at {symbol}{unit} / month)"
        line = shapes.invoice_line(
            line_id=self.ids.new("il_"),
            invoice_id=invoice_id,
            amount=amount,
            currency=persona.currency,
            description=description,
            subscription_id=subscription_id,
            item_id=item_id,
            price_id=price_obj["id"],
            product_id=price_obj["product"],
            proration=proration,
            period_start=period[0],
            period_end=period[1],
        )
        # Stripe reports the period before the renewal on a cycle invoice, none on the first.
        if reason == "subscription_cycle":
            inv_period = (bill.previous_start, created)
        else:
            inv_period = (created, created)
        invoice = shapes.invoice(
            invoice_id=invoice_id,
            number=number,
            created=created,
            paid_at=paid_at,
            account_name=self.site.business_name,
            customer_id=customer_id,
            customer_email=persona.stripe_email,
            customer_name=persona.name,
            currency=persona.currency,
            amount=amount,
            billing_reason=reason,
            subscription_id=subscription_id,
            subscription_metadata=sub_metadata,
            metadata=invoice_metadata,
            line=line,
            period_start=inv_period[0],
            period_end=inv_period[1],
            hosted_url=f"https://invoice.stripe.com/i/{self.account_id}/test_{invoice_id[3:]}",
        )
        self.out["invoices"].add(invoice, created)
        payment = shapes.invoice_payment(
            invoice_payment_id=self.ids.new("inpay_"),
            created=paid_at,
            amount=amount,
            currency=persona.currency,
            invoice_id=invoice_id,
            payment_intent=payment_intent,
        )
        self.out["invoice_payments"].add(payment, paid_at)

        charge_id = self._charge(
            persona=persona,
            wallet=wallet,
            created=paid_at,
            amount=amount,
            customer_id=customer_id,
            description=(
                "Subscription creation"
                if reason == "subscription_create"
                else "Subscription update"
            ),
            metadata={},
            payment_intent=payment_intent,
            outcome="succeeded",
            billing_email=persona.stripe_email,
            receipt_email=None,
            invoice_id=invoice_id,
        )
        if paid_at >= self.event_cutoff:
            rendered = (
                shapes.legacy_invoice(invoice, charge_id=charge_id, payment_intent=payment_intent)
                if self.legacy
                else invoice
            )
            self._event(paid_at, "invoice.paid", rendered, automatic=True)
            # Invoice payments exist from basil on; a legacy endpoint never receives them.
            if not self.legacy:
                self._event(paid_at, "invoice_payment.paid", payment, automatic=True)
        return invoice_id

    # -- events ----------------------------------------------------------------------------

    def _charge_event(
        self, created: int, event_type: str, snapshot: dict[str, Any], invoice_id: str | None
    ) -> None:
        if self.legacy:
            snapshot = shapes.legacy_charge(snapshot, invoice_id)
        self._event(created, event_type, snapshot, automatic=invoice_id is not None)

    def _event(
        self, created: int, event_type: str, obj: dict[str, Any], automatic: bool = False
    ) -> None:
        # Billing runs and dispute updates come from Stripe itself, with no API request behind
        # them; everything else follows a call from the merchant's checkout.
        request_id = None if automatic else "req_" + random_token(self.rng, 14)
        event = shapes.event(
            event_id=self.ids.new("evt_"),
            created=created,
            event_type=event_type,
            obj=obj,
            api_version=self.site.api_version,
            account_id=self.account_id,
            request_id=request_id,
        )
        self.out["events"].add(event, created)


def _part(rng: random.Random, amount: int, low: float, high: float) -> int:
    """A share of `amount` between `low` and `high`, in whole units when the amount allows."""
    value = round(amount * rng.uniform(low, high))
    if amount >= 1000:
        # Merchants refund round sums: $5.00 back, not $4.87.
        value = round(value / 100) * 100
    return max(1, min(value, amount - 1))
