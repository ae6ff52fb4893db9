-- Named queries used by the processor. Each block starts with a "-- name --" line; Python asks
-- for queries["name"]. Parameters are psycopg named placeholders.

-- requeue_expired_jobs --
select requeue_expired_jobs() as requeued;

-- claim_jobs --
-- The payload comes back as text: the processor passes it on without decoding it, so a payload
-- it could not decode cannot spoil the claim of the jobs beside it.
select id, job_type, payload::text as payload_json, user_id, retry_count + 1 as attempt, max_retries, lease_token,
       locked_until
from claim_jobs(%(worker)s, %(limit)s::integer, %(job_types)s::text[],
                make_interval(secs => %(lease_seconds)s));

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

-- ping --
select 1 as ok;

-- migrations_lock --
-- Serialises concurrent migrators (any constant works if every processor uses the same one).
select pg_advisory_lock(1886547811);

-- migrations_unlock --
select pg_advisory_unlock(1886547811);

-- migrations_table --
create table if not exists processor_migrations (
    version integer primary key,
    name text not null,
    checksum text not null,
    applied_at timestamptz not null default now()
);

-- migrations_exists --
select to_regclass('processor_migrations') is not null as ok;

-- migrations_applied --
select version, name, checksum, applied_at from processor_migrations order by version;

-- migrations_record --
insert into processor_migrations (version, name, checksum)
values (%(version)s, %(name)s, %(checksum)s);

-- postpone_job --
select postpone_job(%(id)s, %(lease_token)s, make_interval(secs => %(delay_seconds)s),
                    %(reason)s) as status;

-- set_job_progress --
select set_job_progress(%(id)s, %(lease_token)s, %(progress)s::jsonb) as ok;

-- images_for_job --
select slot, kind, storage_path, url, width, height, mime_type, provider, model
from generated_images
where job_id = %(job_id)s
order by id;

-- record_image --
-- The image is recorded whether or not the lease is still held (it was paid for, and a retry
-- reuses it); `held` tells the handler whether to go on.
with recorded as (
    insert into generated_images (job_id, project_id, user_id, kind, slot, storage_path, url,
                                  width, height, mime_type, provider, model, prompt)
    values (%(job_id)s, %(project_id)s, %(user_id)s, %(kind)s, %(slot)s, %(storage_path)s,
            %(url)s, %(width)s, %(height)s, %(mime_type)s, %(provider)s, %(model)s, %(prompt)s)
    on conflict (job_id, slot) do nothing
)
select exists (select 1 from job_queue
               where id = %(job_id)s and status = 'processing'
                 and lease_token = %(lease_token)s) as held;

-- lease_held --
select exists (select 1 from job_queue
               where id = %(id)s and status = 'processing' and lease_token = %(lease_token)s)
    as held;

-- aplus_for_job --
select content, provider, model from aplus_contents where job_id = %(job_id)s;

-- record_aplus --
insert into aplus_contents (job_id, project_id, user_id, content, provider, model)
values (%(job_id)s, %(project_id)s, %(user_id)s, %(content)s::jsonb, %(provider)s, %(model)s)
on conflict (job_id) do nothing;

-- relay_take --
-- The local pg_net stand-in's queue: a batch of committed requests to send. The delete commits
-- with their answers, so until then the rows stay visible in the queue, as with pg_net.
delete from net.http_request_queue
where id in (select id from net.http_request_queue order by id
             for update skip locked limit %(batch)s)
returning id, method, url, headers, body, timeout_milliseconds;

-- relay_record --
insert into net._http_response (id, status_code, content_type, headers, content, timed_out,
                                error_msg)
values (%(id)s, %(status_code)s, %(content_type)s, %(headers)s, %(content)s, %(timed_out)s,
        %(error_msg)s);

-- relay_prune --
delete from net._http_response where created < now() - make_interval(secs => %(ttl_seconds)s);

-- relay_listen --
listen processor_net;

-- net_state --
-- pg_net (the real extension), the local stand-in, or neither.
select (select extversion from pg_extension where extname = 'pg_net') as pg_net_version,
       to_regprocedure('net.http_post(text, jsonb, jsonb, jsonb, integer)') is not null
           as has_http_post;

-- vault_present --
select to_regclass('vault.decrypted_secrets') is not null as ok;

-- vault_secret_id --
select id from vault.secrets where name = %(name)s;

-- vault_create --
select vault.create_secret(%(value)s, %(name)s, 'processor: set by `processor schedule`');

-- vault_update --
select vault.update_secret(%(id)s, %(value)s);

-- setting_upsert --
insert into processor_settings (key, value) values (%(key)s, %(value)s)
on conflict (key) do update set value = excluded.value, updated_at = now();

-- endpoint --
select url, token from processor_endpoint();

-- cron_extension --
create extension if not exists pg_cron;

-- cron_version --
select extversion from pg_extension where extname = 'pg_cron';

-- cron_schedule --
-- Named: a second call updates the job instead of adding another.
select cron.schedule(%(name)s, %(schedule)s, %(command)s) as jobid;

-- cron_unschedule --
select cron.unschedule(jobname) as ok from cron.job where jobname = %(name)s;

-- cron_job --
select jobid, schedule, command, active, database from cron.job where jobname = %(name)s;

-- cron_recent_runs --
select d.status, d.return_message, d.start_time
from cron.job_run_details d join cron.job j on j.jobid = d.jobid
where j.jobname = %(name)s
order by d.start_time desc
limit 5;

-- net_recent_responses --
-- Only the processor's own calls (pg_net's responses do not say where a request went).
select r.status_code, r.timed_out, r.error_msg, r.created
from net._http_response r
join processor_net_calls c on c.request_id = r.id
where r.created > now() - interval '1 hour'
order by r.created desc
limit 20;

-- pending_health --
select extract(epoch from now() - min(run_at) filter (where status = 'pending'
                                                      and run_at <= now()))
           as oldest_due_seconds,
       count(*) filter (where status = 'processing' and locked_until < now()) as expired_leases
from job_queue;

-- functions_present --
select array_agg(name) filter (where to_regproc(name) is null) as missing
from unnest(%(names)s::text[]) as name;

-- net_queue_waiting --
-- Requests queued but not sent yet (pg_net's queue has no timestamp: compare ids over time).
select count(*) as queued, min(id) as oldest_id from net.http_request_queue;

-- server_version --
select current_setting('server_version') as version;

-- dashboard_stats --
select job_type, status, jobs, oldest_due_seconds, p50_seconds, p95_seconds
from job_queue_stats
order by job_type, status;

-- prune_jobs --
-- One batch per kind per call (its own transaction): callers loop until nothing is deleted.
select kind, deleted
from prune_jobs(%(keep_completed)s::interval, %(keep_failed)s::interval,
                %(keep_cron_history)s::interval, %(batch)s::integer, %(batch)s::integer);

-- prune_jobs_with_files --
-- A batch of finished jobs past their age, deleted, with the storage paths of their images
-- (read before the delete cascades to them), so the caller can delete the files.
with limits as (
    select coalesce(%(keep_completed)s::interval, keep_completed) as keep_completed,
           coalesce(%(keep_failed)s::interval, keep_failed) as keep_failed
    from job_queue_settings where id
), doomed as (
    select j.id, j.status
    from job_queue j, limits l
    where (j.status = 'completed' and j.completed_at < now() - l.keep_completed)
       or (j.status in ('failed', 'cancelled') and j.completed_at < now() - l.keep_failed)
    limit %(batch)s
    for update of j skip locked
), paths as (
    select g.storage_path from generated_images g join doomed d on d.id = g.job_id
), gone as (
    delete from job_queue j using doomed d where j.id = d.id returning j.id, d.status
)
select (select count(*) from gone) as jobs,
       (select count(*) from gone where status = 'completed') as completed,
       array(select storage_path from paths) as paths;

-- ui_counts --
select job_type, status, count(*) as jobs from job_queue group by 1, 2 order by 1, 2;

-- ui_oldest_due --
select id, job_type, extract(epoch from now() - run_at) as waited_seconds
from job_queue
where status = 'pending' and run_at <= now()
order by run_at
limit 1;

-- ui_durations --
-- Run time of the attempts that completed in the last hour, per type.
select job_type, count(*) as jobs,
       extract(epoch from percentile_cont(0.5) within group (order by completed_at - processed_at))
           as p50_seconds,
       extract(epoch from percentile_cont(0.95) within group (order by completed_at - processed_at))
           as p95_seconds
from job_queue
where completed_at > now() - interval '1 hour' and status = 'completed'
group by job_type
order by job_type;

-- ui_per_minute --
select date_trunc('minute', completed_at) as minute,
       count(*) filter (where status = 'completed') as completed,
       count(*) filter (where status = 'failed') as failed
from job_queue
where completed_at > now() - interval '1 hour' and status in ('completed', 'failed')
group by 1
order by 1;

-- record_provider_call --
insert into provider_calls (job_id, attempt, user_id, project_id, provider, model, operation,
                            status, http_status, duration_ms, input_tokens, output_tokens,
                            images, credits, cost_usd, error)
values (%(job_id)s, %(attempt)s, %(user_id)s, %(project_id)s, %(provider)s, %(model)s,
        %(operation)s, %(status)s, %(http_status)s, %(duration_ms)s, %(input_tokens)s,
        %(output_tokens)s, %(images)s, %(credits)s, %(cost_usd)s, %(error)s);

-- job_spend --
-- A job's provider calls and their estimated cost, per attempt.
select attempt, count(*) as calls, count(*) filter (where status = 'ok') as ok,
       sum(images) as images, sum(cost_usd)::float8 as cost_usd,
       jsonb_object_agg(provider, n) as by_provider
from (select attempt, provider, status, images, cost_usd,
             count(*) over (partition by attempt, provider) as n
      from provider_calls where job_id = %(job_id)s) c
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

-- provider_limits_set --
insert into provider_limits (provider, max_concurrent, per_minute)
values (%(provider)s, %(max_concurrent)s, %(per_minute)s)
on conflict (provider) do update
set max_concurrent = excluded.max_concurrent, per_minute = excluded.per_minute,
    updated_at = now();

-- provider_acquire --
select granted, slot_id, wait_seconds, reason
from provider_acquire(%(provider)s, %(holder)s, make_interval(secs => %(ttl_seconds)s),
                      make_interval(secs => %(max_wait_seconds)s));

-- provider_release --
select provider_release(%(slot_id)s);

-- provider_pause --
select provider_pause(%(provider)s, %(seconds)s, %(reason)s) as paused_until;

-- ui_signed_out --
select exists (select 1 from processor_ui_signouts
               where sid_hash = %(sid_hash)s and until > now()) as signed_out;

-- ui_sign_out --
-- Records the sign-out and drops records whose cookies have expired by now.
with gone as (delete from processor_ui_signouts where until <= now())
insert into processor_ui_signouts (sid_hash, until)
values (%(sid_hash)s, now() + make_interval(secs => %(max_age)s))
on conflict (sid_hash) do nothing
returning sid_hash;
