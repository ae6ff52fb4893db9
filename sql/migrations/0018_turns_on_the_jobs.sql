-- Turns on the jobs (issue 24): fair share without lanes. Each due pending job carries its
-- place in line, `turn`, given when it becomes due: after its group's last job in line, one
-- step of 1/weight further on, and never behind the frontier (the turn claims have reached at
-- its priority). A claim takes the lowest turns, highest priority first, in one
-- FOR UPDATE SKIP LOCKED statement over an index made for it: the plain claim's cost,
-- however many groups there are. Groups take turns because their jobs' turns interleave; a
-- new or returning group enters at the frontier, where the others are being served.
--
-- What left the claim: the lanes (one row per type, group and priority), the wakes that fed
-- them, the fold, the rebuild and the release of emptied lanes. A claim over 1,000 groups
-- wrote a lane row for every job it took, and ran some eight statements to the plain claim's
-- one. docs/sql.md states the invariants; each is next to the code that keeps it below.

drop trigger job_queue_wake_inserted on job_queue;
drop trigger job_queue_wake_pending on job_queue;
drop trigger job_queue_wake_freed on job_queue;
drop trigger job_queue_truncated on job_queue;
drop function job_queue_wake_inserted();
drop function job_queue_wake_pending();
drop function job_queue_wake_freed();
drop function job_queue_truncated();
drop function job_queue_in_order();
drop function job_queue_fold_wakes();
drop function job_queue_rebuild_lanes();
drop function job_queue_release_lane(text, text, integer, uuid[]);
drop function job_queue_frontier(integer);
drop function job_queue_advance_frontier(integer, double precision);
drop table job_queue_lanes;
drop table job_queue_wakes;
drop table job_queue_turns;
drop index job_queue_lane_idx;

alter table job_queue add column turn double precision;
comment on column job_queue.turn is
    'A due pending job''s place in the fair-share order of its priority (claims take the '
    'lowest first). Null: not in line yet (not due, or written with triggers off: the next '
    'claim places it). -Infinity: held while its group is at its cap. Kept by triggers and '
    'claims; never set it by hand.';

-- In line: what claims read, in their order, for every type at once and for one type.
create index job_queue_turn_idx on job_queue (priority desc, turn)
    where status = 'pending' and turn > '-infinity';
create index job_queue_type_turn_idx on job_queue (job_type, priority desc, turn)
    where status = 'pending' and turn > '-infinity';
-- A group's last job of a type in line (where its next one goes) and the jobs to hold.
create index job_queue_group_turn_idx on job_queue
    (job_type, (coalesce(concurrency_key, user_id, '')), priority, turn)
    where status = 'pending' and turn > '-infinity';
-- Not in line yet, by when each is due: a claim's probe reads the first entry only.
create index job_queue_unplaced_idx on job_queue (run_at)
    where status = 'pending' and turn is null;
-- Held at a group's cap: usually empty.
create index job_queue_held_idx on job_queue
    ((coalesce(concurrency_key, user_id, '')), priority desc, run_at, created_at)
    where status = 'pending' and turn = '-infinity';

-- Where each job type's claims are, per priority: the highest turn taken. A group's first job
-- of the type goes there; a type with nothing in line starts at the highest of all types.
create table job_queue_turns (
    job_type text not null,
    priority integer not null,
    pass double precision not null,
    primary key (job_type, priority)
);
comment on table job_queue_turns is
    'Per job type and priority: the highest turn claims have taken, where a group''s next job '
    'goes when it has none in line (a new or returning group enters where the others are).';
comment on table job_queue_scheduler is
    'When a claim last put back in line the held jobs of every group with room under its cap.';
comment on column job_queue_settings.rebuild_every is
    'How often a claim puts back in line the held jobs of every group with room under its cap '
    '(each job that ends does it for its own group): the longest a held job waits after its '
    'group has room, should that be missed.';

-- Moves a type's frontier up to p_pass once it lags by 8 turns or more, and only with SKIP
-- LOCKED: a claim that finds the row held leaves it to the holder. Placing reads the type's
-- first job in line too, which is where claims are unless a stuck transaction holds it: the
-- frontier only bounds that case, so it may lag a little, and one group taking turn after
-- turn writes it every 8th claim instead of every claim.
create function job_queue_advance_frontier(
    p_job_type text, p_priority integer, p_pass double precision
) returns void
language plpgsql as $$
declare
    v_pass double precision;
begin
    select pass into v_pass from job_queue_turns
    where job_type = p_job_type and priority = p_priority;
    if v_pass > p_pass - 8 then
        return;  -- most claims: one read
    elsif v_pass is not null then
        update job_queue_turns t set pass = p_pass
        where t.ctid = (select ctid from job_queue_turns
                        where job_type = p_job_type and priority = p_priority
                          and pass <= p_pass - 8
                        for update skip locked);
    -- The first row of a type: only the claimer that gets this key inserts it (an insert
    -- beside another's uncommitted one would wait for that transaction).
    elsif pg_try_advisory_xact_lock(hashtextextended(
              'processor:turns:' || p_job_type || ':' || p_priority, 1886547811)) then
        insert into job_queue_turns (job_type, priority, pass)
        values (p_job_type, p_priority, p_pass)
        on conflict do nothing;
    end if;
end;
$$;

-- Where a group's next job of a type at a priority goes: 1/weight after the group's last job
-- of the type in line or running, and never behind where the type's claims are: its frontier,
-- or its first job in line if that is further on (the type drained and filled again). A type
-- with nothing in line starts at the highest frontier of any type. Each type keeps its own
-- frontier so that a type held back by its cap lets a new group in beside its backlog, not
-- behind it. Security definer: the placing triggers run as whoever writes job_queue.
create function job_queue_next_turn(
    p_group text, p_job_type text, p_priority integer, p_weight integer default null
) returns double precision
language sql stable security definer
set search_path = pg_catalog, public, pg_temp
as $$
    select greatest(
        coalesce(
            greatest((select pass from job_queue_turns
                      where job_type = p_job_type and priority = p_priority
                        and h.head is not null),
                     h.head),
            (select max(pass) from job_queue_turns where priority = p_priority),
            0),
        greatest((select max(turn) from job_queue
                  where status = 'pending' and turn > '-infinity' and job_type = p_job_type
                    and coalesce(concurrency_key, user_id, '') = p_group
                    and priority = p_priority),
                 (select max(turn) from job_queue
                  where status = 'processing' and job_type = p_job_type
                    and coalesce(concurrency_key, user_id, '') = p_group
                    and priority = p_priority))
        + 1.0 / coalesce(p_weight, job_group_weight(p_group)))
    from (select (select turn from job_queue
                  where status = 'pending' and turn > '-infinity' and job_type = p_job_type
                    and priority = p_priority
                  order by priority desc, turn limit 1) as head) h
$$;

-- Puts these pending rows in line: each group's jobs of a type after its last one (or at the
-- type's frontier), 1/weight apart, in run_at order; behind the group's held jobs (held too)
-- if it has any (unless these are the held jobs being released). One statement for any
-- number of rows. p_weight: the weight to place with (set_concurrency_limit places with the
-- new one before writing it).
create function job_queue_place(
    p_ids uuid[], p_weight integer default null, p_releasing boolean default false
) returns integer
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
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
               case when not p_releasing and exists (select 1 from job_queue h
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

-- A row written pending (or put back to pending, or moved) takes its place: in line if due,
-- held if its group already has jobs held at its cap, else out of line until due. A row
-- written in any other status carries no turn.
-- Within a group, jobs stand in the order they became due. (A job written with a run_at
-- earlier than its group's waiting jobs still goes after them: putting it before them would
-- mean renumbering them, or squeezing it between two turns, and a backfill written newest
-- first would squeeze all its jobs into one turn.)
create function job_queue_place_row() returns trigger
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_group text := coalesce(new.concurrency_key, new.user_id, '');
begin
    if new.status <> 'pending' or new.run_at > now() then
        new.turn := null;  -- (pending: the first claim after run_at places it)
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

create trigger job_queue_placed_on_insert before insert on job_queue
    for each row execute function job_queue_place_row();
create trigger job_queue_placed_on_update before update on job_queue
    for each row
    when (new.status = 'pending'
          and (old.status <> 'pending' or new.run_at <> old.run_at
               or new.priority <> old.priority or new.job_type <> old.job_type
               or new.concurrency_key is distinct from old.concurrency_key
               or new.user_id is distinct from old.user_id))
    execute function job_queue_place_row();

-- Puts a held group's jobs back in line, as many as its cap has room for (all of them
-- without a cap), at the frontier; only jobs of types that may run (not paused, below their
-- cap), so a paused type's held jobs never take the room of the group's other work. Rows
-- another transaction holds stay held until the next release. Returns how many went back.
create function job_queue_release_held(p_group text) returns integer
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_cap integer := job_group_cap(p_group);
    v_room integer;
begin
    v_room := v_cap - job_group_running(p_group);  -- null without a cap: no limit below
    if v_room <= 0 then
        return 0;
    end if;
    return job_queue_place(array(
        select q.id from job_queue q
        where q.status = 'pending' and q.turn = '-infinity'
          and coalesce(q.concurrency_key, q.user_id, '') = p_group
          and not exists (select 1 from job_type_limits l
                          where l.job_type = q.job_type
                            and (l.paused_at is not null
                                 or l.max_running <= job_type_running(q.job_type)))
        order by q.priority desc, q.run_at, q.created_at
        limit v_room
        for update of q skip locked), p_releasing => true);
end;
$$;

-- Every group with held jobs, each given what its cap has room for: one index probe per held
-- group. Claims call it once per rebuild_every; set_concurrency_limit('*', …) asks for it.
create function job_queue_release_all_held() returns integer
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_group text;
    v_count integer := 0;
begin
    for v_group in
        with recursive g as (
            (select coalesce(concurrency_key, user_id, '') as k from job_queue
             where status = 'pending' and turn = '-infinity' order by 1 limit 1)
            union all
            select (select coalesce(q.concurrency_key, q.user_id, '') from job_queue q
                    where q.status = 'pending' and q.turn = '-infinity'
                      and coalesce(q.concurrency_key, q.user_id, '') > g.k
                    order by 1 limit 1)
            from g where g.k is not null
        )
        select k from g where k is not null
    loop
        v_count := v_count + job_queue_release_held(v_group);
    end loop;
    return v_count;
end;
$$;

-- A job that stops running frees a slot of its group: held jobs of the group go back in line.
-- With a cap, under the caps lock (shared; the counting claim holds it exclusively): a claim
-- that counted this job as running and held the group commits first, so its held rows are
-- seen here. 100 ms at most for that lock; past it (or with triggers off) the claims'
-- periodic release catches the group. With no cap or pause in force there is nothing to do
-- (jobs held when a cap went are released by set_concurrency_limit, or by the periodic
-- release): every job's end pays one read of job_queue_limited.
create function job_queue_release_freed() returns trigger
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_group text := coalesce(new.concurrency_key, new.user_id, '');
    v_timeout text := current_setting('lock_timeout');
begin
    if not (select limited from job_queue_limited) then
        return null;
    end if;
    if job_group_cap(v_group) is not null
       and not pg_try_advisory_xact_lock_shared(hashtext('processor:caps')) then
        begin
            perform set_config('lock_timeout', '100ms', true);
            perform pg_advisory_xact_lock_shared(hashtext('processor:caps'));
            perform set_config('lock_timeout', v_timeout, true);
        exception when lock_not_available then
            return null;
        end;
    end if;
    if exists (select 1 from job_queue
               where status = 'pending' and turn = '-infinity'
                 and coalesce(concurrency_key, user_id, '') = v_group) then
        perform job_queue_release_held(v_group);
    end if;
    return null;
end;
$$;

create trigger job_queue_freed after update on job_queue
    for each row when (old.status = 'processing' and new.status <> 'processing')
    execute function job_queue_release_freed();

-- Takes the pending jobs in line of a type, or of a group ('*': every group without a row of
-- its own in job_concurrency_limits), out of line and places them again (with p_weight if
-- given): a returning group (its type resumed, its type's cap raised) starts at the
-- frontier, and a new weight applies to the jobs already waiting.
create function job_queue_replace(
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
                     where status = 'pending' and turn > '-infinity'
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

-- The claim. Invariants (docs/sql.md, "How a claim decides"):
-- * Nothing blocks it but the rows it takes: every row it reads to take, place or hold is
--   read FOR UPDATE SKIP LOCKED; the frontier rows are written only with SKIP LOCKED; the
--   limits lock is shared, and the caps lock is waited for 100 ms at most.
-- * Its cost does not grow with the groups, held jobs, paused types, types at their cap or
--   jobs not due that it does not serve: each has an index that leaves them out.
-- * No due job is stranded: a due job is in line, held (released when its group's job ends,
--   and by the periodic release), or not placed yet (placed by the next claim, first thing).
-- It runs inside claim_jobs or get_next_job, whose plan_cache_mode = force_generic_plan it
-- inherits (a SET clause of its own would be switched in and out on every call).
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
    elsif v_limited or p_job_types is not null then
        select ids, types, prio, turns into v_ids, v_types, v_prio, v_turns
        from job_queue_pick_limited(p_limit, p_job_types, v_paused, v_counting, v_type_caps);
    else
        -- Nothing to count or leave out: the lowest turns, one statement.
        select coalesce(array_agg(id), '{}'), coalesce(array_agg(job_type), '{}'),
               coalesce(array_agg(priority), '{}'), coalesce(array_agg(turn), '{}')
        into v_ids, v_types, v_prio, v_turns
        from (select id, job_type, priority, turn from job_queue
              where status = 'pending' and turn > '-infinity' and run_at <= now()
              order by priority desc, turn
              limit p_limit
              for update skip locked) s;
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

-- The claim read per job type: with a cap or pause in force, or for a claim of some types
-- only. A paused type, or one at its cap, is not read at all; the others' lines are merged in
-- turn order. Without group caps that is one statement, whose per-type reads may lock a few
-- rows past those taken (at most limit per type) until the claim's transaction ends. With
-- group caps, a group found at its cap is held: its jobs of that type leave the line until
-- one of its jobs ends, so later claims do not step over them.
create function job_queue_pick_limited(
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
        (select job_type from job_queue where status = 'pending' and turn > '-infinity'
         order by job_type limit 1)
        union all
        select (select q.job_type from job_queue q
                where q.status = 'pending' and q.turn > '-infinity' and q.job_type > t.job_type
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
                  where q.status = 'pending' and q.turn > '-infinity'
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
                where q.status = 'pending' and q.turn > '-infinity' and q.job_type = t.job_type
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
                                 where status = 'pending' and turn > '-infinity'
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
            where q.id = v_row.id and q.status = 'pending' and q.turn > '-infinity'
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

create or replace function get_next_job(p_job_types text[] default null) returns job_queue
language plpgsql
set plan_cache_mode = force_generic_plan
as $$
declare
    v_id uuid;
    v_job job_queue;
begin
    -- claim_jobs(…, 1)'s pick: the same order, rules and locks. (Called once, into a
    -- variable: in a WHERE clause a volatile call runs once per row scanned.)
    v_id := (job_queue_pick(1, p_job_types))[1];
    select * into v_job from job_queue where id = v_id;
    if not found then
        return null;  -- no row, not a row of nulls
    end if;
    return v_job;
end;
$$;

create or replace function claim_jobs(
    p_worker text,
    p_limit integer default 1,
    p_job_types text[] default null,
    p_lease interval default '1 minute'
) returns setof job_queue
language plpgsql
set plan_cache_mode = force_generic_plan
as $$
declare
    v_ids uuid[];
begin
    -- A limit of 0 (or null, or less) claims nothing: it is how a caller says it has no room.
    if coalesce(p_limit, 0) <= 0 then
        return;
    end if;
    v_ids := job_queue_pick(p_limit, p_job_types);
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

-- A weight change re-places the group's jobs in line with the new weight (for '*', every
-- group without a row of its own), so it applies to the jobs already waiting; that is done
-- first, holding no lock a claim takes. A cap raised or removed puts held jobs back: one
-- group's at once, every group's (for '*') in the next claim. Only a cap change takes the
-- limits lock (see job_queue_lock_limits).
create or replace function set_concurrency_limit(
    p_key text,
    p_max_running integer,
    p_weight integer default 1
) returns void
language plpgsql as $$
declare
    v_old job_concurrency_limits;
    v_weight integer;  -- the group's weight before
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
    select * into v_old from job_concurrency_limits where key = p_key;
    v_weight := case when p_key = '*' then coalesce(v_old.weight, 1)
                     else job_group_weight(p_key) end;
    if p_weight <> v_weight then
        perform job_queue_replace(null, p_key, p_weight);
    end if;
    if v_old.key is null or v_old.max_running is distinct from p_max_running then
        perform job_queue_lock_limits('set_concurrency_limit');
    end if;
    insert into job_concurrency_limits (key, max_running, weight)
    values (p_key, p_max_running, p_weight)
    on conflict (key) do update
    set max_running = excluded.max_running, weight = excluded.weight, updated_at = now();
    if p_key = '*' then
        update job_queue_scheduler set rebuilt_at = '-infinity'
        where ctid = (select ctid from job_queue_scheduler for update skip locked);
    else
        perform job_queue_release_held(p_key);
    end if;
end;
$$;

-- A cap raised or removed re-places the type's jobs at the frontier first (they fell behind
-- while the cap held them back, and would otherwise take every claim until they caught up).
create or replace function set_job_type_limit(p_job_type text, p_max_running integer)
returns void
language plpgsql as $$
declare
    v_old integer;
begin
    if p_job_type is null or length(p_job_type) not between 1 and 200 then
        raise exception 'set_job_type_limit: job_type must be 1 to 200 characters'
            using errcode = '22023';
    end if;
    if p_max_running < 0 then
        raise exception 'set_job_type_limit: max_running must be >= 0 or null, got %',
            p_max_running using errcode = '22023';
    end if;
    select max_running into v_old from job_type_limits where job_type = p_job_type;
    if v_old is not null and (p_max_running is null or p_max_running > v_old) then
        perform job_queue_replace(p_job_type, null);
    end if;
    perform job_queue_lock_limits('set_job_type_limit');
    insert into job_type_limits (job_type, max_running) values (p_job_type, p_max_running)
    on conflict (job_type) do update
    set max_running = excluded.max_running, updated_at = now();
end;
$$;

-- Pausing never waits: claims leave a paused type out by its name.
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
    return true;
end;
$$;

-- Resuming re-places the type's jobs at the frontier (they return as new groups do, not
-- ahead of everyone by the time they were paused), then lifts the pause: the re-placing
-- holds no lock a pause or a claim waits for.
create or replace function resume_job_type(p_job_type text) returns boolean
language plpgsql as $$
declare
    v_was timestamptz;
begin
    select paused_at into v_was from job_type_limits where job_type = p_job_type;
    if v_was is null then
        return false;
    end if;
    perform job_queue_replace(p_job_type, null);
    update job_type_limits set paused_at = null, updated_at = now()
    where job_type = p_job_type and paused_at is not null;
    if not found then
        return false;  -- resumed meanwhile by another call
    end if;
    perform pg_notify('job_queue_insert', '');  -- running processors look again at once
    return true;
end;
$$;

create or replace view job_queue_table_health with (security_invoker = on) as
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
  and s.relname in ('job_queue', 'job_queue_turns', 'processor_net_calls', 'provider_calls',
                    'credit_ledger');

-- The jobs already pending take their places.
select job_queue_place(array(select id from job_queue
                             where status = 'pending' and run_at <= now()));

select processor_keep_private(array[
    'table job_queue_turns',
    'function job_queue_advance_frontier(text, integer, double precision)',
    'function job_queue_next_turn(text, text, integer, integer)',
    'function job_queue_place(uuid[], integer, boolean)',
    'function job_queue_place_row()',
    'function job_queue_release_held(text)',
    'function job_queue_release_all_held()',
    'function job_queue_release_freed()',
    'function job_queue_replace(text, text, integer)',
    'function job_queue_pick(integer, text[])',
    'function job_queue_pick_limited(integer, text[], text[], boolean, jsonb)',
    'function get_next_job(text[])',
    'function claim_jobs(text, integer, text[], interval)',
    'function set_concurrency_limit(text, integer, integer)',
    'function set_job_type_limit(text, integer)',
    'function pause_job_type(text)',
    'function resume_job_type(text)'
]);
