-- One row per payment that brought money in, after deduplication: a succeeded, captured charge
-- (carrying the invoice it paid, if any) or a paid invoice with no charge found. Amounts are
-- integer minor units in `currency`; net_amount = gross - refunded - lost to disputes.
-- key: site_id, revenue_id
with payment_emails as (
    -- The customer object's email first, then what the payment itself recorded, then what
    -- the buyer typed into Checkout.
    select
        payments.*,
        coalesce(
            customers.customer_email, payments.payment_email, sessions.session_email
        ) as customer_email
    from intermediate.int_revenue_payments as payments
    left join staging.stg_customers as customers
        on payments.site_id = customers.site_id
        and payments.customer_id = customers.customer_id
    left join intermediate.int_payment_sessions as sessions
        on payments.site_id = sessions.site_id
        and payments.revenue_id = sessions.revenue_id
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
    gross_amount - refunded_amount - disputed_amount as net_amount
from payment_emails
