-- Jobs that wait for other jobs (issue 26): dependencies, workflows, handlers that suspend.
--
-- A job may name the jobs it depends on (job_queue.depends_on, set at insert). While any of
-- them is unfinished it is 'waiting': out of every claim index, costing claims nothing. The
-- number still unfinished is kept on the waiting job (waiting_on) and brought down in the
-- transaction that finishes a dependency, under the waiting job's row lock; at 0 the job
-- becomes pending and is placed like a new one.
--
-- The invariant, and what keeps it: waiting_on = the number of depends_on that are unfinished
-- (pending, processing, waiting).
--   * A dependent's insert locks its dependencies FOR SHARE before it counts them. FOR SHARE
--     conflicts with the UPDATE that finishes a job: either the finisher commits first and the
--     count sees it finished, or the insert commits first and the finisher, which waited for
--     that lock, sees the new dependent (has_dependents is set on the dependency by the same
--     insert) and brings its count down.
--   * A finisher changes waiting_on relatively (waiting_on - n) on the row it holds locked,
--     never by recounting: two last dependencies finishing at once each subtract their own 1
--     from the latest row version, so exactly one of them takes it to 0.
--   * A dependency that is retried (finished -> pending) adds its 1 back to the dependents
--     still waiting, and re-opens those its failure cancelled (ended_by).
--   * Batches (complete_jobs, fail_jobs, requeue_expired_jobs) settle all their rows in one
--     pass after their UPDATE, taking the dependents' row locks in id order: finishers never
--     deadlock on shared dependents. A single UPDATE from anywhere else settles at once.
--   * Rows written with triggers off, or dependencies deleted by hand, are found by
--     job_queue_reap_waiting, which the processors run every few seconds.

alter table job_queue
    add column depends_on uuid[],
    add column waiting_on integer,
    add column on_dependency_failure text not null default 'cancel',
    add column workflow_id uuid,
    add column node_name text,
    add column parent_id uuid,
    add column has_dependents boolean not null default false,
    add column ended_by uuid,
    add column suspensions integer not null default 0,
    add column progress_base jsonb;

alter table job_queue drop constraint job_queue_status_check;
alter table job_queue
    add constraint job_queue_status_check
        check (status in ('pending', 'processing', 'completed', 'failed', 'cancelled', 'waiting'))
        not valid,
    add constraint job_queue_on_dependency_failure_check
        check (on_dependency_failure in ('cancel', 'run')) not valid,
    add constraint job_queue_node_name_length
        check (node_name is null or length(node_name) between 1 and 200) not valid,
    add constraint job_queue_depends_on_size
        check (cardinality(depends_on) <= 10000) not valid;
alter table job_queue validate constraint job_queue_status_check;
alter table job_queue validate constraint job_queue_on_dependency_failure_check;
alter table job_queue validate constraint job_queue_node_name_length;
alter table job_queue validate constraint job_queue_depends_on_size;

comment on column job_queue.depends_on is
    'Jobs this one waits for (set at insert; at most 10,000). It runs once every one of them has finished.';
comment on column job_queue.waiting_on is
    'While waiting: how many of depends_on are unfinished. Kept by triggers; never set it by hand.';
comment on column job_queue.on_dependency_failure is
    'What a failed or cancelled dependency does to this job: cancel (it is cancelled, and so on down the graph) or run (it runs and sees the failure).';
comment on column job_queue.workflow_id is
    'The workflow this job belongs to: the id of its first job (enqueue_workflow), or of the first dependency it was given.';
comment on column job_queue.node_name is
    'The job''s name in its workflow (enqueue_workflow) or among its parent''s children.';
comment on column job_queue.parent_id is
    'The job whose handler created this one as a child (and waits for it).';
comment on column job_queue.has_dependents is
    'Some job depends on this one: finishing it settles them. Kept by triggers.';
comment on column job_queue.ended_by is
    'The dependency whose failure or cancellation cancelled this job; retrying that dependency re-opens it.';
comment on column job_queue.suspensions is
    'How many times the handler answered with children to wait for.';
comment on column job_queue.progress_base is
    'While a job waits for its children: its own progress when it handed them out, and their ids (set_job_progress adds theirs to it).';

alter table job_queue_settings
    add column max_workflow_nodes integer not null default 10000
        constraint job_queue_settings_max_workflow_nodes check (max_workflow_nodes between 1 and 100000);
comment on column job_queue_settings.max_workflow_nodes is
    'The most jobs enqueue_workflow takes in one graph, and a handler may create as children of one job.';

-- Who waits for a job (the finisher's lookup), kept only for the jobs that have dependencies.
-- (fastupdate off: a pending list would be read whole by every finisher's lookup)
create index job_queue_dependents_idx on job_queue using gin (depends_on)
    with (fastupdate = off) where depends_on is not null;
create index job_queue_workflow_idx on job_queue (workflow_id, status)
    where workflow_id is not null;
create index job_queue_ended_by_idx on job_queue (ended_by) where ended_by is not null;
-- (by id, not updated_at: every update stamps updated_at, and an index on it would make every
-- lease extension and progress write a non-HOT update)
create index job_queue_waiting_idx on job_queue (id) where status = 'waiting';

-- Locks the given jobs FOR SHARE (in id order: no deadlock between two callers) and counts
-- them: how many exist, how many are unfinished, and the first that failed or was cancelled.
create function job_queue_lock_dependencies(
    p_ids uuid[], p_mark boolean default false, p_skip uuid[] default '{}',
    out existing integer, out unfinished integer, out ended uuid, out ended_status text,
    out skipped integer, out first_workflow uuid)
    language plpgsql
    set search_path = pg_catalog, public, pg_temp
    set enable_seqscan = off
    set jit = off
as $$
declare
    v_id uuid;
    v_status text;
begin
    existing := 0;
    unfinished := 0;
    skipped := 0;
    -- One pass in id order. With p_mark (a new dependent's insert) a dependency not yet
    -- marked is marked by an UPDATE, which locks it; the others are locked FOR SHARE. Either
    -- lock conflicts with the UPDATE that finishes the job, and the status read is the latest.
    for v_id in select d from unnest(p_ids) d order by d loop
        v_status := null;
        if p_mark then
            update job_queue j set has_dependents = true, workflow_id = coalesce(j.workflow_id, j.id)
            where j.id = v_id and (not j.has_dependents or j.workflow_id is null)
            returning j.status into v_status;
        end if;
        if v_status is null then
            select j.status into v_status from job_queue j where j.id = v_id for share;
        end if;
        continue when v_status is null;  -- no such job
        existing := existing + 1;
        if v_id = any (p_skip) then
            skipped := skipped + 1;  -- (being re-opened by the caller: counted when it is)
        elsif v_status in ('pending', 'processing', 'waiting') then
            unfinished := unfinished + 1;
        elsif v_status in ('failed', 'cancelled') and ended is null then
            ended := v_id;
            ended_status := v_status;
        end if;
    end loop;
    select coalesce(j.workflow_id, j.id) into first_workflow
    from job_queue j where j.id = p_ids[1];
end;
$$;

-- The reason a job ends for its dependency's sake: a dependent is cancelled ("cancelled: its
-- dependency … failed: …"); a parent whose child failed has failed ("its child … failed: …").
create function job_queue_ended_reason(p_dependency uuid, p_status text,
                                       p_as_parent boolean default false)
    returns text
    language sql stable
    set search_path = pg_catalog, public, pg_temp
as $$
    select format(case when p_as_parent then 'its child %s (%s) %s'
                       else 'cancelled: its dependency %s (%s) %s' end,
                  d.id, coalesce(d.node_name, d.job_type),
                  case p_status when 'failed' then 'failed' else 'was cancelled' end)
           || coalesce(': ' || left(d.error_message, 200), '')
    from job_queue d where d.id = p_dependency
$$;

-- BEFORE INSERT (a row with depends_on, or written as waiting) and BEFORE UPDATE to pending
-- from failed or cancelled (a retry) of a row with depends_on: the row waits for its
-- unfinished dependencies. Dependencies are de-duplicated (the first mention keeps its place).
create function job_queue_await_dependencies() returns trigger
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
    set enable_seqscan = off
    set jit = off
as $$
declare
    v_deps record;
    v_missing text;
begin
    if tg_op = 'INSERT' and new.depends_on is not null then
        new.depends_on := array(select d from unnest(new.depends_on) with ordinality u(d, n)
                                where d is not null group by d order by min(n));
        if cardinality(new.depends_on) = 0 then
            new.depends_on := null;
        elsif cardinality(new.depends_on) > 10000 then
            raise exception 'job_queue: a job may depend on at most 10000 jobs, got %',
                cardinality(new.depends_on) using errcode = '54000';
        elsif new.id = any (new.depends_on) then
            raise exception 'job_queue: job % depends on itself (a cycle)', new.id
                using errcode = '22023';
        end if;
    end if;
    if new.depends_on is null then
        if new.status = 'waiting' then
            new.status := 'pending';
        end if;
        new.waiting_on := null;
        return new;
    end if;
    -- (on insert, each dependency is marked has_dependents, so finishing it settles this row)
    v_deps := job_queue_lock_dependencies(new.depends_on, tg_op = 'INSERT');
    if v_deps.existing < cardinality(new.depends_on) then
        select string_agg(d::text, ', '), count(*) into v_missing
        from (select d from unnest(new.depends_on) d
              where not exists (select 1 from job_queue j where j.id = d) limit 5) m;
        raise exception 'job_queue: depends_on names % job(s) that do not exist: %',
            cardinality(new.depends_on) - v_deps.existing, v_missing
            using errcode = '23503';
    end if;
    if tg_op = 'INSERT' then
        new.workflow_id := coalesce(new.workflow_id, v_deps.first_workflow);
    end if;
    new.ended_by := null;
    if tg_op = 'INSERT' and v_deps.ended is not null and new.on_dependency_failure = 'cancel'
       and new.status in ('pending', 'waiting') then
        new.status := 'cancelled';
        new.completed_at := now();
        new.waiting_on := null;
        new.ended_by := v_deps.ended;
        new.error_message := job_queue_ended_reason(v_deps.ended, v_deps.ended_status);
    elsif v_deps.unfinished > 0 and new.status in ('pending', 'waiting') then
        new.status := 'waiting';
        new.waiting_on := v_deps.unfinished;
        new.turn := null;
    elsif new.status = 'waiting' then
        new.status := 'pending';
        new.waiting_on := null;
    else
        new.waiting_on := null;
    end if;
    return new;
end;
$$;

create trigger job_queue_awaits_on_insert
    before insert on job_queue
    for each row when (new.depends_on is not null or new.status = 'waiting')
    execute function job_queue_await_dependencies();

create trigger job_queue_awaits_on_retry
    before update of status on job_queue
    for each row when (new.depends_on is not null and new.status = 'pending'
                       and old.status in ('failed', 'cancelled'))
    execute function job_queue_await_dependencies();

-- Wakes the processors for jobs that just became due: the insert trigger's path.
create function job_queue_wake() returns void
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
as $$
begin
    perform pg_notify('job_queue_insert', '');
    if coalesce((select value from processor_settings where key = 'instant_pickup'), 'on') = 'on'
    then
        begin
            perform invoke_job_processor(p_quiet => true);
        exception when others then
            raise warning 'job_queue_wake: %', sqlerrm;
        end;
    end if;
end;
$$;

create or replace function job_queue_instant_pickup() returns trigger
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
as $$
begin
    perform job_queue_wake();
    return null;
end;
$$;

-- (Every lookup of dependents goes through the GIN index: the probe sits behind OFFSET 0, so
-- no status filter draws the planner to another index, and sequential scans are off, as in
-- 0022, so a table never analyzed (a fresh workflow of thousands of rows) plans the same.)
-- Settles what moved: for each job in p_ids that finished, its waiting dependents (cancelled
-- down the graph if they cancel on failure, else counted down, and pending at 0) and, if it
-- was cancelled, its unfinished children; for each that was re-opened (finished -> unfinished),
-- its waiting dependents count it again and those it cancelled are re-opened. What this
-- changes moves other rows in turn: job_queue_settle loops until nothing is left.
create function job_queue_settle_ids(p_ids uuid[]) returns void
    language plpgsql
    set search_path = pg_catalog, public, pg_temp
    set enable_seqscan = off
    set jit = off
as $$
declare
    v_released integer;
    v_row record;
    v_deps record;
    v_reopen uuid[];
    v_plan jsonb;
    v_step jsonb;
    v_ended integer;
    v_back integer;
    v_changed boolean;
    v_stuck text;
    v_child record;
    v_parent record;
begin
    -- (most batches only finished jobs: the steps for failures and re-opened jobs are skipped)
    select count(*) filter (where j.status in ('failed', 'cancelled')),
           count(*) filter (where j.status in ('pending', 'processing', 'waiting'))
    into v_ended, v_back
    from job_queue j where j.id = any (p_ids);

    -- 1. Failed or cancelled: the waiting dependents that cancel on failure, all the way down.
    if v_ended > 0 then
    with recursive bad as (
        select j.id, j.status, j.parent_id from job_queue j
        where j.id = any (p_ids) and j.status in ('failed', 'cancelled') and j.has_dependents
    ), doomed(id, cause, cause_status, depth) as (
        select d.id, b.id, b.status, 1 from bad b
        cross join lateral (select d.id, d.status, d.on_dependency_failure from job_queue d
                           where d.depends_on @> array[b.id] offset 0) d
        where d.status = 'waiting'
          and (d.on_dependency_failure = 'cancel' or b.parent_id = d.id)  -- (a child fails its parent)
        union
        select d.id, x.id, 'cancelled', x.depth + 1 from doomed x
        join job_queue xj on xj.id = x.id
        cross join lateral (select d.id, d.status, d.on_dependency_failure from job_queue d
                           where d.depends_on @> array[x.id] offset 0) d
        where d.status = 'waiting'
          and (d.on_dependency_failure = 'cancel' or xj.parent_id = d.id)
    ), one as (
        -- (the nearest cause: the one whose retry re-opens this job)
        select distinct on (id) id, cause, cause_status from doomed order by id, depth, cause
    ), locked as (
        select j.id, one.cause, one.cause_status, c.parent_id is not distinct from j.id as parent
        from job_queue j join one on one.id = j.id join job_queue c on c.id = one.cause
        where j.status = 'waiting' order by j.id for no key update of j
    )
    update job_queue j
    set status = case when locked.parent then 'failed' else 'cancelled' end,
        completed_at = now(), waiting_on = null, ended_by = locked.cause,
        error_message = job_queue_ended_reason(locked.cause, locked.cause_status, locked.parent)
    from locked where j.id = locked.id;
    end if;

    -- 2. Finished: count down the waiting dependents, in id order.
    with fin as (
        select j.id from job_queue j
        where j.id = any (p_ids) and j.status in ('completed', 'failed', 'cancelled')
          and j.has_dependents
    ), hits as (
        select d.id, count(*)::integer as n from fin
        cross join lateral (select d.id, d.status, d.on_dependency_failure from job_queue d
                           where d.depends_on @> array[fin.id] offset 0) d
        where d.status = 'waiting' group by d.id
    ), locked as (
        select j.id, hits.n from job_queue j join hits on hits.id = j.id
        where j.status = 'waiting' order by j.id for no key update of j
    ), released as (
        update job_queue j
        set waiting_on = case when j.waiting_on - locked.n <= 0 then null
                              else j.waiting_on - locked.n end,
            status = case when j.waiting_on - locked.n <= 0 then 'pending' else 'waiting' end,
            run_at = case when j.waiting_on - locked.n <= 0 then greatest(j.run_at, now())
                          else j.run_at end
        from locked where j.id = locked.id
        returning j.status
    )
    select count(*) filter (where status = 'pending') into v_released from released;
    if v_released > 0 then
        perform job_queue_wake();
    end if;

    -- 3. Cancelled parents: their unfinished children (theirs follow in the next pass). A
    -- parent failed by a child: its children that have not started, ended by it (they re-open
    -- with it); the running ones finish, as a pack's images in flight always have.
    if v_ended > 0 then
    with kids as (
        select c.id, p.status = 'failed' as by_failure from job_queue p
        join job_queue c on c.id = any (p.depends_on) and c.parent_id = p.id
        where p.id = any (p_ids) and p.depends_on is not null
          and (p.status = 'cancelled'
               and c.status in ('pending', 'processing', 'waiting')
               or p.status = 'failed' and p.ended_by is not null
                  and c.status in ('pending', 'waiting'))
        order by c.id for no key update of c
    )
    update job_queue c
    set status = 'cancelled', completed_at = now(), waiting_on = null, locked_by = null,
        locked_until = null, lease_token = null,
        ended_by = case when kids.by_failure then c.parent_id end,
        error_message = format(case when kids.by_failure then 'cancelled: its parent %s failed'
                                    else 'cancelled with its parent %s' end, c.parent_id)
    from kids where c.id = kids.id;
    end if;

    if v_back = 0 then
        return;  -- (nothing re-opened: steps 4 and 5 have nothing to do)
    end if;

    -- 4. Re-opened: waiting dependents count them again.
    with back as (
        select j.id from job_queue j
        where j.id = any (p_ids) and j.status in ('pending', 'processing', 'waiting')
          and j.has_dependents
    ), hits as (
        select d.id, count(*)::integer as n from back
        cross join lateral (select d.id, d.status, d.on_dependency_failure from job_queue d
                           where d.depends_on @> array[back.id] offset 0) d
        where d.status = 'waiting' group by d.id
    ), locked as (
        select j.id, hits.n from job_queue j join hits on hits.id = j.id
        where j.status = 'waiting' order by j.id for no key update of j
    )
    update job_queue j set waiting_on = j.waiting_on + locked.n
    from locked where j.id = locked.id;

    -- 5. Re-opened: what their failure ended waits again (or stays ended, by another). Every
    -- one is counted before any changes: one that waits on another re-opened here is counted
    -- in the next pass (step 4), when that one has moved; until then it waits (waiting_on may
    -- be 0 for that moment), and is never released early.
    v_reopen := array(select d.id from job_queue d
                      where d.ended_by = any (p_ids) and d.status in ('cancelled', 'failed')
                        and d.ended_by in (select j.id from job_queue j where j.id = any (p_ids)
                                           and j.status in ('pending', 'processing', 'waiting'))
                      order by d.id);
    if cardinality(v_reopen) > 0 then
        perform 1 from job_queue where id = any (v_reopen) order by id for no key update;
        v_plan := '{}';
        for v_row in
            select d.id, d.depends_on, d.on_dependency_failure, d.parent_id from job_queue d
            where d.id = any (v_reopen) order by d.id
        loop
            -- (skipped: re-opened in this pass, or ended by this very job, a parent's children
            -- that had not started: they re-open with it in the next pass)
            v_deps := job_queue_lock_dependencies(
                v_row.depends_on, false,
                v_reopen || array(select k.id from job_queue k
                                  where k.id = any (v_row.depends_on) and k.ended_by = v_row.id));
            -- (a child of its own that failed ends it whatever its rule; a parent that has
            -- ended and is not re-opened here keeps its child ended)
            select k.id, k.status into v_child from job_queue k
            where k.id = any (v_row.depends_on) and k.parent_id = v_row.id
              and k.status in ('failed', 'cancelled') and k.id <> all (v_reopen)
              and k.ended_by is distinct from v_row.id
            limit 1;
            select p.id, p.status into v_parent from job_queue p
            where p.id = v_row.parent_id and p.status in ('completed', 'failed', 'cancelled')
              and p.id <> all (v_reopen);
            v_plan := v_plan || jsonb_build_object(v_row.id::text, jsonb_build_object(
                'ended', coalesce(v_child.id, v_parent.id,
                                  case when v_row.on_dependency_failure = 'cancel'
                                       then v_deps.ended end),
                'ended_status', coalesce(v_child.status, v_parent.status, v_deps.ended_status),
                'unfinished', v_deps.unfinished, 'skipped', v_deps.skipped,
                'rule', v_row.on_dependency_failure, 'parent', v_row.parent_id,
                'depends_on', to_jsonb(v_row.depends_on)));
            v_child := null;
            v_parent := null;
        end loop;
        -- One that waits on another re-opened here that stays ended, stays ended too (under
        -- the cancel rule), until nothing changes.
        loop
            v_changed := false;
            for v_row in select d.id from job_queue d where d.id = any (v_reopen) loop
                v_step := v_plan -> v_row.id::text;
                continue when v_step ->> 'ended' is not null;
                -- (its parent stays ended; or, under the cancel rule or as the parent of it, a
                -- dependency does)
                select x.key into v_stuck
                from jsonb_each(v_plan) x
                where x.value ->> 'ended' is not null
                  and (x.key = v_step ->> 'parent'
                       or (v_step -> 'depends_on') ? x.key
                          and (v_step ->> 'rule' = 'cancel' or x.value ->> 'parent' = v_row.id::text))
                limit 1;
                if v_stuck is not null then
                    v_plan := jsonb_set(v_plan, array[v_row.id::text, 'ended'], to_jsonb(v_stuck));
                    v_plan := jsonb_set(v_plan, array[v_row.id::text, 'ended_status'],
                                        '"cancelled"');
                    v_changed := true;
                end if;
            end loop;
            exit when not v_changed;
        end loop;
        -- (in the order they were made: a parent before its children, a dependency before
        -- what depends on it)
        for v_row in
            select d.id from job_queue d where d.id = any (v_reopen) order by d.created_at, d.id
        loop
            v_step := v_plan -> v_row.id::text;
            if v_step ->> 'ended' is not null then
                update job_queue d
                set ended_by = (v_step ->> 'ended')::uuid,
                    error_message = job_queue_ended_reason(
                        (v_step ->> 'ended')::uuid, v_step ->> 'ended_status',
                        (select c.parent_id = d.id from job_queue c
                         where c.id = (v_step ->> 'ended')::uuid))
                where d.id = v_row.id;
                continue;
            end if;
            -- (with credits on, one whose owner cannot pay again refuses the whole retry, saying
            -- who: half a graph re-opened would count its jobs wrong)
            update job_queue
            set status = case when (v_step ->> 'unfinished')::integer > 0
                                   or (v_step ->> 'skipped')::integer > 0
                              then 'waiting' else 'pending' end,
                waiting_on = case when (v_step ->> 'unfinished')::integer > 0
                                       or (v_step ->> 'skipped')::integer > 0
                                  then (v_step ->> 'unfinished')::integer end,
                run_at = greatest(run_at, now()),
                completed_at = null, error_message = null, ended_by = null
            where id = v_row.id;
        end loop;
    end if;
end;
$$;

-- What moved in each transaction, for its settle: a table only the owner writes, so no
-- caller can hand the settle a job to count down twice (a setting could be forged). Rows live
-- for the length of their transaction.
create unlogged table job_queue_moved (
    txid bigint not null default txid_current(),
    job_id uuid not null
);
create index job_queue_moved_txid_idx on job_queue_moved (txid);
comment on table job_queue_moved is
    'Jobs others depend on whose status moved in a transaction still settling it (kept by triggers; empty between transactions).';

-- Settles every row moved so far in this transaction; a no-op when called inside a settle
-- (the outer one loops) or with nothing moved.
create function job_queue_settle() returns void
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_moved uuid[];
begin
    if current_setting('processor.settling', true) = 'on' then
        return;
    end if;
    perform set_config('processor.settling', 'on', true);
    loop
        with taken as (
            delete from job_queue_moved where txid = txid_current() returning job_id
        )
        select array_agg(distinct job_id) into v_moved from taken;
        exit when v_moved is null;
        perform job_queue_settle_ids(v_moved);
    end loop;
    perform set_config('processor.settling', '', true);
end;
$$;

-- (complete_jobs inside a settle under way: its rows join that settle's list)
create function job_queue_note_moved(p_ids uuid[]) returns void
    language sql security definer
    set search_path = pg_catalog, public, pg_temp
as $$
    insert into job_queue_moved (job_id) select unnest(p_ids)
$$;

-- complete_jobs' own rows: the jobs others wait for that it just completed, settled at once
-- (and whatever that moves in turn).
create function job_queue_settle_done(p_ids uuid[]) returns void
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
as $$
begin
    perform set_config('processor.settling', 'on', true);
    perform job_queue_settle_ids(p_ids);
    perform set_config('processor.settling', '', true);
    perform job_queue_settle();
end;
$$;

-- AFTER UPDATE of a job others depend on (or a parent cancelled) that finished or was
-- re-opened: noted, and settled at once unless a batch or an outer settle is under way.
create function job_queue_dependency_moved() returns trigger
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
as $$
begin
    insert into job_queue_moved (job_id) values (new.id);
    if coalesce(current_setting('processor.settling', true), '') <> 'on' then
        perform job_queue_settle();
    end if;
    return null;
end;
$$;

create trigger job_queue_dependency_moved
    after update on job_queue
    for each row when ((new.has_dependents or new.depends_on is not null)
                       -- (complete_jobs settles its own rows: no trigger per completed job)
                       and current_setting('processor.settling', true) is distinct from 'batch'
                       and (old.status in ('pending', 'processing', 'waiting'))
                           <> (new.status in ('pending', 'processing', 'waiting')))
    execute function job_queue_dependency_moved();

-- The batch writers settle their rows together, after their one UPDATE.
create or replace function complete_jobs(p_ids uuid[], p_lease_tokens uuid[], p_results jsonb[])
    returns setof uuid
    language plpgsql
as $$
declare
    v_done uuid[];
    v_outer text := current_setting('processor.settling', true);
begin
    -- 'batch': the row trigger stays quiet (its WHEN reads it); the jobs others wait for are
    -- settled together after the UPDATE, in one pass (or, inside a settle already under way,
    -- left to it).
    perform set_config('processor.settling', 'batch', true);
    with outcome as (
        select * from unnest(p_ids, p_lease_tokens, p_results) as o(id, lease_token, result)
    ), held as (
        select j.id, o.result
        from job_queue j join outcome o on o.id = j.id and o.lease_token = j.lease_token
        where j.status = 'processing'
        order by j.id
        for update of j
    ), done as (
        update job_queue j
        set status = 'completed',
            result = held.result,
            completed_at = now(),
            locked_by = null,
            locked_until = null,
            lease_token = null
        from held
        where j.id = held.id
        returning j.id, j.has_dependents
    )
    select coalesce(array_agg(id), '{}'),
           coalesce(array_agg(id) filter (where has_dependents), '{}')
    into v_done, p_ids
    from done;
    if v_outer = 'on' then
        perform set_config('processor.settling', 'on', true);
        perform job_queue_note_moved(p_ids);
    else
        perform set_config('processor.settling', '', true);
        if cardinality(p_ids) > 0 then
            perform job_queue_settle_done(p_ids);
        end if;
    end if;
    return query select unnest(v_done);
end;
$$;

create or replace function fail_jobs(p_ids uuid[], p_lease_tokens uuid[], p_errors text[],
                                     p_retryable boolean[])
    returns table(job_id uuid, new_status text)
    language plpgsql
as $$
begin
    perform set_config('processor.settling', 'on', true);
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
        error_message = case when not held.retry and j.retry_count > 0
                             then format('%s (gave up after %s attempts)', held.error,
                                         j.retry_count + 1)
                             else held.error end,
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.retry_count + 1,
            'started', j.processed_at,
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
    perform set_config('processor.settling', '', true);
    perform job_queue_settle();
end;
$$;

create or replace function requeue_expired_jobs() returns integer
    language plpgsql
as $$
declare
    v_count integer;
begin
    perform set_config('processor.settling', 'on', true);
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
        error_message = case
            when j.retry_count < j.max_retries or j.retry_count = 0
                then format('lease expired: worker %s stopped reporting', j.locked_by)
            else format('lease expired: worker %s stopped reporting (gave up after %s attempts)',
                        j.locked_by, j.retry_count + 1) end,
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.retry_count + 1,
            'started', j.processed_at,
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
    perform set_config('processor.settling', '', true);
    perform job_queue_settle();
    return v_count;
end;
$$;

-- A retried or re-opened job that others wait for pays again; the credit rules are 0011's.
drop trigger job_queue_credits_on_status on job_queue;
create trigger job_queue_credits_on_status
    after update of status on job_queue
    for each row when (new.user_id is not null and new.status is distinct from old.status
                       and new.status in ('completed', 'failed', 'cancelled', 'pending',
                                          'waiting'))
    execute function job_queue_credits_on_status();

create or replace function job_queue_credits_on_status() returns trigger
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_held integer;
    v_cost integer;
begin
    v_held := job_credits_held(new.id);
    if new.status = 'completed' and v_held > 0 then
        insert into credit_ledger (user_id, job_id, kind, amount)
        values (new.user_id, new.id, 'charge', v_held);
    elsif new.status in ('failed', 'cancelled') and v_held > 0 then
        insert into credit_ledger (user_id, job_id, kind, amount)
        values (new.user_id, new.id, 'release', v_held);
    elsif new.status in ('pending', 'waiting') and old.status in ('failed', 'cancelled')
          and (select credits_enabled from job_queue_settings where id) then
        v_cost := job_credit_cost(new.job_type, new.payload);
        if v_cost > 0 then
            perform credit_reserve(new.user_id, new.id, v_cost);  -- a retry pays again
        end if;
    end if;
    return null;
end;
$$;

-- Runs failed or cancelled jobs again, many at once, counting each dependency exactly once:
-- every one goes to 'waiting' first (none can be released while something it depends on is
-- still failed), the settle re-opens what their failures ended, and only then does each one
-- count what it waits for (job_queue_recount), with all of them unfinished.
create function job_queue_recount(p_ids uuid[]) returns void
    language plpgsql
    set search_path = pg_catalog, public, pg_temp
    set enable_seqscan = off
    set jit = off
as $$
declare
    v_row record;
    v_deps record;
begin
    for v_row in
        select j.id, j.depends_on from job_queue j
        where j.id = any (p_ids) and j.status = 'waiting' order by j.id
    loop
        v_deps := job_queue_lock_dependencies(coalesce(v_row.depends_on, '{}'));
        update job_queue
        set waiting_on = nullif(v_deps.unfinished, 0),
            status = case when v_deps.unfinished > 0 then 'waiting' else 'pending' end
        where id = v_row.id;
    end loop;
end;
$$;

create function job_queue_retry_ids(p_ids uuid[]) returns integer
    language plpgsql
    set search_path = pg_catalog, public, pg_temp
    set enable_seqscan = off
    set jit = off
as $$
declare
    v_done uuid[];
begin
    perform set_config('processor.settling', 'on', true);
    with retried as (
        update job_queue j
        set status = 'waiting', waiting_on = 0, retry_count = 0, run_at = now(),
            completed_at = null, ended_by = null
        where j.id in (select x.id from job_queue x
                       where x.id = any (p_ids) and x.status in ('failed', 'cancelled')
                       order by x.id for no key update)
        returning j.id
    )
    select coalesce(array_agg(id), '{}') into v_done from retried;
    perform set_config('processor.settling', '', true);
    perform job_queue_settle();
    perform job_queue_recount(v_done);
    if cardinality(v_done) > 0 then
        perform job_queue_wake();
    end if;
    return cardinality(v_done);
end;
$$;

-- Whether a text reads as a time (a node's run_at), without raising.
create function job_queue_is_time(p_text text) returns boolean
    language plpgsql stable
    set search_path = pg_catalog, public, pg_temp
as $$
begin
    perform p_text::timestamptz;
    return true;
exception when others then
    return false;
end;
$$;

-- Validates a graph of named nodes, orders it so every node comes after what it depends on,
-- and inserts it (enqueue_workflow, suspend_job). With p_key_prefix, a node whose key
-- (prefix || name) already exists is that job, re-run if it had failed or been cancelled: a
-- handler that asks again for the same children gets the same jobs.
create function job_queue_insert_graph(
    p_what text, p_nodes jsonb, p_user_id text, p_priority integer, p_concurrency_key text,
    p_traceparent text, p_workflow_id uuid, p_parent_id uuid, p_key_prefix text,
    p_first_key text, p_max_retries integer default 3)
    returns table(name text, job_id uuid, created boolean)
    language plpgsql
    set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_count integer;
    v_max integer;
    v_bad record;
    v_index jsonb;
    v_ids uuid[];
    v_new boolean[];
    v_indeg integer[];
    v_first integer[];
    v_adj integer[];
    v_queue integer[] := '{}';
    v_head integer := 1;
    v_x integer;
    v_k integer;
    v_cycle text[];
    v_seen integer[];
    v_workflow uuid;
begin
    if p_nodes is null or jsonb_typeof(p_nodes) <> 'array' then
        raise exception '%: nodes must be a JSON array of objects, got %', p_what,
            coalesce(jsonb_typeof(p_nodes), 'null') using errcode = '22023';
    end if;
    v_count := jsonb_array_length(p_nodes);
    select max_workflow_nodes into v_max from job_queue_settings where id;
    v_max := coalesce(v_max, 10000);
    if v_count not between 1 and v_max then
        raise exception '%: a graph holds from 1 to % nodes (job_queue_settings.max_workflow_nodes), got %',
            p_what, v_max, v_count using errcode = '54000';
    end if;
    -- The first problem of the first node that has one, in words that name the node.
    select e.n, e.node ->> 'name' as name, chk.problem into v_bad
    from jsonb_array_elements(p_nodes) with ordinality e(node, n)
    cross join lateral (
        select c.problem from (values
            (1, case when jsonb_typeof(e.node) <> 'object'
                     then format('must be a JSON object, got %s', jsonb_typeof(e.node)) end),
            (2, case when jsonb_typeof(e.node) = 'object'
                     then (select format('has unknown key(s) %s (known: name, job_type, payload, '
                                         'depends_on, on_dependency_failure, priority, run_at, '
                                         'max_retries, user_id, concurrency_key)',
                                         string_agg(k, ', ' order by k))
                           from jsonb_object_keys(e.node) k
                           where k not in ('name', 'job_type', 'payload', 'depends_on',
                                           'on_dependency_failure', 'priority', 'run_at',
                                           'max_retries', 'user_id', 'concurrency_key')
                           having count(*) > 0) end),
            (3, case when jsonb_typeof(e.node -> 'name') is distinct from 'string'
                          or length(e.node ->> 'name') not between 1 and 200
                     then 'name must be a string of 1 to 200 characters' end),
            (4, case when jsonb_typeof(e.node -> 'job_type') is distinct from 'string'
                          or length(btrim(e.node ->> 'job_type')) = 0
                     then 'job_type must be a non-empty string' end),
            (5, case when e.node ? 'payload' and jsonb_typeof(e.node -> 'payload') <> 'object'
                     then format('payload must be a JSON object, got %s',
                                 jsonb_typeof(e.node -> 'payload')) end),
            (6, case when not e.node ? 'depends_on' then null
                     when jsonb_typeof(e.node -> 'depends_on') <> 'array'
                          or exists (select 1 from jsonb_array_elements(e.node -> 'depends_on') d
                                     where jsonb_typeof(d) <> 'string')
                     then 'depends_on must be an array of node names' end),
            (7, case when e.node ? 'on_dependency_failure'
                          and (e.node ->> 'on_dependency_failure') is distinct from 'cancel'
                          and (e.node ->> 'on_dependency_failure') is distinct from 'run'
                     then format('on_dependency_failure must be cancel or run, got %s',
                                 e.node -> 'on_dependency_failure') end),
            (8, case when not e.node ? 'max_retries' then null
                     when jsonb_typeof(e.node -> 'max_retries') <> 'number'
                     then format('max_retries must be an integer from 0 to 25, got %s',
                                 e.node -> 'max_retries')
                     when (e.node ->> 'max_retries')::numeric not between 0 and 25
                          or (e.node ->> 'max_retries')::numeric % 1 <> 0
                     then format('max_retries must be an integer from 0 to 25, got %s',
                                 e.node -> 'max_retries') end),
            (9, case when not e.node ? 'priority' then null
                     when jsonb_typeof(e.node -> 'priority') <> 'number'
                     then format('priority must be an integer from -2147483648 to 2147483647, got %s',
                                 e.node -> 'priority')
                     when (e.node ->> 'priority')::numeric not between -2147483648 and 2147483647
                          or (e.node ->> 'priority')::numeric % 1 <> 0
                     then format('priority must be an integer from -2147483648 to 2147483647, got %s',
                                 e.node -> 'priority') end),
            (10, case when e.node ? 'run_at'
                           and (jsonb_typeof(e.node -> 'run_at') <> 'string'
                                or not job_queue_is_time(e.node ->> 'run_at'))
                      then format('run_at must be a time as an ISO 8601 string, got %s',
                                  left((e.node -> 'run_at')::text, 60)) end),
            (11, case when e.node ? 'user_id'
                           and jsonb_typeof(e.node -> 'user_id') not in ('string', 'null')
                      then 'user_id must be a string'
                      when length(e.node ->> 'user_id') > 200
                      then 'user_id must be at most 200 characters' end),
            (12, case when e.node ? 'concurrency_key'
                           and jsonb_typeof(e.node -> 'concurrency_key') not in ('string', 'null')
                      then 'concurrency_key must be a string'
                      when length(e.node ->> 'concurrency_key') not between 1 and 200
                      then 'concurrency_key must be 1 to 200 characters' end)
        ) c(i, problem)
        where c.problem is not null order by c.i limit 1
    ) chk
    order by e.n limit 1;
    if found then
        raise exception '%: node % (%) %', p_what, v_bad.n,
            coalesce(to_jsonb(v_bad.name)::text, 'no name'), v_bad.problem using errcode = '22023';
    end if;
    select e.node ->> 'name' as name into v_bad
    from jsonb_array_elements(p_nodes) e(node)
    group by e.node ->> 'name' having count(*) > 1 limit 1;
    if found then
        raise exception '%: node name % is used more than once', p_what, to_jsonb(v_bad.name)
            using errcode = '22023';
    end if;
    v_index := (select jsonb_object_agg(e.node ->> 'name', e.n)
                from jsonb_array_elements(p_nodes) with ordinality e(node, n));
    select e.node ->> 'name' as name, d as dep into v_bad
    from jsonb_array_elements(p_nodes) e(node),
         jsonb_array_elements_text(coalesce(e.node -> 'depends_on', '[]')) d
    where not v_index ? d limit 1;
    if found then
        raise exception '%: node % depends on %, which is not a node of this graph', p_what,
            to_jsonb(v_bad.name), to_jsonb(v_bad.dep) using errcode = '22023';
    end if;

    -- Order (Kahn): v_first/v_adj list each node's dependents; v_indeg counts its dependencies.
    v_indeg := array_fill(0, array[v_count]);
    v_first := array_fill(0, array[v_count + 1]);
    v_first[1] := 1;
    select coalesce(array_agg(x.node_n order by x.dep_n, x.node_n), '{}') into v_adj
    from (select distinct e.n::integer as node_n, (v_index ->> d)::integer as dep_n
          from jsonb_array_elements(p_nodes) with ordinality e(node, n),
               jsonb_array_elements_text(coalesce(e.node -> 'depends_on', '[]')) d) x;
    for v_bad in
        select (v_index ->> d)::integer as dep_n, count(distinct e.n)::integer as dependents,
               null::integer as unused
        from jsonb_array_elements(p_nodes) with ordinality e(node, n),
             jsonb_array_elements_text(coalesce(e.node -> 'depends_on', '[]')) d
        group by 1
    loop
        v_first[v_bad.dep_n + 1] := v_bad.dependents;
    end loop;
    for v_k in 2 .. v_count + 1 loop
        v_first[v_k] := v_first[v_k] + v_first[v_k - 1];
    end loop;
    for v_bad in
        select e.n::integer as n, count(distinct d)::integer as deps
        from jsonb_array_elements(p_nodes) with ordinality e(node, n),
             jsonb_array_elements_text(coalesce(e.node -> 'depends_on', '[]')) d
        group by 1
    loop
        v_indeg[v_bad.n] := v_bad.deps;
    end loop;
    for v_k in 1 .. v_count loop
        if v_indeg[v_k] = 0 then
            v_queue := v_queue || v_k;
        end if;
    end loop;
    while v_head <= cardinality(v_queue) loop
        v_x := v_queue[v_head];
        v_head := v_head + 1;
        for v_k in v_first[v_x] .. v_first[v_x + 1] - 1 loop
            v_indeg[v_adj[v_k]] := v_indeg[v_adj[v_k]] - 1;
            if v_indeg[v_adj[v_k]] = 0 then
                v_queue := v_queue || v_adj[v_k];
            end if;
        end loop;
    end loop;
    if cardinality(v_queue) < v_count then
        -- Walk from a node left over along dependencies also left over until one repeats.
        v_x := (select k from generate_subscripts(v_indeg, 1) k where v_indeg[k] > 0 limit 1);
        v_seen := '{}';
        while not v_x = any (v_seen) loop
            v_seen := v_seen || v_x;
            v_x := (select (v_index ->> d)::integer
                    from jsonb_array_elements_text(p_nodes -> (v_x - 1) -> 'depends_on') d
                    where v_indeg[(v_index ->> d)::integer] > 0 limit 1);
        end loop;
        v_cycle := array(select to_jsonb(p_nodes -> (s - 1) ->> 'name')::text
                         from unnest(v_seen[array_position(v_seen, v_x):]) s);
        raise exception '%: the graph has a cycle: % depends on % (each on the next, the last on the first)',
            p_what, v_cycle[1], array_to_string(v_cycle[2:] || v_cycle[1], ', which depends on ')
            using errcode = '22023';
    end if;

    -- Ids: a child asked for before keeps its job; the rest are new.
    select array_agg(coalesce(j.id, gen_random_uuid()) order by e.n),
           array_agg(j.id is null order by e.n)
    into v_ids, v_new
    from jsonb_array_elements(p_nodes) with ordinality e(node, n)
    left join job_queue j on p_key_prefix is not null
                         and j.idempotency_key = p_key_prefix || (e.node ->> 'name');
    v_workflow := coalesce(p_workflow_id, v_ids[1]);
    -- Those that failed or were cancelled run again: the ones their own failure ended (what
    -- a failure of another ended is re-opened with it).
    if p_key_prefix is not null then
        perform job_queue_retry_ids(array(select x.id from job_queue x
                                          where x.id = any (v_ids) and not v_new[array_position(v_ids, x.id)]
                                            and x.status in ('failed', 'cancelled')
                                            and x.ended_by is null));
    end if;

    insert into job_queue (id, job_type, payload, user_id, priority, run_at, max_retries,
                           concurrency_key, traceparent, depends_on, on_dependency_failure,
                           workflow_id, node_name, parent_id, idempotency_key, has_dependents,
                           created_at)
    select v_ids[o.idx], g.node ->> 'job_type', coalesce(g.node -> 'payload', '{}'),
           case when g.node ? 'user_id' then g.node ->> 'user_id' else p_user_id end,
           coalesce((g.node ->> 'priority')::numeric::integer, p_priority, 0),
           coalesce((g.node ->> 'run_at')::timestamptz, now()),
           coalesce((g.node ->> 'max_retries')::numeric::integer, p_max_retries),
           case when g.node ? 'concurrency_key' then g.node ->> 'concurrency_key'
                else p_concurrency_key end,
           p_traceparent,
           nullif(array(select v_ids[(v_index ->> d)::integer]
                        from jsonb_array_elements_text(coalesce(g.node -> 'depends_on', '[]')) d),
                  '{}'),
           coalesce(g.node ->> 'on_dependency_failure', 'cancel'),
           v_workflow, g.node ->> 'name', p_parent_id,
           case when p_key_prefix is not null then p_key_prefix || (g.node ->> 'name')
                when o.idx = 1 then p_first_key end,
           p_parent_id is not null,
           -- a microsecond apart, in the order inserted: a workflow lists in that order
           now() + (o.pos - 1) * interval '1 microsecond'
    from unnest(v_queue) with ordinality o(idx, pos)
    cross join lateral (select p_nodes -> (o.idx - 1) as node) g
    where v_new[o.idx]
    order by o.pos;

    return query
    select e.node ->> 'name', v_ids[e.n], v_new[e.n]
    from jsonb_array_elements(p_nodes) with ordinality e(node, n)
    order by e.n;
end;
$$;

create function enqueue_workflow(
    p_nodes jsonb, p_user_id text default null, p_priority bigint default 0,
    p_concurrency_key text default null, p_idempotency_key text default null,
    p_traceparent text default null)
    returns table(name text, job_id uuid)
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_workflow uuid;
begin
    if p_priority not between -2147483648 and 2147483647 then
        raise exception 'enqueue_workflow: priority must be an integer from -2147483648 to 2147483647, got %',
            p_priority using errcode = '22003';
    end if;
    if p_traceparent is not null and not processor_valid_traceparent(p_traceparent) then
        raise exception 'enqueue_workflow: traceparent must be a W3C trace context '
            '(00-<32 hex trace id>-<16 hex span id>-<2 hex flags>), got %', left(p_traceparent, 80)
            using errcode = '22023';
    end if;
    if p_idempotency_key like 'child:%' then
        raise exception 'enqueue_workflow: idempotency keys starting with "child:" are the processor''s own'
            using errcode = '42501';
    end if;
    if p_idempotency_key is not null then
        select j.workflow_id into v_workflow from job_queue j
        where j.idempotency_key = p_idempotency_key;
        if found then  -- enqueued before: the same jobs
            return query
            select j.node_name, j.id from job_queue j
            where j.workflow_id = v_workflow and j.node_name is not null
              and j.parent_id is null
            order by j.created_at, j.node_name;
            return;
        end if;
    end if;
    return query
    select g.name, g.job_id
    from job_queue_insert_graph('enqueue_workflow', p_nodes, p_user_id,
                                coalesce(p_priority, 0)::integer, p_concurrency_key,
                                p_traceparent, null, null, null, p_idempotency_key) g;
end;
$$;
comment on function enqueue_workflow(jsonb, text, bigint, text, text, text) is
    'Enqueues a graph of named jobs at once: nodes is a JSON array of {"name", "job_type", "payload", "depends_on": [names], ...options}. Returns (name, job_id) per node; the workflow id is the first node''s job id.';

-- A handler's answer "call me again when these are finished": the children are created (once
-- per name for this job's whole life) and the job waits for them, its slot given back.
create function suspend_job(p_job_id uuid, p_lease_token uuid, p_children jsonb,
                            p_max_suspensions integer default 100)
    returns table(name text, job_id uuid, created boolean)
    language plpgsql
    set search_path = pg_catalog, public, pg_temp
    set enable_seqscan = off
    set jit = off
as $$
declare
    v_job job_queue;
    v_workflow uuid;
    v_children uuid[];
    v_merged uuid[];
    v_deps record;
begin
    select * into v_job from job_queue j
    where j.id = p_job_id and j.status = 'processing' and j.lease_token = p_lease_token
    for update;
    if not found then
        return;  -- the lease is gone: nothing is created
    end if;
    if v_job.suspensions >= p_max_suspensions then
        raise exception 'suspend_job: job % has already waited for children % times (the limit)',
            p_job_id, v_job.suspensions using errcode = '54000';
    end if;
    v_workflow := coalesce(v_job.workflow_id, v_job.id);
    return query
    select g.name, g.job_id, g.created
    from job_queue_insert_graph('children', p_children, v_job.user_id, v_job.priority,
                                v_job.concurrency_key, v_job.traceparent, v_workflow,
                                v_job.id, 'child:' || v_job.id || ':', null, v_job.max_retries) g;
    v_children := array(select x.id from job_queue x
                        where x.idempotency_key = any (
                            array(select 'child:' || v_job.id || ':' || (c ->> 'name')
                                  from jsonb_array_elements(p_children) c)));
    update job_queue set has_dependents = true
    where id = any (v_children) and not has_dependents;
    v_merged := array(select d from unnest(coalesce(v_job.depends_on, '{}') || v_children)
                          with ordinality u(d, n) group by d order by min(n));
    v_deps := job_queue_lock_dependencies(v_merged);
    if v_deps.unfinished = 0 then
        -- (every child asked for has finished and none was made or run again: calling the
        -- handler again would only ask again)
        raise exception 'suspend_job: every child the handler asked for has already finished: answer with the result (the children''s outcomes are in "dependencies")'
            using errcode = '22023';
    end if;
    update job_queue
    set depends_on = v_merged,
        progress_base = case when jsonb_typeof(v_job.progress -> 'items') = 'array'
                                  and jsonb_typeof(v_job.progress -> 'done') = 'number'
                             then v_job.progress || jsonb_build_object(
                                      'children', to_jsonb(array(
                                          select x.id from job_queue x
                                          where x.id = any (v_children)
                                            and x.status <> 'completed')))
                        end,
        workflow_id = v_workflow,
        status = case when v_deps.unfinished > 0 then 'waiting' else 'pending' end,
        waiting_on = nullif(v_deps.unfinished, 0),
        run_at = now(),
        suspensions = suspensions + 1,
        locked_by = null, locked_until = null, lease_token = null
    where id = p_job_id;
end;
$$;

-- Lock order. A transaction that finishes a job holds that running job, then locks what waits
-- on it (its waiting dependents; a child's parent is one). It never waits for a row it sees
-- finished, and only running jobs are finished this way. So whatever cancels locks the
-- running jobs it will cancel first, then the rest: cancel_job and cancel_jobs lock the job's
-- unfinished children (running ones first) before the job itself, cancel_workflow its running
-- jobs before the others. A finisher and a cancel then never hold what the other waits for.
create function job_queue_lock_children(p_job_id uuid) returns void
    language plpgsql
    set search_path = pg_catalog, public, pg_temp
    set enable_seqscan = off
    set jit = off
as $$
begin
    perform 1 from job_queue j
    join (with recursive kids(id, depth) as (
              select c.id, 1 from job_queue p
              join job_queue c on c.id = any (p.depends_on) and c.parent_id = p.id
              where p.id = p_job_id and p.depends_on is not null
              union all
              select c.id, k.depth + 1 from kids k
              join job_queue p on p.id = k.id
              join job_queue c on c.id = any (p.depends_on) and c.parent_id = p.id
              where k.depth < 100)
          select distinct id from kids) k on k.id = j.id
    where j.status in ('pending', 'processing', 'waiting')
    order by j.status = 'processing' desc, j.id
    for no key update of j;
end;
$$;

-- Cancels every unfinished job of a workflow (running ones lose their lease and stop).
create function cancel_workflow(p_workflow_id uuid) returns integer
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
    set enable_seqscan = off
    set jit = off
as $$
declare
    v_count integer;
begin
    perform set_config('processor.settling', 'on', true);
    update job_queue j
    set status = 'cancelled', completed_at = now(), waiting_on = null, locked_by = null,
        locked_until = null, lease_token = null,
        error_message = format('cancelled with its workflow %s', p_workflow_id)
    where j.id in (select x.id from job_queue x
                   where x.workflow_id = p_workflow_id
                     and x.status in ('pending', 'processing', 'waiting')
                   order by x.status = 'processing' desc, x.id
                   for no key update);
    get diagnostics v_count = row_count;
    perform set_config('processor.settling', '', true);
    perform job_queue_settle();
    return v_count;
end;
$$;

-- Runs again every failed or cancelled job of a workflow; what a failure ended is re-opened
-- with it, and no job is released before what it depends on is done.
create function retry_workflow(p_workflow_id uuid) returns integer
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
    set enable_seqscan = off
    set jit = off
as $$
begin
    return job_queue_retry_ids(array(select j.id from job_queue j
                                     where j.workflow_id = p_workflow_id
                                       and j.status in ('failed', 'cancelled')
                                       and j.ended_by is null));
end;
$$;

create view job_queue_workflows with (security_invoker = on) as
select j.workflow_id,
       count(*) as jobs,
       count(*) filter (where j.status = 'waiting') as waiting,
       count(*) filter (where j.status = 'pending') as pending,
       count(*) filter (where j.status = 'processing') as processing,
       count(*) filter (where j.status = 'completed') as completed,
       count(*) filter (where j.status = 'failed') as failed,
       count(*) filter (where j.status = 'cancelled') as cancelled,
       round(count(*) filter (where j.status in ('completed', 'failed', 'cancelled'))::numeric
             / count(*), 3) as progress,
       bool_and(j.status in ('completed', 'failed', 'cancelled')) as finished,
       min(j.updated_at) filter (where j.status = 'waiting') as oldest_waiting_since,
       min(j.created_at) as created_at,
       max(j.completed_at) as last_finished_at
from job_queue j
where j.workflow_id is not null
group by j.workflow_id;
comment on view job_queue_workflows is
    'One row per workflow: its jobs by status, progress (the share finished), whether all are finished, and since when its oldest waiting job waits.';

-- The reaper: waiting jobs whose count is wrong (rows written with triggers off) are set
-- right, and those waiting for a job that no longer exists are failed, naming it. It walks
-- the waiting jobs in id order, p_limit per call, from where the last call stopped
-- (processor_settings 'waiting_reaper_after'), so every one is looked at in turn; a job
-- changed in the last minute is passed over (its count is being kept as it moves).
create function job_queue_reap_waiting(p_limit integer default 100) returns integer
    language plpgsql
    set search_path = pg_catalog, public, pg_temp
    set enable_seqscan = off
    set jit = off
as $$
declare
    v_after text := (select value from processor_settings where key = 'waiting_reaper_after');
    v_id uuid := coalesce(nullif(v_after, ''), '00000000-0000-0000-0000-000000000000')::uuid;
    v_job record;
    v_deps record;
    v_last_id uuid;
    v_fixed integer := 0;
    v_seen integer := 0;
    v_missing text;
begin
    for v_job in
        select j.id, j.updated_at, j.depends_on, j.waiting_on, j.on_dependency_failure
        from job_queue j
        where j.status = 'waiting' and j.id > v_id
        order by j.id limit p_limit
    loop
        v_seen := v_seen + 1;
        v_last_id := v_job.id;
        continue when v_job.updated_at >= now() - interval '1 minute';
        -- A cheap look first; the row and its dependencies are locked only to change it, the
        -- dependencies first (as a finisher holds a dependency, then its dependents).
        continue when v_job.waiting_on = (select count(*) from job_queue d
                                          where d.id = any (v_job.depends_on)
                                            and d.status in ('pending', 'processing', 'waiting'))
                  and cardinality(v_job.depends_on)
                      = (select count(*) from job_queue d where d.id = any (v_job.depends_on))
                  and not exists (select 1 from job_queue d
                                  where d.id = any (v_job.depends_on)
                                    and d.status in ('failed', 'cancelled')
                                    and (v_job.on_dependency_failure = 'cancel'
                                         or d.parent_id = v_job.id));
        v_deps := job_queue_lock_dependencies(coalesce(v_job.depends_on, '{}'));
        perform 1 from job_queue where id = v_job.id and status = 'waiting'
        for no key update skip locked;
        continue when not found;
        if v_deps.existing < coalesce(cardinality(v_job.depends_on), 0) then
            select string_agg(d::text, ', ') into v_missing
            from (select d from unnest(v_job.depends_on) d
                  where not exists (select 1 from job_queue j where j.id = d) limit 5) m;
            update job_queue
            set status = 'failed', completed_at = now(), waiting_on = null,
                error_message = format('its dependency no longer exists (deleted): %s', v_missing)
            where id = v_job.id;
        elsif v_deps.ended is not null
              and (v_job.on_dependency_failure = 'cancel'
                   or exists (select 1 from job_queue c
                              where c.id = v_deps.ended and c.parent_id = v_job.id)) then
            -- (a dependency that failed meanwhile, unseen: what its finish would have done)
            update job_queue d
            set status = case when c.parent_id = d.id then 'failed' else 'cancelled' end,
                completed_at = now(), waiting_on = null, ended_by = c.id,
                error_message = job_queue_ended_reason(c.id, c.status, c.parent_id = d.id)
            from job_queue c
            where d.id = v_job.id and c.id = v_deps.ended;
        else
            update job_queue
            set waiting_on = nullif(v_deps.unfinished, 0),
                status = case when v_deps.unfinished > 0 then 'waiting' else 'pending' end
            where id = v_job.id;
        end if;
        v_fixed := v_fixed + 1;
    end loop;
    v_missing := case when v_seen < p_limit then '' else v_last_id::text end;
    if v_missing is distinct from coalesce(v_after, '') then
        insert into processor_settings (key, value) values ('waiting_reaper_after', v_missing)
        on conflict (key) do update set value = excluded.value, updated_at = now();
    end if;
    if v_fixed > 0 then
        perform job_queue_wake();
    end if;
    return v_fixed;
end;
$$;

-- enqueue_job takes dependencies (and what their failure does).
drop function enqueue_job(text, jsonb, text, bigint, timestamptz, integer, text, text, text);
create function enqueue_job(p_job_type text, p_payload jsonb default '{}'::jsonb,
                            p_user_id text default null, p_priority bigint default 0,
                            p_run_at timestamptz default now(), p_max_retries integer default 3,
                            p_idempotency_key text default null,
                            p_concurrency_key text default null, p_traceparent text default null,
                            p_depends_on uuid[] default null,
                            p_on_dependency_failure text default 'cancel')
    returns uuid
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
as $$
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
    if p_max_retries is null or p_max_retries not between 0 and 25 then
        raise exception 'enqueue_job: max_retries must be an integer from 0 to 25, got %',
            coalesce(p_max_retries::text, 'null') using errcode = '22023';
    end if;
    if p_priority not between -2147483648 and 2147483647 then
        raise exception 'enqueue_job: priority must be an integer from -2147483648 to 2147483647, got %',
            p_priority using errcode = '22003';
    end if;
    if p_run_at is not null and (not isfinite(p_run_at)
       or p_run_at not between '1970-01-01 00:00:00+00' and '9999-12-31 00:00:00+00') then
        raise exception 'enqueue_job: run_at must be a time from 1970 to 9999, got %', p_run_at
            using errcode = '22008';
    end if;
    if p_traceparent is not null and not processor_valid_traceparent(p_traceparent) then
        raise exception 'enqueue_job: traceparent must be a W3C trace context '
            '(00-<32 hex trace id>-<16 hex span id>-<2 hex flags>), got %', left(p_traceparent, 80)
            using errcode = '22023';
    end if;
    if p_concurrency_key is not null and length(p_concurrency_key) not between 1 and 200 then
        raise exception 'enqueue_job: concurrency_key must be 1 to 200 characters, got %',
            length(p_concurrency_key) using errcode = '22023';
    end if;
    if p_idempotency_key like 'child:%' then
        raise exception 'enqueue_job: idempotency keys starting with "child:" are the processor''s own'
            using errcode = '42501';
    end if;
    if p_on_dependency_failure is null or p_on_dependency_failure not in ('cancel', 'run') then
        raise exception 'enqueue_job: on_dependency_failure must be cancel or run, got %',
            coalesce(p_on_dependency_failure, 'null') using errcode = '22023';
    end if;

    insert into job_queue (job_type, payload, user_id, priority, run_at, max_retries,
                           idempotency_key, concurrency_key, traceparent, depends_on,
                           on_dependency_failure)
    values (p_job_type, p_payload, p_user_id, coalesce(p_priority, 0)::integer,
            coalesce(p_run_at, now()), p_max_retries, p_idempotency_key, p_concurrency_key,
            p_traceparent, p_depends_on, p_on_dependency_failure)
    on conflict (idempotency_key) where idempotency_key is not null do nothing
    returning id into v_id;

    if v_id is null then
        select id into v_id from job_queue where idempotency_key = p_idempotency_key;
    end if;
    return v_id;
end;
$$;

-- Cancelling reaches waiting jobs; what waits on a cancelled job follows its rule.
create or replace function cancel_job(p_job_id uuid) returns boolean
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_done boolean;
begin
    perform job_queue_lock_children(p_job_id);  -- (before the job: see the lock order)
    perform set_config('processor.settling', 'on', true);
    update job_queue
    set status = 'cancelled', completed_at = now(), waiting_on = null, locked_by = null,
        locked_until = null, lease_token = null
    where id = p_job_id and status in ('pending', 'processing', 'waiting');
    v_done := found;
    perform set_config('processor.settling', '', true);
    perform job_queue_settle();
    return v_done;
end;
$$;

-- (a definer entry point settles what it moved itself, whatever the caller's settings say)
create or replace function retry_job(p_job_id uuid) returns boolean
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_done boolean;
begin
    perform set_config('processor.settling', 'on', true);
    update job_queue
    set status = 'pending', retry_count = 0, run_at = now(), completed_at = null
    where id = p_job_id and status in ('failed', 'cancelled');
    v_done := found;
    perform set_config('processor.settling', '', true);
    perform job_queue_settle();
    if v_done then
        perform job_queue_wake();  -- (due now: picked up as an inserted job is)
    end if;
    return v_done;
end;
$$;

-- The bulk actions take a workflow, and retry dependencies before their dependents.
drop function retry_jobs(text, text, text, timestamptz, timestamptz, text, integer, boolean);
drop function cancel_jobs(text, text, text, timestamptz, timestamptz, text, integer, boolean);
drop function job_queue_select_for_action(text[], text, text, timestamptz, timestamptz, text, integer);

create function job_queue_select_for_action(p_statuses text[], p_job_type text, p_user_id text,
                                            p_since timestamptz, p_until timestamptz,
                                            p_error text, p_limit integer,
                                            p_workflow_id uuid default null)
    returns setof uuid
    language plpgsql stable
as $$
begin
    if p_limit is null or p_limit not between 1 and 10000 then
        raise exception 'limit must be an integer from 1 to 10000, got %', p_limit using errcode = '22023';
    end if;
    if p_since is not null and p_until is not null and p_since > p_until then
        raise exception 'since (%) is after until (%)', p_since, p_until using errcode = '22023';
    end if;
    return query
    select j.id from job_queue j
    where j.status = any (p_statuses)
      and (p_job_type is null or j.job_type = p_job_type)
      and (p_user_id is null or j.user_id = p_user_id)
      and (p_workflow_id is null or j.workflow_id = p_workflow_id)
      and (p_since is null or coalesce(j.completed_at, j.updated_at) >= p_since)
      and (p_until is null or coalesce(j.completed_at, j.updated_at) < p_until)
      and (p_error is null or strpos(lower(coalesce(j.error_message, '')), lower(p_error)) > 0)
    order by coalesce(j.completed_at, j.updated_at), j.id
    limit p_limit;
end;
$$;

create function cancel_jobs(p_status text default 'pending', p_job_type text default null,
                            p_user_id text default null, p_since timestamptz default null,
                            p_until timestamptz default null, p_error text default null,
                            p_limit integer default 100, p_dry_run boolean default false,
                            p_workflow_id uuid default null)
    returns table(job_id uuid, job_type text, user_id text, cancelled boolean, reason text)
    language plpgsql
as $$
declare
    v_id uuid;
    v_job job_queue;
begin
    if p_status is null or p_status not in ('pending', 'processing', 'waiting') then
        raise exception 'cancel_jobs: status must be pending, processing or waiting, got %',
            coalesce(p_status, 'null') using errcode = '22023';
    end if;
    for v_id in
        select s from job_queue_select_for_action(array[p_status], p_job_type, p_user_id,
                                                  p_since, p_until, p_error, p_limit,
                                                  p_workflow_id) s
    loop
        if not p_dry_run then
            perform job_queue_lock_children(v_id);  -- (before the job: see the lock order)
        end if;
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
            set status = 'cancelled', completed_at = now(), waiting_on = null, locked_by = null,
                locked_until = null, lease_token = null
            where id = v_job.id;
            cancelled := true;
            reason := null;
        end if;
        return next;
    end loop;
end;
$$;

create function retry_jobs(p_status text default 'failed', p_job_type text default null,
                           p_user_id text default null, p_since timestamptz default null,
                           p_until timestamptz default null, p_error text default null,
                           p_limit integer default 100, p_dry_run boolean default false,
                           p_workflow_id uuid default null)
    returns table(job_id uuid, job_type text, user_id text, retried boolean, reason text,
                  items_needed integer, items_stored integer, paid_usd numeric,
                  max_retry_usd numeric)
    language plpgsql
as $$
declare
    v_id uuid;
    v_job job_queue;
    v_dearest jsonb := '{}';
    v_price numeric;
    v_retried uuid[] := '{}';
begin
    if p_status is null or p_status not in ('failed', 'cancelled') then
        raise exception 'retry_jobs: status must be failed or cancelled, got %',
            coalesce(p_status, 'null') using errcode = '22023';
    end if;
    -- Each goes to 'waiting' first; once all have, what their failures ended is re-opened and
    -- each counts what it waits for (job_queue_retry_ids, one row at a time for the report).
    perform set_config('processor.settling', 'on', true);
    for v_id in
        select s from job_queue_select_for_action(array[p_status], p_job_type, p_user_id,
                                                  p_since, p_until, p_error, p_limit,
                                                  p_workflow_id) s
    loop
            select * into v_job from job_queue where id = v_id for update skip locked;
            continue when not found or v_job.status <> p_status;  -- taken since it was selected
            job_id := v_job.id;
            job_type := v_job.job_type;
            user_id := v_job.user_id;
            items_needed := job_items_needed(v_job.job_type, v_job.payload);
            items_stored := job_items_stored(v_job.id);
            select coalesce(sum(c.cost_usd), 0) into paid_usd from provider_calls c
            where c.job_id = v_job.id
               or c.job_id in (select k.id from job_queue k
                               where k.id = any (v_job.depends_on) and k.parent_id = v_job.id);
            if not v_dearest ? v_job.job_type then
                select max(c.cost_usd) into v_price from provider_calls c
                join job_queue q on q.id = c.job_id
                left join job_queue p on p.id = q.parent_id
                where (q.job_type = v_job.job_type or p.job_type = v_job.job_type)
                  and c.status = 'ok';
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
                set status = 'waiting', waiting_on = 0, retry_count = 0, run_at = now(),
                    completed_at = null, ended_by = null
                where id = v_job.id;
                retried := true;
                reason := null;
                v_retried := v_retried || v_job.id;
            exception when sqlstate '53000' or sqlstate '55000' then
                -- (insufficient credits; a child whose parent has ended: retry the parent)
                retried := false;
                reason := sqlerrm;
            end;
            return next;
    end loop;
    perform set_config('processor.settling', '', true);
    perform job_queue_settle();
    perform job_queue_recount(v_retried);
    if cardinality(v_retried) > 0 then
        perform job_queue_wake();
    end if;
end;
$$;

-- Retention never prunes a job of an unfinished workflow, nor one an unfinished job depends
-- on (its dependents may still need its result); everything else is as 0010 kept it.
create or replace function prune_jobs(p_keep_completed interval default null,
                                      p_keep_failed interval default null,
                                      p_keep_cron_history interval default null,
                                      p_batch integer default 1000,
                                      p_max_rows integer default 100000)
    returns table(kind text, deleted bigint)
    language plpgsql
as $_$
declare
    v_limits job_queue_settings;
    v_kind record;
    v_n bigint;
    v_total bigint;
begin
    select * into v_limits from job_queue_settings where id;
    p_keep_completed := coalesce(p_keep_completed, v_limits.keep_completed, interval '14 days');
    p_keep_failed := coalesce(p_keep_failed, v_limits.keep_failed, interval '30 days');
    p_keep_cron_history := coalesce(p_keep_cron_history, v_limits.keep_cron_history,
                                    interval '7 days');
    p_batch := coalesce(p_batch, 1000);
    p_max_rows := coalesce(p_max_rows, 100000);
    if p_batch < 1 then
        raise exception 'prune_jobs: batch must be an integer of at least 1, got %', p_batch
            using errcode = '22023';
    end if;
    if p_max_rows < 1 then
        raise exception 'prune_jobs: max_rows must be an integer of at least 1, got %', p_max_rows
            using errcode = '22023';
    end if;
    if p_keep_completed < interval '0' or p_keep_failed < interval '0'
       or p_keep_cron_history < interval '0' then
        raise exception 'prune_jobs: ages must not be negative, got completed %, failed %, cron history %',
            p_keep_completed, p_keep_failed, p_keep_cron_history using errcode = '22023';
    end if;

    for v_kind in
        select * from (values ('completed', array['completed'], p_keep_completed),
                              ('failed_or_cancelled', array['failed', 'cancelled'], p_keep_failed)
                      ) k(kind, statuses, keep)
    loop
        v_total := 0;
        loop
            delete from job_queue
            where id in (select j.id from job_queue j
                         where j.status = any(v_kind.statuses)
                           and j.completed_at < now() - v_kind.keep
                           and (j.workflow_id is null
                                or not exists (select 1 from job_queue w
                                               where w.workflow_id = j.workflow_id
                                                 and w.status in ('pending', 'processing',
                                                                  'waiting')))
                           -- (nor one an unfinished job of another workflow depends on)
                           and not (j.has_dependents
                                    and exists (select 1 from job_queue d
                                                where d.depends_on @> array[j.id]
                                                  and d.status in ('pending', 'processing',
                                                                   'waiting')))
                         limit p_batch for update skip locked);
            get diagnostics v_n = row_count;
            v_total := v_total + v_n;
            exit when v_n < p_batch or v_total >= p_max_rows;
        end loop;
        kind := v_kind.kind; deleted := v_total; return next;
    end loop;

    delete from processor_net_calls where created_at < now() - interval '1 day';

    v_total := 0;
    if to_regclass('cron.job_run_details') is not null then
        loop
            execute 'delete from cron.job_run_details where runid in (
                         select runid from cron.job_run_details
                         where end_time < now() - $1 limit $2)'
                using p_keep_cron_history, p_batch;
            get diagnostics v_n = row_count;
            v_total := v_total + v_n;
            exit when v_n < p_batch or v_total >= p_max_rows;
        end loop;
    end if;
    kind := 'cron_history'; deleted := v_total; return next;
end;
$_$;

-- Why a job has not started: a waiting job names what it waits for.
create or replace function job_wait_reason(p_job_id uuid) returns text
    language plpgsql stable
as $$
declare
    v_job job_queue;
    v_group text;
    v_cap integer;
    v_running integer;
    v_list text;
begin
    select * into v_job from job_queue where id = p_job_id;
    if not found or v_job.status not in ('pending', 'waiting') then
        return null;
    end if;
    if v_job.status = 'waiting' then
        select string_agg(format('%s %s (%s)', coalesce(d.node_name, d.job_type),
                                 left(d.id::text, 8), d.status), ', ' order by u.n)
        into v_list
        from (select * from unnest(v_job.depends_on) with ordinality u(id, n)) u
        join job_queue d on d.id = u.id
        where d.status in ('pending', 'processing', 'waiting')
          and u.n in (select u2.n from unnest(v_job.depends_on) with ordinality u2(id, n)
                      join job_queue d2 on d2.id = u2.id
                      where d2.status in ('pending', 'processing', 'waiting')
                      order by u2.n limit 3);
        return format('waiting for %s of its %s dependencies: %s%s',
                      coalesce(v_job.waiting_on, 0), cardinality(v_job.depends_on),
                      coalesce(v_list, 'none unfinished (the reaper will release it)'),
                      case when coalesce(v_job.waiting_on, 0) > 3 then ', …' else '' end);
    end if;
    v_group := coalesce(v_job.concurrency_key, v_job.user_id, '');
    if v_job.run_at > now() then
        return format('not due yet: due at %s', to_char(v_job.run_at at time zone 'UTC',
                                                        'YYYY-MM-DD HH24:MI:SS "UTC"'));
    end if;
    if exists (select 1 from job_type_limits where job_type = v_job.job_type
               and paused_at is not null) then
        return format('job type %s is paused (resume_job_type or processor resume)',
                      v_job.job_type);
    end if;
    select max_running into v_cap from job_type_limits where job_type = v_job.job_type;
    v_running := job_type_running(v_job.job_type);
    if v_cap is not null and v_running >= v_cap then
        return format('job type %s is at its cap: %s of %s running', v_job.job_type,
                      v_running, v_cap);
    end if;
    v_cap := job_group_cap(v_group);
    v_running := job_group_running(v_group);
    if v_cap is not null and v_running >= v_cap then
        return format('its group %s is at its cap: %s of %s running',
                      case when v_group = '' then '(none)' else v_group end, v_running, v_cap);
    end if;
    return 'due: waiting for a free processor slot';
end;
$$;

-- Children of a parent (a handler's 202): the parent's credits pay for them (they reserve
-- none), its row shows their progress as they go, and a child that fails fails its parent.

create or replace function job_queue_credits_on_insert() returns trigger
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_cost integer;
begin
    if new.parent_id is not null  -- a child: its parent's reservation pays for it
       or new.status not in ('pending', 'waiting')  -- (inserted cancelled: its dependency failed)
       or not (select credits_enabled from job_queue_settings where id) then
        return null;
    end if;
    v_cost := job_credit_cost(new.job_type, new.payload);
    if v_cost > 0 then
        perform credit_reserve(new.user_id, new.id, v_cost);
    end if;
    return null;
end;
$$;

-- (and a child's retry does not pay again either)
drop trigger job_queue_credits_on_status on job_queue;
create trigger job_queue_credits_on_status
    after update of status on job_queue
    for each row when (new.user_id is not null and new.parent_id is null
                       and new.status is distinct from old.status
                       and new.status in ('completed', 'failed', 'cancelled', 'pending',
                                          'waiting'))
    execute function job_queue_credits_on_status();

-- What a job has stored, and paid, counts its children's (a pack's images are its children's):
-- the bulk retry's estimate of what is missing reads it.
create or replace function job_items_stored(p_job_id uuid) returns integer
    language sql stable
as $$
    with mine as (
        select p_job_id as id
        union all
        select c.id from job_queue p
        join job_queue c on c.id = any (p.depends_on) and c.parent_id = p.id
        where p.id = p_job_id
    )
    select (select count(*) from generated_images where job_id in (select id from mine))::integer
         + (select count(*) from aplus_contents where job_id in (select id from mine))::integer
$$;

-- Only the processor makes children (suspend_job, as the owner): a plain INSERT by an API
-- role may not set parent_id (a child reserves no credits) or take a child's idempotency key
-- (a parent would adopt the row as its child). Not SECURITY DEFINER: current_user is the role
-- that inserts.
create function job_queue_children_by_the_processor() returns trigger
    language plpgsql
    set search_path = pg_catalog, public, pg_temp
as $$
begin
    if not pg_has_role(current_user, (select c.relowner from pg_class c
                                      where c.oid = 'public.job_queue'::regclass), 'MEMBER') then
        raise exception 'job_queue: parent_id and idempotency keys starting with "child:" are the processor''s own (a handler''s 202 makes children)'
            using errcode = '42501';
    end if;
    return new;
end;
$$;

create trigger job_queue_children_by_the_processor
    before insert or update of parent_id, idempotency_key on job_queue
    for each row when (new.parent_id is not null or new.idempotency_key like 'child:%')
    execute function job_queue_children_by_the_processor();

-- A child runs only for a parent that still waits for it: retrying a child whose parent has
-- ended is refused (retry the parent), unless the parent ended because of this child (then
-- the retry re-opens the parent too). Otherwise a child would run with nobody to pay for it or
-- use its result.
create function job_queue_child_follows_parent() returns trigger
    language plpgsql
    set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_parent job_queue;
begin
    select * into v_parent from job_queue where id = new.parent_id;
    if found and v_parent.status in ('completed', 'failed', 'cancelled')
       and v_parent.ended_by is distinct from new.id then
        raise exception 'job_queue: job % is a child of job %, which has ended (%): retry the parent instead',
            new.id, new.parent_id, v_parent.status using errcode = '55000';
    end if;
    return new;
end;
$$;

create trigger job_queue_child_follows_parent
    before update of status on job_queue
    for each row when (new.parent_id is not null and old.status in ('failed', 'cancelled')
                       and new.status in ('pending', 'waiting'))
    execute function job_queue_child_follows_parent();

-- A child's progress, added to its waiting parent's: the parent's own when it handed the
-- children out, plus each child's done and items. Skipped (never waited for) while another
-- transaction holds the parent: the next write, or the parent's own last one, catches up.
create function job_queue_parent_progress(p_parent uuid) returns void
    language plpgsql
    set search_path = pg_catalog, public, pg_temp
as $$
begin
    update job_queue p
    set progress = jsonb_build_object(
            'done', (p.progress_base ->> 'done')::integer
                    + coalesce((select sum((c.progress ->> 'done')::integer)
                                from job_queue c
                                where c.id = any (kids.ids)
                                  and jsonb_typeof(c.progress -> 'done') = 'number'), 0),
            'total', p.progress_base -> 'total',
            'items', (p.progress_base -> 'items')
                     || coalesce((select jsonb_agg(i.item order by u.n, i.k)
                                  from unnest(kids.ids) with ordinality u(id, n)
                                  join job_queue c on c.id = u.id
                                  cross join lateral jsonb_array_elements(
                                      case when jsonb_typeof(c.progress -> 'items') = 'array'
                                           then c.progress -> 'items' else '[]' end)
                                      with ordinality i(item, k)), '[]'))
    from (select array(select x::uuid from jsonb_array_elements_text(
                           b.progress_base -> 'children') x) as ids
          from job_queue b where b.id = p_parent) kids
    where p.id = (select w.id from job_queue w
                  where w.id = p_parent and w.status = 'waiting'
                    and jsonb_typeof(w.progress_base -> 'items') = 'array'
                    and jsonb_typeof(w.progress_base -> 'done') = 'number'
                  for no key update skip locked);
end;
$$;

create or replace function set_job_progress(p_job_id uuid, p_lease_token uuid, p_progress jsonb)
    returns boolean
    language plpgsql
as $$
declare
    v_parent uuid;
begin
    update job_queue
    set progress = p_progress
    where id = p_job_id
      and status = 'processing'
      and lease_token = p_lease_token
    returning parent_id into v_parent;
    if not found then
        return false;
    end if;
    if v_parent is not null then
        perform job_queue_parent_progress(v_parent);
    end if;
    return true;
end;
$$;


-- Nothing here is for the API roles but what an app's backend calls to enqueue, cancel and
-- retry (service_role), as with enqueue_job, cancel_job and retry_job.
select processor_keep_private(array[
    'function job_queue_lock_dependencies(uuid[], boolean, uuid[])',
    'table job_queue_moved',
    'function job_queue_ended_reason(uuid, text, boolean)',
    'function job_queue_parent_progress(uuid)',
    'function job_queue_lock_children(uuid)',
    'function job_queue_children_by_the_processor()',
    'function job_queue_child_follows_parent()',
    'function job_queue_recount(uuid[])',
    'function job_queue_is_time(text)',
    'function job_queue_retry_ids(uuid[])',
    'function job_queue_await_dependencies()',
    'function job_queue_wake()',
    'function job_queue_settle_ids(uuid[])',
    'function job_queue_settle()',
    'function job_queue_settle_done(uuid[])',
    'function job_queue_note_moved(uuid[])',
    'function job_queue_dependency_moved()',
    'function job_queue_insert_graph(text, jsonb, text, integer, text, text, uuid, uuid, text, text, integer)',
    'function enqueue_workflow(jsonb, text, bigint, text, text, text)',
    'function suspend_job(uuid, uuid, jsonb, integer)',
    'function cancel_workflow(uuid)',
    'function retry_workflow(uuid)',
    'function job_queue_reap_waiting(integer)',
    'function enqueue_job(text, jsonb, text, bigint, timestamptz, integer, text, text, text, uuid[], text)',
    'function job_queue_select_for_action(text[], text, text, timestamptz, timestamptz, text, integer, uuid)',
    'function cancel_jobs(text, text, text, timestamptz, timestamptz, text, integer, boolean, uuid)',
    'function retry_jobs(text, text, text, timestamptz, timestamptz, text, integer, boolean, uuid)',
    'table job_queue_workflows'
]);
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function
            enqueue_job(text, jsonb, text, bigint, timestamptz, integer, text, text, text, uuid[], text),
            enqueue_workflow(jsonb, text, bigint, text, text, text),
            cancel_workflow(uuid),
            retry_workflow(uuid)
            to service_role;
        grant select on job_queue_workflows to service_role;
    end if;
end;
$$;
