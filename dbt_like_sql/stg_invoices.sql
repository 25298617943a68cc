-- One row per Stripe invoice, whatever its status, with its subscription link and the kind of
-- revenue its payment is (first subscription payment, renewal or one-off).
-- key: site_id, invoice_id
select
    site_id,
    id as invoice_id,
    status,
    billing_reason,
    case
        when billing_reason = 'subscription_create' then 'subscription_first'
        -- subscription_cycle, subscription_update, subscription_threshold and the legacy
        -- `subscription` reason all bill an existing subscription again.
        when billing_reason like 'subscription%' then 'renewal'
        else 'one_off'
    end as kind,
    customer_id,
    nullif(lower(trim(customer_email)), '') as invoice_email,
    subscription_id,
    charge_id as legacy_charge_id,
    payment_intent_id as legacy_payment_intent_id,
    amount_paid,
    currency,
    coalesce(paid_at, created) as paid_at,
    trace_visitor_id,
    subscription_trace_visitor_id
from raw.stripe_invoices
