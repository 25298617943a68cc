-- One row per site, month, channel (source/medium, lowercased) and currency: ad spend, the
-- customers acquired that month through the channel (counted in the currency of their first
-- payment), the net revenue those customers paid in that same month, CAC and ROAS. Spend and
-- revenue meet only in the same currency, never added across currencies. CAC = spend / new
-- customers in integer minor units rounded half away from zero (null without customers);
-- ROAS = first-month net revenue / spend as DECIMAL(18,4) (null without spend).
-- key: site_id, month, channel, currency
with monthly_spend as (
    select
        site_id,
        cast(date_trunc('month', date) as date) as month,
        lower(trim(source)) || '/' || lower(trim(medium)) as channel,
        currency,
        cast(sum(amount) as bigint) as ad_spend
    from trace.ad_spend
    group by all
),

monthly_new_customers as (
    select
        site_id,
        cohort_month as month,
        channel,
        acquisition_currency as currency,
        count(*) as new_customers
    from intermediate.int_customer_acquisitions
    group by all
),

first_month_revenue as (
    select
        site_id,
        cohort_month as month,
        channel,
        currency,
        cast(sum(net_amount) as bigint) as first_month_net_revenue
    from analytics.attributed_revenue
    where cast(date_trunc('month', paid_at) as date) = cohort_month
    group by all
),

channel_months as (
    select site_id, month, channel, currency from monthly_spend
    union
    select site_id, month, channel, currency from monthly_new_customers
    union
    select site_id, month, channel, currency from first_month_revenue
),

channel_totals as (
    select
        channel_months.site_id,
        channel_months.month,
        channel_months.channel,
        channel_months.currency,
        coalesce(spend.ad_spend, 0) as ad_spend,
        coalesce(customers.new_customers, 0) as new_customers,
        coalesce(revenue.first_month_net_revenue, 0) as first_month_net_revenue
    from channel_months
    left join monthly_spend as spend
        on channel_months.site_id = spend.site_id
        and channel_months.month = spend.month
        and channel_months.channel = spend.channel
        and channel_months.currency = spend.currency
    left join monthly_new_customers as customers
        on channel_months.site_id = customers.site_id
        and channel_months.month = customers.month
        and channel_months.channel = customers.channel
        and channel_months.currency = customers.currency
    left join first_month_revenue as revenue
        on channel_months.site_id = revenue.site_id
        and channel_months.month = revenue.month
        and channel_months.channel = revenue.channel
        and channel_months.currency = revenue.currency
)

select
    site_id,
    month,
    channel,
    currency,
    ad_spend,
    new_customers,
    first_month_net_revenue,
    -- Integer division rounded half away from zero: money never becomes a float.
    case
        when new_customers > 0
            then cast(
                sign(ad_spend) * ((2 * abs(ad_spend) + new_customers) // (2 * new_customers))
                as bigint
            )
    end as cac,
    -- Four decimals, computed in integers and scaled exactly (DuckDB divides decimals as
    -- doubles).
    case
        when ad_spend > 0
            then cast(
                cast(
                    sign(first_month_net_revenue)
                    * (
                        (2 * abs(cast(first_month_net_revenue as hugeint)) * 10000 + ad_spend)
                        // (2 * ad_spend)
                    )
                    as decimal(18, 0)
                ) * cast(0.0001 as decimal(18, 4))
                as decimal(18, 4)
            )
    end as roas
from channel_totals
