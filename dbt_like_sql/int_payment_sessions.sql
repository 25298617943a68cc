-- One row per revenue payment a Checkout Session produced, naming that Session. The Session's
-- own metadata never reaches the charge, so it is joined through the PaymentIntent (payment
-- mode), the invoice or the subscription (subscription mode) the Session created.
-- key: site_id, revenue_id
with session_matches as (
    select
        payments.site_id,
        payments.revenue_id,
        sessions.session_id,
        sessions.session_email,
        sessions.trace_visitor_id as session_visitor_id,
        1 as match_rank,
        sessions.created
    from intermediate.int_revenue_payments as payments
    inner join staging.stg_checkout_sessions as sessions
        on payments.site_id = sessions.site_id
        and payments.payment_intent_id = sessions.payment_intent_id

    union all

    select
        payments.site_id,
        payments.revenue_id,
        sessions.session_id,
        sessions.session_email,
        sessions.trace_visitor_id as session_visitor_id,
        2 as match_rank,
        sessions.created
    from intermediate.int_revenue_payments as payments
    inner join staging.stg_checkout_sessions as sessions
        on payments.site_id = sessions.site_id
        and payments.invoice_id = sessions.invoice_id

    union all

    select
        payments.site_id,
        payments.revenue_id,
        sessions.session_id,
        sessions.session_email,
        sessions.trace_visitor_id as session_visitor_id,
        3 as match_rank,
        sessions.created
    from intermediate.int_revenue_payments as payments
    inner join staging.stg_checkout_sessions as sessions
        on payments.site_id = sessions.site_id
        and payments.subscription_id = sessions.subscription_id
)

select
    site_id,
    revenue_id,
    -- The most direct link wins; a Session carrying a visitor id beats one without.
    first(session_id order by session_visitor_id is null, match_rank, created, session_id)
        as session_id,
    first(session_email order by session_visitor_id is null, match_rank, created, session_id)
        as session_email,
    first(
        session_visitor_id order by session_visitor_id is null, match_rank, created, session_id
    ) as session_visitor_id
from session_matches
group by all
