-- One row per Stripe Checkout Session, with the ids that tie it to the payment it produced.
-- key: site_id, session_id
select
    site_id,
    id as session_id,
    created,
    payment_intent_id,
    invoice_id,
    subscription_id,
    nullif(lower(trim(customer_email)), '') as session_email,
    trace_visitor_id
from raw.stripe_checkout_sessions
