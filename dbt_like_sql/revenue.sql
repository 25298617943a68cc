-- One row per payment that brought money in, after deduplication: a succeeded, captured charge
-- (carrying the invoice it paid, if any) or a paid invoice with no charge found. Amounts are
-- integer minor units in `currency`; net_amount = gross - refunded - lost to disputes. A view:
-- intermediate.int_revenue_payments already holds every row, so nothing is written twice.
-- key: site_id, revenue_id
-- materialized: view
select
    site_id,
    revenue_id,
    kind,
    charge_id,
    invoice_id,
    subscription_id,
    customer_key,
    customer_email,
    paid_at,
    currency,
    gross_amount,
    refunded_amount,
    disputed_amount,
    gross_amount - refunded_amount - disputed_amount as net_amount
from intermediate.int_revenue_payments
