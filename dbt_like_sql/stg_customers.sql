-- One row per Stripe customer, with the email Trace matches identities on.
-- key: site_id, customer_id
select
    site_id,
    id as customer_id,
    nullif(lower(trim(email)), '') as customer_email
from raw.stripe_customers
