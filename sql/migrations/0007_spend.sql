-- AI spend: every provider call a built-in handler makes, with the units the vendor reported
-- and an estimated cost; views per day, user, project and provider. Rows outlive the jobs they
-- describe (retention deletes jobs, not the spend record): job_id is then set to null.

create table provider_calls (
    id            bigint generated always as identity primary key,
    job_id        uuid references job_queue (id) on delete set null,
    attempt       integer not null,
    user_id       text,
    project_id    text,
    provider      text not null,
    model         text not null,
    operation     text not null,          -- image | edit | text | background
    status        text not null check (status in ('ok', 'rate_limited', 'transient', 'permanent')),
    http_status   integer,
    duration_ms   integer not null,
    input_tokens  bigint not null default 0,
    output_tokens bigint not null default 0,
    images        integer not null default 0,
    credits       numeric(12, 4) not null default 0,
    cost_usd      numeric(14, 6) not null default 0,
    error         text,
    created_at    timestamptz not null default now()
);

comment on table provider_calls is
    'One row per AI provider call: units as the vendor reported them and an estimated cost '
    '(PROVIDER_PRICES).';

create index provider_calls_job_idx on provider_calls (job_id, attempt) where job_id is not null;
create index provider_calls_created_idx on provider_calls (created_at);
create index provider_calls_user_idx on provider_calls (user_id, created_at) where user_id is not null;

create view provider_spend_daily with (security_invoker = on) as
select date_trunc('day', created_at) as day, provider, model, count(*) as calls,
       count(*) filter (where status = 'ok') as ok, sum(images) as images,
       sum(input_tokens) as input_tokens, sum(output_tokens) as output_tokens,
       sum(credits) as credits, sum(cost_usd) as cost_usd
from provider_calls group by 1, 2, 3;

create view provider_spend_by_user with (security_invoker = on) as
select date_trunc('day', created_at) as day, user_id, count(*) as calls, sum(images) as images,
       sum(cost_usd) as cost_usd
from provider_calls group by 1, 2;

create view provider_spend_by_project with (security_invoker = on) as
select date_trunc('day', created_at) as day, project_id, count(*) as calls,
       sum(images) as images, sum(cost_usd) as cost_usd
from provider_calls group by 1, 2;

create view provider_spend_by_provider with (security_invoker = on) as
select provider, status, count(*) as calls, sum(images) as images,
       sum(input_tokens) as input_tokens, sum(output_tokens) as output_tokens,
       sum(credits) as credits, sum(cost_usd) as cost_usd,
       round(avg(duration_ms)) as avg_duration_ms
from provider_calls group by 1, 2;

select processor_keep_private(array[
    'table provider_calls',
    'table provider_spend_daily',
    'table provider_spend_by_user',
    'table provider_spend_by_project',
    'table provider_spend_by_provider'
]);

-- Supabase's guidance for RLS: `(select auth.uid())` is evaluated once per statement, where a
-- bare auth.uid() runs for every row. The owner-read policies are rewritten that way, and so is
-- the helper that creates them.
create or replace function processor_share_own_rows(p_table regclass, p_realtime boolean)
returns void
language plpgsql as $$
begin
    execute format('alter table %s enable row level security', p_table);
    if exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
               where n.nspname = 'auth' and p.proname = 'uid')
       and exists (select 1 from pg_roles where rolname = 'authenticated') then
        execute format('drop policy if exists %I on %s', p_table::text || '_owner_read', p_table);
        execute format('create policy %I on %s for select to authenticated '
                       'using (user_id = (select auth.uid())::text)',
                       p_table::text || '_owner_read', p_table);
        execute format('grant select on %s to authenticated', p_table);
    end if;
    if p_realtime and exists (select 1 from pg_publication where pubname = 'supabase_realtime')
       and not exists (select 1 from pg_publication_tables
                       where pubname = 'supabase_realtime' and tablename = p_table::text) then
        execute format('alter publication supabase_realtime add table %s', p_table);
    end if;
end;
$$;

select processor_share_own_rows('job_queue', false);
select processor_share_own_rows('generated_images', false);
select processor_share_own_rows('aplus_contents', false);
select processor_share_own_rows('provider_calls', false);

-- Provider limits shared by every processor on this database: a cap on concurrent calls and
-- a pace (calls per minute) per provider, and a pause that a 429 sets for everyone. Each
-- processor writes its PROVIDER_LIMITS here at start-up; every call asks provider_acquire
-- first and hands its slot back with provider_release.
create table provider_limits (
    provider       text primary key,
    max_concurrent integer check (max_concurrent > 0),
    per_minute     numeric check (per_minute > 0),
    next_at        timestamptz not null default now(),  -- the next free start time (pacing)
    paused_until   timestamptz,
    pause_reason   text,
    updated_at     timestamptz not null default now()
);

create table provider_slots (
    id         bigint generated always as identity primary key,
    provider   text not null,
    holder     text not null,
    expires_at timestamptz not null        -- a processor that died gives its slots back here
);

create index provider_slots_provider_idx on provider_slots (provider, expires_at);

-- May a call to p_provider start? granted with a slot (null without a concurrency cap) and the
-- seconds to wait before starting (pacing, at most p_max_wait); or not granted, with how long
-- until it could be and why ('paused', 'concurrency', 'rate').
create function provider_acquire(
    p_provider text,
    p_holder text,
    p_ttl interval,
    p_max_wait interval default interval '5 seconds'
) returns table (granted boolean, slot_id bigint, wait_seconds float8, reason text)
language plpgsql volatile as $$
declare
    v provider_limits;
    v_start timestamptz;
    v_slot bigint;
begin
    select * into v from provider_limits where provider = p_provider for update;
    if not found then
        return query select true, null::bigint, 0::float8, null::text;
        return;
    end if;
    if v.paused_until > now() then
        return query select false, null::bigint,
            extract(epoch from v.paused_until - now())::float8,
            coalesce(v.pause_reason, 'paused');
        return;
    end if;
    if v.max_concurrent is not null and (
        select count(*) from provider_slots s
        where s.provider = p_provider and s.expires_at > now()) >= v.max_concurrent then
        return query select false, null::bigint, 1::float8, 'concurrency'::text;
        return;
    end if;
    v_start := now();
    if v.per_minute is not null then
        v_start := greatest(v.next_at, now());
        if v_start - now() > p_max_wait then
            return query select false, null::bigint, extract(epoch from v_start - now())::float8,
                'rate'::text;
            return;
        end if;
        update provider_limits
        set next_at = v_start + make_interval(secs => 60 / v.per_minute)
        where provider = p_provider;
    end if;
    if v.max_concurrent is not null then
        insert into provider_slots (provider, holder, expires_at)
        values (p_provider, p_holder, v_start + p_ttl)
        returning id into v_slot;
    end if;
    return query select true, v_slot, extract(epoch from v_start - now())::float8, null::text;
end;
$$;

create function provider_release(p_slot bigint) returns void
language sql volatile as $$
    delete from provider_slots where id = p_slot or expires_at < now() - interval '1 hour'
$$;

-- A 429 with a wait: nobody calls the provider until then (and pacing resumes from there).
create function provider_pause(p_provider text, p_seconds float8, p_reason text)
returns timestamptz
language sql volatile as $$
    insert into provider_limits as l (provider, paused_until, pause_reason, next_at)
    values (p_provider, now() + make_interval(secs => p_seconds), p_reason,
            now() + make_interval(secs => p_seconds))
    on conflict (provider) do update
    set paused_until = greatest(coalesce(l.paused_until, now()), excluded.paused_until),
        pause_reason = excluded.pause_reason,
        next_at = greatest(l.next_at, excluded.paused_until),
        updated_at = now()
    returning paused_until
$$;

select processor_keep_private(array[
    'table provider_limits',
    'table provider_slots',
    'function provider_acquire(text, text, interval, interval)',
    'function provider_release(bigint)',
    'function provider_pause(text, float8, text)'
]);

-- Private buckets: signed URLs expire, so the database keeps the storage path and URLs are made
-- when a job is read; such images have no stored URL.
alter table generated_images alter column url drop not null;
