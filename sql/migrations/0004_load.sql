-- Load: set-based claims, batched outcome writes (each row still fenced by its lease token),
-- a NOTIFY on insert for processors that LISTEN, and a record of the trigger path's own calls.

-- Claims up to p_limit due jobs in one statement: one scan of the claim index in get_next_job's
-- order, rows locked FOR UPDATE SKIP LOCKED, all moved to processing under fresh leases.
-- Returned in claim order. (get_next_job + mark_job_processing stay the single-job contract.)
-- This and the batch functions below are plpgsql rather than sql: PostgreSQL caches a plpgsql
-- function's plans for the session, but plans a data-modifying sql function on every call.
create or replace function claim_jobs(
    p_worker text,
    p_limit integer default 1,
    p_job_types text[] default null,
    p_lease interval default interval '60 seconds'
) returns setof job_queue
language plpgsql volatile as $$
begin
    if coalesce(p_limit, 1) <= 1 then
        -- One job: the plain SKIP LOCKED statement, nothing around it.
        return query
        update job_queue j
        set status = 'processing',
            locked_by = p_worker,
            locked_until = now() + p_lease,
            lease_token = gen_random_uuid(),
            processed_at = now()
        where j.id = (select id
                      from job_queue
                      where status = 'pending'
                        and run_at <= now()
                        and (p_job_types is null or job_type = any (p_job_types))
                      order by priority desc, run_at, created_at
                      limit 1
                      for update skip locked)
        returning j.*;
        return;
    end if;
    return query
    with next as (
        select id
        from job_queue
        where status = 'pending'
          and run_at <= now()
          and (p_job_types is null or job_type = any (p_job_types))
        order by priority desc, run_at, created_at
        limit p_limit
        for update skip locked
    ), claimed as (
        update job_queue j
        set status = 'processing',
            locked_by = p_worker,
            locked_until = now() + p_lease,
            lease_token = gen_random_uuid(),
            processed_at = now()
        from next
        where j.id = next.id
        returning j.*
    )
    select * from claimed order by priority desc, run_at, created_at;
end;
$$;

-- Completes many jobs in one statement. A row changes only while the job is processing under
-- the given lease token; returns the ids that were completed (the others' leases were lost).
-- Rows are locked in id order so two concurrent batches can never deadlock.
create function complete_jobs(p_ids uuid[], p_lease_tokens uuid[], p_results jsonb[])
returns setof uuid
language plpgsql volatile as $$
begin
    return query
    with outcome as (
        select * from unnest(p_ids, p_lease_tokens, p_results) as o(id, lease_token, result)
    ), held as (
        select j.id, o.result
        from job_queue j join outcome o on o.id = j.id and o.lease_token = j.lease_token
        where j.status = 'processing'
        order by j.id
        for update of j
    )
    update job_queue j
    set status = 'completed',
        result = held.result,
        completed_at = now(),
        locked_by = null,
        locked_until = null,
        lease_token = null
    from held
    where j.id = held.id
    returning j.id;
end;
$$;

-- Records many failed attempts in one statement, with mark_job_failed's rules: a retryable
-- failure goes back to pending with backoff while retry_count < max_retries, anything else
-- ends failed. Returns each changed job's new status; jobs whose lease was lost are absent.
create function fail_jobs(
    p_ids uuid[],
    p_lease_tokens uuid[],
    p_errors text[],
    p_retryable boolean[]
) returns table (job_id uuid, new_status text)
language plpgsql volatile as $$
begin
    return query
    with outcome as (
        select * from unnest(p_ids, p_lease_tokens, p_errors, p_retryable)
            as o(id, lease_token, error, retryable)
    ), held as (
        select j.id, o.error, coalesce(o.retryable, true) as retryable,
               coalesce(o.retryable, true) and j.retry_count < j.max_retries as retry
        from job_queue j join outcome o on o.id = j.id and o.lease_token = j.lease_token
        where j.status = 'processing'
        order by j.id
        for update of j
    )
    update job_queue j
    set status = case when held.retry then 'pending' else 'failed' end,
        retry_count = j.retry_count + case when held.retry then 1 else 0 end,
        run_at = case when held.retry then now() + job_backoff(j.retry_count + 1)
                      else j.run_at end,
        error_message = held.error,
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.retry_count + 1,
            'at', now(),
            'error', held.error,
            'retryable', held.retryable)),
        completed_at = case when held.retry then null else now() end,
        locked_by = null,
        locked_until = null,
        lease_token = null
    from held
    where j.id = held.id
    returning j.id, j.status;
end;
$$;

-- Extends the leases of many running jobs; returns the ids still held (a missing id means that
-- job was requeued, cancelled or finished by someone else: its worker must stop).
create function extend_job_leases(p_ids uuid[], p_lease_tokens uuid[], p_lease interval)
returns setof uuid
language plpgsql volatile as $$
begin
    return query
    with held as (
        select j.id
        from job_queue j
        join unnest(p_ids, p_lease_tokens) as o(id, lease_token)
            on o.id = j.id and o.lease_token = j.lease_token
        where j.status = 'processing'
        order by j.id
        for update of j
    )
    update job_queue j
    set locked_until = now() + p_lease
    from held
    where j.id = held.id
    returning j.id;
end;
$$;

-- The single-job failure contract is one row of fail_jobs (one set of retry rules, not two).
-- mark_job_completed keeps its own one-row UPDATE from 0001: nothing to share but a SET list.
create or replace function mark_job_failed(
    p_job_id uuid,
    p_lease_token uuid,
    p_error text,
    p_retryable boolean default true
) returns text
language plpgsql as $$
declare
    v_status text;
begin
    select new_status into v_status
    from fail_jobs(array[p_job_id], array[p_lease_token], array[p_error], array[p_retryable]);
    if v_status is null then
        raise notice 'mark_job_failed: job % is not held under lease %', p_job_id, p_lease_token;
    end if;
    return v_status;
end;
$$;

-- The requests invoke_job_processor made through pg_net. pg_net's response table has no URL,
-- so this is how `processor verify` and job_trigger_health tell the processor's calls from
-- anyone else's.
create table processor_net_calls (
    request_id bigint primary key,
    created_at timestamptz not null default now()
);

create index processor_net_calls_created_idx on processor_net_calls (created_at);

-- Same as in 0003, and it records the request id it got from pg_net (kept for 6 hours, as pg_net
-- keeps its responses).
create or replace function invoke_job_processor(p_quiet boolean default false) returns bigint
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
    -- A few requests waiting in pg_net's queue will find this work too: each one drains every
    -- due job it can. (Real pg_net keeps a batch's rows queued until all its answers are in.)
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
    -- Bookkeeping only: where the owner may not write it, the call still goes out.
    begin
        insert into processor_net_calls (request_id) values (v_id) on conflict do nothing;
        delete from processor_net_calls where created_at < now() - interval '6 hours';
    exception when insufficient_privilege then
        null;
    end;
    return v_id;
end;
$$;

-- Instant pickup, two ways, once per INSERT statement: a NOTIFY (delivered at commit) that any
-- processor LISTENing on 'job_queue_insert' acts on within milliseconds, and the pg_net call
-- that wakes a processor that is not listening (switched off with
-- `processor schedule --instant-pickup off`). Neither can ever fail the insert.
create or replace function job_queue_instant_pickup() returns trigger
language plpgsql security definer
set search_path = public, pg_temp
as $$
begin
    perform pg_notify('job_queue_insert', '');
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

-- Trigger-path health counts only the processor's own pg_net calls.
create or replace function job_trigger_health()
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
            join processor_net_calls c on c.request_id = r.id
            where r.created > now() - interval '1 day'
            group by 2$q$;
    end if;
end;
$$;

select processor_keep_private(array[
    'function complete_jobs(uuid[], uuid[], jsonb[])',
    'function fail_jobs(uuid[], uuid[], text[], boolean[])',
    'function extend_job_leases(uuid[], uuid[], interval)',
    'table processor_net_calls'
]);
