-- The scheduler under pressure (issue 24): no claim waits on a lane another transaction holds,
-- caps read under the lock that counts them and held by every path that starts a job, a new
-- or returning group enters where the others are being served, lanes rebuilt from job_queue so
-- no due job is stranded, and fair_share = off keeping caps. docs/sql.md states the invariants.

-- Where a priority level's claims are: the highest pass of the lanes the latest claims served.
-- A lane that wakes (new, or empty and refilled) starts here. Written by claims with SKIP
-- LOCKED (a claim that finds the row held moves on), read by the wake fold.
create table job_queue_turns (
    priority integer primary key,
    pass double precision not null
);
comment on table job_queue_turns is
    'Per priority: the pass of the lanes claims serve now, where a waking lane starts (claim_jobs).';

-- When the lanes were last rebuilt from job_queue (job_queue_rebuild_lanes).
create table job_queue_scheduler (
    id boolean primary key default true check (id),
    rebuilt_at timestamptz not null default '-infinity'
);
insert into job_queue_scheduler default values;
comment on table job_queue_scheduler is
    'When claim_jobs last checked every lane with pending jobs against job_queue_lanes.';

alter table job_queue_settings
    add column rebuild_every interval not null default '30 seconds'
        check (rebuild_every >= interval '0');
comment on column job_queue_settings.rebuild_every is
    'How often a claim checks job_queue for pending jobs the lanes do not know (rows written '
    'with triggers off, a restore, a lost wake): the longest such a job waits.';

create function job_queue_frontier(p_priority integer) returns double precision
language sql stable as $$
    select coalesce((select pass from job_queue_turns where priority = p_priority),
                    (select min(pass) from job_queue_lanes
                     where priority = p_priority and due_at <= now()),
                    0)
$$;

create function job_queue_advance_frontier(p_priority integer, p_pass double precision)
returns void
language plpgsql as $$
begin
    update job_queue_turns t set pass = greatest(t.pass, p_pass)
    where t.ctid = (select ctid from job_queue_turns where priority = p_priority
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

-- Every lane with pending jobs that job_queue_lanes does not have (or has asleep while its
-- type is not paused) gets a wake, at most once per rebuild_every, in the one claim that takes
-- the turn. The lanes are read with a loose scan of job_queue_lane_idx: one index probe per
-- lane with pending jobs, whatever the number of jobs. Lanes are derived state: this is what
-- makes a row written with triggers off, a restored table or a lost wake cost at most one
-- rebuild_every of waiting.
-- Plans that do not depend on statistics: the lane table goes from empty to 100,000 rows
-- between two autovacuum passes, and planned as empty it was read whole once per lane (a
-- rebuild of 20,000 lanes took 27 s, a claim over 10,000 groups 28 ms). Every read here has an
-- index made for it, so the planner is told to use them.
create function job_queue_rebuild_lanes() returns integer
language plpgsql
set enable_seqscan = off
set enable_bitmapscan = off
set jit = off  -- the seq scans a table without an index still needs cost 1e10: never JIT
as $$
declare
    v_added integer;
begin
    update job_queue_scheduler s set rebuilt_at = now()
    where s.ctid = (select ctid from job_queue_scheduler
                    where rebuilt_at <= now() - (select rebuild_every from job_queue_settings
                                                 where id)
                    for update skip locked);
    if not found then
        return 0;
    end if;
    with recursive lanes as (
        (select job_type, coalesce(concurrency_key, user_id, '') as group_key, priority, run_at
         from job_queue
         where status = 'pending'
         order by job_type, coalesce(concurrency_key, user_id, ''), priority, run_at, created_at
         limit 1)
        union all
        select n.job_type, n.group_key, n.priority, n.run_at
        from lanes l, lateral (
            select q.job_type, coalesce(q.concurrency_key, q.user_id, '') as group_key,
                   q.priority, q.run_at
            from job_queue q
            where q.status = 'pending'
              and (q.job_type, coalesce(q.concurrency_key, q.user_id, ''), q.priority)
                  > (l.job_type, l.group_key, l.priority)
            order by q.job_type, coalesce(q.concurrency_key, q.user_id, ''), q.priority,
                     q.run_at, q.created_at
            limit 1) n
    )
    insert into job_queue_wakes (job_type, group_key, priority, due_at)
    select d.job_type, d.group_key, d.priority, d.run_at
    from lanes d
    where not exists (select 1 from job_queue_lanes x
                      where x.job_type = d.job_type and x.group_key = d.group_key
                        and x.priority = d.priority and x.due_at is not null)
      and not exists (select 1 from job_queue_wakes w
                      where w.job_type = d.job_type and w.group_key = d.group_key
                        and w.priority = d.priority)
      and not exists (select 1 from job_type_limits t
                      where t.job_type = d.job_type and t.paused_at is not null);
    get diagnostics v_added = row_count;
    if v_added > 0 then
        raise log 'job_queue_rebuild_lanes: % lane(s) with pending jobs had no lane or wake',
            v_added;
    end if;
    return v_added;
end;
$$;

-- fair_share = off: one global order (priority, run_at, created_at), caps still held. With
-- caps, the claim reads up to 1,000 + 4 x limit due jobs in that order and takes those whose
-- group and type are under their caps.
create function job_queue_pick_in_order(
    p_limit integer, p_job_types text[], p_paused text[], p_capped boolean,
    p_counting boolean, p_type_caps jsonb
) returns uuid[]
language plpgsql as $$
declare
    v_ids uuid[] := '{}';
    v_row record;
    v_counts jsonb := '{}';  -- running + taken, per 'g:<group>' and 't:<type>'
    v_cap integer;
    v_group_caps boolean;
begin
    if not p_capped then
        select coalesce(array_agg(id), '{}') into v_ids from (
            select id from job_queue
            where status = 'pending' and run_at <= now()
              and (p_job_types is null or job_type = any (p_job_types))
              and job_type <> all (p_paused)
            order by priority desc, run_at, created_at
            limit p_limit
            for update skip locked) s;
        return v_ids;
    end if;
    v_group_caps := exists (select 1 from job_concurrency_limits where max_running is not null);
    for v_row in
        select id, job_type, coalesce(concurrency_key, user_id, '') as group_key
        from job_queue
        where status = 'pending' and run_at <= now()
          and (p_job_types is null or job_type = any (p_job_types))
          and job_type <> all (p_paused)
        order by priority desc, run_at, created_at
        limit 1000 + 4 * p_limit
    loop
        v_cap := case when v_group_caps then job_group_cap(v_row.group_key) end;
        continue when not p_counting and (v_cap is not null or p_type_caps ? v_row.job_type);
        if v_cap is not null then
            if not v_counts ? ('g:' || v_row.group_key) then
                v_counts := v_counts || jsonb_build_object('g:' || v_row.group_key,
                                                           job_group_running(v_row.group_key));
            end if;
            continue when (v_counts ->> ('g:' || v_row.group_key))::integer >= v_cap;
        end if;
        v_cap := (p_type_caps ->> v_row.job_type)::integer;
        if v_cap is not null then
            if not v_counts ? ('t:' || v_row.job_type) then
                v_counts := v_counts || jsonb_build_object('t:' || v_row.job_type,
                                                           job_type_running(v_row.job_type));
            end if;
            continue when (v_counts ->> ('t:' || v_row.job_type))::integer >= v_cap;
        end if;
        perform 1 from job_queue
        where id = v_row.id and status = 'pending'
        for update skip locked;
        continue when not found;
        v_ids := v_ids || v_row.id;
        v_counts := v_counts
            || jsonb_build_object('g:' || v_row.group_key,
                   coalesce((v_counts ->> ('g:' || v_row.group_key))::integer, 0) + 1)
            || jsonb_build_object('t:' || v_row.job_type,
                   coalesce((v_counts ->> ('t:' || v_row.job_type))::integer, 0) + 1);
        exit when cardinality(v_ids) >= p_limit;
    end loop;
    return v_ids;
end;
$$;

-- Deletes a lane that has no pending job left but those this claim took (p_taken, still
-- 'pending' until claim_jobs moves them), checked in the delete's own snapshot: a job committed
-- since the claim looked (whose wake another claim may already have folded into this lane)
-- keeps it. A lane another transaction holds is left alone. True when the lane went.
create function job_queue_release_lane(
    p_job_type text, p_group text, p_priority integer, p_taken uuid[]
) returns boolean
language plpgsql
set enable_seqscan = off
set enable_bitmapscan = off
set jit = off
as $$
begin
    delete from job_queue_lanes
    where ctid = (select ctid from job_queue_lanes
                  where job_type = p_job_type and group_key = p_group and priority = p_priority
                  for update skip locked)
      and not exists (select 1 from job_queue q
                      where q.status = 'pending' and q.job_type = p_job_type
                        and coalesce(q.concurrency_key, q.user_id, '') = p_group
                        and q.priority = p_priority and q.id <> all (p_taken));
    return found;
end;
$$;

create or replace function job_queue_fold_wakes() returns void
language plpgsql
set enable_seqscan = off
set enable_bitmapscan = off
set jit = off  -- the seq scans a table without an index still needs cost 1e10: never JIT
as $$
declare
    v_lane record;
    v_done bigint[] := '{}';  -- wakes folded in (deleted at the end)
    v_freed text[] := '{}';
    v_starts jsonb := '{}';  -- job_queue_frontier per priority, read once per fold
    v_start double precision;
begin
    -- Never waits: a wake another claimer is folding, or whose lane another claimer holds, is
    -- left for the next claim. Lane by lane, each by its key: the usual claim folds one or two.
    for v_lane in
        select w.job_type, w.group_key, w.priority,
               min(w.due_at) filter (where not w.freed) as due_at, bool_or(w.freed) as freed,
               array_agg(w.id) as ids,
               -- Read in the wakes' own snapshot: resume_job_type's wakes come with its resume.
               coalesce((select t.paused_at is not null from job_type_limits t
                         where t.job_type = w.job_type), false) as paused
        from (select * from job_queue_wakes w
              order by w.id
              limit 5000
              for update of w skip locked) w
        group by 1, 2, 3
        order by 1, 2, 3
    loop
        if v_lane.freed then
            v_freed := v_freed || v_lane.group_key;
        end if;
        -- A paused type's wakes are used up here, so they cannot pile up while it stays
        -- paused: resume_job_type wakes every lane of the type from job_queue itself.
        if v_lane.due_at is null or v_lane.paused then
            v_done := v_done || v_lane.ids;
            continue;
        end if;
        -- Where a waking lane starts: looked up once per priority and fold (a fold of 100,000
        -- new lanes must not look it up 100,000 times).
        if not v_starts ? v_lane.priority::text then
            v_starts := v_starts || jsonb_build_object(v_lane.priority::text,
                                                       job_queue_frontier(v_lane.priority));
        end if;
        v_start := (v_starts ->> v_lane.priority::text)::double precision;
        update job_queue_lanes l
        set due_at = least(l.due_at, v_lane.due_at),
            -- A lane that was asleep starts at the pass of the lanes now being served at its
            -- priority (job_queue_frontier): served next, not after everyone's backlog, never
            -- ahead of them by turns it saved up or by a capped neighbour's low pass.
            pass = case when l.due_at is null then greatest(l.pass, v_start) else l.pass end
        where l.ctid = (select x.ctid from job_queue_lanes x
                        where x.job_type = v_lane.job_type and x.group_key = v_lane.group_key
                          and x.priority = v_lane.priority
                        for update skip locked);
        if found then
            v_done := v_done || v_lane.ids;
            continue;
        end if;
        -- No wait, ever: a lane that exists but is locked (another claim serves or deletes it,
        -- perhaps in a transaction left open) keeps its wake for a later claim, and only the
        -- holder of the lane's advisory key may insert it. ON CONFLICT alone would wait for
        -- the transaction that last wrote a conflicting row.
        continue when exists (select 1 from job_queue_lanes x
                              where x.job_type = v_lane.job_type
                                and x.group_key = v_lane.group_key
                                and x.priority = v_lane.priority);
        continue when not pg_try_advisory_xact_lock(
            hashtextextended(v_lane.job_type || E'\x1f' || v_lane.group_key || E'\x1f'
                             || v_lane.priority, 1886547811));
        insert into job_queue_lanes (job_type, group_key, priority, pass, due_at)
        values (v_lane.job_type, v_lane.group_key, v_lane.priority, v_start, v_lane.due_at)
        on conflict (job_type, group_key, priority) do nothing;
        if found then
            v_done := v_done || v_lane.ids;
        end if;
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

create or replace function job_queue_pick(p_limit integer, p_job_types text[]) returns uuid[]
language plpgsql
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
    select (select fair_share from job_queue_settings where id),
           coalesce((select array_agg(job_type) from job_type_limits
                     where paused_at is not null), '{}'),
           exists (select 1 from job_concurrency_limits),
           exists (select 1 from job_concurrency_limits where max_running is not null)
           or exists (select 1 from job_type_limits where max_running is not null)
    into v_fair, v_paused, v_limits, v_capped;

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
    select coalesce((select jsonb_object_agg(job_type, max_running) from job_type_limits
                     where max_running is not null), '{}')
    into v_type_caps;
    if not coalesce(v_fair, true) then
        -- One global order, as before fair share; caps still hold.
        return job_queue_pick_in_order(p_limit, p_job_types, v_paused, v_capped, v_counting,
                                       v_type_caps);
    end if;
    perform job_queue_rebuild_lanes();
    -- A type at its cap (or any capped type, for a claim that does not count) costs the lane
    -- scans nothing: its lanes are left out by name, however many there are.
    select v_paused || coalesce(array_agg(t.key), '{}') into v_skip
    from jsonb_each_text(v_type_caps) t
    where not v_counting or job_type_running(t.key) >= t.value::integer;
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
          and l.job_type <> all (v_skip)
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
                    and l.job_type <> all (v_skip)
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
            select l.job_type, l.group_key, l.pass,
                   coalesce(own.weight, star.weight, 1) as weight,
                   case when own.key is not null then own.max_running
                        else star.max_running end as cap
            from job_queue_lanes l
            left join job_concurrency_limits own on v_limits and own.key = l.group_key
            left join job_concurrency_limits star on v_limits and star.key = '*'
            where l.due_at <= now() and l.priority = v_top
              and (p_job_types is null or l.job_type = any (p_job_types))
              and l.job_type <> all (v_skip)
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
                    -- added since has a wake, which makes it again (at the frontier).
                    perform job_queue_release_lane(v_got.t, v_got.g, v_top, v_ids);
                elsif v_next > now() then
                    update job_queue_lanes set due_at = v_next
                    where ctid = (select ctid from job_queue_lanes
                                  where job_type = v_got.t and group_key = v_got.g
                                    and priority = v_top
                                  for update skip locked);
                end if;
                if v_next is null or v_next > now() then
                    -- Gone, or asleep: the lane reads no longer see it, so it need not stay
                    -- in v_done (which every lane read filters by: kept small, a claim that
                    -- sweeps 100,000 emptied lanes is linear in them, not quadratic).
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
                perform job_queue_release_lane(v_got.t, v_got.g, v_top, v_ids);
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
    v_ids := job_queue_pick(coalesce(p_limit, 0), p_job_types);
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

-- get_next_job follows claim_jobs(…, 1): the same order (fair share, weights, priority), the
-- same rules (paused types, caps), and the same locks, held until the caller's transaction
-- ends. Called in one transaction with mark_job_processing it holds every cap exactly; in two,
-- mark_job_processing checks the caps again under the lock. It moves the job's lane on a turn
-- as a claim does, whether or not the caller then starts the job.
create or replace function get_next_job(p_job_types text[] default null) returns job_queue
language plpgsql as $$
declare
    v_job job_queue;
begin
    select * into v_job from job_queue
    where id = (job_queue_pick(1, p_job_types))[1];
    if not found then
        return null;  -- as before: no row, not a row of nulls
    end if;
    -- The pick may have let the job's lane go with its last job; the caller may still not
    -- start it: a wake keeps the lane for whatever stays pending.
    insert into job_queue_wakes (job_type, group_key, priority, due_at)
    values (v_job.job_type, coalesce(v_job.concurrency_key, v_job.user_id, ''), v_job.priority,
            v_job.run_at);
    return v_job;
end;
$$;

-- Starts one job by id, as claim_jobs would: only when it is pending and due, its type is not
-- paused, and its group and type are under their caps (counted under the caps lock, which is
-- held until the caller's transaction ends). Otherwise it returns nothing.
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
    if not found or v_job.run_at > now()
       or exists (select 1 from job_type_limits
                  where job_type = v_job.job_type and paused_at is not null) then
        return;
    end if;
    v_group := coalesce(v_job.concurrency_key, v_job.user_id, '');
    if exists (select 1 from job_concurrency_limits where max_running is not null)
       or exists (select 1 from job_type_limits where max_running is not null) then
        -- As a claim: 100 ms at most for the locks, else nothing starts now (the job stays
        -- pending), so a claim left open elsewhere never makes this call hang.
        v_timeout := current_setting('lock_timeout');
        begin
            perform set_config('lock_timeout', '100ms', true);
            perform pg_advisory_xact_lock_shared(hashtext('processor:limits'));
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

-- A limit change waits for the claims in flight (which share processor:limits) so that none
-- of them commits jobs past the new cap; a claim takes milliseconds. A claim left open in a
-- transaction would make that wait unbounded: after 500 ms the change is refused, naming the
-- open transaction, and nothing changes.
create function job_queue_lock_limits(p_what text) returns void
language plpgsql as $$
declare
    v_timeout text := current_setting('lock_timeout');
    v_holder text;
begin
    perform set_config('lock_timeout', '500ms', true);
    perform pg_advisory_xact_lock(hashtext('processor:limits'));
    perform set_config('lock_timeout', v_timeout, true);
exception when lock_not_available then
    select string_agg(format('pid %s (open since %s)', a.pid,
                             to_char(a.xact_start, 'HH24:MI:SS')), ', ')
    into v_holder
    from pg_locks l join pg_stat_activity a on a.pid = l.pid
    where l.locktype = 'advisory' and l.granted and l.objid = hashtext('processor:limits')::oid
      and a.pid <> pg_backend_pid();
    raise exception '%: a claim is still open in another transaction (%); its jobs could go '
                    'past the new limit. Try again when it ends.', p_what,
                    coalesce(v_holder, 'unknown')
        using errcode = '55P03';
end;
$$;

create or replace function set_concurrency_limit(
    p_key text,
    p_max_running integer,
    p_weight integer default 1
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
    perform job_queue_lock_limits('set_concurrency_limit');
    insert into job_concurrency_limits (key, max_running, weight)
    values (p_key, p_max_running, p_weight)
    on conflict (key) do update
    set max_running = excluded.max_running, weight = excluded.weight, updated_at = now();
end;
$$;

create or replace function set_job_type_limit(p_job_type text, p_max_running integer)
returns void
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
    perform job_queue_lock_limits('set_job_type_limit');
    insert into job_type_limits (job_type, max_running) values (p_job_type, p_max_running)
    on conflict (job_type) do update
    set max_running = excluded.max_running, updated_at = now();
end;
$$;

-- Resuming wakes every lane of the type that has pending jobs, found in job_queue (one index
-- probe per lane): its wakes were used up while it was paused.
create or replace function resume_job_type(p_job_type text) returns boolean
language plpgsql as $$
declare
    v_was timestamptz;
begin
    select paused_at into v_was from job_type_limits where job_type = p_job_type for update;
    update job_type_limits set paused_at = null, updated_at = now()
    where job_type = p_job_type;
    if v_was is not null then
        with recursive lanes as (
            (select coalesce(concurrency_key, user_id, '') as group_key, priority, run_at
             from job_queue
             where status = 'pending' and job_type = p_job_type
             order by coalesce(concurrency_key, user_id, ''), priority, run_at, created_at
             limit 1)
            union all
            select n.group_key, n.priority, n.run_at
            from lanes l, lateral (
                select coalesce(q.concurrency_key, q.user_id, '') as group_key, q.priority,
                       q.run_at
                from job_queue q
                where q.status = 'pending' and q.job_type = p_job_type
                  and (coalesce(q.concurrency_key, q.user_id, ''), q.priority)
                      > (l.group_key, l.priority)
                order by coalesce(q.concurrency_key, q.user_id, ''), q.priority, q.run_at,
                         q.created_at
                limit 1) n
        )
        insert into job_queue_wakes (job_type, group_key, priority, due_at)
        select p_job_type, group_key, priority, run_at from lanes;
        perform pg_notify('job_queue_insert', '');  -- running processors look again at once
    end if;
    return v_was is not null;
end;
$$;

-- Pausing never waits: claims skip a paused type's lanes by its name, so its lanes are only
-- put to sleep where no claim holds them (the rest are filtered out as they are read). A claim
-- already in flight may still commit jobs of the type a few milliseconds after this returns;
-- running jobs finish either way.
create or replace function pause_job_type(p_job_type text) returns boolean
language plpgsql as $$
begin
    if p_job_type is null or length(p_job_type) not between 1 and 200 then
        raise exception 'pause_job_type: job_type must be 1 to 200 characters'
            using errcode = '22023';
    end if;
    insert into job_type_limits (job_type, paused_at) values (p_job_type, now())
    on conflict (job_type) do update
    set paused_at = coalesce(job_type_limits.paused_at, now()), updated_at = now();
    update job_queue_lanes set due_at = null
    where ctid in (select ctid from job_queue_lanes where job_type = p_job_type
                   for update skip locked);
    return true;
end;
$$;

select processor_keep_private(array[
    'table job_queue_turns',
    'table job_queue_scheduler',
    'function job_queue_frontier(integer)',
    'function job_queue_advance_frontier(integer, double precision)',
    'function job_queue_rebuild_lanes()',
    'function job_queue_pick_in_order(integer, text[], text[], boolean, boolean, jsonb)',
    'function job_queue_lock_limits(text)',
    'function claim_jobs(text, integer, text[], interval)',
    'function get_next_job(text[])',
    'function mark_job_processing(uuid, text, interval)',
    'function set_concurrency_limit(text, integer, integer)',
    'function set_job_type_limit(text, integer)',
    'function pause_job_type(text)',
    'function resume_job_type(text)',
    'function job_queue_fold_wakes()',
    'function job_queue_pick(integer, text[])',
    'function job_queue_release_lane(text, text, integer, uuid[])'
]);
