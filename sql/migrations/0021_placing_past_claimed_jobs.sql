-- Placing a job read the type's first job in line from the start of its line, for every row
-- written (issue 24). The start of the line is where claims have been: index entries of jobs
-- claimed since the last vacuum, which no reader may skip while any transaction older than
-- their claim is open. Under steady load over 1,000 groups (bench/steady_state.py, 2,300 jobs
-- a second, 300,000 such entries) a producer's insert of a few hundred rows read them once per
-- row and ran for minutes; while it ran, its own snapshot kept every later claim's entries
-- unskippable too, and throughput fell to nothing.
--
-- Two changes, both in where a type's next job goes (job_queue_type_base):
-- 1. The first job in line is looked for from the type's frontier on, not from the start.
--    A job in line behind the frontier (one a claim skipped while another transaction held
--    it) no longer counts: with none at or past the frontier, the base is that of a type with
--    nothing in line, the highest frontier of any type. That is never ahead of where 0020
--    placed a job; it can be behind it, by what separates the type's frontier from the
--    highest one.
-- 2. The insert trigger reads the base once per statement for each type and priority it
--    places, not once per row, and checks it against the type's frontier on every row (one
--    key lookup): a claim within the same statement (a DO block, a function, statements sent
--    as one string) that moves the frontier makes the next row read the base again, and a
--    base below the frontier is never used. Claims that leave the frontier where it was can
--    leave the cached base behind by less than the frontier's own lag (16 turns).
create or replace function job_queue_type_base(p_job_type text, p_priority integer)
returns double precision
language plpgsql stable security definer
set search_path = pg_catalog, public, pg_temp
set enable_seqscan = off
set enable_bitmapscan = off
set jit = off
as $$
declare
    v_frontier double precision;
    v_head double precision;  -- the type's first job in line at or past its frontier
begin
    select pass into v_frontier from job_queue_turns
    where job_type = p_job_type and priority = p_priority;
    select turn into v_head from job_queue
    where status = 'pending' and turn > '-infinity' and turn <> 'infinity'
      and job_type = p_job_type and priority = p_priority
      and turn >= coalesce(v_frontier, '-infinity')
    order by priority desc, turn limit 1;
    if v_head is not null then
        return greatest(v_head, v_frontier);
    end if;
    return coalesce((select pass from job_queue_turns where priority = p_priority
                     order by pass desc limit 1), 0);
end;
$$;

-- As in 0019, with the type's base read once per statement (see above). The base is kept in
-- two settings local to the transaction, keyed by the statement's start, the type, its
-- priority and its frontier; a statement placing several types reads each type's base again
-- when it changes. (extra_float_digits: the base goes through text exactly.)
create or replace function job_queue_place_row() returns trigger
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
set enable_seqscan = off
set jit = off
set extra_float_digits = 3
as $$
declare
    v_group text := coalesce(new.concurrency_key, new.user_id, '');
    v_frontier double precision;
    v_key text;
    v_base double precision;
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
        select pass into v_frontier from job_queue_turns
        where job_type = new.job_type and priority = new.priority;
        v_key := statement_timestamp()::text || ' ' || new.priority || ' '
                 || coalesce(v_frontier::text, '-') || ' ' || new.job_type;
        if current_setting('processor.placing', true) = v_key then
            v_base := current_setting('processor.placing_base', true)::double precision;
        end if;
        -- (a value found there is used only if finite and not behind the frontier)
        if v_base is null or v_base < v_frontier or v_base in ('infinity', '-infinity', 'NaN') then
            v_base := job_queue_type_base(new.job_type, new.priority);
            perform set_config('processor.placing', v_key, true),
                    set_config('processor.placing_base', v_base::text, true);
        end if;
        new.turn := greatest(v_base,
                             job_queue_group_next(v_group, new.job_type, new.priority));
    end if;
    return new;
end;
$$;
