-- Reading and changing jobs from outside the engine: the API, the CLI and the status page.
-- Each block is one statement the code runs by name (processor.sql.query).

-- get_job --
select id, job_type, status, priority, payload, user_id, retry_count, max_retries,
       retry_count + 1 as attempt, run_at, error_message, errors, result, progress,
       locked_by, locked_until, created_at, processed_at, completed_at, updated_at
from job_queue
where id = %(id)s;

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
  and (%(project_id)s::text is null
       or (payload ? 'project_id' and payload ->> 'project_id' = %(project_id)s))
  and (%(before_at)s::timestamptz is null
       or (created_at, id) < (%(before_at)s::timestamptz, %(before_id)s::uuid))
order by created_at desc, id desc
limit %(limit)s;

-- enqueue_job --
select enqueue_job(%(job_type)s::text, %(payload)s::jsonb, %(user_id)s::text,
                   %(priority)s::bigint, coalesce(%(run_at)s::timestamptz, now()),
                   %(max_retries)s::integer, %(idempotency_key)s::text) as id;

-- cancel_job --
select cancel_job(%(id)s) as ok;

-- retry_job --
select retry_job(%(id)s) as ok;

-- queue_stats --
select job_type, status, count(*) as jobs,
       extract(epoch from now() - min(created_at) filter (where status = 'pending'))
           as oldest_pending_seconds
from job_queue
group by job_type, status
order by job_type, status;
