-- One row per succeeded, captured Stripe charge (the charges that brought money in), with what
-- refunds and lost disputes took back. Failed, pending and uncaptured charges are left out.
-- key: site_id, charge_id
with succeeded_charges as (
    select *
    from raw.stripe_charges
    where status = 'succeeded'
        and captured
),

refunds_by_charge as (
    -- Pending refunds count: Stripe has already taken them off the charge's refundable
    -- balance, and the charge's `amount_refunded` includes them. A refund naming only its
    -- PaymentIntent belongs to that PaymentIntent's one succeeded charge.
    select
        site_id,
        charge_id,
        cast(sum(amount) as bigint) as refunded_amount
    from (
        select site_id, charge_id, amount
        from raw.stripe_refunds
        where status in ('succeeded', 'pending')
            and charge_id is not null
        union all
        select refunds.site_id, charges.id as charge_id, refunds.amount
        from raw.stripe_refunds as refunds
        inner join succeeded_charges as charges
            on refunds.site_id = charges.site_id
            and refunds.payment_intent_id = charges.payment_intent_id
        where refunds.status in ('succeeded', 'pending')
            and refunds.charge_id is null
    )
    group by all
),

lost_disputes_by_charge as (
    -- Only a lost dispute takes money for good; a won one returns what it withheld.
    select
        site_id,
        charge_id,
        cast(sum(amount) as bigint) as disputed_amount
    from (
        select site_id, charge_id, amount
        from raw.stripe_disputes
        where status = 'lost'
            and charge_id is not null
        union all
        select disputes.site_id, charges.id as charge_id, disputes.amount
        from raw.stripe_disputes as disputes
        inner join succeeded_charges as charges
            on disputes.site_id = charges.site_id
            and disputes.payment_intent_id = charges.payment_intent_id
        where disputes.status = 'lost'
            and disputes.charge_id is null
    )
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
