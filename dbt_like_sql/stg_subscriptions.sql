-- One row per Stripe subscription, with the visitor id its metadata may carry.
-- key: site_id, subscription_id
select
    site_id,
    id as subscription_id,
    customer_id,
    status,
    trace_visitor_id
from raw.stripe_subscriptions
