-- In the field: pinned search paths, single-use deliveries, job types kept by name.

-- 1. Pinned search paths.
--
-- A SECURITY DEFINER function runs with its owner's rights. With search_path '$user', public
-- (what `set search_path from current` captured on most installs) PostgreSQL searches the
-- caller's own temporary schema first, so any role allowed to EXECUTE such a function could
-- create TEMP TABLE job_queue_settings (or credit_accounts, …) and have the function read the
-- caller's table instead of ours. Every definer function in this schema is given
-- pg_catalog, <schema>, pg_temp: built-ins first, our own objects next, temporary objects never
-- before them. New definer functions state the same path in their own definition, and
-- tests/integration/test_supabase_privileges.py fails on any definer function that does not.
do $$
declare
    v_fn regprocedure;
begin
    for v_fn in
        select p.oid::regprocedure
        from pg_proc p
        where p.prosecdef
          and p.pronamespace = (select relnamespace from pg_class where oid = 'job_queue'::regclass)
          and not exists (  -- an extension's functions are its own business
              select 1 from pg_depend d
              where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
    loop
        execute format('alter function %s set search_path = pg_catalog, %I, pg_temp',
                       v_fn, (select relnamespace::regnamespace::text
                              from pg_class where oid = 'job_queue'::regclass));
    end loop;
end;
$$;

-- 2. A delivery is used once.
--
-- Every signed call the processor makes carries a fresh Processor-Delivery id, and a signature
-- is accepted for five minutes. The built-in handlers record each id they run here before they
-- spend anything: the insert of a second call with the same id finds the row and is refused
-- (409), across processors and under concurrent replays, because the primary key serialises
-- them. Rows older than the signature tolerance (plus a margin for clock skew) can never be
-- replayed again and are removed as new ones arrive.
create table processor_deliveries (
    delivery text primary key check (delivery ~ '^[0-9a-f]{32}$'),
    path text not null,
    job_id uuid,
    used_at timestamptz not null default now()
);
create index processor_deliveries_used_at_idx on processor_deliveries (used_at);
comment on table processor_deliveries is
    'Processor-Delivery ids the built-in handlers have run in the last minutes (single use).';

create function use_delivery(p_delivery text, p_path text, p_job_id uuid)
returns boolean
language plpgsql
set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_new boolean;
begin
    delete from processor_deliveries
    where delivery in (select delivery from processor_deliveries
                       where used_at < now() - interval '15 minutes'
                       order by used_at limit 100);
    insert into processor_deliveries (delivery, path, job_id)
    values (p_delivery, p_path, p_job_id)
    on conflict (delivery) do nothing
    returning true into v_new;
    return coalesce(v_new, false);
end;
$$;
comment on function use_delivery(text, text, uuid) is
    'Records a delivery id a built-in handler is about to run; false when it already ran.';

-- 3. Job types by their real names.
--
-- job_queue_types joined the counts and the limits with FULL JOIN but named t.job_type, which
-- is null for a type that has a limit or a pause and no jobs: monitoring then saw a type with
-- no name. The merged USING column carries the name from either side.
create or replace view job_queue_types with (security_invoker = on) as
select job_type, coalesce(t.running, 0) as running, coalesce(t.waiting, 0) as waiting,
       coalesce(t.scheduled, 0) as scheduled, l.max_running,
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

-- The job types the database knows now: those with pending or running jobs, among the newest
-- thousand jobs, or with a limit or pause. The CLI asks before pausing or capping a name that is
-- in none of these nor in its routes (a typo pauses nothing). Every part reads an index, so the
-- cost does not grow with the table.
create function known_job_types() returns setof text
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
    with recursive pending(job_type) as (  -- a loose index scan over job_queue_lane_idx
        (select job_type from job_queue where status = 'pending' order by job_type limit 1)
        union all
        select (select j.job_type from job_queue j
                where j.status = 'pending' and j.job_type > p.job_type
                order by j.job_type limit 1)
        from pending p where p.job_type is not null
    )
    select job_type from pending where job_type is not null
    union
    select job_type from job_queue where status = 'processing'
    union
    select job_type from (select job_type from job_queue
                          order by created_at desc, id desc limit 1000) newest
    union
    select job_type from job_type_limits
    order by 1;
$$;

select processor_keep_private(array[
    'table processor_deliveries',
    'function use_delivery(text, text, uuid)',
    'function known_job_types()',
    'table job_queue_types'
]);
