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
-- Every budget with what is spent and reserved against it in its period, the fullest first: a
-- group, type or service budget of its own, and the %(default_groups)s fullest groups under
-- the default budget (*).
select scope, key, budget_usd::float8 as budget_usd, period::text as period, resets,
       spent_usd::float8 as spent_usd, reserved_usd::float8 as reserved_usd, own
from (select *, row_number() over (partition by own
                                   order by (spent_usd + reserved_usd) / nullif(budget_usd, 0)
                                            desc nulls last, scope, key) as n
      from spend_budgets_now) b
where own or n <= %(default_groups)s
order by (spent_usd + reserved_usd) / nullif(budget_usd, 0) desc nulls last, scope, key;

-- budgets_reached --
-- The budgets that held work back for the first time in their period and were not told yet:
-- one processor takes each (the row lock), writes its log line, and marks it.
update spend_budget_reached r
set logged_at = now()
from (select scope, key, starts from spend_budget_reached
      where logged_at is null
      order by reached_at
      limit 100
      for update skip locked) t
cross join lateral job_queue_budget_left(t.scope, t.key) l
where (r.scope, r.key, r.starts) = (t.scope, t.key, t.starts)
returning r.scope, r.key, l.budget::float8 as budget_usd, l.spent::float8 as spent_usd,
          l.reserved::float8 as reserved_usd, l.period::text as period, l.resets;

-- forget_budgets_reached --
delete from spend_budget_reached where starts < now() - interval '40 days';

-- refresh_type_costs --
select job_queue_refresh_type_costs() as types;

-- budget_metrics --
-- For /metrics: how many groups sit out claims because of their budget (held, under a budget,
-- and not at a cap; one probe of the held jobs' index per held group), and the service's spend
-- against its budget.
with recursive g as (
    (select coalesce(concurrency_key, user_id, '') as k from job_queue
     where status = 'pending' and turn = '-infinity' order by 1 limit 1)
    union all
    select (select coalesce(q.concurrency_key, q.user_id, '') from job_queue q
            where q.status = 'pending' and q.turn = '-infinity'
              and coalesce(q.concurrency_key, q.user_id, '') > g.k
            order by 1 limit 1)
    from g where g.k is not null
)
select (select count(*) from g cross join lateral job_queue_budget_left('group', g.k) l
        where g.k is not null and l.budget is not null
          and coalesce(job_group_running(g.k) < job_group_cap(g.k), true)) as groups_held,
       s.budget::float8 as service_budget_usd, s.spent::float8 as service_spent_usd,
       s.reserved::float8 as service_reserved_usd
from job_queue_budget_left('service', '*') s;

-- budget_top_groups --
-- The groups nearest their budget, for /metrics (a few labels, never one per group).
select key, budget_usd::float8 as budget_usd, spent_usd::float8 as spent_usd,
       reserved_usd::float8 as reserved_usd
from spend_budgets_now
where scope = 'group' and spent_usd is not null and budget_usd > 0
order by (spent_usd + reserved_usd) / budget_usd desc, key
limit %(limit)s;

-- set_spend_budget --
select set_spend_budget(%(key)s, %(usd)s::numeric, %(period)s::interval);

-- set_job_type_budget --
select set_job_type_budget(%(key)s, %(usd)s::numeric, %(period)s::interval);

-- set_service_budget --
select set_service_budget(%(usd)s::numeric, %(period)s::interval);

-- set_job_type_price --
select set_job_type_price(%(job_type)s, %(usd)s::numeric);
