-- One row per payment that brought money in: a succeeded charge (with the invoice it paid, if
-- any) or a paid invoice no charge can be found for. A paid invoice and its charge are one row.
-- key: site_id, revenue_id
with charge_payments as (
    select
        charges.site_id,
        charges.charge_id,
        links.invoice_id as linked_invoice_id,
        charges.payment_intent_id,
        charges.customer_id,
        charges.charge_email,
        charges.trace_visitor_id as charge_visitor_id,
        charges.paid_at,
        charges.currency,
        charges.gross_amount,
        charges.refunded_amount,
        charges.disputed_amount,
        -- An invoice settled in several partial payments keeps its id on its first charge
        -- only, so no invoice is counted on two rows; its later charges keep its kind.
        case
            when links.invoice_id is not null
                then row_number() over (
                    partition by charges.site_id, links.invoice_id
                    order by charges.paid_at, charges.charge_id
                )
        end as payment_number
    from staging.stg_succeeded_charges as charges
    left join intermediate.int_charge_invoices as links
        on charges.site_id = links.site_id
        and charges.charge_id = links.charge_id
),

charge_rows as (
    select
        payments.site_id,
        -- The invoice id when the row carries one, else the charge id: an invoice keeps the
        -- same revenue_id whether its charge has been fetched yet or not.
        coalesce(
            case when payments.payment_number = 1 then payments.linked_invoice_id end,
            payments.charge_id
        ) as revenue_id,
        coalesce(invoices.kind, 'one_off') as kind,
        payments.charge_id,
        case when payments.payment_number = 1 then payments.linked_invoice_id end as invoice_id,
        invoices.subscription_id,
        payments.payment_intent_id,
        coalesce(payments.customer_id, invoices.customer_id) as customer_id,
        coalesce(payments.charge_email, invoices.invoice_email) as payment_email,
        payments.paid_at,
        payments.currency,
        payments.gross_amount,
        payments.refunded_amount,
        payments.disputed_amount,
        payments.charge_visitor_id,
        invoices.trace_visitor_id as invoice_visitor_id,
        invoices.subscription_trace_visitor_id as invoice_subscription_visitor_id
    from charge_payments as payments
    left join staging.stg_invoices as invoices
        on payments.site_id = invoices.site_id
        and payments.linked_invoice_id = invoices.invoice_id
),

invoice_only_rows as (
    -- Paid out of band, or its charge not fetched: still revenue once, for what it collected.
    -- A zero-amount invoice (a trial, a fully discounted period) collected nothing.
    select
        invoices.site_id,
        invoices.invoice_id as revenue_id,
        invoices.kind,
        null::varchar as charge_id,
        invoices.invoice_id,
        invoices.subscription_id,
        invoices.legacy_payment_intent_id as payment_intent_id,
        invoices.customer_id,
        invoices.invoice_email as payment_email,
        invoices.paid_at,
        invoices.currency,
        invoices.amount_paid as gross_amount,
        0::bigint as refunded_amount,
        0::bigint as disputed_amount,
        null::varchar as charge_visitor_id,
        invoices.trace_visitor_id as invoice_visitor_id,
        invoices.subscription_trace_visitor_id as invoice_subscription_visitor_id
    from staging.stg_invoices as invoices
    anti join intermediate.int_charge_invoices as links
        on invoices.site_id = links.site_id
        and invoices.invoice_id = links.invoice_id
    where invoices.status = 'paid'
        and invoices.amount_paid > 0
)

select * from charge_rows
union all
select * from invoice_only_rows
