-- One row per succeeded charge that paid an invoice, naming that invoice and whether this
-- charge carries it on its revenue row. Stripe links the two through invoice payments since API
-- 2025-03-31.basil and through `charge.invoice`, `invoice.charge` and `invoice.payment_intent`
-- before it; every shape is read, so objects rendered by either API version link the same way.
-- key: site_id, charge_id
with charges_by_payment_intent as (
    select
        site_id,
        payment_intent_id,
        charge_id
    from staging.stg_succeeded_charges
    where payment_intent_id is not null
),

invoice_payment_links as (
    -- A canceled invoice payment never moved money; any other one names the money it took.
    select
        payments.site_id,
        coalesce(payments.charge_id, by_intent.charge_id) as charge_id,
        payments.invoice_id,
        1 as link_rank
    from raw.stripe_invoice_payments as payments
    left join charges_by_payment_intent as by_intent
        on payments.site_id = by_intent.site_id
        and payments.payment_intent_id = by_intent.payment_intent_id
    where coalesce(payments.status, '') != 'canceled'
),

legacy_charge_links as (
    select
        site_id,
        charge_id,
        legacy_invoice_id as invoice_id,
        2 as link_rank
    from staging.stg_succeeded_charges
    where legacy_invoice_id is not null
),

legacy_invoice_charge_links as (
    select
        site_id,
        legacy_charge_id as charge_id,
        invoice_id,
        3 as link_rank
    from staging.stg_invoices
    where legacy_charge_id is not null
),

legacy_invoice_intent_links as (
    select
        invoices.site_id,
        by_intent.charge_id,
        invoices.invoice_id,
        4 as link_rank
    from staging.stg_invoices as invoices
    inner join charges_by_payment_intent as by_intent
        on invoices.site_id = by_intent.site_id
        and invoices.legacy_payment_intent_id = by_intent.payment_intent_id
),

all_links as (
    select * from invoice_payment_links
    union all
    select * from legacy_charge_links
    union all
    select * from legacy_invoice_charge_links
    union all
    select * from legacy_invoice_intent_links
),

succeeded_links as (
    -- Links to failed or unknown charges are dropped: only a succeeded charge paid the invoice.
    select
        links.site_id,
        links.charge_id,
        charges.paid_at,
        links.invoice_id,
        links.link_rank
    from all_links as links
    inner join staging.stg_succeeded_charges as charges
        on links.site_id = charges.site_id
        and links.charge_id = charges.charge_id
    where links.invoice_id is not null
),

charge_invoices as (
    select
        site_id,
        charge_id,
        any_value(paid_at) as paid_at,
        -- Every shape names the same invoice; should they ever disagree, the basil invoice
        -- payment wins, then the legacy fields in a fixed order.
        first(invoice_id order by link_rank, invoice_id) as invoice_id
    from succeeded_links
    group by all
)

select
    site_id,
    charge_id,
    invoice_id,
    -- An invoice settled in several partial payments is carried by its first charge only, so
    -- no invoice is counted on two revenue rows.
    row_number() over (
        partition by site_id, invoice_id order by paid_at, charge_id
    ) = 1 as carries_invoice
from charge_invoices
