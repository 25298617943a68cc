-- One row per customer of a site (site_id + customer_key): their first revenue payment and the
-- visitor, attribution path and channel Trace resolves for it. Later payments inherit these.
-- key: site_id, customer_key
with first_payments as (
    select
        site_id,
        customer_key,
        first(revenue_id order by paid_at, revenue_id) as revenue_id
    from intermediate.int_revenue_payments
    group by all
),

first_payment_details as (
    select
        payments.site_id,
        payments.customer_key,
        payments.revenue_id as first_revenue_id,
        payments.paid_at as acquired_at,
        payments.currency as acquisition_currency,
        payments.customer_email,
        payments.metadata_visitor_id
    from first_payments
    inner join intermediate.int_revenue_payments as payments
        on first_payments.site_id = payments.site_id
        and first_payments.revenue_id = payments.revenue_id
),

email_matches as (
    -- Several visitors can share an email: the one identified most recently at or before the
    -- payment is the buyer; failing that, the first one identified after it.
    select
        details.site_id,
        details.customer_key,
        identities.visitor_id,
        row_number() over (
            partition by details.site_id, details.customer_key
            order by
                identities.identified_at <= details.acquired_at desc,
                case
                    when identities.identified_at <= details.acquired_at
                        then identities.identified_at
                end desc,
                identities.identified_at,
                identities.visitor_id
        ) as preference
    from first_payment_details as details
    inner join trace.identities as identities
        on details.site_id = identities.site_id
        and details.customer_email = identities.email
    where details.metadata_visitor_id is null
),

resolved_visitors as (
    select
        details.*,
        coalesce(details.metadata_visitor_id, matches.visitor_id) as visitor_id,
        case
            when details.metadata_visitor_id is not null then 'metadata'
            when matches.visitor_id is not null then 'email'
            else 'unattributed'
        end as attribution_path
    from first_payment_details as details
    left join email_matches as matches
        on details.site_id = matches.site_id
        and details.customer_key = matches.customer_key
        and matches.preference = 1
),

first_touches as (
    -- The earliest touchpoint at or before the payment, else the earliest after it: both are
    -- simply the visitor's earliest touchpoint. Channels are lowercased so spend matches them.
    select
        resolved.site_id,
        resolved.customer_key,
        first(
            lower(coalesce(nullif(trim(touchpoints.source), ''), 'direct'))
            || '/'
            || lower(coalesce(nullif(trim(touchpoints.medium), ''), 'none'))
            order by touchpoints.occurred_at, touchpoints.source, touchpoints.medium
        ) as channel
    from resolved_visitors as resolved
    inner join trace.touchpoints as touchpoints
        on resolved.site_id = touchpoints.site_id
        and resolved.visitor_id = touchpoints.visitor_id
    group by all
)

select
    resolved.site_id,
    resolved.customer_key,
    resolved.first_revenue_id,
    resolved.acquired_at,
    cast(date_trunc('month', resolved.acquired_at) as date) as cohort_month,
    resolved.acquisition_currency,
    resolved.visitor_id,
    resolved.attribution_path,
    case
        when resolved.attribution_path = 'unattributed' then 'unattributed'
        else coalesce(touches.channel, 'direct/none')
    end as channel
from resolved_visitors as resolved
left join first_touches as touches
    on resolved.site_id = touches.site_id
    and resolved.customer_key = touches.customer_key
