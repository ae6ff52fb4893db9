-- Spend budgets and job prices in the database (issue 27, first part): what each fair-share
-- group, job type and the whole service may spend per calendar period, the price of a whole job
-- of a type, and what has been spent against each budget in its current period. The claim does
-- not hold jobs back on a budget yet; this part is what that will read.

alter table job_queue_settings
    add column budget_time_zone text not null default 'UTC';
comment on column job_queue_settings.budget_time_zone is
    'The time zone whose calendar spend budgets'' periods follow (a day starts at its midnight).';

create function job_queue_valid_time_zone(p_zone text) returns boolean
    language sql stable
    set search_path = pg_catalog, public, pg_temp
as $$
    select exists (select 1 from pg_timezone_names where name = p_zone)
$$;

alter table job_queue_settings
    add constraint job_queue_settings_budget_time_zone
        check (job_queue_valid_time_zone(budget_time_zone));

-- scope 'group': a fair-share group (concurrency_key, else user_id), or '*' for every group
-- that has none of its own; 'type': a job type; 'service': everything (key '*').
create table spend_budgets (
    scope text not null check (scope in ('group', 'type', 'service')),
    key text not null check (length(key) between 1 and 200),
    usd numeric(14, 4) not null check (usd >= 0),
    period interval not null
        check (period in (interval '1 hour', interval '1 day', interval '7 days', interval '1 month')),
    updated_at timestamptz not null default now(),
    primary key (scope, key)
);
comment on table spend_budgets is
    'What a fair-share group (scope group; key * for every group without its own), a job type or the whole service may spend on AI providers per calendar period (job_queue_settings.budget_time_zone). Set with set_spend_budget, set_job_type_budget, set_service_budget.';

create table job_type_prices (
    job_type text primary key check (length(job_type) between 1 and 200),
    usd numeric(14, 6) not null check (usd >= 0),
    updated_at timestamptz not null default now()
);
comment on table job_type_prices is
    'The price of one whole job of a type, in USD (set_job_type_price): a budget''s estimate of what a job will cost.';

-- A period as the calendar has it: '1 week' and '7 days' are one; anything else is refused.
create function job_queue_budget_period(p_what text, p_period interval) returns interval
    language plpgsql immutable
    set search_path = pg_catalog, public, pg_temp
as $$
begin
    if p_period is null or p_period not in (interval '1 hour', interval '1 day', interval '7 days',
                                            interval '1 month') then
        raise exception '%: period must be 1 hour, 1 day, 1 week or 1 month, got %', p_what,
            coalesce(p_period::text, 'null') using errcode = '22023';
    end if;
    return p_period;
end;
$$;

create function job_queue_set_budget(p_what text, p_scope text, p_key text, p_usd numeric,
                                     p_period interval)
    returns void
    language plpgsql
    set search_path = pg_catalog, public, pg_temp
as $$
begin
    if p_key is null or length(p_key) not between 1 and 200 then
        raise exception '%: the key must be 1 to 200 characters', p_what using errcode = '22023';
    end if;
    if p_usd is null then
        delete from spend_budgets where scope = p_scope and key = p_key;
        return;
    end if;
    if p_usd < 0 or p_usd > 1e9 then
        raise exception '%: usd must be a number from 0 to 1000000000, got %', p_what, p_usd
            using errcode = '22023';
    end if;
    insert into spend_budgets (scope, key, usd, period)
    values (p_scope, p_key, p_usd, job_queue_budget_period(p_what, p_period))
    on conflict (scope, key) do update
        set usd = excluded.usd, period = excluded.period, updated_at = now();
end;
$$;

create function set_spend_budget(p_key text, p_usd numeric, p_period interval default '1 day')
    returns void
    language sql
as $$
    select job_queue_set_budget('set_spend_budget', 'group', p_key, p_usd, p_period)
$$;
comment on function set_spend_budget(text, numeric, interval) is
    'A fair-share group''s budget (its concurrency_key, else user_id; * for every group without its own) in USD per period; null removes it.';

create function set_job_type_budget(p_job_type text, p_usd numeric,
                                    p_period interval default '1 day')
    returns void
    language sql
as $$
    select job_queue_set_budget('set_job_type_budget', 'type', p_job_type, p_usd, p_period)
$$;

create function set_service_budget(p_usd numeric, p_period interval default '1 day')
    returns void
    language sql
as $$
    select job_queue_set_budget('set_service_budget', 'service', '*', p_usd, p_period)
$$;

create function set_job_type_price(p_job_type text, p_usd numeric) returns void
    language plpgsql
    set search_path = pg_catalog, public, pg_temp
as $$
begin
    if p_job_type is null or length(btrim(p_job_type)) = 0 or length(p_job_type) > 200 then
        raise exception 'set_job_type_price: job_type must be 1 to 200 characters'
            using errcode = '22023';
    end if;
    if p_usd is null then
        delete from job_type_prices where job_type = p_job_type;
        return;
    end if;
    if p_usd < 0 or p_usd > 1e6 then
        raise exception 'set_job_type_price: usd must be a number from 0 to 1000000, got %', p_usd
            using errcode = '22023';
    end if;
    insert into job_type_prices (job_type, usd) values (p_job_type, p_usd)
    on conflict (job_type) do update set usd = excluded.usd, updated_at = now();
end;
$$;

-- The current period of a budget: when it began and when it resets, on the calendar of
-- job_queue_settings.budget_time_zone (a week starts on Monday).
create function spend_budget_window(p_period interval, p_at timestamptz default now(),
                                    out starts timestamptz, out resets timestamptz)
    language plpgsql stable
    set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_zone text := coalesce((select budget_time_zone from job_queue_settings where id), 'UTC');
    v_unit text;
begin
    v_unit := case job_queue_budget_period('spend_budget_window', p_period)
                  when interval '1 hour' then 'hour' when interval '1 day' then 'day'
                  when interval '7 days' then 'week' else 'month' end;
    starts := date_trunc(v_unit, p_at at time zone v_zone) at time zone v_zone;
    resets := ((date_trunc(v_unit, p_at at time zone v_zone)
                + case v_unit when 'week' then interval '7 days' else p_period end)
               at time zone v_zone);
end;
$$;

-- What a job is expected to cost before it runs: its type's price for a whole job, scaled to
-- what is left of it to make (its checkpoints: images and A+ already stored); else, for the
-- built-in image types, the dearest successful call of its type in the ledger per missing
-- item; else null (no estimate).
create function job_estimated_cost(p_job_id uuid) returns numeric
    language plpgsql stable
    set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_job job_queue;
    v_needed integer;
    v_left integer;
    v_price numeric;
begin
    select * into v_job from job_queue where id = p_job_id;
    if not found then
        return null;
    end if;
    v_needed := job_items_needed(v_job.job_type, v_job.payload);
    v_left := case when v_needed is null then null
                   else greatest(v_needed - job_items_stored(v_job.id), 0) end;
    select usd into v_price from job_type_prices where job_type = v_job.job_type;
    if v_price is not null then
        return round(case when v_needed > 0 then v_price * v_left / v_needed else v_price end, 6);
    end if;
    if v_left is null then
        return null;
    end if;
    select max(c.cost_usd) into v_price from provider_calls c
    join job_queue q on q.id = c.job_id
    left join job_queue p on p.id = q.parent_id
    where (q.job_type = v_job.job_type or p.job_type = v_job.job_type) and c.status = 'ok';
    return round(v_price * v_left, 6);
end;
$$;

-- Each budget with what was spent against it in its current period (the provider ledger's
-- estimated cost of the calls of the jobs it covers) and when it resets. A group's '*' row is
-- the default for groups without their own, so it has no single figure spent.
create view spend_budgets_now with (security_invoker = on) as
select b.scope, b.key, b.usd as budget_usd, b.period, w.starts, w.resets,
       case when b.scope = 'group' and b.key = '*' then null
            else coalesce((select sum(c.cost_usd) from provider_calls c
                           left join job_queue j on j.id = c.job_id
                           where c.created_at >= w.starts and c.created_at < w.resets
                             and (b.scope = 'service'
                                  or b.scope = 'type' and j.job_type = b.key
                                  or b.scope = 'group'
                                     and coalesce(j.concurrency_key, j.user_id) = b.key)),
                          0) end as spent_usd
from spend_budgets b
cross join lateral spend_budget_window(b.period) w;
comment on view spend_budgets_now is
    'Every spend budget with what was spent against it in its current period and when that period resets.';

select processor_keep_private(array[
    'table spend_budgets',
    'table job_type_prices',
    'table spend_budgets_now',
    'function job_queue_valid_time_zone(text)',
    'function job_queue_budget_period(text, interval)',
    'function job_queue_set_budget(text, text, text, numeric, interval)',
    'function set_spend_budget(text, numeric, interval)',
    'function set_job_type_budget(text, numeric, interval)',
    'function set_service_budget(numeric, interval)',
    'function set_job_type_price(text, numeric)',
    'function spend_budget_window(interval, timestamptz)',
    'function job_estimated_cost(uuid)'
]);
