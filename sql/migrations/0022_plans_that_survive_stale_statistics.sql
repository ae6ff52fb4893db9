-- Plans that hold whatever the statistics say (issue 24). A queue's table swings from every
-- job finished to a backlog of 100,000 within seconds, and autovacuum looks at it once a minute
-- at best: analyzed while every job was finished, `status = 'pending'` is estimated at one row,
-- and the index of every pending job (job_queue_claim_idx) looks cheapest for anything that
-- asks for pending jobs. bench/steady_state.py over 1,000 groups fell from 1,320 to 287 jobs a
-- second for the minute until the next analyze: on a backlog of 100,000, the pick read and
-- sorted every pending job (53 ms a claim), the claim's update found its own rows by reading
-- them all again (20 ms), and placing read every pending job for each row written (17 ms a
-- row: 4.8 s for an insert of 250 rows).
--
-- 1. The reads that want the first or last job of a line in turn order plan with sorting off:
--    only an index in that order answers them (the pick's job_queue_turn_idx, the type's
--    job_queue_type_turn_idx, the group's job_queue_group_turn_idx).
-- 2. The claim's update finds its rows by key alone: they are the rows its pick locked, still
--    pending (a lock held by this transaction; nothing else can change them), and with no
--    condition on status no index of pending jobs can stand in for the primary key.
-- 3. Everything else that reads job_queue (placing a new group's job, the status page, job_wait_
--    reason) plans on statistics too, so they are kept fresh: each processor asks every
--    10 s, and job_queue_refresh_statistics analyzes the table once 1,000 rows and 1 % of it
--    have changed since the last analyze, at most once in 10 s whatever the number of
--    processors (autovacuum's own rule for this table is 5 %, looked at once a minute).
alter function claim_jobs(text, integer, text[], interval) set enable_sort = off;
alter function get_next_job(text[]) set enable_sort = off;
alter function job_queue_type_base(text, integer) set enable_sort = off;
alter function job_queue_group_next(text, text, integer, integer) set enable_sort = off;

create or replace function claim_jobs(
    p_worker text,
    p_limit integer default 1,
    p_job_types text[] default null,
    p_lease interval default '1 minute'
) returns setof job_queue
language plpgsql
set plan_cache_mode = force_generic_plan
set jit = off
set enable_sort = off
as $$
declare
    v_ids uuid[];
begin
    -- A limit of 0 (or null, or less) claims nothing: it is how a caller says it has no room.
    if coalesce(p_limit, 0) <= 0 then
        return;
    end if;
    v_ids := job_queue_pick(p_limit, p_job_types);
    -- (v_ids: rows the pick locked while pending; by key alone, see above)
    return query
    with claimed as (
        update job_queue j
        set status = 'processing',
            locked_by = p_worker,
            locked_until = now() + p_lease,
            lease_token = gen_random_uuid(),
            processed_at = now()
        where j.id = any (v_ids)
        returning j.*
    )
    select * from claimed order by priority desc, run_at, created_at;
end;
$$;

-- Analyzes job_queue when 1,000 rows and 1 % of the table have changed since it was last
-- analyzed, and not within p_min_interval of the last analyze; true if it did. One caller at a time
-- (the others return at once), only in a transaction of its own (ANALYZE holds its lock to
-- commit), and never waiting: with autovacuum working on the table it leaves it for later.
-- Run as the table's owner (ANALYZE needs it).
create function job_queue_refresh_statistics(p_min_interval interval default '10 seconds')
returns boolean
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
set lock_timeout = '100ms'
as $$
declare
    v_changed bigint;
    v_rows double precision;
    v_last timestamptz;
begin
    select s.n_mod_since_analyze, greatest(c.reltuples, s.n_live_tup, 0),
           greatest(s.last_analyze, s.last_autoanalyze)
    into v_changed, v_rows, v_last
    from pg_stat_user_tables s join pg_class c on c.oid = s.relid
    where s.relid = 'public.job_queue'::regclass;
    if v_changed is null or v_changed < 1000 + 0.01 * v_rows
       or v_last > now() - p_min_interval
       or transaction_timestamp() <> statement_timestamp()
       or not pg_try_advisory_xact_lock(hashtext('processor:analyze')) then
        return false;
    end if;
    begin
        analyze public.job_queue;
    exception when lock_not_available then
        return false;  -- autovacuum has the table
    end;
    return true;
end;
$$;

select processor_keep_private(array['function job_queue_refresh_statistics(interval)']);
