-- Operating at scale: one number an autoscaler can target, bulk retry and cancel by filter
-- (with what a retry has paid and may still cost), and the health of the queue's storage.

alter table job_queue_settings add column slots_per_processor integer not null default 20
    constraint job_queue_settings_slots_per_processor check (slots_per_processor between 1 and 100000);
comment on column job_queue_settings.slots_per_processor is
    'MAX_RUNNING_JOBS of one processor (processor serve records its own at start); processor_scaling_metric divides by it.';

-- Work per processor slot: (running jobs + due pending jobs that may start) / slots. A scaler
-- that targets 1 runs one processor per slot's worth of work: every slot busy, nothing waiting.
-- Paused types count nothing; a type with a cap counts no more than its cap leaves room for.
-- Group caps are not counted (a group at its cap looks like work). Due jobs are counted up to
-- 100 processors' worth, so the cost stays flat however deep the backlog is.
create function processor_scaling_metric(
    p_job_types text[] default null,
    p_slots integer default null
) returns double precision
language plpgsql stable as $$
declare
    v_slots integer := coalesce(p_slots,
                                (select slots_per_processor from job_queue_settings where id), 20);
    v_bound integer;
    v_skip text[];
    v_running bigint;
    v_due bigint;
    v_type record;
begin
    if v_slots < 1 then
        raise exception 'processor_scaling_metric: slots must be >= 1, got %', v_slots
            using errcode = '22023';
    end if;
    v_bound := v_slots * 100;
    -- Paused types and types with a cap are counted apart (or not at all).
    select coalesce(array_agg(job_type), '{}') into v_skip from job_type_limits
    where paused_at is not null or max_running is not null;
    select count(*) into v_running from job_queue
    where status = 'processing' and (p_job_types is null or job_type = any (p_job_types));
    select count(*) into v_due from (
        select 1 from job_queue
        where status = 'pending' and run_at <= now()
          and (p_job_types is null or job_type = any (p_job_types))
          and job_type <> all (v_skip)
        limit v_bound) d;
    for v_type in
        select t.job_type, t.max_running from job_type_limits t
        where t.paused_at is null and t.max_running is not null
          and (p_job_types is null or t.job_type = any (p_job_types))
    loop
        v_due := v_due + (
            select count(*) from (
                select 1 from job_queue
                where status = 'pending' and run_at <= now() and job_type = v_type.job_type
                limit greatest(v_type.max_running - job_type_running(v_type.job_type), 0)) d);
    end loop;
    return (v_running + least(v_due, v_bound))::double precision / v_slots;
end;
$$;
comment on function processor_scaling_metric(text[], integer) is
    '(running + due jobs that may start) / slots per processor: a scaler targets 1. Reads indexes only; due jobs counted up to 100 processors'' worth.';

-- What a job's retry needs, from its stored checkpoints: the images (and A+ document) the
-- built-in handlers make, and how many of them are stored. Null for other job types.
create function job_items_needed(p_job_type text, p_payload jsonb) returns integer
language sql immutable as $$
    select case
        when p_job_type in ('generate-image', 'generate-images') then 1
        when p_job_type = 'generate-complete-pack'
            then 6 + case when coalesce((p_payload ->> 'include_aplus')::boolean, false)
                          then 7 else 0 end
        when p_job_type = 'generate-aplus' then 7  -- six images and the document
    end
$$;

create function job_items_stored(p_job_id uuid) returns integer
language sql stable as $$
    select (select count(*) from generated_images where job_id = p_job_id)::integer
         + (select count(*) from aplus_contents where job_id = p_job_id)::integer
$$;

-- The jobs a bulk action selects: by status, type, user, when they ended (or last changed),
-- and a substring of their last error; oldest first, at most p_limit (1 to 10,000).
create function job_queue_select_for_action(
    p_statuses text[], p_job_type text, p_user_id text, p_since timestamptz,
    p_until timestamptz, p_error text, p_limit integer
) returns setof uuid
language plpgsql stable as $$
begin
    if p_limit is null or p_limit not between 1 and 10000 then
        raise exception 'limit must be from 1 to 10000, got %', p_limit using errcode = '22023';
    end if;
    if p_since is not null and p_until is not null and p_since > p_until then
        raise exception 'since (%) is after until (%)', p_since, p_until using errcode = '22023';
    end if;
    return query
    select j.id from job_queue j
    where j.status = any (p_statuses)
      and (p_job_type is null or j.job_type = p_job_type)
      and (p_user_id is null or j.user_id = p_user_id)
      and (p_since is null or coalesce(j.completed_at, j.updated_at) >= p_since)
      and (p_until is null or coalesce(j.completed_at, j.updated_at) < p_until)
      and (p_error is null or strpos(lower(coalesce(j.error_message, '')), lower(p_error)) > 0)
    order by coalesce(j.completed_at, j.updated_at), j.id
    limit p_limit;
end;
$$;

-- Puts failed (or cancelled) jobs back in the queue, selected by filter, oldest first; each one
-- as retry_job would. A dry run changes nothing and says what the retry would do. Each row says
-- what was already paid for the job (provider_calls) and, from its stored checkpoints, the most
-- the retry can cost: the items still missing at the dearest single call of that job type in
-- the ledger (null when the ledger has none, or for job types this service does not make). With
-- credits on, a job whose user cannot cover it again is skipped with the reason; the others go
-- back. Fair share and caps apply to the replayed jobs as to any other.
create function retry_jobs(
    p_status text default 'failed',
    p_job_type text default null,
    p_user_id text default null,
    p_since timestamptz default null,
    p_until timestamptz default null,
    p_error text default null,
    p_limit integer default 100,
    p_dry_run boolean default false
) returns table (
    job_id uuid, job_type text, user_id text, retried boolean, reason text,
    items_needed integer, items_stored integer, paid_usd numeric, max_retry_usd numeric
)
language plpgsql as $$
declare
    v_id uuid;
    v_job job_queue;
    v_dearest jsonb := '{}';
    v_price numeric;
begin
    if p_status is null or p_status not in ('failed', 'cancelled') then
        raise exception 'retry_jobs: status must be failed or cancelled, got %',
            coalesce(p_status, 'null') using errcode = '22023';
    end if;
    for v_id in
        select s from job_queue_select_for_action(array[p_status], p_job_type, p_user_id,
                                                  p_since, p_until, p_error, p_limit) s
    loop
        select * into v_job from job_queue where id = v_id for update skip locked;
        continue when not found or v_job.status <> p_status;  -- taken since it was selected
        job_id := v_job.id;
        job_type := v_job.job_type;
        user_id := v_job.user_id;
        items_needed := job_items_needed(v_job.job_type, v_job.payload);
        items_stored := job_items_stored(v_job.id);
        select coalesce(sum(c.cost_usd), 0) into paid_usd from provider_calls c
        where c.job_id = v_job.id;
        if not v_dearest ? v_job.job_type then
            select max(c.cost_usd) into v_price from provider_calls c
            join job_queue q on q.id = c.job_id
            where q.job_type = v_job.job_type and c.status = 'ok';
            v_dearest := v_dearest || jsonb_build_object(v_job.job_type, v_price);
        end if;
        v_price := (v_dearest ->> v_job.job_type)::numeric;
        max_retry_usd := greatest(items_needed - items_stored, 0) * v_price;
        if p_dry_run then
            retried := false;
            reason := 'dry run: would go back to pending';
            return next;
            continue;
        end if;
        begin
            update job_queue
            set status = 'pending', retry_count = 0, run_at = now(), completed_at = null
            where id = v_job.id;
            retried := true;
            reason := null;
        exception when sqlstate '53000' then  -- insufficient credits (credit_reserve)
            retried := false;
            reason := sqlerrm;
        end;
        return next;
    end loop;
end;
$$;

-- Cancels pending (and, if asked, processing) jobs by the same filters; as cancel_job would.
create function cancel_jobs(
    p_status text default 'pending',
    p_job_type text default null,
    p_user_id text default null,
    p_since timestamptz default null,
    p_until timestamptz default null,
    p_error text default null,
    p_limit integer default 100,
    p_dry_run boolean default false
) returns table (job_id uuid, job_type text, user_id text, cancelled boolean, reason text)
language plpgsql as $$
declare
    v_id uuid;
    v_job job_queue;
begin
    if p_status is null or p_status not in ('pending', 'processing') then
        raise exception 'cancel_jobs: status must be pending or processing, got %',
            coalesce(p_status, 'null') using errcode = '22023';
    end if;
    for v_id in
        select s from job_queue_select_for_action(array[p_status], p_job_type, p_user_id,
                                                  p_since, p_until, p_error, p_limit) s
    loop
        -- A job a claim holds this instant is left alone (it is running: cancel it again).
        select * into v_job from job_queue where id = v_id for update skip locked;
        continue when not found or v_job.status <> p_status;
        job_id := v_job.id;
        job_type := v_job.job_type;
        user_id := v_job.user_id;
        if p_dry_run then
            cancelled := false;
            reason := 'dry run: would be cancelled';
        else
            update job_queue
            set status = 'cancelled', completed_at = now(), locked_by = null,
                locked_until = null, lease_token = null
            where id = v_job.id;
            cancelled := true;
            reason := null;
        end if;
        return next;
    end loop;
end;
$$;

-- The storage of the queue's busiest tables, and what holds back vacuum.
create view job_queue_table_health with (security_invoker = on) as
select s.relname::text as table_name,
       s.n_live_tup as live_tuples,
       s.n_dead_tup as dead_tuples,
       pg_table_size(s.relid) as table_bytes,
       pg_indexes_size(s.relid) as index_bytes,
       s.n_tup_upd as updates,
       s.n_tup_hot_upd as hot_updates,
       greatest(s.last_autovacuum, s.last_vacuum) as last_vacuum,
       greatest(s.last_autoanalyze, s.last_analyze) as last_analyze,
       s.autovacuum_count + s.vacuum_count as vacuums,
       h.oldest_xact_seconds,
       h.oldest_xact_pid,
       h.oldest_slot_xmin_age
from pg_stat_user_tables s
cross join (
    select (select extract(epoch from now() - a.xact_start) from pg_stat_activity a
            where a.backend_xmin is not null and a.pid <> pg_backend_pid()
            order by a.xact_start limit 1) as oldest_xact_seconds,
           (select a.pid from pg_stat_activity a
            where a.backend_xmin is not null and a.pid <> pg_backend_pid()
            order by a.xact_start limit 1) as oldest_xact_pid,
           (select max(age(r.xmin)) from pg_replication_slots r where r.xmin is not null)
               as oldest_slot_xmin_age
) h
where s.schemaname = current_schema()
  and s.relname in ('job_queue', 'job_queue_lanes', 'job_queue_wakes', 'processor_net_calls',
                    'provider_calls', 'credit_ledger');
comment on view job_queue_table_health is
    'Live and dead tuples, sizes, HOT updates and the last vacuum of the queue''s tables, and the oldest open transaction (which stops vacuum from removing dead rows).';

select processor_keep_private(array[
    'function processor_scaling_metric(text[], integer)',
    'function job_items_needed(text, jsonb)',
    'function job_items_stored(uuid)',
    'function job_queue_select_for_action(text[], text, text, timestamptz, timestamptz, text, integer)',
    'function retry_jobs(text, text, text, timestamptz, timestamptz, text, integer, boolean)',
    'function cancel_jobs(text, text, text, timestamptz, timestamptz, text, integer, boolean)',
    'table job_queue_table_health'
]);
