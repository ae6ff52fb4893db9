-- The job queue: table, indexes and the functions that claim and finish jobs.
-- Valid on plain PostgreSQL (>= 13) and on Supabase; Supabase-only parts are guarded.

create table job_queue (
    id              uuid primary key default gen_random_uuid(),
    job_type        text not null check (length(btrim(job_type)) > 0),
    payload         jsonb not null default '{}'::jsonb check (jsonb_typeof(payload) = 'object'),
    status          text not null default 'pending'
                    check (status in ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    priority        integer not null default 0,
    run_at          timestamptz not null default now(),
    retry_count     integer not null default 0 check (retry_count >= 0),
    max_retries     integer not null default 3 check (max_retries >= 0),
    error_message   text,
    errors          jsonb not null default '[]'::jsonb check (jsonb_typeof(errors) = 'array'),
    result          jsonb,
    progress        jsonb,
    user_id         text,
    idempotency_key text,
    locked_by       text,
    locked_until    timestamptz,
    lease_token     uuid,
    created_at      timestamptz not null default now(),
    processed_at    timestamptz,
    completed_at    timestamptz,
    updated_at      timestamptz not null default now()
);

comment on table job_queue is
    'Background jobs. Insert a row (or call enqueue_job) and the processor runs it.';
comment on column job_queue.retry_count is
    'Failed attempts so far that were retried; the current attempt is retry_count + 1.';
comment on column job_queue.lease_token is
    'Fencing token of the current claim: only its holder can finish or extend the job.';

-- The claim reads only due pending jobs. A partial index keeps it small however many finished
-- rows pile up, and its order is the claim order.
create index job_queue_claim_idx
    on job_queue (priority desc, run_at, created_at)
    where status = 'pending';

-- requeue_expired_jobs looks only at processing jobs by lease expiry.
create index job_queue_lease_idx
    on job_queue (locked_until)
    where status = 'processing';

create unique index job_queue_idempotency_key_idx
    on job_queue (idempotency_key)
    where idempotency_key is not null;

create index job_queue_user_idx on job_queue (user_id, created_at desc) where user_id is not null;

-- Every job is updated several times and then never again: vacuum early and often, and leave
-- room on each page for the updates.
alter table job_queue set (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 200,
    autovacuum_analyze_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 1
);

create function job_queue_touch() returns trigger
language plpgsql as $$
begin
    new.updated_at := now();
    return new;
end;
$$;

create trigger job_queue_touch
    before update on job_queue
    for each row execute function job_queue_touch();

-- Backoff before retry number n (1-based): base * 2^(n-1), capped, with "equal jitter":
-- a delay d becomes a random value in [d/2, d], so retries of a burst of failures spread out.
create function job_backoff(
    p_retry integer,
    p_base interval default interval '10 seconds',
    p_cap interval default interval '15 minutes'
) returns interval
language sql volatile as $$
    select d / 2 + d / 2 * random()
    from (select least(p_cap, p_base * power(2, greatest(p_retry, 1) - 1)) as d) s
$$;

create function enqueue_job(
    p_job_type text,
    p_payload jsonb default '{}'::jsonb,
    p_user_id text default null,
    p_priority integer default 0,
    p_run_at timestamptz default now(),
    p_max_retries integer default 3,
    p_idempotency_key text default null
) returns uuid
language plpgsql as $$
declare
    v_id uuid;
begin
    if p_job_type is null or length(btrim(p_job_type)) = 0 then
        raise exception 'enqueue_job: job_type must be a non-empty string'
            using errcode = '22023';
    end if;
    if p_payload is null or jsonb_typeof(p_payload) <> 'object' then
        raise exception 'enqueue_job: payload must be a JSON object, got %',
            coalesce(jsonb_typeof(p_payload), 'null') using errcode = '22023';
    end if;
    if p_max_retries is null or p_max_retries < 0 then
        raise exception 'enqueue_job: max_retries must be >= 0' using errcode = '22023';
    end if;

    insert into job_queue (job_type, payload, user_id, priority, run_at, max_retries,
                           idempotency_key)
    values (p_job_type, p_payload, p_user_id, coalesce(p_priority, 0),
            coalesce(p_run_at, now()), p_max_retries, p_idempotency_key)
    on conflict (idempotency_key) where idempotency_key is not null do nothing
    returning id into v_id;

    if v_id is null then
        select id into v_id from job_queue where idempotency_key = p_idempotency_key;
    end if;
    return v_id;
end;
$$;

-- The next due pending job, highest priority then oldest, locked for the calling transaction.
-- Jobs locked by another claimer are skipped, never waited for.
create function get_next_job(p_job_types text[] default null) returns job_queue
language sql volatile as $$
    select *
    from job_queue
    where status = 'pending'
      and run_at <= now()
      and (p_job_types is null or job_type = any (p_job_types))
    order by priority desc, run_at, created_at
    limit 1
    for update skip locked
$$;

-- Moves a job from pending to processing under a fresh lease. Returns nothing when the job is
-- not pending any more, so two claimers can never both win even without get_next_job's lock.
create function mark_job_processing(
    p_job_id uuid,
    p_worker text,
    p_lease interval default interval '60 seconds'
) returns setof job_queue
language sql volatile as $$
    update job_queue
    set status = 'processing',
        locked_by = p_worker,
        locked_until = now() + p_lease,
        lease_token = gen_random_uuid(),
        processed_at = now()
    where id = p_job_id
      and status = 'pending'
    returning *
$$;

-- Claims up to p_limit due jobs in one transaction: get_next_job + mark_job_processing each.
create function claim_jobs(
    p_worker text,
    p_limit integer default 1,
    p_job_types text[] default null,
    p_lease interval default interval '60 seconds'
) returns setof job_queue
language plpgsql as $$
declare
    v_next job_queue;
    v_claimed job_queue;
begin
    for i in 1 .. greatest(coalesce(p_limit, 1), 1) loop
        v_next := get_next_job(p_job_types);
        exit when v_next.id is null;
        select * into v_claimed from mark_job_processing(v_next.id, p_worker, p_lease);
        if v_claimed.id is not null then
            return next v_claimed;
        end if;
    end loop;
end;
$$;

-- Finishes a job. Only the holder of the current lease can: a late worker gets false.
create function mark_job_completed(
    p_job_id uuid,
    p_lease_token uuid,
    p_result jsonb default null
) returns boolean
language plpgsql as $$
begin
    update job_queue
    set status = 'completed',
        result = p_result,
        completed_at = now(),
        locked_by = null,
        locked_until = null,
        lease_token = null
    where id = p_job_id
      and status = 'processing'
      and lease_token = p_lease_token;
    if not found then
        raise notice 'mark_job_completed: job % is not held under lease %', p_job_id, p_lease_token;
        return false;
    end if;
    return true;
end;
$$;

-- Records a failed attempt. A retryable failure goes back to pending with backoff while
-- retry_count < max_retries; anything else ends failed. Returns the new status, or null when the
-- caller does not hold the current lease (nothing is changed then).
create function mark_job_failed(
    p_job_id uuid,
    p_lease_token uuid,
    p_error text,
    p_retryable boolean default true
) returns text
language plpgsql as $$
declare
    v_job job_queue;
    v_retry boolean;
begin
    select * into v_job
    from job_queue
    where id = p_job_id
      and status = 'processing'
      and lease_token = p_lease_token
    for update;
    if not found then
        raise notice 'mark_job_failed: job % is not held under lease %', p_job_id, p_lease_token;
        return null;
    end if;

    v_retry := coalesce(p_retryable, true) and v_job.retry_count < v_job.max_retries;

    update job_queue
    set status = case when v_retry then 'pending' else 'failed' end,
        retry_count = retry_count + case when v_retry then 1 else 0 end,
        run_at = case when v_retry then now() + job_backoff(v_job.retry_count + 1) else run_at end,
        error_message = p_error,
        errors = errors || jsonb_build_array(jsonb_build_object(
            'attempt', v_job.retry_count + 1,
            'at', now(),
            'error', p_error,
            'retryable', coalesce(p_retryable, true))),
        completed_at = case when v_retry then null else now() end,
        locked_by = null,
        locked_until = null,
        lease_token = null
    where id = p_job_id;

    return case when v_retry then 'pending' else 'failed' end;
end;
$$;

-- Pushes the lease of a running job further out. Returns the new expiry, or null when the
-- caller's lease is not the current one (the job was requeued, finished or cancelled).
create function extend_job_lease(
    p_job_id uuid,
    p_lease_token uuid,
    p_lease interval default interval '60 seconds'
) returns timestamptz
language sql volatile as $$
    update job_queue
    set locked_until = now() + p_lease
    where id = p_job_id
      and status = 'processing'
      and lease_token = p_lease_token
    returning locked_until
$$;

-- Jobs whose lease ran out (their worker died or hung) count the attempt and go back to pending,
-- or end failed when no attempts are left. Returns how many jobs it moved.
create function requeue_expired_jobs() returns integer
language plpgsql as $$
declare
    v_count integer;
begin
    with expired as (
        select id
        from job_queue
        where status = 'processing'
          and locked_until < now()
        for update skip locked
    )
    update job_queue j
    set status = case when j.retry_count < j.max_retries then 'pending' else 'failed' end,
        retry_count = j.retry_count + case when j.retry_count < j.max_retries then 1 else 0 end,
        run_at = now(),
        error_message = format('lease expired: worker %s stopped reporting', j.locked_by),
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.retry_count + 1,
            'at', now(),
            'error', format('lease expired: worker %s stopped reporting', j.locked_by),
            'retryable', true)),
        completed_at = case when j.retry_count < j.max_retries then null else now() end,
        locked_by = null,
        locked_until = null,
        lease_token = null
    from expired
    where j.id = expired.id;
    get diagnostics v_count = row_count;
    return v_count;
end;
$$;

-- Cancels a job that has not finished. A running job's lease is revoked, so its worker's
-- result is discarded. Returns false when the job is already finished or does not exist.
create function cancel_job(p_job_id uuid) returns boolean
language sql volatile as $$
    with cancelled as (
        update job_queue
        set status = 'cancelled',
            completed_at = now(),
            locked_by = null,
            locked_until = null,
            lease_token = null
        where id = p_job_id
          and status in ('pending', 'processing')
        returning 1
    )
    select exists (select 1 from cancelled)
$$;

-- Puts a failed or cancelled job back in the queue with a fresh set of attempts; its error
-- history is kept.
create function retry_job(p_job_id uuid) returns boolean
language sql volatile as $$
    with retried as (
        update job_queue
        set status = 'pending',
            retry_count = 0,
            run_at = now(),
            completed_at = null
        where id = p_job_id
          and status in ('failed', 'cancelled')
        returning 1
    )
    select exists (select 1 from retried)
$$;

-- Supabase: signed-in users read their own rows through the API and Realtime; the service
-- connects as the table owner and bypasses these policies. On plain PostgreSQL (no auth.uid(),
-- no supabase_realtime publication) only the owner reads the table.
create function processor_share_own_rows(p_table regclass, p_realtime boolean) returns void
language plpgsql as $$
begin
    execute format('alter table %s enable row level security', p_table);
    if exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
               where n.nspname = 'auth' and p.proname = 'uid')
       and exists (select 1 from pg_roles where rolname = 'authenticated') then
        execute format('create policy %I on %s for select to authenticated '
                       'using (user_id = auth.uid()::text)', p_table::text || '_owner_read',
                       p_table);
        execute format('grant select on %s to authenticated', p_table);
    end if;
    if p_realtime and exists (select 1 from pg_publication where pubname = 'supabase_realtime')
    then
        execute format('alter publication supabase_realtime add table %s', p_table);
    end if;
end;
$$;

select processor_share_own_rows('job_queue', true);


-- Functions are executable by PUBLIC by default, and Supabase exposes the public schema over its
-- REST API to the anon and authenticated roles: every queue object is kept from all three. Only
-- the owner (the processor) and roles it grants may claim, finish or enqueue.
create function processor_keep_private(p_objects text[]) returns void
language plpgsql as $$
declare
    v_object text;
    v_role text;
begin
    foreach v_object in array p_objects loop
        execute format('revoke all on %s from public', v_object);
        foreach v_role in array array['anon', 'authenticated'] loop
            if exists (select 1 from pg_roles where rolname = v_role) then
                execute format('revoke all on %s from %I', v_object, v_role);
            end if;
        end loop;
    end loop;
end;
$$;

select processor_keep_private(array[
    'function enqueue_job(text, jsonb, text, integer, timestamptz, integer, text)',
    'function get_next_job(text[])',
    'function mark_job_processing(uuid, text, interval)',
    'function claim_jobs(text, integer, text[], interval)',
    'function mark_job_completed(uuid, uuid, jsonb)',
    'function mark_job_failed(uuid, uuid, text, boolean)',
    'function extend_job_lease(uuid, uuid, interval)',
    'function requeue_expired_jobs()',
    'function cancel_job(uuid)',
    'function retry_job(uuid)',
    'function job_backoff(integer, interval, interval)',
    'function processor_keep_private(text[])',
    'function processor_share_own_rows(regclass, boolean)'
]);
