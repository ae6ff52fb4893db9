-- Claims in the common case (issue 24): when fair share has nothing to share (no cap, no
-- pause, no wake to fold in, at most one lane due) a claim is one statement in global order,
-- as a plain FOR UPDATE SKIP LOCKED claim is; get_next_job calls the pick once; and a pick
-- that meets an empty lane another transaction holds no longer loops.
--
-- Plans. The claim functions run with plan_cache_mode = force_generic_plan (their nested calls
-- inherit it). Left to choose, the plan cache kept planning the pick's statements afresh on
-- every call, because their generic cost (arrays and limits of unknown size) never came under
-- the custom plans' average: pg_stat_statements counted one plan per call, 175 us for the
-- take and 500 us a claim in all, more than the claim's execution. Every statement here has
-- the index it is written for, so the generic plan is the one wanted.

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
language plpgsql
set plan_cache_mode = force_generic_plan  -- see the note at the top of this file
as $$
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
language plpgsql
set plan_cache_mode = force_generic_plan
as $$
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
language plpgsql
set plan_cache_mode = force_generic_plan
as $$
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

-- As in 0016, but the row is written only when the frontier moves: with one job per turn
-- over many lanes at the same pass, most claims leave it where it is, and every write of this
-- one row is a new version the others must step over.
create or replace function job_queue_advance_frontier(p_priority integer, p_pass double precision)
returns void
language plpgsql as $$
begin
    update job_queue_turns t set pass = p_pass
    where t.ctid = (select ctid from job_queue_turns
                    where priority = p_priority and pass < p_pass
                    for update skip locked);
    if not found
       and not exists (select 1 from job_queue_turns where priority = p_priority)
       and pg_try_advisory_xact_lock(hashtextextended('processor:turns:' || p_priority,
                                                      1886547811)) then
        insert into job_queue_turns (priority, pass) values (p_priority, p_pass)
        on conflict (priority) do nothing;
    end if;
end;
$$;

-- The pick of 0016, with two changes. It reads the limit tables, counts, rebuilds and offers a
-- lane for release only when there is reason to (a cap or pause in force, rebuild_every past,
-- the lane's last job taken), and releases a round's emptied lanes in one statement.
-- And a lane this call finds empty (or with no job due) leaves
-- the call's set of finished lanes only when it is really gone or asleep. Before, a lane that
-- another transaction held (so could not be deleted) left the set anyway, was read again in
-- the next round, came back empty again, and the claim looped for ever; with several claimers
-- each holding a lane the others wanted, none ended. Every round now takes a job or adds
-- lanes to v_done for good (or makes them invisible to the lane reads), so it ends.
create or replace function job_queue_pick(p_limit integer, p_job_types text[]) returns uuid[]
language plpgsql
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set enable_bitmapscan = off
set jit = off  -- the seq scans a table without an index still needs cost 1e10: never JIT
as $$
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
    v_skip text[];  -- job types whose lanes this claim does not read: paused, or at their cap
    v_top_served integer;  -- the priority whose frontier this claim moves
    v_frontier double precision;  -- the highest pass among the lanes it planned to serve
    v_gone boolean;  -- the lane this call found empty or not due is gone or asleep now
    v_limited boolean;  -- a cap or pause is in force (job_queue_limited)
    v_rebuild boolean;  -- rebuild_every has passed since the lanes were last rebuilt
    v_rel_t text[] := '{}';  -- lanes whose last job this round took (released at its end)
    v_rel_g text[] := '{}';
begin
    if coalesce(p_limit, 0) <= 0 then
        return v_ids;
    end if;
    -- Limit changes (set_concurrency_limit, set_job_type_limit) take this key exclusively and
    -- wait for claims in flight, so no claim that began under the old caps commits under the
    -- new ones. Claims share it and never wait for each other on it; a limit change holds it
    -- for a statement, so a claim that meets one waits at most 100 ms, else takes nothing now.
    if not pg_try_advisory_xact_lock_shared(hashtext('processor:limits')) then
        v_timeout := current_setting('lock_timeout');
        begin
            perform set_config('lock_timeout', '100ms', true);
            perform pg_advisory_xact_lock_shared(hashtext('processor:limits'));
            perform set_config('lock_timeout', v_timeout, true);
        exception when lock_not_available then
            return v_ids;
        end;
    end if;
    -- Without a cap or pause in force (job_queue_limited) the claim reads neither limit table
    -- for them, nor counts anything.
    select st.fair_share, (select limited from job_queue_limited),
           exists (select 1 from job_concurrency_limits),
           (select sc.rebuilt_at <= now() - st.rebuild_every from job_queue_scheduler sc)
    into v_fair, v_limited, v_limits, v_rebuild
    from job_queue_settings st where st.id;
    v_paused := '{}';
    v_capped := false;
    if v_limited then
        select coalesce((select array_agg(job_type) from job_type_limits
                         where paused_at is not null), '{}'),
               exists (select 1 from job_concurrency_limits where max_running is not null)
               or exists (select 1 from job_type_limits where max_running is not null)
        into v_paused, v_capped;
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
    -- The type caps are read after the lock that counts them: a cap lowered while this claim
    -- waited is the cap it holds. (Group caps are read with the lanes, below.)
    v_type_caps := '{}';
    if v_capped then
        select coalesce((select jsonb_object_agg(job_type, max_running) from job_type_limits
                         where max_running is not null), '{}')
        into v_type_caps;
    end if;
    if not coalesce(v_fair, true) then
        -- One global order, as before fair share; caps still hold.
        return job_queue_pick_in_order(p_limit, p_job_types, v_paused, v_capped, v_counting,
                                       v_type_caps);
    end if;
    if v_rebuild then  -- read above: most claims do not call it at all
        perform job_queue_rebuild_lanes();
    end if;
    -- A type at its cap (or any capped type, for a claim that does not count) costs the lane
    -- scans nothing: its lanes are left out by name, however many there are.
    v_skip := v_paused;
    if v_capped then
        select v_paused || coalesce(array_agg(t.key), '{}') into v_skip
        from jsonb_each_text(v_type_caps) t
        where not v_counting or job_type_running(t.key) >= t.value::integer;
    end if;
    if (select id from job_queue_wakes order by id limit 1) is not null then
        perform job_queue_fold_wakes();
    end if;
    while v_left > 0 loop
        -- One round: the lowest-pass lanes at the highest priority with due work, at most one
        -- per job still wanted, each given a share of what is left in proportion to its weight
        -- (the weights of the first v_left lanes in line: wsum). One read of the turn index
        -- gives the priority, the weights and the lanes: lanes this claim may not take (a
        -- capped type's, say) are stepped over once a round, not three times.
        v_top := null;
        v_plan_t := '{}'; v_plan_g := '{}'; v_plan_n := '{}'; v_plan_w := '{}';
        v_planned := 0;
        -- Lanes in pass order, read as far as needed: one at its cap costs a row and a count.
        for v_lane in
            select s.*,
                   coalesce(sum(s.weight) filter (where s.rn <= v_left)
                                over (partition by s.priority), 1) as wsum
            from (select l.*, row_number() over (partition by l.priority
                                                 order by l.pass, l.due_at) as rn
                  from (select l.job_type, l.group_key, l.pass, l.priority, l.due_at,
                               coalesce(own.weight, star.weight, 1) as weight,
                               case when own.key is not null then own.max_running
                                    else star.max_running end as cap
                        from job_queue_lanes l
                        left join job_concurrency_limits own
                          on v_limits and own.key = l.group_key
                        left join job_concurrency_limits star on v_limits and star.key = '*'
                        where l.due_at <= now()
                          and (p_job_types is null or l.job_type = any (p_job_types))
                          and l.job_type <> all (v_skip)
                          and not (l.job_type || E'\x1f' || l.group_key || E'\x1f' || l.priority
                                   = any (v_done))
                        order by l.priority desc, l.pass, l.due_at
                        limit v_left + 64  -- the next round reads on past lanes at their caps
                       ) l) s
            order by s.priority desc, s.pass, s.due_at
        loop
            if v_top is null then
                v_top := v_lane.priority;
                -- One job wanted: the first lane in line takes it, whatever its weight.
                v_wsum := case when v_left > 1 then v_lane.wsum else 1 end;
            end if;
            exit when v_lane.priority <> v_top;
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
                if v_take <= 0 then  -- its type is at its cap: no more of its lanes this claim
                    v_skip := v_skip || v_lane.job_type;
                    continue;
                end if;
            end if;
            v_planned := v_planned + v_take;
            if v_top_served is null or v_top = v_top_served then
                v_top_served := v_top;
                v_frontier := greatest(coalesce(v_frontier, v_lane.pass), v_lane.pass);
            end if;
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
        exit when v_top is null;  -- no lane due
        continue when cardinality(v_plan_t) = 0;

        -- One statement takes the round's jobs from every planned lane, oldest due first.
        -- `more`: the lane has a pending job besides those taken (one index probe), so it
        -- need not be offered to job_queue_release_lane.
        for v_got in
            select t.*, exists (select 1 from job_queue q
                                where q.status = 'pending' and q.job_type = t.t
                                  and coalesce(q.concurrency_key, q.user_id, '') = t.g
                                  and q.priority = v_top
                                  and q.id <> all (v_ids) and q.id <> all (t.ids)) as more
            from (
                select l.i, l.t, l.g, l.n, l.w, array_remove(array_agg(j.id), null) as ids
                from unnest(v_plan_t, v_plan_g, v_plan_n, v_plan_w)
                     with ordinality as l(t, g, n, w, i)
                left join lateral (
                    select q.id from job_queue q
                    where q.status = 'pending' and q.job_type = l.t
                      and coalesce(q.concurrency_key, q.user_id, '') = l.g
                      and q.priority = v_top and q.run_at <= now()
                      and q.id <> all (v_ids)  -- locked by this call already: SKIP LOCKED
                                               -- returns them
                    order by q.run_at, q.created_at
                    limit l.n
                    for update skip locked) j on true
                group by l.i, l.t, l.g, l.n, l.w) t
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
                    -- added since has a wake, which makes it again (at the frontier).
                    v_gone := job_queue_release_lane(v_got.t, v_got.g, v_top, v_ids);
                elsif v_next > now() then
                    update job_queue_lanes set due_at = v_next
                    where ctid = (select ctid from job_queue_lanes
                                  where job_type = v_got.t and group_key = v_got.g
                                    and priority = v_top
                                  for update skip locked);
                    v_gone := found;
                else
                    v_gone := false;  -- its due jobs are locked by others: still due
                end if;
                if v_gone then
                    -- Gone, or asleep: the lane reads no longer see it, so it need not stay
                    -- in v_done (which every lane read filters by: kept small, a claim that
                    -- sweeps 100,000 emptied lanes is linear in them, not quadratic). A lane
                    -- another transaction holds is neither, and stays in v_done: read again,
                    -- it would come back empty every round, and the claim never end (16
                    -- callers spun for minutes that way, each holding a lane another wanted).
                    v_done := array_remove(v_done,
                                           v_got.t || E'\x1f' || v_got.g || E'\x1f' || v_top);
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
                -- It had as many as it was given: it may take another turn in a later round,
                -- unless that was its last job. Then it goes now, not in a later claim's sweep
                -- (a drain of 100,000 one-job groups swept them all at its end).
                if not v_got.more then  -- released below, with the round's others
                    v_rel_t := v_rel_t || v_got.t;
                    v_rel_g := v_rel_g || v_got.g;
                end if;
                v_done := array_remove(v_done, v_got.t || E'\x1f' || v_got.g || E'\x1f' || v_top);
            end if;
        end loop;
        if cardinality(v_rel_t) > 0 then
            -- The lanes whose last job this round took go in one statement, on the terms of
            -- job_queue_release_lane: a lane another transaction holds stays, and so does one
            -- with a pending job this claim did not take, seen in the delete's own snapshot.
            -- (One call per lane made a drain of 100,000 one-job groups 2.6x one group's.)
            delete from job_queue_lanes l
            where l.ctid in (select x.ctid from job_queue_lanes x
                             join unnest(v_rel_t, v_rel_g) r(t, g)
                               on x.job_type = r.t and x.group_key = r.g
                              and x.priority = v_top
                             for update of x skip locked)
              and not exists (select 1 from job_queue q
                              where q.status = 'pending' and q.job_type = l.job_type
                                and coalesce(q.concurrency_key, q.user_id, '') = l.group_key
                                and q.priority = l.priority and q.id <> all (v_ids));
            v_rel_t := '{}';
            v_rel_g := '{}';
        end if;
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

    -- The frontier moves to the pass of the lanes this claim served: where a newcomer starts.
    if cardinality(v_pass_t) > 0 then
        perform job_queue_advance_frontier(v_top_served, v_frontier);
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

select processor_keep_private(array[
    'table job_queue_limited',
    'function job_queue_note_limits()',
    'function job_queue_in_order()',
    'function claim_jobs(text, integer, text[], interval)',
    'function get_next_job(text[])',
    'function mark_job_processing(uuid, text, interval)',
    'function job_queue_pick(integer, text[])',
    'function job_queue_advance_frontier(integer, double precision)'
]);
