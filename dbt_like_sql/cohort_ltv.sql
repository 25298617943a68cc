-- One row per site, cohort month (the month customers were acquired), channel, currency and
-- month since acquisition (0 = the cohort month): how many customers the cohort has, the net
-- revenue they paid that month and in total so far, and that total per customer. Every month
-- from the cohort month to the current one is present, with zero when nothing was paid, so
-- curves have no gaps. ltv_per_customer is integer minor units, rounded half away from zero.
-- key: site_id, cohort_month, channel, currency, months_since_acquisition
with cohort_sizes as (
    -- A customer counts in the currency of their first payment.
    select
        site_id,
        cohort_month,
        channel,
        acquisition_currency as currency,
        count(*) as customers
    from intermediate.int_customer_acquisitions
    group by all
),

monthly_net_revenue as (
    select
        site_id,
        cohort_month,
        channel,
        currency,
        date_diff('month', cohort_month, cast(date_trunc('month', paid_at) as date))
            as months_since_acquisition,
        cast(sum(net_amount) as bigint) as net_revenue
    from analytics.attributed_revenue
    group by all
),

cohorts as (
    select site_id, cohort_month, channel, currency from cohort_sizes
    union
    select site_id, cohort_month, channel, currency from monthly_net_revenue
),

site_horizons as (
    -- The current month, or the latest month paid when the data runs ahead of the clock.
    select
        site_id,
        greatest(
            cast(date_trunc('month', current_date) as date),
            max(cast(date_trunc('month', paid_at) as date))
        ) as last_month
    from analytics.attributed_revenue
    group by all
),

cohort_offsets as (
    select
        cohorts.site_id,
        cohorts.cohort_month,
        cohorts.channel,
        cohorts.currency,
        unnest(range(0, date_diff('month', cohorts.cohort_month, horizons.last_month) + 1))
            as months_since_acquisition
    from cohorts
    inner join site_horizons as horizons
        on cohorts.site_id = horizons.site_id
),

cohort_curves as (
    select
        offsets.site_id,
        offsets.cohort_month,
        offsets.channel,
        offsets.currency,
        offsets.months_since_acquisition,
        coalesce(sizes.customers, 0) as customers,
        coalesce(monthly.net_revenue, 0) as net_revenue,
        cast(
            sum(coalesce(monthly.net_revenue, 0)) over (
                partition by
                    offsets.site_id, offsets.cohort_month, offsets.channel, offsets.currency
                order by offsets.months_since_acquisition
            ) as bigint
        ) as cumulative_net_revenue
    from cohort_offsets as offsets
    left join cohort_sizes as sizes
        on offsets.site_id = sizes.site_id
        and offsets.cohort_month = sizes.cohort_month
        and offsets.channel = sizes.channel
        and offsets.currency = sizes.currency
    left join monthly_net_revenue as monthly
        on offsets.site_id = monthly.site_id
        and offsets.cohort_month = monthly.cohort_month
        and offsets.channel = monthly.channel
        and offsets.currency = monthly.currency
        and offsets.months_since_acquisition = monthly.months_since_acquisition
)

select
    site_id,
    cohort_month,
    channel,
    currency,
    months_since_acquisition,
    customers,
    net_revenue,
    cumulative_net_revenue,
    -- Integer division rounded half away from zero: money never becomes a float.
    case
        when customers > 0
            then cast(
                sign(cumulative_net_revenue)
                * ((2 * abs(cumulative_net_revenue) + customers) // (2 * customers))
                as bigint
            )
    end as ltv_per_customer
from cohort_curves
