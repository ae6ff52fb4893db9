-- Claims in the common case (issue 24): when fair share has nothing to share (no cap, no
-- pause, no wake to fold in, at most one lane due) a claim is one statement in global order,
-- as a plain FOR UPDATE SKIP LOCKED claim is; and get_next_job calls the pick once.

-- Whether any cap or pause is in force, kept by the triggers below: one row for a claim to
-- read instead of two tables to probe.
create table job_queue_limited (
    id boolean primary key default true check (id),
    limited boolean not null default false
);
comment on table job_queue_limited is
    'Whether a group or type has a cap, or a type is paused (kept by triggers on '
    'job_concurrency_limits and job_type_limits): without one, claims need not count or filter.';
insert into job_queue_limited (limited)
select exists (select 1 from job_type_limits
               where paused_at is not null or max_running is not null)
       or exists (select 1 from job_concurrency_limits where max_running is not null);

-- Invariant: job_queue_limited.limited is true whenever a cap or pause is committed.
-- Every writer takes the same lock (held to commit) and only then reads both tables in a
-- fresh snapshot, so two changes committed at once (a pause beside a resume) cannot leave the
-- value one of them computed without seeing the other. Claims never take this lock.
create function job_queue_note_limits() returns trigger
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
as $$
begin
    perform pg_advisory_xact_lock(hashtext('processor:limited'));
    update job_queue_limited
    set limited = exists (select 1 from job_type_limits
                          where paused_at is not null or max_running is not null)
                  or exists (select 1 from job_concurrency_limits where max_running is not null);
    return null;
end;
$$;

create trigger job_type_limits_noted
after insert or update or delete or truncate on job_type_limits
for each statement execute function job_queue_note_limits();
create trigger job_concurrency_limits_noted
after insert or update or delete or truncate on job_concurrency_limits
for each statement execute function job_queue_note_limits();

-- True when a claim may take jobs in global order (priority, run_at, age) and skip the lanes:
-- no cap or pause in force, no wake waiting to be folded in, at most one lane due. Then the
-- global order is the fair order, and the lanes' passes need not move (with one lane due they
-- order nothing; a lane that wakes later starts at the frontier as always).
-- Takes processor:limits shared first, as job_queue_pick does, and reads the state only after
-- it (a statement of its own, so a fresh snapshot): a cap committed before the lock was got is
-- seen. False when a limit change holds the lock: the full pick waits for it.
create function job_queue_in_order() returns boolean
language plpgsql as $$
begin
    if not pg_try_advisory_xact_lock_shared(hashtext('processor:limits')) then
        return false;
    end if;
    -- The wakes are read by their key, first row only: the table churns (a row per insert
    -- statement, deleted by the next claim), and a sequential scan of it, empty but not yet
    -- vacuumed, cost a claim more than the claim itself.
    return not (select limited from job_queue_limited)
       and (select id from job_queue_wakes order by id limit 1) is null
       and (select count(*) from (select 1 from job_queue_lanes where due_at <= now()
                                  limit 2) d) <= 1;
end;
$$;

create or replace function claim_jobs(
    p_worker text,
    p_limit integer default 1,
    p_job_types text[] default null,
    p_lease interval default '1 minute'
) returns setof job_queue
language plpgsql as $$
declare
    v_ids uuid[];
begin
    -- A limit of 0 (or null, or less) claims nothing: it is how a caller says it has no room.
    if coalesce(p_limit, 0) <= 0 then
        return;
    end if;
    if job_queue_in_order() then
        v_ids := array(select id from job_queue
                       where status = 'pending' and run_at <= now()
                         and (p_job_types is null or job_type = any (p_job_types))
                       order by priority desc, run_at, created_at
                       limit p_limit
                       for update skip locked);
    else
        v_ids := job_queue_pick(p_limit, p_job_types);
    end if;
    return query
    with claimed as (
        update job_queue j
        set status = 'processing',
            locked_by = p_worker,
            locked_until = now() + p_lease,
            lease_token = gen_random_uuid(),
            processed_at = now()
        where j.id = any (v_ids) and j.status = 'pending'
        returning j.*
    )
    select * from claimed order by priority desc, run_at, created_at;
end;
$$;

-- get_next_job follows claim_jobs(…, 1): the same order, rules and locks (see 0016). The pick
-- is called once: `where id = (job_queue_pick(…))[1]` made PostgreSQL call the volatile pick
-- once per row of job_queue (7 s a call over 120,000 jobs, each moving the lane a turn).
create or replace function get_next_job(p_job_types text[] default null) returns job_queue
language plpgsql as $$
declare
    v_id uuid;
    v_job job_queue;
begin
    if job_queue_in_order() then
        v_id := (select id from job_queue
                 where status = 'pending' and run_at <= now()
                   and (p_job_types is null or job_type = any (p_job_types))
                 order by priority desc, run_at, created_at
                 limit 1
                 for update skip locked);
    else
        v_id := (job_queue_pick(1, p_job_types))[1];
    end if;
    select * into v_job from job_queue where id = v_id;
    if not found then
        return null;  -- as before: no row, not a row of nulls
    end if;
    -- The pick may have let the job's lane go with its last job, and the caller may still not
    -- start it: a wake makes the lane again for whatever stays pending.
    if not exists (select 1 from job_queue_lanes
                   where job_type = v_job.job_type
                     and group_key = coalesce(v_job.concurrency_key, v_job.user_id, '')
                     and priority = v_job.priority) then
        insert into job_queue_wakes (job_type, group_key, priority, due_at)
        values (v_job.job_type, coalesce(v_job.concurrency_key, v_job.user_id, ''),
                v_job.priority, v_job.run_at);
    end if;
    return v_job;
end;
$$;

-- As in 0016, with job_queue_limited read instead of the two limit tables.
create or replace function mark_job_processing(
    p_job_id uuid,
    p_worker text,
    p_lease interval default '1 minute'
) returns setof job_queue
language plpgsql as $$
declare
    v_job job_queue;
    v_group text;
    v_cap integer;
    v_timeout text;
begin
    select * into v_job from job_queue where id = p_job_id and status = 'pending' for update;
    if not found or v_job.run_at > now() then
        return;
    end if;
    -- As a claim: the limits lock before the limits are read (a cap committed meanwhile is
    -- seen), 100 ms at most for each lock, else nothing starts now (the job stays pending), so
    -- a claim left open elsewhere never makes this call hang.
    v_timeout := current_setting('lock_timeout');
    if not pg_try_advisory_xact_lock_shared(hashtext('processor:limits')) then
        begin
            perform set_config('lock_timeout', '100ms', true);
            perform pg_advisory_xact_lock_shared(hashtext('processor:limits'));
            perform set_config('lock_timeout', v_timeout, true);
        exception when lock_not_available then
            return;
        end;
    end if;
    if (select limited from job_queue_limited) then
        if exists (select 1 from job_type_limits
                   where job_type = v_job.job_type and paused_at is not null) then
            return;
        end if;
        v_group := coalesce(v_job.concurrency_key, v_job.user_id, '');
        begin
            perform set_config('lock_timeout', '100ms', true);
            perform pg_advisory_xact_lock(hashtext('processor:caps'));
            perform set_config('lock_timeout', v_timeout, true);
        exception when lock_not_available then
            return;
        end;
        v_cap := job_group_cap(v_group);
        if v_cap is not null and job_group_running(v_group) >= v_cap then
            return;
        end if;
        select max_running into v_cap from job_type_limits where job_type = v_job.job_type;
        if v_cap is not null and job_type_running(v_job.job_type) >= v_cap then
            return;
        end if;
    end if;
    return query
    update job_queue
    set status = 'processing',
        locked_by = p_worker,
        locked_until = now() + p_lease,
        lease_token = gen_random_uuid(),
        processed_at = now()
    where id = p_job_id and status = 'pending'
    returning *;
end;
$$;

select processor_keep_private(array[
    'table job_queue_limited',
    'function job_queue_note_limits()',
    'function job_queue_in_order()',
    'function claim_jobs(text, integer, text[], interval)',
    'function get_next_job(text[])',
    'function mark_job_processing(uuid, text, interval)'
]);
