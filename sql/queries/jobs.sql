-- Reading and changing jobs from outside the engine: the API, the CLI and the status page.
-- Each block is one statement the code runs by name (processor.sql.query).

-- get_job --
select id, job_type, status, priority, payload, user_id, concurrency_key, traceparent, retry_count,
       max_retries, retry_count + 1 as attempt, run_at, error_message, errors, result, progress,
       locked_by, locked_until, created_at, processed_at, completed_at, updated_at,
       job_wait_reason(id) as waiting_because, workflow_id, node_name, parent_id, depends_on,
       on_dependency_failure, waiting_on
from job_queue
where id = %(id)s;

-- workflow_jobs --
-- The jobs of one workflow in the order they were made (200 at most: more than a page or a
-- terminal shows), each with what it depends on; total counts them all.
select id, node_name, job_type, status, depends_on, parent_id, waiting_on,
       count(*) over () as total
from job_queue
where workflow_id = %(workflow_id)s
order by created_at, id
limit 200;

-- jobs_by_id_prefix --
-- The jobs whose id starts with some hex digits: the range of ids they cover (the digits padded
-- with 0s, and with fs), read off the primary key. Three at most: one is the job, more mean the
-- digits do not say which.
select id from job_queue
where id between %(low)s::uuid and %(high)s::uuid
order by id
limit 3;

-- list_jobs --
-- Newest first, a page at a time (keyset: before_at/before_id are the last row of the previous
-- page). Every filter is optional; run unprepared, so each call is planned with its own values
-- and an unused filter costs nothing.
select id, job_type, status, retry_count + 1 as attempt, max_retries + 1 as max_attempts,
       progress, error_message, user_id, payload ->> 'project_id' as project_id, created_at,
       updated_at
from job_queue
where (%(status)s::text is null or status = %(status)s)
  and (%(job_type)s::text is null or job_type = %(job_type)s)
  and (%(user_id)s::text is null or user_id = %(user_id)s)
  and (%(workflow_id)s::uuid is null or workflow_id = %(workflow_id)s::uuid)
  and (%(project_id)s::text is null
       or (payload ? 'project_id' and payload ->> 'project_id' = %(project_id)s))
  and (%(before_at)s::timestamptz is null
       or (created_at, id) < (%(before_at)s::timestamptz, %(before_id)s::uuid))
order by created_at desc, id desc
limit %(limit)s;

-- enqueue_job --
select enqueue_job(%(job_type)s::text, %(payload)s::jsonb, %(user_id)s::text,
                   %(priority)s::bigint, coalesce(%(run_at)s::timestamptz, now()),
                   %(max_retries)s::integer, %(idempotency_key)s::text,
                   %(concurrency_key)s::text, %(traceparent)s::text) as id;

-- cancel_job --
select cancel_job(%(id)s) as ok;

-- retry_jobs --
select job_id, job_type, user_id, retried as done, reason, items_needed, items_stored,
       paid_usd, max_retry_usd
from retry_jobs(%(status)s, %(job_type)s, %(user_id)s, %(since)s, %(until)s, %(error)s,
                %(limit)s, %(dry_run)s, %(workflow_id)s::uuid);

-- cancel_jobs --
select job_id, job_type, user_id, cancelled as done, reason
from cancel_jobs(%(status)s, %(job_type)s, %(user_id)s, %(since)s, %(until)s, %(error)s,
                 %(limit)s, %(dry_run)s, %(workflow_id)s::uuid);

-- retry_job --
select retry_job(%(id)s) as ok;

-- queue_stats --
select job_type, status, count(*) as jobs,
       extract(epoch from now() - min(created_at) filter (where status = 'pending'))
           as oldest_pending_seconds,
       extract(epoch from now() - min(run_at) filter (where status = 'pending'
                                                      and run_at <= now()))
           as oldest_due_seconds
from job_queue
group by job_type, status
order by job_type, status;

-- scaling_metric --
select processor_scaling_metric(%(job_types)s::text[], %(slots)s::integer) as value;

-- record_slots --
-- processor serve records its MAX_RUNNING_JOBS for processor_scaling_metric.
update job_queue_settings set slots_per_processor = %(slots)s
where id and slots_per_processor <> %(slots)s;

-- table_health --
select table_name, live_tuples, dead_tuples, table_bytes, index_bytes, updates, hot_updates,
       extract(epoch from now() - last_vacuum) as since_vacuum_seconds,
       extract(epoch from now() - last_analyze) as since_analyze_seconds,
       vacuums, oldest_xact_seconds, oldest_xact_pid, oldest_slot_xmin_age
from job_queue_table_health
order by table_name;

-- concurrency_limits --
select key, max_running, weight, updated_at from job_concurrency_limits order by key;

-- busiest_groups --
-- The groups with the most work; reads every pending and running job (a view, not a counter),
-- and the budget each falls under, with what it spent and reserved in its period.
select g.group_key, g.running, g.waiting, g.scheduled, g.max_running, g.weight,
       b.budget::float8 as budget_usd, (b.spent + b.reserved)::float8 as used_usd,
       b.own as own_budget,
       -- held, and not by a cap: by its budget (the claims hold a group whose next job does
       -- not fit; a raise, a reset or a job of the group ending releases it)
       b.budget is not null
       and (g.max_running is null or g.running < g.max_running)
       and exists (select 1 from job_queue q
                   where q.status = 'pending' and q.turn = '-infinity'
                     and coalesce(q.concurrency_key, q.user_id, '') = g.group_key)
           as budget_held
from (select * from job_queue_groups
      order by waiting + running desc, group_key
      limit %(limit)s) g
cross join lateral job_queue_budget_left('group', g.group_key) b
order by g.waiting + g.running desc, g.group_key;

-- groups_waiting --
-- Groups with a job in line (not held, type not paused): one probe of job_queue_group_turn_idx
-- per group (it leads with the group), not a read of every job.
with recursive g as (
    (select coalesce(concurrency_key, user_id, '') as k from job_queue
     where status = 'pending' and turn > '-infinity' and turn <> 'infinity'
     order by 1 limit 1)
    union all
    select (select coalesce(q.concurrency_key, q.user_id, '') from job_queue q
            where q.status = 'pending' and q.turn > '-infinity' and q.turn <> 'infinity'
              and coalesce(q.concurrency_key, q.user_id, '') > g.k
            order by 1 limit 1)
    from g where g.k is not null
)
select count(k) as groups from g;

-- paused_job_types --
select job_type from job_type_limits where paused_at is not null order by job_type;

-- job_type_states --
select job_type, running, waiting, scheduled, max_running, paused, paused_at
from job_queue_types
order by job_type;

-- set_concurrency_limit --
select set_concurrency_limit(%(key)s, %(max_running)s::integer, %(weight)s::integer);

-- known_job_types --
select t as job_type from known_job_types() t;

-- set_job_type_limit --
select set_job_type_limit(%(job_type)s, %(max_running)s::integer);

-- pause_job_type --
select pause_job_type(%(job_type)s) as ok;

-- resume_job_type --
select resume_job_type(%(job_type)s) as ok;
