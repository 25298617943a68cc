"""Builders for Stripe objects shaped like Stripe's own examples in `object-shapes.json`.

Each builder returns a plain dict with every top-level field of the example object for its
type, filled with the values a small merchant's test-mode account would really hold. Two
deliberate departures, both matching how the list endpoints answer: a charge carries no
embedded `refunds` list (refunds are their own objects), and an invoice carries no
`payments` list (invoice payments are their own objects).

The shapes follow API version `2026-10-28.endive`: a charge has no `invoice`, an invoice has no
`charge` or `payment_intent`, its `subscription` is null and the subscription lives under
`parent.subscription_details`. `legacy_charge` and `legacy_invoice` render the same objects the
way an account pinned to `2024-06-20` receives them in events.

Nested parts that never change are module constants shared between objects; builders never
mutate them, and callers must not either.
"""

from __future__ import annotations

from typing import Any

_ADDRESS_NULL = {
    "city": None,
    "country": None,
    "line1": None,
    "line2": None,
    "postal_code": None,
    "state": None,
}
_OUTCOME_FAILED_MESSAGE = "The bank did not return any further details with this decline."
_CARD_CHECKS_PASS = {
    "address_line1_check": None,
    "address_postal_code_check": "pass",
    "cvc_check": "pass",
}
_AUTOMATIC_TAX_OFF = {"disabled_reason": None, "enabled": False, "liability": None}
_INVOICE_PAYMENT_SETTINGS = {
    "default_mandate": None,
    "payment_method_options": None,
    "payment_method_types": None,
}
_INVOICE_RENDERING = {
    "amount_tax_display": None,
    "pdf": {"page_size": "letter"},
    "template": None,
    "template_version": None,
}
_REQUEST_NONE = {"id": None, "idempotency_key": None}


def card_details(
    *, brand: str, last4: str, exp_month: int, exp_year: int, fingerprint: str, country: str
) -> dict[str, Any]:
    """The `payment_method_details` of a card charge; one customer's card is reused as is."""
    return {
        "card": {
            "amount_authorized": None,
            "authorization_code": None,
            "brand": brand,
            "checks": _CARD_CHECKS_PASS,
            "country": country,
            "exp_month": exp_month,
            "exp_year": exp_year,
            "extended_authorization": {"status": "disabled"},
            "fingerprint": fingerprint,
            "funding": "credit",
            "incremental_authorization": {"status": "unavailable"},
            "installments": None,
            "last4": last4,
            "mandate": None,
            "multicapture": {"status": "unavailable"},
            "network": brand,
            "network_token": {"used": False},
            "network_transaction_id": None,
            "overcapture": {"maximum_amount_capturable": 0, "status": "unavailable"},
            "regulated_status": "unregulated",
            "three_d_secure": None,
            "wallet": None,
        },
        "type": "card",
    }


def sepa_details(*, country: str, last4: str, fingerprint: str, mandate: str) -> dict[str, Any]:
    """The `payment_method_details` of a SEPA Direct Debit payment (a `py_` charge)."""
    return {
        "sepa_debit": {
            "bank_code": "37040044",
            "branch_code": "",
            "country": country,
            "fingerprint": fingerprint,
            "last4": last4,
            "mandate": mandate,
        },
        "type": "sepa_debit",
    }


def billing_details(
    *, email: str | None, name: str, country: str, postal_code: str
) -> dict[str, Any]:
    """A charge's `billing_details`: what the buyer typed at checkout."""
    return {
        "address": {**_ADDRESS_NULL, "country": country, "postal_code": postal_code},
        "email": email,
        "name": name,
        "phone": None,
        "tax_id": None,
    }


def outcome(*, failure: tuple[str, str] | None, risk_score: int) -> dict[str, Any]:
    """Radar's verdict on a charge: authorised, or declined by the issuer with a reason."""
    if failure is None:
        return {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "risk_score": risk_score,
            "seller_message": "Payment complete.",
            "type": "authorized",
        }
    return {
        "advice_code": "try_again_later",
        "network_advice_code": None,
        "network_decline_code": None,
        "network_status": "declined_by_network",
        "reason": failure[0] if failure[0] != "card_declined" else "generic_decline",
        "risk_level": "normal",
        "risk_score": risk_score,
        "seller_message": _OUTCOME_FAILED_MESSAGE,
        "type": "issuer_declined",
    }


def charge(
    *,
    charge_id: str,
    created: int,
    amount: int,
    currency: str,
    customer: str | None,
    description: str,
    metadata: dict[str, str],
    payment_intent: str,
    payment_method: str,
    payment_method_details: dict[str, Any],
    billing: dict[str, Any],
    receipt_email: str | None,
    status: str,
    captured: bool,
    amount_refunded: int,
    disputed: bool,
    failure: tuple[str, str] | None,
    balance_transaction: str | None,
    statement_descriptor: str,
    receipt_url: str | None,
    outcome: dict[str, Any],
) -> dict[str, Any]:
    """A charge in its final state; `refunded` is true only once the whole amount is back."""
    return {
        "amount": amount,
        "amount_captured": amount if captured else 0,
        "amount_refunded": amount_refunded,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": balance_transaction,
        "billing_details": billing,
        "calculated_statement_descriptor": statement_descriptor,
        "captured": captured,
        "created": created,
        "currency": currency,
        "customer": customer,
        "description": description,
        "disputed": disputed,
        "failure_balance_transaction": None,
        "failure_code": failure[0] if failure else None,
        "failure_message": failure[1] if failure else None,
        "fraud_details": {},
        "id": charge_id,
        "livemode": False,
        "metadata": metadata,
        "object": "charge",
        "on_behalf_of": None,
        "outcome": outcome,
        "paid": status == "succeeded",
        "payment_intent": payment_intent,
        "payment_method": payment_method,
        "payment_method_details": payment_method_details,
        "receipt_email": receipt_email,
        "receipt_number": None,
        "receipt_url": receipt_url,
        "refunded": amount_refunded == amount and amount > 0,
        "review": None,
        "shipping": None,
        "source": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": status,
        "transfer_data": None,
        "transfer_group": None,
    }


def refund(
    *,
    refund_id: str,
    created: int,
    amount: int,
    currency: str,
    charge_id: str,
    payment_intent: str,
    balance_transaction: str,
    reason: str | None,
    card: bool,
) -> dict[str, Any]:
    """A succeeded refund of part or all of `charge_id`."""
    destination = (
        {
            "card": {"reference": None, "reference_status": "pending", "type": "refund"},
            "type": "card",
        }
        if card
        else {"sepa_debit": {}, "type": "sepa_debit"}
    )
    return {
        "amount": amount,
        "balance_transaction": balance_transaction,
        "charge": charge_id,
        "created": created,
        "currency": currency,
        "customer": None,
        "customer_account": None,
        "destination_details": destination,
        "id": refund_id,
        "metadata": {},
        "object": "refund",
        "payment_intent": payment_intent,
        "payment_method": None,
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
    }


_EVIDENCE_EMPTY = {
    key: None
    for key in (
        "access_activity_log",
        "billing_address",
        "cancellation_policy",
        "cancellation_policy_disclosure",
        "cancellation_rebuttal",
        "customer_communication",
        "customer_email_address",
        "customer_name",
        "customer_purchase_ip",
        "customer_signature",
        "duplicate_charge_documentation",
        "duplicate_charge_explanation",
        "duplicate_charge_id",
        "product_description",
        "receipt",
        "refund_policy",
        "refund_policy_disclosure",
        "refund_refusal_explanation",
        "service_date",
        "service_documentation",
        "shipping_address",
        "shipping_carrier",
        "shipping_date",
        "shipping_documentation",
        "shipping_tracking_number",
        "uncategorized_file",
        "uncategorized_text",
    )
}


def dispute(
    *,
    dispute_id: str,
    created: int,
    amount: int,
    currency: str,
    charge_id: str,
    payment_intent: str,
    reason: str,
    status: str,
    brand: str,
    evidence_email: str | None,
    due_by: int,
) -> dict[str, Any]:
    """A card dispute; `status` is `needs_response` while open, `won` or `lost` once closed."""
    answered = status != "needs_response"
    evidence = (
        {
            **_EVIDENCE_EMPTY,
            "customer_email_address": evidence_email,
            "uncategorized_text": "Order was delivered; tracking attached.",
        }
        if answered
        else _EVIDENCE_EMPTY
    )
    return {
        "amount": amount,
        "balance_transactions": [],
        "charge": charge_id,
        "created": created,
        "currency": currency,
        "enhanced_eligibility_types": [],
        "evidence": evidence,
        "evidence_details": {
            "due_by": due_by,
            "enhanced_eligibility": {},
            "has_evidence": answered,
            "past_due": False,
            "submission_count": 1 if answered else 0,
        },
        "id": dispute_id,
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "object": "dispute",
        "payment_intent": payment_intent,
        "payment_method_details": {
            "card": {
                "brand": brand,
                "case_type": "chargeback",
                "network": brand,
                "network_reason_code": "10.4" if reason == "fraudulent" else "13.1",
            },
            "type": "card",
        },
        "reason": reason,
        "status": status,
    }


def customer(
    *,
    customer_id: str,
    created: int,
    email: str,
    name: str,
    currency: str | None,
    invoice_prefix: str,
    next_invoice_sequence: int,
    default_payment_method: str | None,
    country: str,
    postal_code: str,
) -> dict[str, Any]:
    """A Stripe customer; `email` is kept exactly as the merchant sent it, case and spaces."""
    return {
        "address": {**_ADDRESS_NULL, "country": country, "postal_code": postal_code},
        "balance": 0,
        "created": created,
        "currency": currency,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": email,
        "id": customer_id,
        "invoice_prefix": invoice_prefix,
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": default_payment_method,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": name,
        "next_invoice_sequence": next_invoice_sequence,
        "object": "customer",
        "phone": None,
        "preferred_locales": ["en"],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def price(
    *, price_id: str, product_id: str, created: int, currency: str, unit_amount: int, nickname: str
) -> dict[str, Any]:
    """A monthly recurring price, as embedded in subscription items."""
    return {
        "active": True,
        "billing_scheme": "per_unit",
        "created": created,
        "currency": currency,
        "custom_unit_amount": None,
        "id": price_id,
        "livemode": False,
        "lookup_key": None,
        "metadata": {},
        "nickname": nickname,
        "object": "price",
        "product": product_id,
        "recurring": {
            "interval": "month",
            "interval_count": 1,
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        },
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring",
        "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount),
    }


def plan_of(price_obj: dict[str, Any]) -> dict[str, Any]:
    """The legacy `plan` twin Stripe still embeds beside each subscription item's price."""
    return {
        "active": True,
        "amount": price_obj["unit_amount"],
        "amount_decimal": price_obj["unit_amount_decimal"],
        "billing_scheme": "per_unit",
        "created": price_obj["created"],
        "currency": price_obj["currency"],
        "id": price_obj["id"],
        "interval": "month",
        "interval_count": 1,
        "livemode": False,
        "metadata": {},
        "meter": None,
        "nickname": price_obj["nickname"],
        "object": "plan",
        "product": price_obj["product"],
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }


def subscription_item(
    *,
    item_id: str,
    created: int,
    subscription_id: str,
    price_obj: dict[str, Any],
    plan_obj: dict[str, Any],
    period_start: int,
    period_end: int,
) -> dict[str, Any]:
    """The single item of a subscription; since basil it carries the current period."""
    return {
        "billing_thresholds": None,
        "created": created,
        "current_period_end": period_end,
        "current_period_start": period_start,
        "discounts": [],
        "id": item_id,
        "metadata": {},
        "object": "subscription_item",
        "plan": plan_obj,
        "price": price_obj,
        "quantity": 1,
        "subscription": subscription_id,
        "tax_rates": [],
    }


def subscription(
    *,
    subscription_id: str,
    created: int,
    customer_id: str,
    currency: str,
    item: dict[str, Any],
    metadata: dict[str, str],
    status: str,
    cancel_at: int | None,
    canceled_at: int | None,
    ended_at: int | None,
    latest_invoice: str | None,
    default_payment_method: str,
) -> dict[str, Any]:
    """A monthly subscription; `canceled_at` is when the cancel was asked, `ended_at` when done."""
    return {
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": _AUTOMATIC_TAX_OFF,
        "billing_cycle_anchor": created,
        "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic"},
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": cancel_at,
        "cancel_at_period_end": cancel_at is not None and ended_at is None,
        "canceled_at": canceled_at,
        "cancellation_details": {
            "comment": None,
            "feedback": "too_expensive" if canceled_at else None,
            "reason": "cancellation_requested" if canceled_at else None,
        },
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "customer": customer_id,
        "customer_account": None,
        "days_until_due": None,
        "default_payment_method": default_payment_method,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "ended_at": ended_at,
        "id": subscription_id,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {
            "data": [item],
            "has_more": False,
            "object": "list",
            "total_count": 1,
            "url": f"/v1/subscription_items?subscription={subscription_id}",
        },
        "latest_invoice": latest_invoice,
        "livemode": False,
        "managed_payments": {"enabled": False},
        "metadata": metadata,
        "next_pending_invoice_item_invoice": None,
        "object": "subscription",
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": created,
        "status": status,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }


def invoice_line(
    *,
    line_id: str,
    invoice_id: str,
    amount: int,
    currency: str,
    description: str,
    subscription_id: str,
    item_id: str,
    price_id: str,
    product_id: str,
    proration: bool,
    period_start: int,
    period_end: int,
) -> dict[str, Any]:
    """The one line of a subscription invoice: the plan for the period, or a proration."""
    return {
        "amount": amount,
        "currency": currency,
        "description": description,
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "id": line_id,
        "invoice": invoice_id,
        "livemode": False,
        "metadata": {},
        "object": "line_item",
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": proration,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
                "subscription_item": item_id,
            },
            "type": "subscription_item_details",
        },
        "period": {"end": period_end, "start": period_start},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price_id, "product": product_id},
            "type": "price_details",
            "unit_amount_decimal": str(amount),
        },
        "quantity": 1,
        "quantity_decimal": "1",
        "subscription": subscription_id,
        "subtotal": amount,
        "taxes": [],
    }


def invoice(
    *,
    invoice_id: str,
    number: str,
    created: int,
    paid_at: int,
    account_name: str,
    customer_id: str,
    customer_email: str,
    customer_name: str,
    currency: str,
    amount: int,
    billing_reason: str,
    subscription_id: str,
    subscription_metadata: dict[str, str],
    metadata: dict[str, str],
    line: dict[str, Any],
    period_start: int,
    period_end: int,
    hosted_url: str,
) -> dict[str, Any]:
    """A paid subscription invoice; its money is in `invoice_payment` objects, not here."""
    return {
        "account_country": "US",
        "account_name": account_name,
        "account_tax_ids": None,
        "amount_due": amount,
        "amount_overpaid": 0,
        "amount_paid": amount,
        "amount_remaining": 0,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 1,
        "attempted": True,
        "auto_advance": False,
        "automatic_tax": {**_AUTOMATIC_TAX_OFF, "provider": None, "status": None},
        "automatically_finalizes_at": None,
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "custom_fields": None,
        "customer": customer_id,
        "customer_account": None,
        "customer_address": None,
        "customer_email": customer_email,
        "customer_name": customer_name,
        "customer_phone": None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": created,
        "ending_balance": 0,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": hosted_url,
        "id": invoice_id,
        "invoice_pdf": hosted_url + "/pdf?s=ap",
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {
            "data": [line],
            "has_more": False,
            "object": "list",
            "total_count": 1,
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": False,
        "metadata": metadata,
        "next_payment_attempt": None,
        "number": number,
        "object": "invoice",
        "on_behalf_of": None,
        "parent": {
            "quote_details": None,
            "subscription_details": {
                "metadata": subscription_metadata,
                "subscription": subscription_id,
            },
            "type": "subscription_details",
        },
        "payment_settings": _INVOICE_PAYMENT_SETTINGS,
        "period_end": period_end,
        "period_start": period_start,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": _INVOICE_RENDERING,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": "paid",
        "status_transitions": {
            # Finalising an automatic invoice attempts the payment at once.
            "finalized_at": max(created, paid_at - 2),
            "marked_uncollectible_at": None,
            "paid_at": paid_at,
            "voided_at": None,
        },
        # Present in Stripe's example and always null from basil on: read the subscription from
        # `parent.subscription_details` instead.
        "subscription": None,
        "subtotal": amount,
        "subtotal_excluding_tax": amount,
        "test_clock": None,
        "total": amount,
        "total_discount_amounts": [],
        "total_excluding_tax": amount,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": created,
    }


def invoice_payment(
    *,
    invoice_payment_id: str,
    created: int,
    amount: int,
    currency: str,
    invoice_id: str,
    payment_intent: str,
) -> dict[str, Any]:
    """The link from a paid invoice to the PaymentIntent (and so the charge) that paid it."""
    return {
        "amount_paid": amount,
        "amount_requested": amount,
        "created": created,
        "currency": currency,
        "id": invoice_payment_id,
        "invoice": invoice_id,
        "is_default": True,
        "livemode": False,
        "object": "invoice_payment",
        "payment": {"payment_intent": payment_intent, "type": "payment_intent"},
        "status": "paid",
        "status_transitions": {"canceled_at": None, "paid_at": created},
    }


def checkout_session(
    *,
    session_id: str,
    created: int,
    domain: str,
    mode: str,
    amount: int,
    currency: str,
    customer_id: str | None,
    email: str,
    name: str,
    country: str,
    metadata: dict[str, str],
    payment_intent: str | None,
    subscription_id: str | None,
    invoice_id: str | None,
) -> dict[str, Any]:
    """A completed, paid Checkout Session in `payment` or `subscription` mode.

    Its `metadata` stays on the Session: Stripe copies nothing from it to the PaymentIntent,
    the charge or the subscription.
    """
    # A subscription always needs a customer; a one-off purchase makes one only when asked.
    creation = None if mode == "subscription" else ("always" if customer_id else "if_required")
    return {
        "adaptive_pricing": {"enabled": False},
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": amount,
        "amount_total": amount,
        "automatic_tax": {**_AUTOMATIC_TAX_OFF, "provider": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": f"https://{domain}/cart",
        "client_reference_id": None,
        "client_secret": None,
        "collected_information": {
            "business_name": None,
            "individual_name": None,
            "shipping_details": None,
        },
        "consent": None,
        "consent_collection": None,
        "created": created,
        "currency": currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": customer_id,
        "customer_account": None,
        "customer_creation": creation,
        "customer_details": {
            "address": {**_ADDRESS_NULL, "country": country},
            "business_name": None,
            "email": email,
            "individual_name": None,
            "name": name,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": None,
        "discounts": [],
        "expires_at": created + 86_400,
        "id": session_id,
        "integration_identifier": None,
        "invoice": invoice_id,
        "invoice_creation": (
            {"enabled": False, "invoice_data": None} if mode == "payment" else None
        ),
        "livemode": False,
        "locale": None,
        "managed_payments": {"enabled": False},
        "metadata": metadata,
        "mode": mode,
        "object": "checkout.session",
        "origin_context": None,
        "payment_intent": payment_intent,
        "payment_link": None,
        "payment_method_collection": "always",
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "payment_status": "paid",
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "complete",
        "submit_type": "pay" if mode == "payment" else None,
        "subscription": subscription_id,
        "success_url": f"https://{domain}/thanks?session_id={{CHECKOUT_SESSION_ID}}",
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": None,
        "wallet_options": None,
    }


def account(
    *,
    account_id: str,
    created: int,
    email: str,
    domain: str,
    business_name: str,
    statement_descriptor: str,
) -> dict[str, Any]:
    """The connected Standard account of one demo site, fully onboarded in test mode."""
    requirements = {
        "alternatives": [],
        "current_deadline": None,
        "currently_due": [],
        "disabled_reason": None,
        "errors": [],
        "eventually_due": [],
        "past_due": [],
        "pending_verification": [],
    }
    return {
        "business_profile": {
            "annual_revenue": None,
            "estimated_worker_count": None,
            "mcc": "5499",
            "minority_owned_business_designation": None,
            "name": business_name,
            "product_description": None,
            "support_address": None,
            "support_email": email,
            "support_phone": None,
            "support_url": f"https://{domain}/help",
            "url": f"https://{domain}",
        },
        "business_type": "company",
        "capabilities": {"card_payments": "active", "transfers": "active"},
        "charges_enabled": True,
        "controller": {"type": "account"},
        "country": "US",
        "created": created,
        "default_currency": "usd",
        "details_submitted": True,
        "email": email,
        "external_accounts": {
            "data": [],
            "has_more": False,
            "object": "list",
            "url": f"/v1/accounts/{account_id}/external_accounts",
        },
        "future_requirements": requirements,
        "id": account_id,
        "metadata": {},
        "object": "account",
        "payouts_enabled": True,
        "requirements": requirements,
        "settings": {
            "branding": {
                "icon": None,
                "logo": None,
                "primary_color": None,
                "secondary_color": None,
            },
            "card_payments": {
                "decline_on": {"avs_failure": False, "cvc_failure": True},
                "statement_descriptor_prefix": statement_descriptor[:10],
                "statement_descriptor_prefix_kana": None,
                "statement_descriptor_prefix_kanji": None,
            },
            "dashboard": {"display_name": business_name, "timezone": "Etc/UTC"},
            "payments": {
                "statement_descriptor": statement_descriptor,
                "statement_descriptor_kana": None,
                "statement_descriptor_kanji": None,
                "statement_descriptor_prefix_kana": None,
                "statement_descriptor_prefix_kanji": None,
            },
            "payouts": {
                "debit_negative_balances": True,
                "schedule": {"delay_days": 2, "interval": "daily"},
                "statement_descriptor": None,
            },
        },
        "tos_acceptance": {"date": created, "ip": "203.0.113.7", "user_agent": None},
        "type": "standard",
    }


def event(
    *,
    event_id: str,
    created: int,
    event_type: str,
    obj: dict[str, Any],
    api_version: str,
    account_id: str,
    request_id: str | None,
) -> dict[str, Any]:
    """A Connect event: `data.object` is the object as it stood when the event happened."""
    return {
        "account": account_id,
        "api_version": api_version,
        "created": created,
        "data": {"object": obj},
        "id": event_id,
        "livemode": False,
        "object": "event",
        "pending_webhooks": 0,
        "request": {"id": request_id, "idempotency_key": None} if request_id else _REQUEST_NONE,
        "type": event_type,
    }


def legacy_charge(charge_obj: dict[str, Any], invoice_id: str | None) -> dict[str, Any]:
    """`charge_obj` as an account pinned before basil sees it: with `invoice`."""
    return {**charge_obj, "invoice": invoice_id}


def legacy_invoice(
    invoice_obj: dict[str, Any], *, charge_id: str, payment_intent: str
) -> dict[str, Any]:
    """`invoice_obj` as an account pinned before basil sees it.

    The legacy invoice names its charge, PaymentIntent and subscription directly, keeps the
    subscription metadata in `subscription_details`, and has no `parent`; its lines likewise
    name their subscription item instead of carrying a `parent`.
    """
    details = invoice_obj["parent"]["subscription_details"]
    legacy = {key: value for key, value in invoice_obj.items() if key != "parent"}
    lines = []
    for line in invoice_obj["lines"]["data"]:
        item_details = line["parent"]["subscription_item_details"]
        legacy_line = {
            key: value for key, value in line.items() if key not in ("parent", "pricing")
        }
        legacy_line.update(
            {
                "invoice_item": None,
                "plan": None,
                "price": {"id": line["pricing"]["price_details"]["price"], "object": "price"},
                "proration": item_details["proration"],
                "subscription_item": item_details["subscription_item"],
                "type": "subscription",
            }
        )
        lines.append(legacy_line)
    legacy.update(
        {
            "charge": charge_id,
            "lines": {**invoice_obj["lines"], "data": lines},
            "paid": True,
            "paid_out_of_band": False,
            "payment_intent": payment_intent,
            "subscription": details["subscription"],
            "subscription_details": {"metadata": details["metadata"]},
        }
    )
    return legacy
