-- One row per USD payment of analytics.revenue. Trace v1 reports in USD only and never
-- converts: payments in other currencies are left out here (counted in this view's metadata)
-- and stay, in their own currency, in analytics.revenue.
-- key: site_id, revenue_id
-- materialized: view
select *
from analytics.revenue
where currency = 'usd'
