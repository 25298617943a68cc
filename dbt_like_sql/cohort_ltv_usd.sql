-- The USD rows of analytics.cohort_ltv: one row per site, cohort month, channel and month since
-- acquisition. Rows in other currencies are left out (counted in this view's metadata).
-- key: site_id, cohort_month, channel, currency, months_since_acquisition
-- materialized: view
select *
from analytics.cohort_ltv
where currency = 'usd'
