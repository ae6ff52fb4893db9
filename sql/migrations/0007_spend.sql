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
