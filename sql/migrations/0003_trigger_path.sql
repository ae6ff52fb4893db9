-- The trigger path: how the database calls the processor (pg_cron every tick, and an insert
-- trigger for instant pickup), where it finds the processor's URL and token, and views that
-- show whether it all works.

-- Private settings for databases without Supabase Vault. Only the owner can read them: no
-- grants, and row level security with no policies for anyone else.
create table processor_settings (
    key        text primary key,
    value      text not null,
    updated_at timestamptz not null default now()
);
alter table processor_settings enable row level security;

-- The processor's URL and token: from Supabase Vault (secrets 'processor_url' and
-- 'processor_token') where it exists, else from processor_settings. Never from cron.job.
create function processor_endpoint(out url text, out token text)
language plpgsql stable security definer
set search_path = public, pg_temp
as $$
begin
    if to_regclass('vault.decrypted_secrets') is not null then
        execute $q$select max(decrypted_secret) filter (where name = 'processor_url'),
                          max(decrypted_secret) filter (where name = 'processor_token')
                   from vault.decrypted_secrets
                   where name in ('processor_url', 'processor_token')$q$
            into url, token;
    end if;
    if url is null then
        select value into url from processor_settings where key = 'processor_url';
    end if;
    if token is null then
        select value into token from processor_settings where key = 'processor_token';
    end if;
    url := rtrim(url, '/');
end;
$$;

-- Asks the processor to work: POST {url}/process-jobs with the bearer token through pg_net
-- (sent after the calling transaction commits). Returns pg_net's request id, or null when
-- nothing was sent: pg_net missing, no endpoint configured, or requests to the processor
-- already waiting in pg_net's queue (they will find this work too). Where pg_net does not let
-- this function's owner read its queue, the call is made anyway.
create function invoke_job_processor(p_quiet boolean default false) returns bigint
language plpgsql volatile security definer
set search_path = public, pg_temp
as $$
declare
    v_endpoint record;
    v_target text;
    v_waiting integer := 0;
    v_id bigint;
begin
    if to_regprocedure('net.http_post(text, jsonb, jsonb, jsonb, integer)') is null then
        if not p_quiet then
            raise warning 'invoke_job_processor: pg_net is not installed (create extension pg_net)';
        end if;
        return null;
    end if;
    select * into v_endpoint from processor_endpoint();
    if v_endpoint.url is null or v_endpoint.token is null then
        if not p_quiet then
            raise warning 'invoke_job_processor: no processor URL/token: run `processor schedule`';
        end if;
        return null;
    end if;
    v_target := v_endpoint.url || '/process-jobs';
    -- pg_net slows down with hundreds of queued requests; a few waiting is plenty, as each one
    -- drains every due job it can.
    begin
        execute 'select count(*) from (select 1 from net.http_request_queue
                                       where url = $1 limit 3) q'
            into v_waiting using v_target;
    exception when insufficient_privilege or undefined_table then
        v_waiting := 0;
    end;
    if v_waiting >= 3 then
        return null;
    end if;
    execute 'select net.http_post(url := $1, body := $2, headers := $3,
                                  timeout_milliseconds := $4)'
        into v_id
        using v_target, '{"drain": true}'::jsonb,
              jsonb_build_object('Content-Type', 'application/json',
                                 'Authorization', 'Bearer ' || v_endpoint.token),
              5000;
    return v_id;
end;
$$;

-- Instant pickup: once per INSERT statement (a 1,000-row insert makes one call, not 1,000).
-- Switched off with: processor schedule --instant-pickup off. A failure here never fails the
-- insert: cron picks the job up on its next tick.
create function job_queue_instant_pickup() returns trigger
language plpgsql security definer
set search_path = public, pg_temp
as $$
begin
    if coalesce((select value from processor_settings where key = 'instant_pickup'), 'on') = 'on'
    then
        begin
            perform invoke_job_processor(p_quiet => true);
        exception when others then
            raise warning 'job_queue_instant_pickup: %', sqlerrm;
        end;
    end if;
    return null;
end;
$$;

create trigger job_queue_instant_pickup
    after insert on job_queue
    for each statement execute function job_queue_instant_pickup();

-- Dashboard views (Supabase Table Editor / SQL editor).

create view job_queue_stats with (security_invoker = on) as
select job_type,
       status,
       count(*) as jobs,
       round(extract(epoch from now() - min(run_at) filter (
           where status = 'pending' and run_at <= now()))::numeric, 1) as oldest_due_seconds,
       round(extract(epoch from percentile_cont(0.5) within group (
           order by completed_at - processed_at) filter (where status = 'completed'))::numeric, 2)
           as p50_seconds,
       round(extract(epoch from percentile_cont(0.95) within group (
           order by completed_at - processed_at) filter (where status = 'completed'))::numeric, 2)
           as p95_seconds,
       max(updated_at) as last_change
from job_queue
group by job_type, status;

comment on view job_queue_stats is
    'Jobs per type and status; age of the oldest due pending job; p50/p95 attempt duration.';

create view job_queue_recent_failures with (security_invoker = on) as
select id, job_type, status, retry_count, max_retries, error_message, errors, user_id,
       created_at, completed_at as failed_at
from job_queue
where status = 'failed'
  and completed_at > now() - interval '7 days'
order by completed_at desc;

create view job_queue_stuck with (security_invoker = on) as
select id, job_type, status, locked_by, locked_until, run_at, retry_count,
       case
           when status = 'processing' and locked_until < now()
               then 'lease expired: requeued on the next /process-jobs call'
           when status = 'processing'
               then 'running for ' || date_trunc('second', now() - processed_at)
           else 'due for ' || date_trunc('second', now() - run_at)
                || ': is the trigger path working? (processor verify)'
       end as why
from job_queue
where (status = 'processing' and (locked_until < now() or processed_at < now() - interval '30 minutes'))
   or (status = 'pending' and run_at < now() - interval '2 minutes');

-- Health of the trigger path: recent cron runs and pg_net answers. pg_cron and pg_net may be
-- installed after this migration, so their tables are read only when they exist.
create function job_trigger_health()
returns table (source text, outcome text, count bigint, last_at timestamptz, last_message text)
language plpgsql stable security definer
set search_path = public, pg_temp
as $$
begin
    if to_regclass('cron.job_run_details') is not null then
        return query execute $q$
            select 'cron'::text, d.status, count(*), max(d.start_time),
                   (array_agg(d.return_message order by d.start_time desc))[1]
            from cron.job_run_details d join cron.job j on j.jobid = d.jobid
            where j.jobname = 'process-job-queue' and d.start_time > now() - interval '1 day'
            group by d.status$q$;
    end if;
    if to_regclass('net._http_response') is not null then
        return query execute $q$
            select 'pg_net'::text,
                   case when r.timed_out then 'timed out'
                        when r.status_code is null then 'error'
                        else r.status_code::text end,
                   count(*), max(r.created),
                   (array_agg(coalesce(r.error_msg, left(r.content, 200))
                              order by r.created desc))[1]
            from net._http_response r
            where r.created > now() - interval '1 day'
            group by 2$q$;
    end if;
end;
$$;

create view job_trigger_health as select * from job_trigger_health();

select processor_keep_private(array[
    'table processor_settings',
    'function processor_endpoint()',
    'function invoke_job_processor(boolean)',
    'function job_trigger_health()',
    'table job_queue_stats',
    'table job_queue_recent_failures',
    'table job_queue_stuck',
    'table job_trigger_health'
]);
