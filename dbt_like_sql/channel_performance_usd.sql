-- The USD rows of analytics.channel_performance: one row per site, month and channel. Spend and
-- revenue in other currencies are left out (counted in this view's metadata).
-- key: site_id, month, channel, currency
-- materialized: view
select *
from analytics.channel_performance
where currency = 'usd'
