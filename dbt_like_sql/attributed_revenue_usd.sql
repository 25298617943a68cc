-- One row per USD payment of analytics.attributed_revenue. Payments in other currencies are
-- left out (counted in this view's metadata), never converted.
-- key: site_id, revenue_id
-- materialized: view
select *
from analytics.attributed_revenue
where currency = 'usd'
