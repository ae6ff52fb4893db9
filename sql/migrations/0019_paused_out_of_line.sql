-- A paused type's jobs out of line, and placement planned once (issue 24).
--
-- Until now a paused type's jobs stayed in line, and while any type was paused every claim
-- read the line job type by job type to leave them out: the per-type pick, some 0.4 ms a
-- claim. Now pausing takes the type's jobs out of line (turn = +Infinity, an index of their
-- own), resuming puts them back at the frontier, and a claim with no cap in force is the one
-- statement again. The in-line indexes leave them out, so they cost claims nothing, however
-- many wait.
--
-- Placement: job_queue_next_turn was a SQL function, planned afresh for every row placed
-- (0.1-0.5 ms of an insert, per row). It is plpgsql now, its plan kept for the session; the
-- placing functions plan with sequential scans off, so that a plan made while job_queue was
-- empty (an app's first insert on a new connection) cannot read the whole table for every
-- row once it is not.

-- In line: 'pending', turn finite. Held at a group's cap: -Infinity (job_queue_held_idx).
-- Out of line while its type is paused: +Infinity.
drop index job_queue_turn_idx;
drop index job_queue_type_turn_idx;
drop index job_queue_group_turn_idx;
create index job_queue_turn_idx on job_queue (priority desc, turn)
    where status = 'pending' and turn > '-infinity' and turn <> 'infinity';
create index job_queue_type_turn_idx on job_queue (job_type, priority desc, turn)
    where status = 'pending' and turn > '-infinity' and turn <> 'infinity';
-- (Led by the group, so that groups_waiting can step from group to group; the placing and
-- holding reads give all of group, type and priority.)
create index job_queue_group_turn_idx on job_queue
    ((coalesce(concurrency_key, user_id, '')), job_type, priority, turn)
    where status = 'pending' and turn > '-infinity' and turn <> 'infinity';
create index job_queue_paused_idx on job_queue (job_type)
    where status = 'pending' and turn = 'infinity';
-- Held jobs by type: what a pause takes out of the hold (maintained only where groups have
-- caps; job_queue_held_idx serves the release, by group).
create index job_queue_held_type_idx on job_queue (job_type)
    where status = 'pending' and turn = '-infinity';

comment on column job_queue.turn is
    'A due pending job''s place in the fair-share order of its priority (claims take the '
    'lowest first). Null: not in line yet (not due, or written with triggers off: the next '
    'claim places it). -Infinity: held while its group is at its cap. +Infinity: out of line '
    'while its type is paused. Kept by triggers and claims; never set it by hand.';

-- The limit lookups, as plpgsql. As SQL functions whose bodies hold sub-selects they could not
-- be inlined, and were planned again on every call: some 0.1 ms each, and placement called
-- one for every row placed, a job's end one for every job ended. Same results; each plan is
-- now kept for the session (sequential scans off: see the top of this file).
create or replace function job_group_weight(p_group text) returns integer
language plpgsql stable
set enable_seqscan = off
as $$
begin
    return coalesce((select weight from job_concurrency_limits where key = p_group),
                    (select weight from job_concurrency_limits where key = '*'), 1);
end;
$$;

create or replace function job_group_cap(p_group text) returns integer
language plpgsql stable
set enable_seqscan = off
as $$
begin
    return case when exists (select 1 from job_concurrency_limits where key = p_group)
                then (select max_running from job_concurrency_limits where key = p_group)
                else (select max_running from job_concurrency_limits where key = '*') end;
end;
$$;

create or replace function job_group_running(p_group text) returns integer
language plpgsql stable
set enable_seqscan = off
as $$
begin
    return (select count(*)::integer from job_queue
            where status = 'processing' and coalesce(concurrency_key, user_id, '') = p_group);
end;
$$;

create or replace function job_type_running(p_job_type text) returns integer
language plpgsql stable
set enable_seqscan = off
as $$
begin
    return (select count(*)::integer from job_queue
            where status = 'processing' and job_type = p_job_type);
end;
$$;

-- Where a group's next job of a type at a priority goes: 1/weight after the group's last job
-- of the type in line or running, and never behind where the type's claims are: its frontier,
-- or its first job in line if that is further on (the type drained and filled again). A type
-- with nothing in line starts at the highest frontier of any type. Each type keeps its own
-- frontier so that a type held back by its cap lets a new group in beside its backlog, not
-- behind it. Security definer: the placing triggers run as whoever writes job_queue.
-- Plans: kept for the session, so each read is written as the ordered probe of one index
-- entry it must be, and planned with sequential and bitmap scans off. A draft of this body
-- written with max() and bitmap scans allowed kept a plan that read every job of the group
-- for each row placed: 4.5 million index entries for a 3,000-row insert into one group, 2.3 ms
-- a row at 20,000 rows (tests/integration/test_scheduler_under_pressure.py counts them).
create or replace function job_queue_next_turn(
    p_group text, p_job_type text, p_priority integer, p_weight integer default null
) returns double precision
language plpgsql stable security definer
set search_path = pg_catalog, public, pg_temp
set enable_seqscan = off
set enable_bitmapscan = off
as $$
declare
    v_head double precision;  -- the type's first job in line
    v_base double precision;
    v_last double precision;  -- the group's last job of the type, in line or running
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
    select greatest(
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
                            (select weight from job_concurrency_limits where key = '*'), 1)
    into v_last;
    return greatest(coalesce(v_base, v_head, 0), v_last);
end;
$$;

-- Puts these pending rows where they belong: out of line if their type is paused; else each
-- group's jobs of a type after its last one (or at the type's frontier), 1/weight apart, in
-- run_at order; behind the group's held jobs (held too) if it has any, unless these are the
-- held jobs being released (p_releasing). One statement for any number of rows. p_weight:
-- the weight to place with (set_concurrency_limit places with the new one before writing it).
-- p_resuming: a type being resumed, placed as if its pause were lifted already (resume lifts
-- it last, so that the limits row is written, and processor:limited held, only at the end).
drop function job_queue_place(uuid[], integer, boolean);
create function job_queue_place(
    p_ids uuid[], p_weight integer default null, p_releasing boolean default false,
    p_resuming text default null
) returns integer
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
set enable_seqscan = off
as $$
declare
    v_count integer;
begin
    with placed as (
        select id, job_type as t, coalesce(concurrency_key, user_id, '') as g, priority as p,
               row_number() over (partition by job_type, coalesce(concurrency_key, user_id, ''),
                                               priority
                                  order by run_at, created_at) as rn
        from job_queue
        where id = any (p_ids) and status = 'pending'
    ), bases as (
        select t, g, p,
               case when exists (select 1 from job_type_limits l
                                 where l.job_type = d.t and l.paused_at is not null
                                   and l.job_type is distinct from p_resuming)
                    then 'infinity'::double precision
                    when not p_releasing and exists (select 1 from job_queue h
                                 where h.status = 'pending' and h.turn = '-infinity'
                                   and coalesce(h.concurrency_key, h.user_id, '') = d.g)
                    then '-infinity'::double precision
                    else job_queue_next_turn(g, t, p, p_weight) end as base,
               coalesce(p_weight, job_group_weight(g)) as w
        from (select distinct t, g, p from placed) d
    )
    update job_queue j
    set turn = b.base + (r.rn - 1)::double precision / b.w
    from placed r join bases b using (t, g, p)
    where j.id = r.id;
    get diagnostics v_count = row_count;
    return v_count;
end;
$$;

-- A row written pending (or put back to pending, or moved) takes its place: out of line if its
-- type is paused, held if its group already has jobs held at its cap, else in line if due,
-- and out of line until due otherwise. A row written in any other status carries no turn.
-- Within a group, jobs stand in the order they became due (see 0018).
create or replace function job_queue_place_row() returns trigger
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
set enable_seqscan = off
as $$
declare
    v_group text := coalesce(new.concurrency_key, new.user_id, '');
begin
    if new.status <> 'pending' or new.run_at > now() then
        new.turn := null;  -- (pending: the first claim after run_at places it)
    elsif exists (select 1 from job_type_limits
                  where job_type = new.job_type and paused_at is not null) then
        new.turn := 'infinity';
    elsif exists (select 1 from job_queue
                  where status = 'pending' and turn = '-infinity'
                    and coalesce(concurrency_key, user_id, '') = v_group) then
        new.turn := '-infinity';  -- behind its group's held jobs
    else
        new.turn := job_queue_next_turn(v_group, new.job_type, new.priority);
    end if;
    return new;
end;
$$;

-- Takes the pending jobs of a type being paused (p_job_type), or of every type paused now
-- (null: the pause read in this statement's snapshot), out of line, in line or held: held
-- ones too, so that a paused type's held jobs do not keep their group's other work held once
-- its running jobs end. An index probe per type (job_queue_type_turn_idx,
-- job_queue_held_type_idx). Rows another transaction holds are left to the next sweep (or to
-- the claim that reaches them).
create function job_queue_take_out_paused(p_job_type text) returns integer
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
set enable_seqscan = off
as $$
declare
    v_count integer;
    v_held integer;
begin
    update job_queue set turn = 'infinity'
    where id in (select id from job_queue
                 where status = 'pending' and turn > '-infinity' and turn <> 'infinity'
                   and job_type in (select p_job_type where p_job_type is not null
                                    union all
                                    select job_type from job_type_limits
                                    where paused_at is not null and p_job_type is null)
                 for update skip locked);
    get diagnostics v_count = row_count;
    update job_queue set turn = 'infinity'
    where id in (select id from job_queue
                 where status = 'pending' and turn = '-infinity'
                   and job_type in (select p_job_type where p_job_type is not null
                                    union all
                                    select job_type from job_type_limits
                                    where paused_at is not null and p_job_type is null)
                 for update skip locked);
    get diagnostics v_held = row_count;
    return v_count + v_held;
end;
$$;

-- Keeps the pause and the line in step where a write beside a pause or resume left them
-- apart: jobs of a paused type still in line (written, or locked by another transaction,
-- while the pause ran) leave it, and jobs out of line whose type is no longer paused
-- (written while a resume ran) go back in at the frontier. Claims call it once per
-- rebuild_every. Rows another transaction holds wait for the next call. Cost when nothing
-- is out of step: two index probes per paused type, and one per type with jobs out of line.
create function job_queue_sweep_paused() returns integer
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
set enable_seqscan = off
as $$
declare
    v_paused text[] := array(select job_type from job_type_limits where paused_at is not null);
    v_type text;
    v_count integer;
begin
    v_count := 0;
    if cardinality(v_paused) > 0 then
        v_count := job_queue_take_out_paused(null);
    end if;
    for v_type in
        with recursive t as (
            (select job_type from job_queue
             where status = 'pending' and turn = 'infinity' order by job_type limit 1)
            union all
            select (select q.job_type from job_queue q
                    where q.status = 'pending' and q.turn = 'infinity'
                      and q.job_type > t.job_type
                    order by q.job_type limit 1)
            from t where t.job_type is not null
        )
        select job_type from t where job_type is not null and job_type <> all (v_paused)
    loop
        v_count := v_count + job_queue_place(array(
            select id from job_queue
            where status = 'pending' and turn = 'infinity' and job_type = v_type
            for update skip locked));
    end loop;
    return v_count;
end;
$$;

-- Takes the pending jobs in line of a type, or of a group ('*': every group without a row of
-- its own in job_concurrency_limits), out of line and places them again (with p_weight if
-- given): a type whose cap was raised starts at the frontier, and a new weight applies to the
-- jobs already waiting. (Jobs of a paused type are placed when it resumes, with the weight
-- then in force.)
create or replace function job_queue_replace(
    p_where_type text, p_where_group text, p_weight integer default null
) returns integer
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_ids uuid[];
begin
    with moved as (
        update job_queue set turn = null
        where id in (select id from job_queue
                     where status = 'pending' and turn > '-infinity' and turn <> 'infinity'
                       and (p_where_type is null or job_type = p_where_type)
                       and (p_where_group is null
                            or coalesce(concurrency_key, user_id, '') = p_where_group
                            or p_where_group = '*' and not exists (
                                   select 1 from job_concurrency_limits l
                                   where l.key = coalesce(concurrency_key, user_id, '')))
                     for update skip locked)
        returning id
    )
    select array_agg(id) into v_ids from moved;
    return coalesce(job_queue_place(v_ids, p_weight), 0);
end;
$$;


-- The claim, as in 0018 (invariants in docs/sql.md, "How a claim decides"), but a pause alone
-- no longer sends it to the per-type read: only a cap, or a claim of some types only, does.
-- It runs inside claim_jobs or get_next_job, whose plan_cache_mode = force_generic_plan it
-- inherits.
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
            select v_ids || coalesce(array_agg(i), '{}'), v_types || coalesce(array_agg(t), '{}'),
                   v_prio || coalesce(array_agg(p), '{}'), v_turns || coalesce(array_agg(u), '{}')
            into v_ids, v_types, v_prio, v_turns
            from unnest(v_got, v_got_types, v_got_prio, v_got_turns) x(i, t, p, u)
            where i <> all (v_out);
            v_rounds := v_rounds + 1;
            exit when cardinality(v_out) = 0 or cardinality(v_ids) >= p_limit or v_rounds >= 4;
        end loop;
    end if;
    -- Each type's frontier moves to the highest turn taken of it (one call when the jobs
    -- taken are of one type and priority, as they mostly are).
    if cardinality(v_ids) = 0 then
        return v_ids;
    elsif v_types[1] = all (v_types) and v_prio[1] = all (v_prio) then
        perform job_queue_advance_frontier(v_types[1], v_prio[1],
                                           (select max(t) from unnest(v_turns) t));
    else
        perform job_queue_advance_frontier(t, p, max(turn))
        from unnest(v_types, v_prio, v_turns) u(t, p, turn) group by t, p;
    end if;
    return v_ids;
end;
$$;

-- The claim read per job type, as in 0018, with "in line" now "between the infinities".
create or replace function job_queue_pick_limited(
    p_limit integer, p_job_types text[], p_paused text[], p_counting boolean,
    p_type_caps jsonb, out ids uuid[], out types text[], out prio integer[],
    out turns double precision[]
)
language plpgsql
as $$
declare
    v_types text[];
    v_room integer[];  -- per type: what its cap has room for (p_limit without one)
    v_passed uuid[] := '{}';  -- rows this call left (locked by another, or moved meanwhile)
    v_counts jsonb := '{}';  -- running + taken, per 'g:<group>' and 't:<type>'
    v_group_caps boolean := exists (select 1 from job_concurrency_limits
                                    where max_running is not null);
    v_row record;
    v_now record;
    v_cap integer;
    v_moved boolean;
    v_idle integer := 0;  -- rounds in a row that took nothing
begin
    ids := '{}'; types := '{}'; prio := '{}'; turns := '{}';
    -- Types that may run: with jobs in line (one probe per type; or the types asked for), not
    -- paused, and with a cap only for the claimer that counts, and only below it.
    with recursive t as (
        (select job_type from job_queue
         where status = 'pending' and turn > '-infinity' and turn <> 'infinity'
         order by job_type limit 1)
        union all
        select (select q.job_type from job_queue q
                where q.status = 'pending' and q.turn > '-infinity' and q.turn <> 'infinity'
                  and q.job_type > t.job_type
                order by q.job_type limit 1)
        from t where t.job_type is not null and p_job_types is null
    )
    select coalesce(array_agg(job_type), '{}'),
           coalesce(array_agg(coalesce((p_type_caps ->> job_type)::integer
                                       - job_type_running(job_type), p_limit)), '{}')
    into v_types, v_room
    from (select job_type from t where p_job_types is null
          union
          select unnest(p_job_types)) k
    where job_type is not null
      and job_type <> all (p_paused)
      and (not p_type_caps ? job_type
           or p_counting and job_type_running(job_type) < (p_type_caps ->> job_type)::integer);
    if not v_group_caps then
        -- No group to count: one statement, each type's line read as far as its room.
        select coalesce(array_agg(id), '{}'), coalesce(array_agg(job_type), '{}'),
               coalesce(array_agg(priority), '{}'), coalesce(array_agg(turn), '{}')
        into ids, types, prio, turns
        from (select j.* from unnest(v_types, v_room) t(job_type, room)
              cross join lateral (
                  select q.id, q.job_type, q.priority, q.turn from job_queue q
                  where q.status = 'pending' and q.turn > '-infinity' and q.turn <> 'infinity'
                    and q.job_type = t.job_type and q.run_at <= now()
                  order by q.priority desc, q.turn
                  limit least(t.room, p_limit)
                  for update skip locked) j
              order by j.priority desc, j.turn
              limit p_limit) s;
        return;
    end if;
    loop
        v_moved := false;
        for v_row in
            select j.* from unnest(v_types) t(job_type)
            cross join lateral (
                select q.id, q.job_type, coalesce(q.concurrency_key, q.user_id, '') as g,
                       q.priority, q.turn
                from job_queue q
                where q.status = 'pending' and q.turn > '-infinity' and q.turn <> 'infinity'
                  and q.job_type = t.job_type
                  and q.run_at <= now() and q.id <> all (ids) and q.id <> all (v_passed)
                order by q.priority desc, q.turn
                limit p_limit - cardinality(ids) + 64) j
            order by j.priority desc, j.turn
        loop
            exit when cardinality(ids) >= p_limit;
            continue when not v_row.job_type = any (v_types);  -- full since the read
            v_cap := job_group_cap(v_row.g);
            if v_cap is not null and not p_counting then
                v_passed := v_passed || v_row.id;  -- capped work is the counting claimer's
                v_moved := true;
                continue;
            end if;
            if v_cap is not null then
                if not v_counts ? ('g:' || v_row.g) then
                    v_counts := v_counts || jsonb_build_object('g:' || v_row.g,
                                                               job_group_running(v_row.g));
                end if;
                if (v_counts ->> ('g:' || v_row.g))::integer >= v_cap then
                    -- At its cap: its jobs of this type in line are held (those another
                    -- transaction has locked stay, and are passed over).
                    update job_queue set turn = '-infinity'
                    where id in (select id from job_queue
                                 where status = 'pending'
                                   and turn > '-infinity' and turn <> 'infinity'
                                   and job_type = v_row.job_type
                                   and coalesce(concurrency_key, user_id, '') = v_row.g
                                   and id <> all (ids)
                                 for update skip locked);
                    v_passed := v_passed || v_row.id;
                    v_moved := true;
                    continue;
                end if;
            end if;
            v_cap := (p_type_caps ->> v_row.job_type)::integer;
            if v_cap is not null then
                if not v_counts ? ('t:' || v_row.job_type) then
                    v_counts := v_counts || jsonb_build_object(
                        't:' || v_row.job_type, job_type_running(v_row.job_type));
                end if;
                if (v_counts ->> ('t:' || v_row.job_type))::integer >= v_cap then
                    v_types := array_remove(v_types, v_row.job_type);  -- full for this call
                    v_moved := true;
                    continue;
                end if;
            end if;
            -- Locked, and read again: a job moved meanwhile (type, group, priority) is left
            -- for the next claim, which counts it where it is now.
            select q.job_type, coalesce(q.concurrency_key, q.user_id, '') as g, q.priority
            into v_now
            from job_queue q
            where q.id = v_row.id and q.status = 'pending'
              and q.turn > '-infinity' and q.turn <> 'infinity'
            for update skip locked;
            if not found or (v_now.job_type, v_now.g, v_now.priority)
                            <> (v_row.job_type, v_row.g, v_row.priority) then
                v_passed := v_passed || v_row.id;
                v_moved := true;
                continue;
            end if;
            ids := ids || v_row.id;
            types := types || v_row.job_type;
            prio := prio || v_row.priority;
            turns := turns || v_row.turn;
            v_moved := true;
            v_idle := -1;
            v_counts := v_counts
                || jsonb_build_object('g:' || v_row.g,
                       coalesce((v_counts ->> ('g:' || v_row.g))::integer, 0) + 1)
                || jsonb_build_object('t:' || v_row.job_type,
                       coalesce((v_counts ->> ('t:' || v_row.job_type))::integer, 0) + 1);
        end loop;
        v_idle := v_idle + 1;
        -- Every round takes a job, holds a group, passes rows or closes a type for good (or
        -- the claim ends); four rounds in a row without taking one end it too.
        exit when cardinality(ids) >= p_limit or not v_moved or v_idle >= 4;
    end loop;
end;
$$;

-- A pause and a resume of one type run one after the other: each takes the type's own lock
-- (held to commit) first, and reads the rows only after it, so the second sees what the
-- first left. Each writes the limits row last: that write takes processor:limited, which
-- limit changes wait for, so it is held only from there to the commit, never while the
-- type's rows are rewritten. Rows are taken with SKIP LOCKED: nothing here waits for a claim.
create function job_queue_lock_type(p_job_type text) returns void
language sql as $$
    select pg_advisory_xact_lock(hashtextextended('processor:pause:' || p_job_type, 1886547811))
$$;

-- Pausing takes the type's jobs out of line, held ones included (a row another transaction
-- holds is taken out by the first claim that reaches it, or by the sweep), then writes the
-- pause.
create or replace function pause_job_type(p_job_type text) returns boolean
language plpgsql as $$
begin
    if p_job_type is null or length(p_job_type) not between 1 and 200 then
        raise exception 'pause_job_type: job_type must be 1 to 200 characters'
            using errcode = '22023';
    end if;
    perform job_queue_lock_type(p_job_type);
    perform job_queue_take_out_paused(p_job_type);
    insert into job_type_limits (job_type, paused_at) values (p_job_type, now())
    on conflict (job_type) do update
    set paused_at = coalesce(job_type_limits.paused_at, now()), updated_at = now();
    return true;
end;
$$;

-- Resuming puts the type's jobs back in line at the frontier (they return as new groups do,
-- not ahead of everyone by the time they were paused), behind their group's held jobs if it
-- has any, then lifts the pause: one transaction, so claims see both at its commit. Jobs
-- written while it ran, or held by another transaction, are placed by the sweep.
create or replace function resume_job_type(p_job_type text) returns boolean
language plpgsql as $$
begin
    perform job_queue_lock_type(p_job_type);
    if not exists (select 1 from job_type_limits
                   where job_type = p_job_type and paused_at is not null) then
        return false;  -- not paused (or resumed meanwhile by another call)
    end if;
    perform job_queue_place(array(select id from job_queue
                                  where status = 'pending' and turn = 'infinity'
                                    and job_type = p_job_type
                                  for update skip locked), p_resuming => p_job_type);
    update job_type_limits set paused_at = null, updated_at = now()
    where job_type = p_job_type and paused_at is not null;
    perform pg_notify('job_queue_insert', '');  -- running processors look again at once
    return true;
end;
$$;

-- The jobs of types paused now leave the line.
select job_queue_sweep_paused();

select processor_keep_private(array[
    'function job_queue_place(uuid[], integer, boolean, text)',
    'function job_queue_lock_type(text)',
    'function job_queue_take_out_paused(text)',
    'function job_queue_sweep_paused()'
]);
