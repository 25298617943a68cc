-- One row per succeeded, captured Stripe charge (the charges that brought money in), with what
-- refunds and lost disputes took back. Failed, pending and uncaptured charges are left out.
-- key: site_id, charge_id
with succeeded_charges as (
    select *
    from raw.stripe_charges
    where status = 'succeeded'
        and captured
),

charges_by_payment_intent as (
    -- A refund or dispute that names only its PaymentIntent belongs to the PaymentIntent's
    -- succeeded charge (the latest one, should a PaymentIntent ever have two).
    select
        site_id,
        payment_intent_id,
        arg_max(id, created) as charge_id
    from succeeded_charges
    where payment_intent_id is not null
    group by all
),

refunds_by_charge as (
    -- Pending refunds count: Stripe has already subtracted them from the charge's refundable
    -- balance, and `amount_refunded` on the charge includes them.
    select
        refunds.site_id,
        coalesce(refunds.charge_id, by_intent.charge_id) as charge_id,
        cast(sum(refunds.amount) as bigint) as refunded_amount
    from raw.stripe_refunds as refunds
    left join charges_by_payment_intent as by_intent
        on refunds.site_id = by_intent.site_id
        and refunds.payment_intent_id = by_intent.payment_intent_id
    where refunds.status in ('succeeded', 'pending')
    group by all
),

lost_disputes_by_charge as (
    -- Only a lost dispute takes money for good; a won one returns what it withheld.
    select
        disputes.site_id,
        coalesce(disputes.charge_id, by_intent.charge_id) as charge_id,
        cast(sum(disputes.amount) as bigint) as disputed_amount
    from raw.stripe_disputes as disputes
    left join charges_by_payment_intent as by_intent
        on disputes.site_id = by_intent.site_id
        and disputes.payment_intent_id = by_intent.payment_intent_id
    where disputes.status = 'lost'
    group by all
)

select
    charges.site_id,
    charges.id as charge_id,
    charges.payment_intent_id,
    charges.invoice_id as legacy_invoice_id,
    charges.customer_id,
    coalesce(
        nullif(lower(trim(charges.billing_email)), ''),
        nullif(lower(trim(charges.receipt_email)), '')
    ) as charge_email,
    charges.trace_visitor_id,
    charges.created as paid_at,
    charges.currency,
    coalesce(charges.amount_captured, charges.amount) as gross_amount,
    -- The charge row and its refund rows are read at different times; the larger of the two
    -- totals is the one that has seen every refund.
    greatest(
        coalesce(charges.amount_refunded, 0), coalesce(refunds.refunded_amount, 0)
    ) as refunded_amount,
    coalesce(disputes.disputed_amount, 0) as disputed_amount
from succeeded_charges as charges
left join refunds_by_charge as refunds
    on charges.site_id = refunds.site_id
    and charges.id = refunds.charge_id
left join lost_disputes_by_charge as disputes
    on charges.site_id = disputes.site_id
    and charges.id = disputes.charge_id
