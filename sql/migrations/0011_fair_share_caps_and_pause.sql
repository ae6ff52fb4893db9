-- Scheduling between tenants: fair share between groups, running caps per group and per job type,
-- and pausing a job type, all decided inside the claim.
--
--   * A job's group is coalesce(concurrency_key, user_id, ''): the app sets concurrency_key
--     (a shop id, say), else the job's user is its group; jobs with neither share the group ''.
--   * A lane is one (job_type, group, priority). Within a priority level the claim serves lanes
--     in turn by their pass (claims / weight, stride scheduling; at equal pass the lane whose
--     work is oldest first), and each lane in run_at, created_at order. Higher priority still
--     comes first.
--   * The claim reads lanes, not jobs, so it never walks past jobs it may not take (another job
--     type, a paused type, a group at its cap): each lane it serves costs one probe of
--     job_queue_lane_idx. A lane's due_at says no job in it is due before then (null: its
--     type is paused); the claim raises it when a probe finds nothing due, deletes the lane
--     when it finds nothing pending, and a lane at its group's cap sits out until one of the
--     group's jobs ends.
--   * Inserts and rows put back to pending never touch a lane: they append a row to
--     job_queue_wakes, which commits with the job; the claim folds the wakes into the lanes.
--     So an app's open transaction never holds a lock a claim waits for.
--   * Running counts for caps are counted when needed from the running jobs themselves
--     (job_queue_running_idx), so they can never drift.
--   * Claims never wait for each other: lane writes skip rows another claimer holds (a lane
--     may miss one step of its pass). Caps are counted by one claimer at a time, under a
--     transaction-level advisory lock taken with try; a claimer that cannot take it leaves
--     capped lanes to the one that holds it.

alter table job_queue
    add column concurrency_key text
    constraint job_queue_concurrency_key_length
        check (concurrency_key is null or length(concurrency_key) between 1 and 200);
comment on column job_queue.concurrency_key is
    'Fair-share group (e.g. a shop id); null: the job''s user_id is its group.';

alter table job_queue_settings add column fair_share boolean not null default true;
comment on column job_queue_settings.fair_share is
    'true: claims take groups in turn (weighted); false: one global order (priority, run_at, created_at).';

create index job_queue_lane_idx on job_queue
    (job_type, (coalesce(concurrency_key, user_id, '')), priority, run_at, created_at)
    where status = 'pending';
create index job_queue_running_idx on job_queue
    ((coalesce(concurrency_key, user_id, '')), job_type)
    where status = 'processing';

create table job_concurrency_limits (
    key text primary key check (length(key) between 1 and 200),
    max_running integer check (max_running >= 0),
    weight integer not null default 1 check (weight between 1 and 1000),
    updated_at timestamptz not null default now()
);
comment on table job_concurrency_limits is
    'Per fairness group: running cap (null: none) and weight. Key ''*'': the default for groups without a row. Set with set_concurrency_limit.';

create table job_type_limits (
    job_type text primary key check (length(job_type) between 1 and 200),
    max_running integer check (max_running >= 0),
    paused_at timestamptz,
    updated_at timestamptz not null default now()
);
comment on table job_type_limits is
    'Per job type: running cap across every processor (null: none) and pause. Set with set_job_type_limit, pause_job_type, resume_job_type.';

create table job_queue_lanes (
    job_type text not null,
    group_key text not null,
    priority integer not null,
    pass double precision not null default 0,
    due_at timestamptz,
    primary key (job_type, group_key, priority)
);
create index job_queue_lanes_turn_idx on job_queue_lanes (priority desc, pass, due_at)
    where due_at is not null;
create index job_queue_lanes_group_idx on job_queue_lanes (group_key);
-- Claims plan their reads of this table from its statistics: keep them fresh as groups arrive.
alter table job_queue_lanes set (autovacuum_analyze_threshold = 100,
                                 autovacuum_analyze_scale_factor = 0.02,
                                 autovacuum_vacuum_threshold = 200,
                                 autovacuum_vacuum_scale_factor = 0.05);
comment on table job_queue_lanes is
    'The claim''s schedule: one row per (job_type, group, priority), written only by claim_jobs.';

create table job_queue_wakes (
    id bigint generated always as identity primary key,
    job_type text not null,
    group_key text not null,
    priority integer not null,
    due_at timestamptz not null,
    freed boolean not null default false  -- a running job of the group ended
);
comment on table job_queue_wakes is
    'Lanes that gained a pending job since the last claim (appended by triggers, folded in by claim_jobs).';

-- A group's weight and cap: its own row, else the '*' row, else weight 1 and no cap.
create function job_group_weight(p_group text) returns integer
language sql stable as $$
    select coalesce((select weight from job_concurrency_limits where key = p_group),
                    (select weight from job_concurrency_limits where key = '*'), 1)
$$;

create function job_group_cap(p_group text) returns integer
language sql stable as $$
    select case when exists (select 1 from job_concurrency_limits where key = p_group)
                then (select max_running from job_concurrency_limits where key = p_group)
                else (select max_running from job_concurrency_limits where key = '*') end
$$;

create function job_group_running(p_group text) returns integer
language sql stable as $$
    select count(*)::integer from job_queue
    where status = 'processing' and coalesce(concurrency_key, user_id, '') = p_group
$$;

create function job_type_running(p_job_type text) returns integer
language sql stable as $$
    select count(*)::integer from job_queue
    where status = 'processing' and job_type = p_job_type
$$;

-- Wakes: a pending job's lane is due at its run_at (or sooner).
create function job_queue_wake_inserted() returns trigger
language plpgsql security definer set search_path from current as $$
begin
    insert into job_queue_wakes (job_type, group_key, priority, due_at)
    select job_type, coalesce(concurrency_key, user_id, ''), priority, min(run_at)
    from new_rows
    where status = 'pending'
    group by 1, 2, 3;
    return null;
end;
$$;

create function job_queue_wake_pending() returns trigger
language plpgsql security definer set search_path from current as $$
begin
    insert into job_queue_wakes (job_type, group_key, priority, due_at)
    values (new.job_type, coalesce(new.concurrency_key, new.user_id, ''), new.priority,
            new.run_at);
    return null;
end;
$$;

-- A job of a capped group ended: its lane may have room again (a lane at its cap sits out).
create function job_queue_wake_freed() returns trigger
language plpgsql security definer set search_path from current as $$
begin
    if exists (select 1 from job_concurrency_limits where max_running is not null) then
        insert into job_queue_wakes (job_type, group_key, priority, due_at, freed)
        values (new.job_type, coalesce(new.concurrency_key, new.user_id, ''), new.priority,
                now(), true);
    end if;
    return null;
end;
$$;

create trigger job_queue_wake_inserted after insert on job_queue
    referencing new table as new_rows
    for each statement execute function job_queue_wake_inserted();
create trigger job_queue_wake_pending after update on job_queue
    for each row
    when (new.status = 'pending'
          and (old.status <> 'pending' or new.run_at < old.run_at
               or new.priority <> old.priority or new.job_type <> old.job_type
               or new.concurrency_key is distinct from old.concurrency_key
               or new.user_id is distinct from old.user_id))
    execute function job_queue_wake_pending();
create trigger job_queue_wake_freed after update on job_queue
    for each row
    when (old.status = 'processing' and new.status in ('completed', 'failed', 'cancelled'))
    execute function job_queue_wake_freed();

-- TRUNCATE job_queue leaves no job for a lane or a wake to point at.
create function job_queue_truncated() returns trigger
language plpgsql security definer set search_path from current as $$
begin
    delete from job_queue_lanes;
    delete from job_queue_wakes;
    return null;
end;
$$;
create trigger job_queue_truncated after truncate on job_queue
    for each statement execute function job_queue_truncated();

-- Lanes for the jobs already pending when this migration runs.
insert into job_queue_lanes (job_type, group_key, priority, due_at)
select job_type, coalesce(concurrency_key, user_id, ''), priority, min(run_at)
from job_queue
where status = 'pending'
group by 1, 2, 3;

-- Folds the wakes into the lanes (each claim does, first).
create function job_queue_fold_wakes() returns void
language plpgsql as $$
declare
    v_lane record;
    v_done bigint[] := '{}';  -- wakes folded in (deleted at the end)
    v_freed text[] := '{}';
begin
    -- Never waits: a wake another claimer is folding, or whose lane another claimer holds, is
    -- left for the next claim. Lane by lane, each by its key: the usual claim folds one or two.
    for v_lane in
        select w.job_type, w.group_key, w.priority,
               min(w.due_at) filter (where not w.freed) as due_at, bool_or(w.freed) as freed,
               array_agg(w.id) as ids
        from (select * from job_queue_wakes w
              -- A paused type's wakes wait for resume_job_type: its lanes stay out of the way.
              where not exists (select 1 from job_type_limits t
                                where t.job_type = w.job_type and t.paused_at is not null)
              order by w.id
              limit 5000
              for update of w skip locked) w
        group by 1, 2, 3
        order by 1, 2, 3
    loop
        if v_lane.freed then
            v_freed := v_freed || v_lane.group_key;
        end if;
        if v_lane.due_at is null then
            v_done := v_done || v_lane.ids;
            continue;
        end if;
        update job_queue_lanes l
        set due_at = least(l.due_at, v_lane.due_at),
            -- A lane that was empty starts at the lowest pass of the lanes now waiting at its
            -- priority: a newcomer is served next, not after everyone's backlog, and a quiet
            -- lane cannot spend turns it saved up.
            pass = case when l.due_at is null
                        then greatest(l.pass, coalesce(
                            (select min(a.pass) from job_queue_lanes a
                             where a.due_at is not null and a.priority = v_lane.priority),
                            l.pass))
                        else l.pass end
        where l.ctid = (select x.ctid from job_queue_lanes x
                        where x.job_type = v_lane.job_type and x.group_key = v_lane.group_key
                          and x.priority = v_lane.priority
                        for update skip locked);
        if found then
            v_done := v_done || v_lane.ids;
            continue;
        end if;
        insert into job_queue_lanes (job_type, group_key, priority, pass, due_at)
        values (v_lane.job_type, v_lane.group_key, v_lane.priority,
                coalesce((select min(a.pass) from job_queue_lanes a
                          where a.due_at is not null and a.priority = v_lane.priority), 0),
                v_lane.due_at)
        on conflict (job_type, group_key, priority) do nothing;
        if found then
            v_done := v_done || v_lane.ids;
        end if;  -- else another claimer holds the lane: its wake stays for the next claim
    end loop;
    delete from job_queue_wakes where id = any (v_done);
    if cardinality(v_freed) > 0 then
        -- A job of a capped group ended: every lane of the group sitting out its cap is due.
        update job_queue_lanes set due_at = now()
        where ctid in (select ctid from job_queue_lanes
                       where group_key = any (v_freed) and due_at > now()
                       for update skip locked);
    end if;
end;
$$;

-- Which due jobs a claim takes, locked FOR UPDATE SKIP LOCKED, at most p_limit. Caller:
-- claim_jobs, which holds the claim lock.
create function job_queue_pick(p_limit integer, p_job_types text[]) returns uuid[]
language plpgsql as $$
declare
    v_fair boolean;
    v_paused text[];
    v_limits boolean;
    v_capped boolean;  -- some group or type has a cap: count what this call takes
    v_counting boolean;  -- this call holds the caps lock: it may take jobs from capped lanes
    v_timeout text;
    v_type_caps jsonb;
    v_left integer := p_limit;
    v_ids uuid[] := '{}';
    v_done text[] := '{}';  -- lanes this call has finished with: empty, at a cap, or short
    v_taken jsonb := '{}';  -- jobs taken in this call, per 'g:<group>' and 't:<type>'
    v_top integer;
    v_lane record;
    v_planned integer;
    v_wsum double precision;
    v_take integer;
    v_cap integer;
    v_key text;
    v_plan_t text[];
    v_plan_g text[];
    v_plan_n integer[];
    v_plan_w integer[];
    v_got record;
    v_next timestamptz;
    v_pass_t text[] := '{}';
    v_pass_g text[] := '{}';
    v_pass_p integer[] := '{}';
    v_pass_d double precision[] := '{}';
begin
    -- Everything the claim needs to know about settings and limits, in one statement.
    select (select fair_share from job_queue_settings where id),
           coalesce((select array_agg(job_type) from job_type_limits
                     where paused_at is not null), '{}'),
           exists (select 1 from job_concurrency_limits),
           coalesce((select jsonb_object_agg(job_type, max_running) from job_type_limits
                     where max_running is not null), '{}'),
           exists (select 1 from job_concurrency_limits where max_running is not null)
    into v_fair, v_paused, v_limits, v_type_caps, v_capped;
    v_capped := v_capped or v_type_caps <> '{}';
    if not coalesce(v_fair, true) and not v_capped then
        -- One global order, as before fair share.
        select coalesce(array_agg(id), '{}') into v_ids from (
            select id from job_queue
            where status = 'pending' and run_at <= now()
              and (p_job_types is null or job_type = any (p_job_types))
              and job_type <> all (v_paused)
            order by priority desc, run_at, created_at
            limit p_limit
            for update skip locked) s;
        return v_ids;
    end if;

    -- Caps are counted by one claimer at a time. A claimer that finds another counting waits
    -- up to 100 ms (a claim takes a few); past that (the other is in an open transaction, say)
    -- it takes only from lanes without a cap.
    v_counting := v_capped and pg_try_advisory_xact_lock(hashtext('processor:caps'));
    if v_capped and not v_counting then
        v_timeout := current_setting('lock_timeout');
        begin
            perform set_config('lock_timeout', '100ms', true);
            perform pg_advisory_xact_lock(hashtext('processor:caps'));
            v_counting := true;
            perform set_config('lock_timeout', v_timeout, true);
        exception when lock_not_available then
            v_counting := false;  -- the block's setting is undone with it
        end;
    end if;
    if exists (select 1 from job_queue_wakes) then
        perform job_queue_fold_wakes();
    end if;
    while v_left > 0 loop
        -- One round: the lowest-pass lanes at the highest priority with due work, at most one
        -- per job still wanted, each given a share of what is left in proportion to its weight.
        select l.priority into v_top
        from job_queue_lanes l
        where l.due_at <= now()
          and (p_job_types is null or l.job_type = any (p_job_types))
          and l.job_type <> all (v_paused)
          and not (l.job_type || E'\x1f' || l.group_key || E'\x1f' || l.priority = any (v_done))
        order by l.priority desc, l.pass, l.due_at
        limit 1;
        exit when v_top is null;
        v_wsum := 1;  -- one job wanted: the first lane in line takes it, whatever its weight
        if v_left > 1 then
            -- The weights of the first lanes in line share what is left.
            select coalesce(sum(coalesce(own.weight, star.weight, 1)), 1) into v_wsum
            from (select l.group_key from job_queue_lanes l
                  where l.due_at <= now() and l.priority = v_top
                    and (p_job_types is null or l.job_type = any (p_job_types))
                    and l.job_type <> all (v_paused)
                    and not (l.job_type || E'\x1f' || l.group_key || E'\x1f' || l.priority
                             = any (v_done))
                  order by l.pass, l.due_at
                  limit v_left) c
            left join job_concurrency_limits own on v_limits and own.key = c.group_key
            left join job_concurrency_limits star on v_limits and star.key = '*';
        end if;
        v_plan_t := '{}'; v_plan_g := '{}'; v_plan_n := '{}'; v_plan_w := '{}';
        v_planned := 0;
        -- Lanes in pass order, read as far as needed: one at its cap costs a row and a count.
        for v_lane in
            select l.job_type, l.group_key,
                   coalesce(own.weight, star.weight, 1) as weight,
                   case when own.key is not null then own.max_running
                        else star.max_running end as cap
            from job_queue_lanes l
            left join job_concurrency_limits own on v_limits and own.key = l.group_key
            left join job_concurrency_limits star on v_limits and star.key = '*'
            where l.due_at <= now() and l.priority = v_top
              and (p_job_types is null or l.job_type = any (p_job_types))
              and l.job_type <> all (v_paused)
              and not (l.job_type || E'\x1f' || l.group_key || E'\x1f' || l.priority
                       = any (v_done))
            order by l.pass, l.due_at
            limit v_left + 64  -- the next round reads on past lanes at their caps
        loop
            exit when v_planned >= v_left;
            v_key := v_lane.job_type || E'\x1f' || v_lane.group_key || E'\x1f' || v_top;
            v_done := v_done || v_key;
            v_take := least(ceil(v_lane.weight * v_left / v_wsum), v_left - v_planned);
            continue when v_capped and not v_counting
                          and (v_lane.cap is not null or v_type_caps ? v_lane.job_type);
            if v_lane.cap is not null then
                v_take := least(v_take, v_lane.cap - job_group_running(v_lane.group_key)
                                - coalesce((v_taken ->> ('g:' || v_lane.group_key))::integer, 0));
                if v_take <= 0 then
                    -- Its group is at its cap: the lane sits out claims until one of the
                    -- group's jobs ends (that wakes it), or for 10 s at most.
                    update job_queue_lanes set due_at = greatest(due_at, now() + interval '10 s')
                    where ctid = (select ctid from job_queue_lanes
                                  where job_type = v_lane.job_type
                                    and group_key = v_lane.group_key and priority = v_top
                                  for update skip locked);
                    continue;
                end if;
            end if;
            v_cap := (v_type_caps ->> v_lane.job_type)::integer;
            if v_cap is not null then
                if not v_taken ? ('r:' || v_lane.job_type) then
                    v_taken := v_taken || jsonb_build_object('r:' || v_lane.job_type,
                                                             job_type_running(v_lane.job_type));
                end if;
                v_take := least(v_take, v_cap - (v_taken ->> ('r:' || v_lane.job_type))::integer
                                - coalesce((v_taken ->> ('t:' || v_lane.job_type))::integer, 0));
                continue when v_take <= 0;  -- its type is at its cap
            end if;
            v_planned := v_planned + v_take;
            v_plan_t := v_plan_t || v_lane.job_type;
            v_plan_g := v_plan_g || v_lane.group_key;
            v_plan_n := v_plan_n || v_take;
            v_plan_w := v_plan_w || v_lane.weight;
            continue when not v_capped;
            v_taken := v_taken
                || jsonb_build_object('g:' || v_lane.group_key,
                       coalesce((v_taken ->> ('g:' || v_lane.group_key))::integer, 0) + v_take)
                || jsonb_build_object('t:' || v_lane.job_type,
                       coalesce((v_taken ->> ('t:' || v_lane.job_type))::integer, 0) + v_take);
        end loop;
        continue when cardinality(v_plan_t) = 0;

        -- One statement takes the round's jobs from every planned lane, oldest due first.
        for v_got in
            select l.i, l.t, l.g, l.n, l.w, array_remove(array_agg(j.id), null) as ids
            from unnest(v_plan_t, v_plan_g, v_plan_n, v_plan_w)
                 with ordinality as l(t, g, n, w, i)
            left join lateral (
                select q.id from job_queue q
                where q.status = 'pending' and q.job_type = l.t
                  and coalesce(q.concurrency_key, q.user_id, '') = l.g
                  and q.priority = v_top and q.run_at <= now()
                  and q.id <> all (v_ids)  -- locked by this call already: SKIP LOCKED returns them
                order by q.run_at, q.created_at
                limit l.n
                for update skip locked) j on true
            group by l.i, l.t, l.g, l.n, l.w
        loop
            if v_capped and cardinality(v_got.ids) < v_got.n then  -- planned, not taken
                v_taken := v_taken
                    || jsonb_build_object('g:' || v_got.g,
                           (v_taken ->> ('g:' || v_got.g))::integer
                           - v_got.n + cardinality(v_got.ids))
                    || jsonb_build_object('t:' || v_got.t,
                           (v_taken ->> ('t:' || v_got.t))::integer
                           - v_got.n + cardinality(v_got.ids));
            end if;
            if cardinality(v_got.ids) = 0 then
                -- Nothing due here now: the lane sleeps until its next job is due, or until a
                -- wake. Jobs locked by another transaction keep it due.
                select min(run_at) into v_next from job_queue
                where status = 'pending' and job_type = v_got.t
                  and coalesce(concurrency_key, user_id, '') = v_got.g and priority = v_top;
                if v_next is null then
                    -- Empty: the lane goes, so the table holds only groups with work. A job
                    -- added since has a wake, which makes it again (at the lowest pass waiting).
                    delete from job_queue_lanes
                    where ctid = (select ctid from job_queue_lanes
                                  where job_type = v_got.t and group_key = v_got.g
                                    and priority = v_top
                                  for update skip locked);
                elsif v_next > now() then
                    update job_queue_lanes set due_at = v_next
                    where ctid = (select ctid from job_queue_lanes
                                  where job_type = v_got.t and group_key = v_got.g
                                    and priority = v_top
                                  for update skip locked);
                end if;
                continue;
            end if;
            v_ids := v_ids || v_got.ids;
            v_left := v_left - cardinality(v_got.ids);
            v_pass_t := v_pass_t || v_got.t;
            v_pass_g := v_pass_g || v_got.g;
            v_pass_p := v_pass_p || v_top;
            v_pass_d := v_pass_d || (cardinality(v_got.ids)::double precision / v_got.w);
            if cardinality(v_got.ids) = v_got.n then
                -- It had as many as it was given: it may take another turn in a later round.
                v_done := array_remove(v_done, v_got.t || E'\x1f' || v_got.g || E'\x1f' || v_top);
            end if;
        end loop;
        -- Every round takes a job (v_left falls) or retires the lanes it looked at (v_done
        -- grows), so this ends.
    end loop;

    -- Each lane served moves on by its claims over its weight.
    -- Wakes another claimer is still folding (in an open transaction, say) stand for lanes this
    -- claim cannot see yet: it takes the rest in global order, as without fair share, so no
    -- due job waits for that transaction. Capped work is left to the claimer that counts caps.
    if v_left > 0 and not v_capped
       and exists (select 1 from job_queue_wakes w where w.job_type <> all (v_paused)) then
        v_ids := v_ids || coalesce((
            select array_agg(id) from (
                select id from job_queue
                where status = 'pending' and run_at <= now()
                  and (p_job_types is null or job_type = any (p_job_types))
                  and job_type <> all (v_paused)
                  and id <> all (v_ids)
                order by priority desc, run_at, created_at
                limit v_left
                for update skip locked) s), '{}');
    end if;

    -- A lane another claimer holds misses this turn's step: a small error in its share, never
    -- a wait.
    update job_queue_lanes l
    set pass = l.pass + s.d
    from (select x.ctid as row, u.d
          from (select t, g, p, sum(d) as d
                from unnest(v_pass_t, v_pass_g, v_pass_p, v_pass_d) as u(t, g, p, d)
                group by 1, 2, 3) u
          join job_queue_lanes x on x.job_type = u.t and x.group_key = u.g and x.priority = u.p
          for update of x skip locked) s
    where l.ctid = s.row;
    return v_ids;
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
    v_ids := job_queue_pick(greatest(coalesce(p_limit, 1), 1), p_job_types);
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

-- get_next_job keeps its contract (one due job, locked, in global order) and now skips paused
-- types and jobs whose group or type is at its cap. The cap is counted when it is called, so
-- two callers between get_next_job and mark_job_processing can pass it together; claim_jobs
-- is the call that holds caps exactly.
create or replace function get_next_job(p_job_types text[] default null) returns job_queue
language sql as $$
    select j.*
    from job_queue j
    where j.status = 'pending'
      and j.run_at <= now()
      and (p_job_types is null or j.job_type = any (p_job_types))
      and not exists (select 1 from job_type_limits t
                      where t.job_type = j.job_type
                        and (t.paused_at is not null
                             or t.max_running <= job_type_running(j.job_type)))
      and (not exists (select 1 from job_concurrency_limits where max_running is not null)
           or coalesce(job_group_cap(coalesce(j.concurrency_key, j.user_id, '')) >
                       job_group_running(coalesce(j.concurrency_key, j.user_id, '')), true))
    order by j.priority desc, j.run_at, j.created_at
    limit 1
    for update of j skip locked
$$;

create function set_concurrency_limit(
    p_key text, p_max_running integer, p_weight integer default 1
) returns void
language plpgsql as $$
begin
    if p_key is null or length(p_key) not between 1 and 200 then
        raise exception 'set_concurrency_limit: key must be 1 to 200 characters (''*'': every group)'
            using errcode = '22023';
    end if;
    if p_max_running < 0 then
        raise exception 'set_concurrency_limit: max_running must be >= 0 or null, got %',
            p_max_running using errcode = '22023';
    end if;
    if p_weight is null or p_weight not between 1 and 1000 then
        raise exception 'set_concurrency_limit: weight must be from 1 to 1000, got %', p_weight
            using errcode = '22023';
    end if;
    insert into job_concurrency_limits (key, max_running, weight)
    values (p_key, p_max_running, p_weight)
    on conflict (key) do update
    set max_running = excluded.max_running, weight = excluded.weight, updated_at = now();
end;
$$;

create function set_job_type_limit(p_job_type text, p_max_running integer) returns void
language plpgsql as $$
begin
    if p_job_type is null or length(p_job_type) not between 1 and 200 then
        raise exception 'set_job_type_limit: job_type must be 1 to 200 characters'
            using errcode = '22023';
    end if;
    if p_max_running < 0 then
        raise exception 'set_job_type_limit: max_running must be >= 0 or null, got %',
            p_max_running using errcode = '22023';
    end if;
    insert into job_type_limits (job_type, max_running) values (p_job_type, p_max_running)
    on conflict (job_type) do update
    set max_running = excluded.max_running, updated_at = now();
end;
$$;

create function pause_job_type(p_job_type text) returns boolean
language plpgsql as $$
begin
    if p_job_type is null or length(p_job_type) not between 1 and 200 then
        raise exception 'pause_job_type: job_type must be 1 to 200 characters'
            using errcode = '22023';
    end if;
    insert into job_type_limits (job_type, paused_at) values (p_job_type, now())
    on conflict (job_type) do update
    set paused_at = coalesce(job_type_limits.paused_at, now()), updated_at = now();
    -- Its lanes leave the schedule until resume_job_type; its jobs stay pending.
    update job_queue_lanes set due_at = null where job_type = p_job_type;
    return true;
end;
$$;

create function resume_job_type(p_job_type text) returns boolean
language plpgsql as $$
declare
    v_was timestamptz;
begin
    select paused_at into v_was from job_type_limits where job_type = p_job_type for update;
    update job_type_limits set paused_at = null, updated_at = now()
    where job_type = p_job_type;
    if v_was is not null then
        -- Every lane of the type is looked at again (an empty one costs the next claim a probe).
        insert into job_queue_wakes (job_type, group_key, priority, due_at)
        select job_type, group_key, priority, now() from job_queue_lanes
        where job_type = p_job_type;
        perform pg_notify('job_queue_insert', '');  -- running processors look again at once
    end if;
    return v_was is not null;
end;
$$;

-- Why a pending job is not running yet (null when it is not pending).
create function job_wait_reason(p_job_id uuid) returns text
language plpgsql stable as $$
declare
    v_job job_queue;
    v_group text;
    v_cap integer;
    v_running integer;
begin
    select * into v_job from job_queue where id = p_job_id;
    if not found or v_job.status <> 'pending' then
        return null;
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

-- Groups with work, busiest first: running, waiting (pending and due), cap and weight.
create view job_queue_groups with (security_invoker = on) as
select g.group_key, g.running, g.waiting, g.scheduled,
       job_group_cap(g.group_key) as max_running, job_group_weight(g.group_key) as weight
from (
    select coalesce(concurrency_key, user_id, '') as group_key,
           count(*) filter (where status = 'processing') as running,
           count(*) filter (where status = 'pending' and run_at <= now()) as waiting,
           count(*) filter (where status = 'pending' and run_at > now()) as scheduled
    from job_queue
    where status in ('pending', 'processing')
    group by 1
) g;
comment on view job_queue_groups is
    'Fairness groups with pending or running jobs: running, waiting (due), scheduled (later), cap, weight.';

-- Job types with their cap, pause and counts (the stats and /metrics read it).
create view job_queue_types with (security_invoker = on) as
select t.job_type, t.running, t.waiting, t.scheduled, l.max_running,
       l.paused_at is not null as paused, l.paused_at
from (
    select job_type,
           count(*) filter (where status = 'processing') as running,
           count(*) filter (where status = 'pending' and run_at <= now()) as waiting,
           count(*) filter (where status = 'pending' and run_at > now()) as scheduled
    from job_queue
    where status in ('pending', 'processing')
    group by 1
) t
full join job_type_limits l using (job_type);
comment on view job_queue_types is
    'Job types with pending or running jobs or a limit: counts, cap and whether paused.';

drop function enqueue_job(text, jsonb, text, bigint, timestamptz, integer, text);
create function enqueue_job(
    p_job_type text,
    p_payload jsonb default '{}'::jsonb,
    p_user_id text default null,
    p_priority bigint default 0,
    p_run_at timestamptz default now(),
    p_max_retries integer default 3,
    p_idempotency_key text default null,
    p_concurrency_key text default null
) returns uuid
language plpgsql security definer set search_path from current as $$
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
    if p_priority not between -2147483648 and 2147483647 then
        raise exception 'enqueue_job: priority must be from -2147483648 to 2147483647, got %',
            p_priority using errcode = '22003';
    end if;
    if p_run_at is not null and (not isfinite(p_run_at)
       or p_run_at not between '1970-01-01 00:00:00+00' and '9999-12-31 00:00:00+00') then
        raise exception 'enqueue_job: run_at must be a time from 1970 to 9999, got %', p_run_at
            using errcode = '22008';
    end if;
    if p_concurrency_key is not null and length(p_concurrency_key) not between 1 and 200 then
        raise exception 'enqueue_job: concurrency_key must be 1 to 200 characters, got %',
            length(p_concurrency_key) using errcode = '22023';
    end if;

    insert into job_queue (job_type, payload, user_id, priority, run_at, max_retries,
                           idempotency_key, concurrency_key)
    values (p_job_type, p_payload, p_user_id, coalesce(p_priority, 0)::integer,
            coalesce(p_run_at, now()), p_max_retries, p_idempotency_key, p_concurrency_key)
    on conflict (idempotency_key) where idempotency_key is not null do nothing
    returning id into v_id;

    if v_id is null then
        select id into v_id from job_queue where idempotency_key = p_idempotency_key;
    end if;
    return v_id;
end;
$$;

select processor_keep_private(array[
    'table job_concurrency_limits',
    'table job_type_limits',
    'table job_queue_lanes',
    'table job_queue_wakes',
    'sequence job_queue_wakes_id_seq',
    'table job_queue_groups',
    'table job_queue_types',
    'function job_group_weight(text)',
    'function job_group_cap(text)',
    'function job_group_running(text)',
    'function job_type_running(text)',
    'function job_queue_wake_inserted()',
    'function job_queue_wake_pending()',
    'function job_queue_wake_freed()',
    'function job_queue_truncated()',
    'function job_queue_fold_wakes()',
    'function job_queue_pick(integer, text[])',
    'function claim_jobs(text, integer, text[], interval)',
    'function get_next_job(text[])',
    'function set_concurrency_limit(text, integer, integer)',
    'function set_job_type_limit(text, integer)',
    'function pause_job_type(text)',
    'function resume_job_type(text)',
    'function job_wait_reason(uuid)',
    'function enqueue_job(text, jsonb, text, bigint, timestamptz, integer, text, text)'
]);
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function
            enqueue_job(text, jsonb, text, bigint, timestamptz, integer, text, text)
            to service_role;
    end if;
end;
$$;
