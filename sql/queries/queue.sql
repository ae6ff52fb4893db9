-- Claiming, finishing, postponing and rescuing jobs: the engine's statements (processor.queue).
-- Each block is one statement the code runs by name (processor.sql.query).

-- requeue_expired_jobs --
select requeue_expired_jobs() as requeued;

-- refresh_statistics --
select job_queue_refresh_statistics() as analyzed;

-- claim_jobs --
-- The payload comes back as text: the processor passes it on without decoding it, so a payload
-- it could not decode cannot spoil the claim of the jobs beside it.
select id, job_type, payload::text as payload_json, user_id, retry_count + 1 as attempt, max_retries, lease_token,
       locked_until, extract(epoch from processed_at - run_at)::float8 as waited_seconds,
       traceparent, depends_on is not null as has_dependencies, parent_id
from claim_jobs(%(worker)s, %(limit)s::integer, %(job_types)s::text[],
                make_interval(secs => %(lease_seconds)s));

-- next_due_in --
-- Seconds until the earliest pending job that is not due yet becomes due (null: none), for the
-- drain's timer. It walks the claim index once per priority level in use (a loose index scan),
-- so its cost does not grow with the number of pending jobs.
with recursive levels(priority) as (
    (select priority from job_queue where status = 'pending' order by priority desc limit 1)
    union all
    select (select j.priority from job_queue j
            where j.status = 'pending' and j.priority < l.priority
            order by j.priority desc limit 1)
    from levels l
    where l.priority is not null
)
select extract(epoch from min(first.run_at) - now())::float8 as seconds
from levels,
     lateral (select j.run_at from job_queue j
              where j.status = 'pending' and j.priority = levels.priority and j.run_at > now()
                and (%(job_types)s::text[] is null or j.job_type = any (%(job_types)s::text[]))
              order by j.priority desc, j.run_at limit 1) as first
where levels.priority is not null;

-- complete_jobs --
select c.id from complete_jobs(%(ids)s::uuid[], %(lease_tokens)s::uuid[], %(results)s::jsonb[])
    as c(id);

-- fail_jobs --
select job_id, new_status
from fail_jobs(%(ids)s::uuid[], %(lease_tokens)s::uuid[], %(errors)s::text[],
               %(retryable)s::boolean[]);

-- extend_job_leases --
select e.id
from extend_job_leases(%(ids)s::uuid[], %(lease_tokens)s::uuid[],
                       make_interval(secs => %(lease_seconds)s)) as e(id);

-- listen_inserts --
listen job_queue_insert;

-- listen_probe_channel --
-- The listener's own probe channel, unique to one connection attempt (the channel is composed
-- as an identifier). Behind a transaction pooler the LISTEN stays on whichever server connection
-- ran it; on a channel nobody else notifies, it can never reach another client.
listen {channel};

-- unlisten_probe_channel --
unlisten {channel};

-- listen_probe --
-- Sent from the pool after the listener's LISTEN: it must come back on the listener's session.
select pg_notify(%(channel)s, '');

-- ping --
select 1 as ok;

-- job_dependencies --
-- What a job's dependencies came to, in the order it named them, as the JSON array its
-- handler call carries (one value: the dispatcher splices it into the body undecoded). A
-- dependency deleted meanwhile is listed with status "deleted".
select coalesce(json_agg(json_build_object(
           'job_id', u.id, 'name', d.node_name, 'job_type', d.job_type, 'parent_id', d.parent_id,
           'status', coalesce(d.status, 'deleted'), 'result', d.result,
           'error', d.error_message) order by u.n), '[]')::text as dependencies
from job_queue j
cross join lateral unnest(j.depends_on) with ordinality u(id, n)
left join job_queue d on d.id = u.id
where j.id = %(id)s;

-- suspend_job --
-- A handler's 202 with children: they are created (once per name) and the job waits for them.
select name, job_id, created
from suspend_job(%(id)s, %(lease_token)s, %(children)s::jsonb);

-- reap_waiting --
select job_queue_reap_waiting() as fixed;

-- postpone_job --
select postpone_job(%(id)s, %(lease_token)s, make_interval(secs => %(delay_seconds)s),
                    %(reason)s) as status;
