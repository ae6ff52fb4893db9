-- Four costs of 0018/0019 found by measuring them (issue 24).
--
-- 1. JIT. The functions that plan with sequential scans off give a table without a usable
--    index (job_type_limits, read for its paused types) a cost of 1e10, far past
--    jit_above_cost: PostgreSQL then compiled those statements with LLVM on every call. Taking
--    the paused types out of line cost 370 ms with nothing paused, the periodic sweep 20 to
--    120 ms. 0016 and 0017 had `jit = off` on such functions; the rewrites in 0018 and 0019
--    dropped it. A test now checks every function planned with sequential scans off.
-- 2. Taking a paused type out of line read every job in line (and every row of the table by
--    its key) to find the type's jobs: its type came from a sub-select the planner could not
--    use as an index condition. It now reads the type's own entries, one type at a time.
-- 3. The claim read the frontier row on every call. It now looks at it only when the turns it
--    took touch a window [8k, 8k + 1) (otherwise as in 0019).
-- 4. Placing many rows at once (a resume, a cap raised, a weight changed) was quadratic: the
--    update computed each group's place while it wrote, once per row, and each of those reads
--    walked the index entries the same statement, or the one that took the rows out of line,
--    had just written (invisible to it, so never cleaned). A resume of 20,000 jobs over 2,000
--    groups took 23 s, of 40,000 jobs 172 s; removing a cap from 900,000 jobs ran for over ten
--    minutes. Placement now reads first, once per type and once per group, and then writes.

alter function job_group_cap(text) set jit = off;
alter function job_group_running(text) set jit = off;
alter function job_group_weight(text) set jit = off;
alter function job_type_running(text) set jit = off;
alter function job_queue_place_row() set jit = off;
alter function job_queue_sweep_paused() set jit = off;
-- The entry points of claims and limit changes, for what they call that does not set it: in
-- a generic plan a LIMIT given as a parameter is costed as a tenth of the table, and at a
-- million jobs the per-type claim's statement was compiled on every call.
alter function claim_jobs(text, integer, text[], interval) set jit = off;
alter function get_next_job(text[]) set jit = off;
alter function mark_job_processing(uuid, text, interval) set jit = off;
alter function job_queue_replace(text, text, integer) set jit = off;
alter function job_queue_release_held(text) set jit = off;
alter function job_queue_release_all_held() set jit = off;

-- p_job_type: that type; null: every type paused now. Jobs in line and held jobs both leave
-- the line; rows another transaction holds stay (the sweep takes them later).
create or replace function job_queue_take_out_paused(p_job_type text) returns integer
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
set enable_seqscan = off
set jit = off
as $$
declare
    v_type text;
    v_rows integer;
    v_count integer := 0;
begin
    for v_type in
        select p_job_type where p_job_type is not null
        union all
        select job_type from job_type_limits where paused_at is not null and p_job_type is null
    loop
        update job_queue set turn = 'infinity'
        where id = any (array(
            select id from job_queue
            where status = 'pending' and turn > '-infinity' and turn <> 'infinity'
              and job_type = v_type
            for update skip locked));
        get diagnostics v_rows = row_count;
        v_count := v_count + v_rows;
        update job_queue set turn = 'infinity'
        where id = any (array(
            select id from job_queue
            where status = 'pending' and turn = '-infinity' and job_type = v_type
            for update skip locked));
        get diagnostics v_rows = row_count;
        v_count := v_count + v_rows;
    end loop;
    return v_count;
end;
$$;

create or replace function job_queue_pick(p_limit integer, p_job_types text[]) returns uuid[]
language plpgsql
as $$
declare
    v_fair boolean;
    v_limited boolean;
    v_release boolean;
    v_paused text[] := '{}';
    v_capped boolean := false;
    v_counting boolean := false;
    v_type_caps jsonb := '{}';
    v_ids uuid[] := '{}';
    v_types text[] := '{}';
    v_prio integer[] := '{}';
    v_turns double precision[] := '{}';
    v_got uuid[];  -- one round of the one-statement claim (see there)
    v_got_types text[];
    v_got_prio integer[];
    v_got_turns double precision[];
    v_out uuid[];
    v_rounds integer := 0;
    v_unplaced boolean;
    v_timeout text := current_setting('lock_timeout');
begin
    if coalesce(p_limit, 0) <= 0 then
        return v_ids;
    end if;
    -- Limit changes take processor:limits exclusively for a statement: a claim waits 100 ms
    -- at most for one, else takes nothing now.
    if not pg_try_advisory_xact_lock_shared(hashtext('processor:limits')) then
        begin
            perform set_config('lock_timeout', '100ms', true);
            perform pg_advisory_xact_lock_shared(hashtext('processor:limits'));
            perform set_config('lock_timeout', v_timeout, true);
        exception when lock_not_available then
            return v_ids;  -- (the block's setting is undone with it)
        end;
    end if;
    -- Read after the lock (a statement of its own: a fresh snapshot), so a cap committed
    -- before the lock was got is seen. One statement for the settings and the probe for jobs
    -- not in line yet (one index entry, however many wait for later).
    select st.fair_share, (select limited from job_queue_limited),
           (select sc.rebuilt_at <= now() - st.rebuild_every from job_queue_scheduler sc),
           exists (select 1 from job_queue
                   where status = 'pending' and turn is null and run_at <= now())
    into v_fair, v_limited, v_release, v_unplaced
    from job_queue_settings st where st.id;

    -- Jobs that became due since they were written go in line first.
    if v_unplaced then
        perform job_queue_place(array(select id from job_queue
                                      where status = 'pending' and turn is null
                                        and run_at <= now()
                                      order by run_at limit 1000
                                      for update skip locked));
    end if;
    if v_release then
        update job_queue_scheduler set rebuilt_at = now()
        where ctid = (select ctid from job_queue_scheduler for update skip locked);
        if found then
            perform job_queue_release_all_held();
            perform job_queue_sweep_paused();
        end if;
    end if;

    if v_limited then
        select coalesce((select array_agg(job_type) from job_type_limits
                         where paused_at is not null), '{}'),
               exists (select 1 from job_concurrency_limits where max_running is not null)
               or exists (select 1 from job_type_limits where max_running is not null)
        into v_paused, v_capped;
        -- Caps are counted by one claimer at a time; one that cannot take the lock within
        -- 100 ms (another sits in an open transaction) takes only work without a cap.
        v_counting := v_capped and pg_try_advisory_xact_lock(hashtext('processor:caps'));
        if v_capped and not v_counting then
            begin
                perform set_config('lock_timeout', '100ms', true);
                perform pg_advisory_xact_lock(hashtext('processor:caps'));
                perform set_config('lock_timeout', v_timeout, true);
                v_counting := true;
            exception when lock_not_available then
                v_counting := false;
            end;
        end if;
        -- Read after the lock that counts them: a cap lowered meanwhile is the cap it holds.
        select coalesce(jsonb_object_agg(job_type, max_running), '{}') into v_type_caps
        from job_type_limits where max_running is not null;
    end if;

    if not coalesce(v_fair, true) then
        return job_queue_pick_in_order(p_limit, p_job_types, v_paused, v_capped, v_counting,
                                       v_type_caps);
    elsif v_capped or p_job_types is not null then
        select ids, types, prio, turns into v_ids, v_types, v_prio, v_turns
        from job_queue_pick_limited(p_limit, p_job_types, v_paused, v_counting, v_type_caps);
    else
        -- Nothing to count: the lowest turns, one statement. A paused type's jobs are out of
        -- line, but for one written beside the pause: the claim, holding its row, takes it
        -- out of line instead of taking it (the pause read again in that update's snapshot),
        -- with every other such job, and reads on for what is left of its limit (four rounds
        -- at most). (Not a filter in
        -- the statement: `job_type <> all ($1)` in a generic plan is estimated at about no
        -- rows when the table holds one or two types, and the plan became a sequential scan.)
        loop
            select coalesce(array_agg(id), '{}'), coalesce(array_agg(job_type), '{}'),
                   coalesce(array_agg(priority), '{}'), coalesce(array_agg(turn), '{}')
            into v_got, v_got_types, v_got_prio, v_got_turns
            from (select id, job_type, priority, turn from job_queue
                  where status = 'pending' and turn > '-infinity' and turn <> 'infinity'
                    and run_at <= now() and id <> all (v_ids)
                  order by priority desc, turn
                  limit p_limit - cardinality(v_ids)
                  for update skip locked) s;
            v_out := '{}';
            if v_got_types && v_paused then
                with taken_out as (
                    update job_queue set turn = 'infinity'
                    where id = any (v_got)
                      and job_type in (select job_type from job_type_limits
                                       where paused_at is not null)
                    returning id
                )
                select coalesce(array_agg(id), '{}') into v_out from taken_out;
                if cardinality(v_out) > 0 then
                    perform job_queue_take_out_paused(null);  -- the others like them too
                end if;
            end if;
            if cardinality(v_out) = 0 and cardinality(v_ids) = 0 then
                -- The usual round, first and last: assignments, not a statement.
                v_ids := v_got;
                v_types := v_got_types;
                v_prio := v_got_prio;
                v_turns := v_got_turns;
            else
                select v_ids || coalesce(array_agg(i), '{}'),
                       v_types || coalesce(array_agg(t), '{}'),
                       v_prio || coalesce(array_agg(p), '{}'),
                       v_turns || coalesce(array_agg(u), '{}')
                into v_ids, v_types, v_prio, v_turns
                from unnest(v_got, v_got_types, v_got_prio, v_got_turns) x(i, t, p, u)
                where i <> all (v_out);
            end if;
            v_rounds := v_rounds + 1;
            exit when cardinality(v_out) = 0 or cardinality(v_ids) >= p_limit or v_rounds >= 4;
        end loop;
    end if;
    -- Each type's frontier moves to the highest turn taken of it, looked at only by a claim
    -- whose turns touch a window [8k, 8k + 1): when each claim takes one job, one claim in
    -- eight reads the frontier row (and writes it when it has moved 8 turns), and once
    -- claims are past a jump it stays less than 16 turns behind. (Every claim read it: a row
    -- every claimer touched.) A batch touches a window if it crosses a multiple of 8 or
    -- starts in one; a one-job claim decides without a statement.
    if cardinality(v_ids) = 0 then
        return v_ids;
    elsif cardinality(v_ids) = 1 then
        if v_turns[1] - 8 * floor(v_turns[1] / 8) < 1 then
            perform job_queue_advance_frontier(v_types[1], v_prio[1], v_turns[1]);
        end if;
    else
        perform job_queue_advance_frontier(t, p, max(turn))
        from unnest(v_types, v_prio, v_turns) u(t, p, turn)
        group by t, p
        having floor(max(turn) / 8) > floor(min(turn) / 8)
            or min(turn) - 8 * floor(min(turn) / 8) < 1;
    end if;
    return v_ids;
end;
$$;

-- Where a type's next job goes, whatever its group: at its first job in line, or its frontier
-- if that is further on; with nothing in line, at the highest frontier of any type.
create function job_queue_type_base(p_job_type text, p_priority integer)
returns double precision
language plpgsql stable security definer
set search_path = pg_catalog, public, pg_temp
set enable_seqscan = off
set enable_bitmapscan = off
set jit = off
as $$
declare
    v_head double precision;  -- the type's first job in line
    v_base double precision;
begin
    select turn into v_head from job_queue
    where status = 'pending' and turn > '-infinity' and turn <> 'infinity'
      and job_type = p_job_type and priority = p_priority
    order by priority desc, turn limit 1;
    if v_head is null then
        select pass into v_base from job_queue_turns where priority = p_priority
        order by pass desc limit 1;
    else
        select greatest(v_head, pass) into v_base from job_queue_turns
        where job_type = p_job_type and priority = p_priority;
    end if;
    return coalesce(v_base, v_head, 0);
end;
$$;

-- One step of 1/weight after the group's last job of the type in line or running; null if it
-- has none.
create function job_queue_group_next(
    p_group text, p_job_type text, p_priority integer, p_weight integer default null
) returns double precision
language plpgsql stable security definer
set search_path = pg_catalog, public, pg_temp
set enable_seqscan = off
set enable_bitmapscan = off
set jit = off
as $$
begin
    return greatest(
               (select turn from job_queue
                where status = 'pending' and turn > '-infinity' and turn <> 'infinity'
                  and job_type = p_job_type
                  and coalesce(concurrency_key, user_id, '') = p_group
                  and priority = p_priority
                order by turn desc limit 1),
               (select max(turn) from job_queue
                where status = 'processing' and job_type = p_job_type
                  and coalesce(concurrency_key, user_id, '') = p_group
                  and priority = p_priority
                  -- (a job started from out of line or held, by mark_job_processing or
                  -- with fair share off, keeps that turn: it places nothing after it)
                  and turn > '-infinity' and turn <> 'infinity'))
           + 1.0 / coalesce(p_weight,
                            (select weight from job_concurrency_limits where key = p_group),
                            (select weight from job_concurrency_limits where key = '*'), 1);
end;
$$;

-- A group's next turn of a type (0019's reads, now in the two functions above).
create or replace function job_queue_next_turn(
    p_group text, p_job_type text, p_priority integer, p_weight integer default null
) returns double precision
language plpgsql stable security definer
set search_path = pg_catalog, public, pg_temp
set jit = off
as $$
begin
    return greatest(job_queue_type_base(p_job_type, p_priority),
                    job_queue_group_next(p_group, p_job_type, p_priority, p_weight));
end;
$$;

-- As in 0019 (out of line if the type is paused, held behind the group's held jobs, else after
-- the group's last job, 1/weight apart in run_at order), but every read comes first, in a
-- statement that writes nothing: once per type and once per group, not once per row.
create or replace function job_queue_place(
    p_ids uuid[], p_weight integer default null, p_releasing boolean default false,
    p_resuming text default null
) returns integer
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
set enable_seqscan = off
set jit = off
as $$
declare
    v_t text[];
    v_g text[];
    v_p integer[];
    v_base double precision[];
    v_w integer[];
    v_count integer;
begin
    with d as materialized (
        select distinct job_type as t, coalesce(concurrency_key, user_id, '') as g,
               priority as p
        from job_queue
        where id = any (p_ids) and status = 'pending'
    ), types as materialized (
        select t, p, job_queue_type_base(t, p) as b from (select distinct t, p from d) x
    ), groups as materialized (
        select d.t, d.g, d.p, types.b, coalesce(p_weight, job_group_weight(d.g)) as w
        from d join types using (t, p)
    )
    select array_agg(t), array_agg(g), array_agg(p),
           array_agg(case when exists (select 1 from job_type_limits l
                                       where l.job_type = gr.t and l.paused_at is not null
                                         and l.job_type is distinct from p_resuming)
                          then 'infinity'::double precision
                          when not p_releasing and exists (
                                   select 1 from job_queue h
                                   where h.status = 'pending' and h.turn = '-infinity'
                                     and coalesce(h.concurrency_key, h.user_id, '') = gr.g)
                          then '-infinity'::double precision
                          else greatest(b, job_queue_group_next(g, t, p, w)) end),
           array_agg(w)
    into v_t, v_g, v_p, v_base, v_w
    from groups gr;

    update job_queue j
    set turn = b.base + (r.rn - 1)::double precision / b.w
    from (select id, job_type as t, coalesce(concurrency_key, user_id, '') as g, priority as p,
                 row_number() over (partition by job_type,
                                                 coalesce(concurrency_key, user_id, ''),
                                                 priority
                                    order by run_at, created_at) as rn
          from job_queue
          where id = any (p_ids) and status = 'pending') r
    join unnest(v_t, v_g, v_p, v_base, v_w) b(t, g, p, base, w) using (t, g, p)
    where j.id = r.id;
    get diagnostics v_count = row_count;
    return v_count;
end;
$$;

select processor_keep_private(array[
    'function job_queue_type_base(text, integer)',
    'function job_queue_group_next(text, text, integer, integer)'
]);
