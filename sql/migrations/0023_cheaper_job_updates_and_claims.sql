-- Cheaper job updates and claims (issue 24).
--
-- 1. Every UPDATE of job_queue (a claim, a completion, a lease extension) prepared its CHECK
--    constraints, and the traceparent check calls a SQL function, which PostgreSQL inlines,
--    parsing and analyzing its text, each time a statement prepares it, whether or not the row
--    has a traceparent. Measured with perf under 16 pgbench clients: 10-13 % of all the
--    server's CPU, in the plain claim and in ours. As plpgsql it is called, only for a row
--    that has a traceparent, never inlined: one client's claim + complete went from 589 to
--    419 us of server CPU a job (plain pair) and from 721 to 481 (claim_jobs). A test checks
--    that no CHECK constraint or trigger condition of job_queue calls a SQL function.
-- 2. The one-job claim in fewer steps. Each step of a plpgsql function (an IF, an
--    assignment, a declared default) is evaluated on every call. The pick now goes down a
--    path of its own when there is nothing to place, count, release or skip (no cap, no
--    pause, fair share on, no job-type filter, no job newly due): the settings read, the one
--    statement, the frontier check, seven steps where there were about thirty. Every other
--    case runs as in 0020, unchanged.

create or replace function processor_valid_traceparent(p_value text) returns boolean
language plpgsql immutable as $$
begin
    return p_value ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
       and substr(p_value, 4, 32) <> repeat('0', 32)
       and substr(p_value, 37, 16) <> repeat('0', 16);
end;
$$;

create or replace function job_queue_pick(p_limit integer, p_job_types text[]) returns uuid[]
language plpgsql
as $$
declare
    -- (no defaults: each would be a step on every call; the general path sets its own)
    v_fair boolean;
    v_limited boolean;
    v_release boolean;
    v_unplaced boolean;
    v_paused text[];
    v_capped boolean;
    v_counting boolean;
    v_type_caps jsonb;
    v_ids uuid[];
    v_types text[];
    v_prio integer[];
    v_turns double precision[];
    v_got uuid[];  -- one round of the one-statement claim (see there)
    v_got_types text[];
    v_got_prio integer[];
    v_got_turns double precision[];
    v_out uuid[];
    v_rounds integer;
    v_timeout text;
begin
    if coalesce(p_limit, 0) <= 0 then
        return '{}';
    end if;
    -- Limit changes take processor:limits exclusively for a statement: a claim waits 100 ms
    -- at most for one, else takes nothing now.
    if not pg_try_advisory_xact_lock_shared(hashtext('processor:limits')) then
        v_timeout := current_setting('lock_timeout');
        begin
            perform set_config('lock_timeout', '100ms', true);
            perform pg_advisory_xact_lock_shared(hashtext('processor:limits'));
            perform set_config('lock_timeout', v_timeout, true);
        exception when lock_not_available then
            return '{}';  -- (the block's setting is undone with it)
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

    if p_job_types is null and v_fair and not (v_limited or v_release or v_unplaced) then
        -- The common case: nothing to place, count, release or skip (with no cap and no pause
        -- in force no type is out of line). The lowest turns, one statement.
        select array_agg(id), array_agg(job_type), array_agg(priority), array_agg(turn)
        into v_ids, v_types, v_prio, v_turns
        from (select id, job_type, priority, turn from job_queue
              where status = 'pending' and turn > '-infinity' and turn <> 'infinity'
                and run_at <= now()
              order by priority desc, turn
              limit p_limit
              for update skip locked) s;
    else
        v_paused := '{}';
        v_capped := false;
        v_counting := false;
        v_type_caps := '{}';
        v_ids := '{}';
        v_types := '{}';
        v_prio := '{}';
        v_turns := '{}';
        v_rounds := 0;
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
                v_timeout := current_setting('lock_timeout');
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
            return job_queue_pick_in_order(p_limit, p_job_types, v_paused, v_capped,
                                           v_counting, v_type_caps);
        elsif v_capped or p_job_types is not null then
            select ids, types, prio, turns into v_ids, v_types, v_prio, v_turns
            from job_queue_pick_limited(p_limit, p_job_types, v_paused, v_counting,
                                        v_type_caps);
        else
            -- Nothing to count: the lowest turns, one statement. A paused type's jobs are out
            -- of line, but for one written beside the pause: the claim, holding its row, takes
            -- it out of line instead of taking it (the pause read again in that update's
            -- snapshot), with every other such job, and reads on for what is left of its limit
            -- (four rounds at most). (Not a filter in the statement: `job_type <> all ($1)` in
            -- a generic plan is estimated at about no rows when the table holds one or two
            -- types, and the plan became a sequential scan.)
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
                select v_ids || coalesce(array_agg(i), '{}'),
                       v_types || coalesce(array_agg(t), '{}'),
                       v_prio || coalesce(array_agg(p), '{}'),
                       v_turns || coalesce(array_agg(u), '{}')
                into v_ids, v_types, v_prio, v_turns
                from unnest(v_got, v_got_types, v_got_prio, v_got_turns) x(i, t, p, u)
                where i <> all (v_out);
                v_rounds := v_rounds + 1;
                exit when cardinality(v_out) = 0 or cardinality(v_ids) >= p_limit
                          or v_rounds >= 4;
            end loop;
        end if;
    end if;
    -- Each type's frontier moves to the highest turn taken of it, looked at only by a claim
    -- whose turns touch a window [8k, 8k + 1): when each claim takes one job, one claim in
    -- eight reads the frontier row (and writes it when it has moved 8 turns), and once
    -- claims are past a jump it stays less than 16 turns behind. A batch touches a window if
    -- it crosses a multiple of 8 or starts in one; a one-job claim decides without a
    -- statement.
    if v_ids is null or cardinality(v_ids) = 0 then
        return '{}';
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
