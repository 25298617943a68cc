-- One row per revenue payment (the rows of analytics.revenue) with the attribution of its
-- customer's first payment: visitor, path (metadata, email or unattributed), channel, and when
-- and in which month the customer was acquired. Renewals and repeat purchases inherit it.
-- key: site_id, revenue_id
select
    revenue.site_id,
    revenue.revenue_id,
    revenue.kind,
    revenue.charge_id,
    revenue.invoice_id,
    revenue.subscription_id,
    revenue.customer_key,
    revenue.customer_email,
    revenue.paid_at,
    revenue.currency,
    revenue.gross_amount,
    revenue.refunded_amount,
    revenue.disputed_amount,
    revenue.net_amount,
    acquisitions.visitor_id,
    acquisitions.attribution_path,
    acquisitions.channel,
    acquisitions.acquired_at,
    acquisitions.cohort_month
from analytics.revenue as revenue
inner join intermediate.int_customer_acquisitions as acquisitions
    on revenue.site_id = acquisitions.site_id
    and revenue.customer_key = acquisitions.customer_key
