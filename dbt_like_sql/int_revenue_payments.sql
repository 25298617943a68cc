-- One row per payment that brought money in, with everything the marts need about it: a
-- succeeded charge (with the invoice it paid, if any) or a paid invoice no charge can be found
-- for; the customer's email and key; and the visitor id the merchant threaded through any of
-- the payment's Stripe objects. A paid invoice and its charge are one row.
-- key: site_id, revenue_id
with charge_payments as (
    select
        charges.*,
        links.invoice_id as linked_invoice_id,
        links.carries_invoice
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
            case when payments.carries_invoice then payments.linked_invoice_id end,
            payments.charge_id
        ) as revenue_id,
        coalesce(invoices.kind, 'one_off') as kind,
        payments.charge_id,
        case when payments.carries_invoice then payments.linked_invoice_id end as invoice_id,
        payments.linked_invoice_id,
        invoices.subscription_id,
        payments.payment_intent_id,
        coalesce(payments.customer_id, invoices.customer_id) as customer_id,
        coalesce(payments.charge_email, invoices.invoice_email) as payment_email,
        payments.paid_at,
        payments.currency,
        payments.gross_amount,
        payments.refunded_amount,
        payments.disputed_amount,
        payments.trace_visitor_id as charge_visitor_id,
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
        invoices.invoice_id as linked_invoice_id,
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
),

payments as (
    select * from charge_rows
    union all
    select * from invoice_only_rows
),

session_matches as (
    -- The Session's own metadata never reaches the charge: it is found through the
    -- PaymentIntent (payment mode), the invoice or the subscription (subscription mode) the
    -- Session created.
    select
        payments.site_id,
        payments.revenue_id,
        sessions.session_id,
        sessions.session_email,
        sessions.trace_visitor_id,
        1 as match_rank
    from payments
    inner join staging.stg_checkout_sessions as sessions
        on payments.site_id = sessions.site_id
        and payments.payment_intent_id = sessions.payment_intent_id

    union all

    select
        payments.site_id,
        payments.revenue_id,
        sessions.session_id,
        sessions.session_email,
        sessions.trace_visitor_id,
        2 as match_rank
    from payments
    inner join staging.stg_checkout_sessions as sessions
        on payments.site_id = sessions.site_id
        and payments.linked_invoice_id = sessions.invoice_id

    union all

    select
        payments.site_id,
        payments.revenue_id,
        sessions.session_id,
        sessions.session_email,
        sessions.trace_visitor_id,
        3 as match_rank
    from payments
    inner join staging.stg_checkout_sessions as sessions
        on payments.site_id = sessions.site_id
        and payments.subscription_id = sessions.subscription_id
),

payment_sessions as (
    -- The most direct link wins; a Session carrying a visitor id beats one without.
    select
        site_id,
        revenue_id,
        first(session_email order by trace_visitor_id is null, match_rank, session_id)
            as session_email,
        first(trace_visitor_id order by trace_visitor_id is null, match_rank, session_id)
            as session_visitor_id
    from session_matches
    group by all
),

payment_contacts as (
    select
        payments.*,
        -- The customer object's email first, then what the payment itself recorded, then
        -- what the buyer typed into Checkout.
        coalesce(
            customers.customer_email, payments.payment_email, sessions.session_email
        ) as customer_email,
        -- A visitor id the merchant threaded through Stripe, most specific object first.
        coalesce(
            payments.charge_visitor_id,
            sessions.session_visitor_id,
            subscriptions.trace_visitor_id,
            payments.invoice_visitor_id,
            payments.invoice_subscription_visitor_id
        ) as metadata_visitor_id
    from payments
    left join staging.stg_customers as customers
        on payments.site_id = customers.site_id
        and payments.customer_id = customers.customer_id
    left join payment_sessions as sessions
        on payments.site_id = sessions.site_id
        and payments.revenue_id = sessions.revenue_id
    left join staging.stg_subscriptions as subscriptions
        on payments.site_id = subscriptions.site_id
        and payments.subscription_id = subscriptions.subscription_id
)

select
    site_id,
    revenue_id,
    kind,
    charge_id,
    invoice_id,
    subscription_id,
    coalesce(customer_id, customer_email, charge_id, invoice_id) as customer_key,
    customer_email,
    paid_at,
    currency,
    gross_amount,
    refunded_amount,
    disputed_amount,
    metadata_visitor_id
from payment_contacts
