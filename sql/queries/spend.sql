-- The provider-call ledger (processor.providers.metering).
-- Each block is one statement the code runs by name (processor.sql.query).

-- record_provider_call --
insert into provider_calls (job_id, attempt, user_id, project_id, provider, model, operation,
                            status, http_status, duration_ms, input_tokens, output_tokens,
                            images, credits, cost_usd, error)
values (%(job_id)s, %(attempt)s, %(user_id)s, %(project_id)s, %(provider)s, %(model)s,
        %(operation)s, %(status)s, %(http_status)s, %(duration_ms)s, %(input_tokens)s,
        %(output_tokens)s, %(images)s, %(credits)s, %(cost_usd)s, %(error)s);

-- job_spend --
-- A job's provider calls and their estimated cost, per attempt: its own and its children's (a
-- pack's images are jobs of their own; a child's attempt counts as that attempt).
select attempt, count(*) as calls, count(*) filter (where status = 'ok') as ok,
       sum(images) as images, sum(cost_usd)::float8 as cost_usd,
       jsonb_object_agg(provider, n) as by_provider
from (select attempt, provider, status, images, cost_usd,
             count(*) over (partition by attempt, provider) as n
      from provider_calls
      where job_id = %(job_id)s
         or job_id in (select c.id from job_queue p
                       join job_queue c on c.id = any (p.depends_on) and c.parent_id = p.id
                       where p.id = %(job_id)s)) c
group by attempt
order by attempt;

-- spend_by_provider --
select provider, sum(calls)::int as calls, sum(images)::int as images,
       sum(input_tokens)::bigint as input_tokens, sum(output_tokens)::bigint as output_tokens,
       sum(credits)::float8 as credits, sum(cost_usd)::float8 as cost_usd
from provider_spend_by_provider
group by provider
order by provider;

-- spend_total --
select count(*) as calls, coalesce(sum(cost_usd), 0)::float8 as cost_usd from provider_calls;

-- spend_budgets_now --
-- Every budget with what it has spent in its period, the fullest first.
select scope, key, budget_usd::float8 as budget_usd, period::text as period, resets,
       spent_usd::float8 as spent_usd
from spend_budgets_now
order by spent_usd / nullif(budget_usd, 0) desc nulls last, scope, key;

-- set_spend_budget --
select set_spend_budget(%(key)s, %(usd)s::numeric, %(period)s::interval);

-- set_job_type_budget --
select set_job_type_budget(%(key)s, %(usd)s::numeric, %(period)s::interval);

-- set_service_budget --
select set_service_budget(%(usd)s::numeric, %(period)s::interval);

-- set_job_type_price --
select set_job_type_price(%(job_type)s, %(usd)s::numeric);
