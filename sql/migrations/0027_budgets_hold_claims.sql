-- Spend budgets hold claims (issue 27, second part): before a job starts, the claim reserves
-- what it is expected to cost against every budget it falls under (its group's, its type's,
-- the service's); a job that does not fit waits, its group sitting out claims as a capped
-- group does, until the period resets or the budget is raised; when the job stops running its
-- reservation goes, and what its provider calls cost stays counted. Nothing is failed,
-- cancelled or retried because of a budget.
--
-- The invariant: for every budget, spent + reserved never passes the budget by more than what
-- the running jobs' calls cost beyond their estimates (one job's estimate error per job that
-- was running when the budget filled), where
--   spent    = what the ledger's calls in the current period cost (spend_counters, kept by a
--              trigger on provider_calls), and
--   reserved = the running jobs' estimates less what their calls have cost so far
--              (job_queue.budget_reserved of the jobs processing; a call takes its cost off
--              its job's reservation in the same transaction that counts it as spent, so
--              nothing is counted twice; a job that stops running holds nothing).
-- What keeps it:
--   * Reservations are taken only by a claimer that holds processor:caps exclusively (the
--     counting claimer, as for caps), which reads the counters and reservations after the lock
--     (a fresh snapshot): two processors claiming at once cannot both fit a job in the same
--     room. A claimer that cannot get the lock within 100 ms takes only unbudgeted work.
--   * Budgets are set under processor:limits exclusively (job_queue_lock_limits), so a claim
--     that read the old budget has committed its reservations and holds before the change is
--     applied and the held groups are released.
--   * Counters are seeded from the ledger when a budget is set (under processor:spend
--     exclusively; the ledger's trigger takes it shared), so a call in flight is either in the
--     seed or counted by its trigger after it, never both and never neither.

alter table job_queue_scheduler
    add column budget_resets_at timestamptz not null default 'infinity';
comment on column job_queue_scheduler.budget_resets_at is
    'The earliest reset of a budget that holds a group: a claim after it puts held jobs back in line.';

alter table job_queue_limited
    add column budgeted boolean not null default false;
comment on column job_queue_limited.budgeted is
    'Whether any spend budget is set (kept by a trigger on spend_budgets): without one, claims reserve nothing.';

create table spend_counters (
    scope text not null,
    key text not null,
    starts timestamptz not null,
    spent_usd numeric(16, 6) not null default 0,
    primary key (scope, key)
);
comment on table spend_counters is
    'What the provider calls cost in the current period of each budget (a group''s own or the default *, a type''s, the service''s), from starts on; seeded from the ledger when a budget is set and kept by a trigger on provider_calls.';

alter table provider_calls
    add column group_key text,
    add column job_type text;
comment on column provider_calls.group_key is
    'The fair-share group of the call''s job when it was made (concurrency_key, else user_id): what budgets count it against, after the job is pruned too.';
comment on column provider_calls.job_type is
    'The type of the call''s job when it was made.';

alter table job_queue
    add column budget_reserved numeric(14, 6),
    add column budget_estimate numeric(14, 6);
comment on column job_queue.budget_reserved is
    'While it runs under a spend budget: what it still holds of its budgets (its estimate less what its calls have cost so far). Only processing jobs count; set null when it stops.';
comment on column job_queue.budget_estimate is
    'What the claim that started it under a spend budget estimated it would cost (null with budget_reserved set: no estimate).';

create table spend_budget_reached (
    scope text not null,
    key text not null,
    starts timestamptz not null,
    reached_at timestamptz not null default now(),
    logged_at timestamptz,
    primary key (scope, key, starts)
);
comment on table spend_budget_reached is
    'When a budget first held work back in a period (one row per budget and period); a processor writes one log line for each and sets logged_at.';

create table job_type_costs (
    job_type text primary key,
    usd numeric(14, 6) not null,
    jobs integer not null,
    computed_at timestamptz not null default now()
);
comment on table job_type_costs is
    'The ledger''s price of a whole job per type, for types without a price of their own (job_type_prices): the 90th percentile of what recent completed jobs cost, children included (job_queue_refresh_type_costs).';

-- As in 0012, and an include_aplus that is not a JSON boolean counts as false rather than
-- failing the cast: a claim asks this of every job it weighs against a budget, and one bad
-- payload must not stop the claims (its handler refuses it with a reason).
create or replace function job_items_needed(p_job_type text, p_payload jsonb) returns integer
language sql immutable
as $$
    select case
        when p_job_type in ('generate-image', 'generate-images') then 1
        when p_job_type = 'generate-complete-pack'
            then 6 + case when p_payload -> 'include_aplus' = 'true'::jsonb then 7 else 0 end
        when p_job_type = 'generate-aplus' then 7  -- six images and the document
    end
$$;

-- As in 0026, and a period is the calendar's as written: '30 days' and '24 hours' equal
-- '1 month' and '1 day' as intervals, but are not calendar periods, and are refused.
create or replace function job_queue_budget_period(p_what text, p_period interval)
    returns interval
language plpgsql immutable
set search_path = pg_catalog, public, pg_temp
as $$
begin
    if p_period is null
       or not (p_period = interval '1 hour' and extract(hour from p_period) = 1
               or p_period = interval '1 day' and extract(day from p_period) = 1
               or p_period = interval '7 days' and extract(day from p_period) = 7
               or p_period = interval '1 month' and extract(month from p_period) = 1) then
        raise exception '%: period must be 1 hour, 1 day, 1 week or 1 month, got %', p_what,
            coalesce(p_period::text, 'null') using errcode = '22023';
    end if;
    return p_period;
end;
$$;

-- The budget a group, type or the service falls under (a group without its own takes the
-- default *, the group of jobs with neither concurrency_key nor user_id does not), and what is
-- spent and reserved against it in its current period. budget null: no budget.
create function job_queue_budget_left(
    p_scope text, p_key text,
    out budget numeric, out spent numeric, out reserved numeric, out period interval,
    out starts timestamptz, out resets timestamptz, out own boolean
)
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
set enable_seqscan = off  -- the running jobs by job_queue_running_idx, whatever the statistics
set jit = off
as $$
declare
    v_starts timestamptz;
begin
    select b.usd, b.period, true into budget, period, own
    from spend_budgets b where b.scope = p_scope and b.key = p_key;
    if not found and p_scope = 'group' and p_key <> '' then
        select b.usd, b.period, false into budget, period, own
        from spend_budgets b where b.scope = 'group' and b.key = '*';
    end if;
    if budget is null then
        return;
    end if;
    select w.starts, w.resets into v_starts, resets from spend_budget_window(period) w;
    starts := v_starts;
    spent := coalesce((select c.spent_usd from spend_counters c
                       where c.scope = p_scope and c.key = p_key and c.starts = v_starts), 0);
    if p_scope = 'group' then
        reserved := coalesce((select sum(q.budget_reserved) from job_queue q
                              where q.status = 'processing'
                                and coalesce(q.concurrency_key, q.user_id, '') = p_key), 0);
    elsif p_scope = 'type' then
        reserved := coalesce((select sum(q.budget_reserved) from job_queue q
                              where q.status = 'processing' and q.job_type = p_key), 0);
    else
        reserved := coalesce((select sum(q.budget_reserved) from job_queue q
                              where q.status = 'processing'), 0);
    end if;
end;
$$;

-- Whether a job of this group and type falls under any budget (without reading what is left).
-- The functions a claim calls for each job set nothing (no search_path, no jit): a SET clause
-- costs every call a settings save and restore, and they are not security definer.
create function job_queue_budgeted(p_group text, p_job_type text) returns boolean
language plpgsql stable
as $$
begin
    return exists (select 1 from spend_budgets where scope = 'group' and key = p_group)
        or exists (select 1 from spend_budgets where scope = 'type' and key = p_job_type)
        or exists (select 1 from spend_budgets where scope = 'service')
        or p_group <> '' and exists (select 1 from spend_budgets
                                     where scope = 'group' and key = '*');
end;
$$;

-- A budget held work back: noted once per period (for the one log line), and for a group the
-- claims are told when its period resets (job_queue_scheduler.budget_resets_at).
create function job_queue_budget_note_held(p_scope text, p_key text) returns void
language plpgsql
as $$
declare
    v_period interval;
    v_starts timestamptz;
    v_resets timestamptz;
begin
    -- (its period only: what is spent is not needed here, and a claim may hold many groups)
    select b.period into v_period from spend_budgets b where b.scope = p_scope and b.key = p_key;
    if not found and p_scope = 'group' and p_key <> '' then
        select b.period into v_period from spend_budgets b where b.scope = 'group' and b.key = '*';
    end if;
    if v_period is null then
        return;
    end if;
    select w.starts, w.resets into v_starts, v_resets from spend_budget_window(v_period) w;
    insert into spend_budget_reached (scope, key, starts)
    values (p_scope, p_key, v_starts)
    on conflict do nothing;
    if p_scope = 'group' then
        update job_queue_scheduler set budget_resets_at = v_resets
        where budget_resets_at > v_resets;
    end if;
end;
$$;

-- When the current period of a budget began, on the calendar of p_zone (a week starts on
-- Monday): spend_budget_window's starts, as an expression the planner inlines.
create function job_queue_period_start(p_period interval, p_zone text) returns timestamptz
language sql stable
as $$
    select date_trunc(case p_period when interval '1 hour' then 'hour'
                                    when interval '1 day' then 'day'
                                    when interval '7 days' then 'week' else 'month' end,
                      now() at time zone p_zone) at time zone p_zone
$$;

-- For jobs a claim is about to start (p_ids), in that order: what each is expected to cost
-- (est: its type's price, else the ledger's, job_type_costs, scaled to what is left of it to
-- make: its images and A+ already stored, its children's included; null: no estimate),
-- whether it falls under any budget, and the first budget without room for it (blocked:
-- group, type, service; null: it fits). What is left of a budget: the budget, less what its
-- running jobs hold (budget_reserved), less what its calls cost in the period (spend_counters),
-- less what this claim takes before the job: the jobs before it in p_ids, and those it took
-- already (p_before_groups, p_before_types, p_before_est). A job fits a budget with room left
-- for its estimate; a job without an estimate fits one with room left under which no other job
-- runs (or goes before it) without an estimate. One statement: the claim's cost of budgets is
-- this and the reservations it writes.
create function job_queue_budget_fit(
    p_ids uuid[], p_before_groups text[] default '{}', p_before_types text[] default '{}',
    p_before_est numeric[] default '{}'
)
returns table (job_id uuid, est numeric, budgeted boolean, blocked text)
language plpgsql stable
set enable_seqscan = off  -- the running jobs by job_queue_running_idx, whatever the statistics
set jit = off
as $$
declare
    v_zone text;
    v_default_usd numeric;  -- the default group budget (*)
    v_default_period interval;
    v_typed boolean;  -- whether any type has a budget
    v_serviced boolean;  -- whether the service has one
    v_keys text[] := '{}';  -- the budgets met so far ('g:<group>', 't:<type>', 's:*') ...
    v_rooms numeric[] := '{}';  -- ... what is left of each (null: no budget) ...
    v_blinds boolean[] := '{}';  -- ... and whether a job under it runs without an estimate
    v_before integer := coalesce(cardinality(p_before_groups), 0);
    v_group text;
    v_type text;
    v_j_groups text[];  -- the jobs asked about, as the one statement found them
    v_j_types text[];
    v_j_needed integer[];
    v_j_children boolean[];
    v_j_started boolean[];
    v_j_prices numeric[];
    v_j_rooms numeric[];
    v_j_blinds boolean[];
    v_j_budgeted boolean[];
    v_group_room numeric;  -- what the job's statement found of its group's budget
    v_group_blind boolean;
    v_group_budget boolean;
    v_started boolean;
    v_depends_on uuid[];
    v_price numeric;
    v_needed integer;
    v_usd numeric;
    v_blind boolean;
    v_scope text;
    v_name text;
    v_at integer[];  -- the job's budgets: positions in v_keys
    v_pos integer;
    i integer;
    k integer;
begin
    -- The settings, the jobs asked about, their prices, and what is left of their groups'
    -- budgets: one statement for all of them.
    -- (Every join is lateral, so a nested loop over p_ids in their order: no sort.)
    select min(cfg.z), min(cfg.d_usd), min(cfg.d_period), bool_or(cfg.typed),
           bool_or(cfg.serviced),
           array_agg(j.group_key), array_agg(j.job_type),
           array_agg(job_items_needed(j.job_type, j.payload)),
           array_agg(j.depends_on is not null), array_agg(j.processed_at is not null),
           array_agg(coalesce((select p.usd from job_type_prices p where p.job_type = j.job_type),
                              (select c.usd from job_type_costs c where c.job_type = j.job_type))),
           array_agg(g.usd - coalesce(r.held, 0) - coalesce(gc.spent_usd, 0)),
           array_agg(coalesce(r.blind, false)), array_agg(g.usd is not null)
    into v_zone, v_default_usd, v_default_period, v_typed, v_serviced,
         v_j_groups, v_j_types, v_j_needed, v_j_children, v_j_started, v_j_prices, v_j_rooms,
         v_j_blinds, v_j_budgeted
    from (select st.budget_time_zone as z, d.usd as d_usd, d.period as d_period,
                 exists (select 1 from spend_budgets where scope = 'type') as typed,
                 exists (select 1 from spend_budgets where scope = 'service') as serviced
          from job_queue_settings st
          left join spend_budgets d on d.scope = 'group' and d.key = '*'
          where st.id) cfg
    left join unnest(p_ids) with ordinality u(id, n) on true
    left join lateral (select coalesce(q.concurrency_key, q.user_id, '') as group_key,
                              q.job_type, q.payload, q.depends_on, q.processed_at
                       from job_queue q where q.id = u.id) j on true
    left join lateral (
        select x.usd, x.period from spend_budgets x
        where x.scope = 'group' and x.key = j.group_key
        union all
        select cfg.d_usd, cfg.d_period
        where j.group_key <> '' and cfg.d_usd is not null
        limit 1) g on true
    left join lateral (
        select sum(q.budget_reserved) as held,
               bool_or(q.budget_reserved is not null and q.budget_estimate is null) as blind
        from job_queue q
        where g.usd is not null and q.status = 'processing'
          and coalesce(q.concurrency_key, q.user_id, '') = j.group_key) r on true
    left join lateral (
        select x.spent_usd from spend_counters x
        where g.usd is not null and x.scope = 'group' and x.key = j.group_key
          and x.starts = job_queue_period_start(g.period, cfg.z)) gc on true;
    -- The jobs taken before, then the jobs asked about, in order: each takes its estimate off
    -- the budgets it falls under, if it fits them.
    for i in 1 .. v_before + coalesce(cardinality(p_ids), 0) loop
        if i <= v_before then
            job_id := null;
            v_group := p_before_groups[i];
            v_type := p_before_types[i];
            est := p_before_est[i];
        else
            job_id := p_ids[i - v_before];
            k := i - v_before;
            continue when v_j_types[k] is null;  -- (gone)
            v_group := v_j_groups[k];
            v_type := v_j_types[k];
            v_needed := v_j_needed[k];
            v_depends_on := case when v_j_children[k] then
                                (select j.depends_on from job_queue j where j.id = job_id) end;
            v_started := v_j_started[k];
            v_price := v_j_prices[k];
            v_group_room := v_j_rooms[k];
            v_group_blind := v_j_blinds[k];
            v_group_budget := v_j_budgeted[k];
            -- (what is stored is counted only for a job that ran before: nothing stores images
            -- or A+ under a job, or makes its children, but its own runs)
            est := case when v_price is null then null
                        when v_needed > 0 and v_started
                            then round(v_price * greatest(v_needed - job_items_stored(
                                           job_id, v_depends_on), 0) / v_needed, 6)
                        else round(v_price, 6) end;
        end if;
        v_at := '{}';
        for k in 1 .. 3 loop
            v_scope := (array['group', 'type', 'service'])[k];
            continue when v_scope = 'type' and not v_typed
                          or v_scope = 'service' and not v_serviced;
            v_name := case k when 1 then v_group when 2 then v_type else '*' end;
            v_pos := array_position(v_keys, left(v_scope, 1) || ':' || v_name);
            if v_pos is null then
                -- One statement a budget: it, less what its running jobs hold, less what its
                -- calls cost in the period (a group's came with its job).
                if k = 1 and job_id is not null then
                    v_usd := case when v_group_budget then v_group_room end;
                    v_blind := v_group_blind;
                elsif k = 1 then
                    select b.usd - coalesce(r.held, 0) - coalesce(c.spent_usd, 0), r.blind
                    into v_usd, v_blind
                    from (select x.usd, x.period from spend_budgets x
                          where x.scope = 'group' and x.key = v_group
                          union all
                          select v_default_usd, v_default_period
                          where v_group <> '' and v_default_usd is not null
                          limit 1) b
                    cross join lateral (
                        select sum(q.budget_reserved) as held,
                               coalesce(bool_or(q.budget_reserved is not null
                                                and q.budget_estimate is null), false) as blind
                        from job_queue q
                        where q.status = 'processing'
                          and coalesce(q.concurrency_key, q.user_id, '') = v_group) r
                    left join spend_counters c
                        on c.scope = 'group' and c.key = v_group
                       and c.starts = job_queue_period_start(b.period, v_zone);
                elsif k = 2 then
                    select b.usd - coalesce(r.held, 0) - coalesce(c.spent_usd, 0), r.blind
                    into v_usd, v_blind
                    from spend_budgets b
                    cross join lateral (
                        select sum(q.budget_reserved) as held,
                               coalesce(bool_or(q.budget_reserved is not null
                                                and q.budget_estimate is null), false) as blind
                        from job_queue q
                        where q.status = 'processing' and q.job_type = v_type) r
                    left join spend_counters c
                        on c.scope = 'type' and c.key = v_type
                       and c.starts = job_queue_period_start(b.period, v_zone)
                    where b.scope = 'type' and b.key = v_type;
                else
                    select b.usd - coalesce(r.held, 0) - coalesce(c.spent_usd, 0), r.blind
                    into v_usd, v_blind
                    from spend_budgets b
                    cross join lateral (
                        select sum(q.budget_reserved) as held,
                               coalesce(bool_or(q.budget_reserved is not null
                                                and q.budget_estimate is null), false) as blind
                        from job_queue q
                        where q.status = 'processing') r
                    left join spend_counters c
                        on c.scope = 'service' and c.key = '*'
                       and c.starts = job_queue_period_start(b.period, v_zone)
                    where b.scope = 'service' and b.key = '*';
                end if;
                if v_usd is null then  -- (no budget: no row, or none of its own nor *)
                    v_blind := false;
                end if;
                v_keys := v_keys || (left(v_scope, 1) || ':' || v_name);
                v_rooms := v_rooms || v_usd;
                v_blinds := v_blinds || coalesce(v_blind, false);
                v_pos := cardinality(v_keys);
            end if;
            continue when v_rooms[v_pos] is null;
            v_at := v_at || v_pos;
        end loop;
        if job_id is not null then
            budgeted := cardinality(v_at) > 0;
            blocked := null;
            foreach k in array v_at loop
                if not job_queue_budget_fits(v_rooms[k], v_blinds[k], est) then
                    blocked := split_part(v_keys[k], ':', 1);
                    blocked := case blocked when 'g' then 'group' when 't' then 'type'
                                            else 'service' end;
                    exit;
                end if;
            end loop;
            return next;
            continue when blocked is not null;  -- a job that does not start takes nothing
        end if;
        foreach k in array v_at loop
            v_rooms[k] := v_rooms[k] - coalesce(est, 0);
            v_blinds[k] := v_blinds[k] or est is null;
        end loop;
    end loop;
end;
$$;

-- Whether a job estimated at p_est fits a budget with p_room left (null: no budget); p_blind:
-- a job under it runs, or goes first, without an estimate.
create function job_queue_budget_fits(p_room numeric, p_blind boolean, p_est numeric)
    returns boolean
language sql immutable
as $$
    select p_room is null
        or p_room > 0 and (coalesce(p_est <= p_room, false) or p_est is null and not p_blind)
$$;

-- One job of a claim that reads its jobs one at a time (with caps, in one global order,
-- mark_job_processing): decided against its budgets. p_state carries, within one claim, the
-- jobs it took under a budget before it ({"g": groups, "t": types, "e": estimates}) and what
-- they reserve ({"r": {job id: estimate}}: what claim_jobs writes, see claim_jobs).
-- est: what the job reserves when it starts (budgeted: it falls under a budget).
create function job_queue_budget_take(
    p_id uuid, p_group text, p_job_type text, p_state jsonb,
    out state jsonb, out blocked text, out est numeric, out budgeted boolean
)
language plpgsql
as $$
begin
    state := coalesce(p_state, '{}');
    select f.est, f.budgeted, f.blocked into est, budgeted, blocked
    from job_queue_budget_fit(
        array[p_id],
        array(select jsonb_array_elements_text(coalesce(state -> 'g', '[]'))),
        array(select jsonb_array_elements_text(coalesce(state -> 't', '[]'))),
        array(select (x #>> '{}')::numeric
              from jsonb_array_elements(coalesce(state -> 'e', '[]')) x)) f;
    if blocked is null and budgeted then
        state := state || jsonb_build_object(
            'g', coalesce(state -> 'g', '[]') || to_jsonb(p_group),
            't', coalesce(state -> 't', '[]') || to_jsonb(p_job_type),
            'e', coalesce(state -> 'e', '[]') || coalesce(to_jsonb(est), 'null'),
            'r', coalesce(state -> 'r', '{}') || jsonb_build_object(p_id::text, est));
    end if;
end;
$$;

-- The ledger's counter for one budget: what the calls in its current period cost. A call
-- is attributed to the group and type it was made for (provider_calls.group_key, job_type;
-- for calls recorded before 0027, its job's, else the user it was made for).
create function job_queue_spent_since(p_scope text, p_key text, p_starts timestamptz,
                                      p_resets timestamptz)
    returns numeric
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
    select coalesce(sum(c.cost_usd), 0)
    from provider_calls c
    left join job_queue j on c.group_key is null and j.id = c.job_id  -- (calls before 0027)
    where c.created_at >= p_starts and c.created_at < p_resets
      and (p_scope = 'service'
           or p_scope = 'type' and coalesce(c.job_type, j.job_type) = p_key
           or p_scope = 'group'
              and coalesce(c.group_key, j.concurrency_key, j.user_id, c.user_id, '') = p_key)
$$;

-- Seeds the counters of a budget just set, changed or removed from the ledger (for the
-- default group budget *, every group without its own). A counter already counting the current
-- period is kept: the ledger no longer holds the calls of jobs pruned since (their type and
-- group go with the job), the counter does. Takes processor:spend exclusively (500 ms at most):
-- the ledger's trigger takes it shared, so a call committed meanwhile is counted exactly once.
create function job_queue_seed_spend(p_scope text, p_key text) returns void
language plpgsql
set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_left record;
    v_timeout text := current_setting('lock_timeout');
begin
    begin
        perform set_config('lock_timeout', '500ms', true);
        perform pg_advisory_xact_lock(hashtext('processor:spend'));
        perform set_config('lock_timeout', v_timeout, true);
    exception when lock_not_available then
        raise exception 'a provider call is being recorded in a transaction still open; its '
                        'cost could be counted twice or not at all. Try again when it ends.'
            using errcode = '55P03';
    end;
    if p_scope = 'group' and p_key = '*' then
        select * into v_left from job_queue_budget_left('group', '*');
        if v_left.budget is null then
            delete from spend_counters c
            where c.scope = 'group'
              and not exists (select 1 from spend_budgets b
                              where b.scope = 'group' and b.key = c.key);
            return;
        end if;
        insert into spend_counters as k (scope, key, starts, spent_usd)
        select 'group', g, v_left.starts, sum(cost)
        from (select coalesce(c.group_key, j.concurrency_key, j.user_id, c.user_id, '') as g,
                     c.cost_usd as cost
              from provider_calls c
              left join job_queue j on c.group_key is null and j.id = c.job_id
              where c.created_at >= v_left.starts and c.created_at < v_left.resets) s
        where g <> ''
          and not exists (select 1 from spend_budgets b where b.scope = 'group' and b.key = g)
        group by g
        on conflict (scope, key) do update
            set starts = excluded.starts, spent_usd = excluded.spent_usd
            where k.starts <> excluded.starts;
        return;
    end if;
    select * into v_left from job_queue_budget_left(p_scope, p_key);
    if v_left.budget is null then
        delete from spend_counters where scope = p_scope and key = p_key;
        return;
    end if;
    insert into spend_counters as k (scope, key, starts, spent_usd)
    values (p_scope, p_key, v_left.starts,
            job_queue_spent_since(p_scope, p_key, v_left.starts, v_left.resets))
    on conflict (scope, key) do update
        set starts = excluded.starts, spent_usd = excluded.spent_usd
        where k.starts <> excluded.starts;
end;
$$;

-- The budgets' time zone changed: every period starts elsewhere, so every counter is seeded
-- again from the ledger and the held groups are looked at again, under processor:limits
-- (claims in flight end first).
create function job_queue_budget_zone_changed() returns trigger
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
as $$
declare
    v_budget record;
begin
    perform job_queue_lock_limits('budget_time_zone');
    for v_budget in select scope, key from spend_budgets order by scope, key loop
        perform job_queue_seed_spend(v_budget.scope, v_budget.key);
    end loop;
    if job_queue_release_all_held() > 0 then
        perform job_queue_wake();
    end if;
    return null;
end;
$$;

create trigger job_queue_settings_budget_zone
after update of budget_time_zone on job_queue_settings
for each row when (old.budget_time_zone is distinct from new.budget_time_zone)
execute function job_queue_budget_zone_changed();

-- Adds one call's cost to a budget's counter, in the period the call falls in (the first call
-- of a new period starts it afresh).
create function job_queue_count_spend(p_scope text, p_key text, p_usd numeric,
                                      p_at timestamptz)
    returns void
language plpgsql
set search_path = pg_catalog, public, pg_temp
set jit = off
as $$
declare
    v_period interval;
    v_starts timestamptz;
begin
    select period into v_period from spend_budgets where scope = p_scope and key = p_key;
    if not found and p_scope = 'group' and p_key <> '' then
        select period into v_period from spend_budgets where scope = 'group' and key = '*';
    end if;
    if v_period is null then
        return;
    end if;
    v_starts := (spend_budget_window(v_period, p_at)).starts;
    insert into spend_counters as c (scope, key, starts, spent_usd)
    values (p_scope, p_key, v_starts, p_usd)
    on conflict (scope, key) do update
        set spent_usd = case when c.starts = excluded.starts then c.spent_usd + excluded.spent_usd
                             when c.starts < excluded.starts then excluded.spent_usd
                             else c.spent_usd end,
            starts = greatest(c.starts, excluded.starts);
end;
$$;

-- The ledger's trigger: a call's cost is counted against its budgets and taken off its job's
-- reservation, in the call's own transaction. The counters are locked in one order (group,
-- type, service) for each call; the processor records each call in a transaction of its own,
-- so two never deadlock (a backfill inserting many calls in one transaction beside the
-- processors may: insert such rows one per transaction, or with no budget set).
create function job_queue_spend_recorded() returns trigger
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
set jit = off
as $$
declare
    v_group text;
    v_type text;
begin
    -- Whose call it was, kept on the call: a job pruned later takes its group and type with it.
    select coalesce(j.concurrency_key, j.user_id, new.user_id, ''), j.job_type
    into v_group, v_type
    from job_queue j where j.id = new.job_id;
    if not found then
        v_group := coalesce(new.user_id, '');
    end if;
    new.group_key := coalesce(new.group_key, v_group);
    new.job_type := coalesce(new.job_type, v_type);
    v_group := new.group_key;
    v_type := new.job_type;
    -- The lock: a budget being set (its seed, under the lock exclusively) either sees this
    -- call in the ledger or is seen by it.
    perform pg_advisory_xact_lock_shared(hashtext('processor:spend'));
    if not exists (select 1 from spend_budgets) then
        return new;
    end if;
    if new.cost_usd > 0 then
        update job_queue set budget_reserved = greatest(budget_reserved - new.cost_usd, 0)
        where id = new.job_id and status = 'processing' and budget_reserved > 0;
    end if;
    perform job_queue_count_spend('group', v_group, new.cost_usd, new.created_at);
    if v_type is not null then
        perform job_queue_count_spend('type', v_type, new.cost_usd, new.created_at);
    end if;
    perform job_queue_count_spend('service', '*', new.cost_usd, new.created_at);
    return new;
end;
$$;

create trigger provider_calls_spend
before insert on provider_calls
for each row execute function job_queue_spend_recorded();

-- The ledger's price of a whole job per type (job_type_costs), from the last 5,000 finished
-- jobs: the 90th percentile of what each completed one cost over all its attempts, its
-- children's calls included. The processors run it once a minute, and a budget set runs it.
create function job_queue_refresh_type_costs() returns integer
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
set jit = off
as $$
declare
    v_count integer;
begin
    if not pg_try_advisory_xact_lock(hashtext('processor:type_costs')) then
        return 0;
    end if;
    with recent as (
        select id, job_type, depends_on from job_queue
        where completed_at is not null
        order by completed_at desc
        limit 5000
    ),
    costs as (
        select r.job_type,
               coalesce((select sum(c.cost_usd) from provider_calls c where c.job_id = r.id), 0)
               + coalesce((select sum(c.cost_usd) from job_queue k
                           join provider_calls c on c.job_id = k.id
                           where k.id = any (r.depends_on) and k.parent_id = r.id), 0) as usd
        from recent r
        join job_queue q on q.id = r.id and q.status = 'completed'
    )
    insert into job_type_costs (job_type, usd, jobs, computed_at)
    select job_type, percentile_disc(0.9) within group (order by usd), count(*), now()
    from costs
    group by job_type
    on conflict (job_type) do update
        set usd = excluded.usd, jobs = excluded.jobs, computed_at = excluded.computed_at;
    get diagnostics v_count = row_count;
    return v_count;
end;
$$;

-- What a job is expected to cost before it runs: its type's price for a whole job (else the
-- ledger's, job_type_costs), scaled to what is left of it to make (its checkpoints: images and
-- A+ already stored, its children's included); null: no estimate.
create or replace function job_estimated_cost(p_job_id uuid) returns numeric
language sql stable
as $$
    select f.est from job_queue_budget_fit(array[p_job_id]) f
$$;
-- The images and A+ documents a job has stored, its children's included (p_depends_on: the
-- job's depends_on, its children among them): what a claim estimates each job with, in one
-- statement planned once per session.
create function job_items_stored(p_job_id uuid, p_depends_on uuid[]) returns integer
language plpgsql stable
as $$
declare
    v_ids uuid[] := p_job_id || array(select c.id from job_queue c
                                      where c.id = any (p_depends_on) and c.parent_id = p_job_id);
begin
    return (select count(*) from generated_images i where i.job_id = any (v_ids))::integer
         + (select count(*) from aplus_contents a where a.job_id = any (v_ids))::integer;
end;
$$;

-- Why a job does not fit a budget, in words; null when it fits (or falls under none).
create function job_queue_budget_reason(p_job_id uuid, p_group text, p_job_type text)
    returns text
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
set enable_seqscan = off  -- the running jobs by job_queue_running_idx, whatever the statistics
set jit = off
as $$
declare
    v_scopes text[] := array['group', 'type', 'service'];
    v_names text[] := array[p_group, p_job_type, '*'];
    v_left record;
    v_room numeric;
    v_est numeric;
    v_zone text := coalesce((select budget_time_zone from job_queue_settings where id), 'UTC');
    v_running integer;
    v_blind boolean;
    i integer;
begin
    v_est := job_estimated_cost(p_job_id);
    for i in 1 .. 3 loop
        select * into v_left from job_queue_budget_left(v_scopes[i], v_names[i]);
        continue when v_left.budget is null;
        v_room := v_left.budget - v_left.spent - v_left.reserved;
        select count(*) filter (where q.budget_reserved > 0),
               coalesce(bool_or(q.budget_reserved is not null and q.budget_estimate is null),
                        false)
        into v_running, v_blind
        from job_queue q
        where q.status = 'processing' and q.id <> p_job_id
          and case v_scopes[i]
                  when 'group' then coalesce(q.concurrency_key, q.user_id, '') = p_group
                  when 'type' then q.job_type = p_job_type
                  else true end;
        continue when job_queue_budget_fits(v_room, v_blind, v_est);
        return format('%s budget: $%s of $%s spent %s%s%s; %s',
            case v_scopes[i] when 'group' then p_group || '''s'
                             when 'type' then 'job type ' || p_job_type || '''s'
                             else 'the service''s' end,
            to_char(v_left.spent + v_left.reserved, 'FM999999990.00'),
            to_char(v_left.budget, 'FM999999990.00'),
            case v_left.period when interval '1 hour' then 'this hour'
                               when interval '1 day' then 'today'
                               when interval '7 days' then 'this week'
                               else 'this month' end,
            case when v_left.reserved > 0
                 then format(' ($%s of it reserved by %s running %s)',
                             to_char(v_left.reserved, 'FM999999990.00'), v_running,
                             case when v_running = 1 then 'job' else 'jobs' end)
                 else '' end,
            case when v_room <= 0 then ''
                 when v_est is null
                     then '; this job has no estimate, and one without an estimate is running'
                          ' under it (they start one at a time)'
                 else format('; this job needs about $%s', to_char(v_est, 'FM999999990.00')) end,
            case when v_est > v_left.budget
                     then 'that is more than the whole budget: raise the budget or check the'
                          ' price of ' || p_job_type
                 else 'resets at ' || to_char(v_left.resets at time zone v_zone,
                          case when v_left.resets - now() <= interval '1 day' then 'HH24:MI'
                               else 'YYYY-MM-DD HH24:MI' end) || ' ' || v_zone end);
    end loop;
    return null;
end;
$$;
-- A group whose budget has no room for its next job of a type: its jobs of that type in line
-- are held (out of line, as at a cap; those another transaction has locked stay, and are passed
-- over), and the budget noted as reached. Planned for job_queue_group_turn_idx whatever the
-- statistics say (before any hold they say no group has many jobs, and the type's whole line
-- was read instead: 3 ms a hold with 40,000 jobs in line).
create function job_queue_hold_for_budget(p_group text, p_job_type text, p_except uuid[])
    returns void
language plpgsql
set enable_seqscan = off
set enable_sort = off
set jit = off
as $$
begin
    update job_queue set turn = '-infinity'
    where id in (select id from job_queue
                 where status = 'pending' and turn > '-infinity' and turn <> 'infinity'
                   and coalesce(concurrency_key, user_id, '') = p_group
                   and job_type = p_job_type
                   and id <> all (p_except)
                 order by priority, turn
                 for update skip locked);
    perform job_queue_budget_note_held('group', p_group);
end;
$$;

-- As in 0001, and a job that stops running holds nothing of its budgets any more (what its
-- calls cost stays counted in spend_counters).
create or replace function job_queue_touch() returns trigger
language plpgsql
as $$
begin
    new.updated_at := now();
    if old.status = 'processing' and new.status <> 'processing' then
        new.budget_reserved := null;
    end if;
    return new;
end;
$$;

-- As in 0022, and what the pick reserved for the jobs it took under a budget is written in
-- the update that starts them (budget_reserved: the estimate, 0 for a job without one;
-- budget_estimate: the estimate). The pick hands it over in a setting of the transaction,
-- processor.reserving, set only when budgets are in force and cleared here.
create or replace function claim_jobs(p_worker text, p_limit integer default 1,
                                      p_job_types text[] default null,
                                      p_lease interval default '1 minute')
    returns setof job_queue
language plpgsql
set plan_cache_mode = force_generic_plan
set jit = off
set enable_sort = off
as $$
declare
    v_ids uuid[];
    v_reserving jsonb;
begin
    -- A limit of 0 (or null, or less) claims nothing: it is how a caller says it has no room.
    if coalesce(p_limit, 0) <= 0 then
        return;
    end if;
    v_ids := job_queue_pick(p_limit, p_job_types);
    -- (v_ids: rows the pick locked while pending; by key alone, as in 0022)
    v_reserving := nullif(current_setting('processor.reserving', true), '')::jsonb;
    if v_reserving is null then
        -- (budget_reserved: whatever a row was written with, a job starts holding nothing)
        return query
        with claimed as (
            update job_queue j
            set status = 'processing',
                locked_by = p_worker,
                locked_until = now() + p_lease,
                lease_token = gen_random_uuid(),
                processed_at = now(),
                budget_reserved = null
            where j.id = any (v_ids)
            returning j.*
        )
        select * from claimed order by priority desc, run_at, created_at;
        return;
    end if;
    perform set_config('processor.reserving', '', true);
    return query
    with claimed as (
        update job_queue j
        set status = 'processing',
            locked_by = p_worker,
            locked_until = now() + p_lease,
            lease_token = gen_random_uuid(),
            processed_at = now(),
            budget_reserved = case when v_reserving ? j.id::text
                                   then greatest(coalesce((v_reserving ->> j.id::text)::numeric,
                                                          0), 0) end,
            budget_estimate = (v_reserving ->> j.id::text)::numeric
        where j.id = any (v_ids)
        returning j.*
    )
    select * from claimed order by priority desc, run_at, created_at;
end;
$$;

-- The common case with budgets set and no cap or pause: the lowest turns, as the one-statement
-- claim reads them, each job reserved within its budgets (job_queue_budget_take) by the
-- claimer that holds processor:caps. A job whose group's budget has no room for it holds the
-- group's jobs of its type (out of line, as at a cap) and the claim reads on, further each
-- round, eight rounds at most. fallback: not the counting claimer, or a type's or the service's budget is without room
-- (what this call reserved is given back): the general path decides.
create function job_queue_pick_within_budgets(
    p_limit integer, out ids uuid[], out types text[], out prio integer[],
    out turns double precision[], out fallback boolean
)
language plpgsql
as $$
declare
    v_timeout text;
    v_passed uuid[] := '{}';
    v_held text[] := '{}';  -- (group, type) pairs this call held: their other rows are passed
    v_got uuid[];
    v_got_types text[];
    v_got_prio integer[];
    v_got_turns double precision[];
    v_got_groups text[];
    v_est numeric[];
    v_budgeted boolean[];
    v_blocked text[];
    v_reserving jsonb := '{}';  -- what this call reserves: {job id: estimate}
    v_reserve_groups text[] := '{}';  -- (and for the rounds after: the jobs' groups, ...)
    v_reserve_types text[] := '{}';
    v_reserve_est numeric[] := '{}';
    v_rounds integer := 0;
    v_extra integer := 0;  -- rows read past the limit (after a round that held groups)
    v_started timestamptz := clock_timestamp();
    v_holding boolean;
    i integer;
begin
    ids := '{}'; types := '{}'; prio := '{}'; turns := '{}'; fallback := false;
    if not pg_try_advisory_xact_lock(hashtext('processor:caps')) then
        v_timeout := current_setting('lock_timeout');
        begin
            perform set_config('lock_timeout', '100ms', true);
            perform pg_advisory_xact_lock(hashtext('processor:caps'));
            perform set_config('lock_timeout', v_timeout, true);
        exception when lock_not_available then
            fallback := true;
            return;
        end;
    end if;
    loop
        select coalesce(array_agg(id), '{}'), coalesce(array_agg(job_type), '{}'),
               coalesce(array_agg(priority), '{}'), coalesce(array_agg(turn), '{}'),
               coalesce(array_agg(g), '{}')
        into v_got, v_got_types, v_got_prio, v_got_turns, v_got_groups
        from (select id, job_type, priority, turn, coalesce(concurrency_key, user_id, '') as g
              from job_queue
              where status = 'pending' and turn > '-infinity' and turn <> 'infinity'
                and run_at <= now() and id <> all (ids) and id <> all (v_passed)
              order by priority desc, turn
              limit p_limit - cardinality(ids) + v_extra
              for update skip locked) s;
        exit when cardinality(v_got) = 0;
        v_holding := false;
        select array_agg(f.est), array_agg(f.budgeted), array_agg(f.blocked)
        into v_est, v_budgeted, v_blocked
        from job_queue_budget_fit(v_got, v_reserve_groups, v_reserve_types, v_reserve_est) f;
        for i in 1 .. cardinality(v_got) loop
            -- (rows past the claim's limit were read to hold more groups that do not fit; the
            -- first one that would be taken ends the round)
            exit when cardinality(ids) >= p_limit;
            if jsonb_build_array(v_got_groups[i], v_got_types[i])::text = any (v_held) then
                v_passed := v_passed || v_got[i];
                continue;
            end if;
            if v_blocked[i] is null then
                ids := ids || v_got[i];
                types := types || v_got_types[i];
                prio := prio || v_got_prio[i];
                turns := turns || v_got_turns[i];
                if v_budgeted[i] then
                    v_reserve_groups := v_reserve_groups || v_got_groups[i];
                    v_reserve_types := v_reserve_types || v_got_types[i];
                    v_reserve_est := v_reserve_est || v_est[i];
                    v_reserving := v_reserving
                                   || jsonb_build_object(v_got[i]::text, v_est[i]);
                end if;
            elsif v_blocked[i] = 'group' then
                perform job_queue_hold_for_budget(v_got_groups[i], v_got_types[i], ids);
                v_held := v_held || jsonb_build_array(v_got_groups[i], v_got_types[i])::text;
                v_passed := v_passed || v_got[i];
                v_holding := true;  -- (rows passed: another round may find more)
            else
                fallback := true;  -- nothing reserved yet: the general path starts afresh
                return;
            end if;
        end loop;
        v_rounds := v_rounds + 1;
        -- (a round that held nothing read every job in line it could.) A round that held
        -- groups reads further the next time, for 50 ms of holding at most: a line led by
        -- many groups over their budget (a period's first claims after a default budget
        -- filled) is held in fewer claims, and the groups behind them start sooner.
        exit when cardinality(ids) >= p_limit or v_rounds >= 8 or not v_holding
                  or clock_timestamp() - v_started > interval '50 milliseconds';
        v_extra := least(2 * v_extra + 32, 256);
    end loop;
    -- The reservations go to claim_jobs, which writes them in the update that starts the jobs.
    perform set_config('processor.reserving', v_reserving::text, true);
end;
$$;

-- As in 0023, and: with budgets and nothing else in force, job_queue_pick_within_budgets;
-- a budget's period that reset puts the held jobs back in line (as the periodic rebuild does;
-- a group still without room stays held and notes its next reset); budgets are counted work,
-- taken by the claimer that holds processor:caps.
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
    v_budgeted boolean;
    v_fallback boolean;
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
    select st.fair_share, l.limited, l.budgeted,
           (select sc.rebuilt_at <= now() - st.rebuild_every or sc.budget_resets_at <= now()
            from job_queue_scheduler sc),
           exists (select 1 from job_queue
                   where status = 'pending' and turn is null and run_at <= now())
    into v_fair, v_limited, v_budgeted, v_release, v_unplaced
    from job_queue_settings st cross join job_queue_limited l where st.id;

    v_fallback := true;
    if p_job_types is null and v_fair and not (v_limited or v_release or v_unplaced) then
        if not v_budgeted then
            -- The common case: nothing to place, count, release or skip (with no cap and no
            -- pause in force no type is out of line). The lowest turns, one statement.
            select array_agg(id), array_agg(job_type), array_agg(priority), array_agg(turn)
            into v_ids, v_types, v_prio, v_turns
            from (select id, job_type, priority, turn from job_queue
                  where status = 'pending' and turn > '-infinity' and turn <> 'infinity'
                    and run_at <= now()
                  order by priority desc, turn
                  limit p_limit
                  for update skip locked) s;
            v_fallback := false;
        else
            -- Budgets and nothing else: the same lowest turns, each reserved or its group held
            -- (or, at a type's or the service's budget, the general path below).
            select b.ids, b.types, b.prio, b.turns, b.fallback
            into v_ids, v_types, v_prio, v_turns, v_fallback
            from job_queue_pick_within_budgets(p_limit) b;
        end if;
    end if;
    if v_fallback then
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
            update job_queue_scheduler set rebuilt_at = now(), budget_resets_at = 'infinity'
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
        end if;
        if v_capped or v_budgeted then
            -- Caps and budgets are counted by one claimer at a time; one that cannot take the
            -- lock within 100 ms (another sits in an open transaction) takes only work without
            -- a cap or a budget.
            v_counting := pg_try_advisory_xact_lock(hashtext('processor:caps'));
            if not v_counting then
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
        end if;
        if v_limited then
            -- Read after the lock that counts them: a cap lowered meanwhile is the cap it holds.
            select coalesce(jsonb_object_agg(job_type, max_running), '{}') into v_type_caps
            from job_type_limits where max_running is not null;
        end if;

        if not coalesce(v_fair, true) then
            return job_queue_pick_in_order(p_limit, p_job_types, v_paused,
                                           v_capped or v_budgeted, v_counting, v_type_caps);
        elsif v_capped or v_budgeted or p_job_types is not null then
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

-- As in 0019, with budgets: see job_queue_budget_take.
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
    v_budgets boolean := exists (select 1 from spend_budgets);
    v_budget jsonb := '{}';  -- what is left of each budget met (job_queue_budget_take)
    v_blocked text;
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
    if not v_group_caps and not v_budgets then
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
            if v_budgets and not p_counting and job_queue_budgeted(v_row.g, v_row.job_type) then
                v_passed := v_passed || v_row.id;  -- and so is budgeted work
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
            if v_budgets then
                select b.state, b.blocked into v_budget, v_blocked
                from job_queue_budget_take(v_row.id, v_row.g, v_row.job_type, v_budget) b;
                if v_blocked = 'group' then
                    -- Its group's budget has no room for it: the group's jobs of this type in
                    -- line are held, as at a cap, until the budget is raised or resets, or a
                    -- job of the group ends (job_queue_release_held checks the budget).
                    perform job_queue_hold_for_budget(v_row.g, v_row.job_type, ids);
                    v_passed := v_passed || v_row.id;
                    v_moved := true;
                    continue;
                elsif v_blocked is not null then
                    -- Its type's or the service's budget: the type is done for this call.
                    perform job_queue_budget_note_held(
                        v_blocked, case v_blocked when 'type' then v_row.job_type else '*' end);
                    v_types := array_remove(v_types, v_row.job_type);
                    v_moved := true;
                    continue;
                end if;
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
    if v_budgets then
        perform set_config('processor.reserving', coalesce(v_budget -> 'r', '{}')::text, true);
    end if;
end;
$$;

-- As in 0016, with budgets.
create or replace function job_queue_pick_in_order(
    p_limit integer, p_job_types text[], p_paused text[], p_capped boolean,
    p_counting boolean, p_type_caps jsonb
) returns uuid[]
language plpgsql as $$
declare
    v_ids uuid[] := '{}';
    v_row record;
    v_counts jsonb := '{}';  -- running + taken, per 'g:<group>' and 't:<type>'
    v_cap integer;
    v_group_caps boolean;
    v_budgets boolean := exists (select 1 from spend_budgets);
    v_budget jsonb := '{}';
    v_blocked text;
    v_out_groups text[] := '{}';  -- groups and types a budget stopped in this call
    v_out_types text[] := '{}';
    v_outs integer := 0;  -- how many of those the round began with
    v_rounds integer := 0;
    v_stop boolean := false;
begin
    if not p_capped then
        select coalesce(array_agg(id), '{}') into v_ids from (
            select id from job_queue
            where status = 'pending' and run_at <= now()
              and (p_job_types is null or job_type = any (p_job_types))
              and job_type <> all (p_paused)
            order by priority desc, run_at, created_at
            limit p_limit
            for update skip locked) s;
        return v_ids;
    end if;
    v_group_caps := exists (select 1 from job_concurrency_limits where max_running is not null);
    -- Rounds: a round that met a budget without room reads again without that group or type
    -- (a seller's thousand jobs over its budget do not hide the next seller's), eight at most.
    -- (In one global order nothing is held: a claim reads past the jobs over their budgets.)
    <<rounds>>
    loop
        v_outs := cardinality(v_out_groups) + cardinality(v_out_types);
        v_rounds := v_rounds + 1;
        for v_row in
            select id, job_type, coalesce(concurrency_key, user_id, '') as group_key
            from job_queue
            where status = 'pending' and run_at <= now()
              and (p_job_types is null or job_type = any (p_job_types))
              and job_type <> all (p_paused)
              and job_type <> all (v_out_types)
              and coalesce(concurrency_key, user_id, '') <> all (v_out_groups)
              and id <> all (v_ids)
            order by priority desc, run_at, created_at
            limit 1000 + 4 * p_limit
        loop
            continue when v_row.group_key = any (v_out_groups)
                          or v_row.job_type = any (v_out_types);
            v_cap := case when v_group_caps then job_group_cap(v_row.group_key) end;
            continue when not p_counting
                          and (v_cap is not null or p_type_caps ? v_row.job_type
                               or v_budgets
                                  and job_queue_budgeted(v_row.group_key, v_row.job_type));
            if v_cap is not null then
                if not v_counts ? ('g:' || v_row.group_key) then
                    v_counts := v_counts || jsonb_build_object('g:' || v_row.group_key,
                                                               job_group_running(v_row.group_key));
                end if;
                continue when (v_counts ->> ('g:' || v_row.group_key))::integer >= v_cap;
            end if;
            v_cap := (p_type_caps ->> v_row.job_type)::integer;
            if v_cap is not null then
                if not v_counts ? ('t:' || v_row.job_type) then
                    v_counts := v_counts || jsonb_build_object('t:' || v_row.job_type,
                                                               job_type_running(v_row.job_type));
                end if;
                continue when (v_counts ->> ('t:' || v_row.job_type))::integer >= v_cap;
            end if;
            perform 1 from job_queue
            where id = v_row.id and status = 'pending'
            for update skip locked;
            continue when not found;
            if v_budgets then
                -- In one global order a job over its budget is passed over (no group is held), and
                -- the rest of its group (or type) in this call with it, unread; the service's
                -- budget ends the call.
                select b.state, b.blocked into v_budget, v_blocked
                from job_queue_budget_take(v_row.id, v_row.group_key, v_row.job_type, v_budget) b;
                if v_blocked is not null then
                    perform job_queue_budget_note_held(
                        v_blocked, case v_blocked when 'group' then v_row.group_key
                                                  when 'type' then v_row.job_type else '*' end);
                    if v_blocked = 'service' then
                        v_stop := true;
                        exit;
                    end if;
                    if v_blocked = 'group' then
                        v_out_groups := v_out_groups || v_row.group_key;
                    else
                        v_out_types := v_out_types || v_row.job_type;
                    end if;
                    continue;
                end if;
            end if;
            v_ids := v_ids || v_row.id;
            v_counts := v_counts
                || jsonb_build_object('g:' || v_row.group_key,
                       coalesce((v_counts ->> ('g:' || v_row.group_key))::integer, 0) + 1)
                || jsonb_build_object('t:' || v_row.job_type,
                       coalesce((v_counts ->> ('t:' || v_row.job_type))::integer, 0) + 1);
            exit when cardinality(v_ids) >= p_limit;
        end loop;
        exit rounds when v_stop or cardinality(v_ids) >= p_limit or v_rounds >= 8
                         or cardinality(v_out_groups) + cardinality(v_out_types) = v_outs;
    end loop rounds;
    if v_budgets then
        perform set_config('processor.reserving', coalesce(v_budget -> 'r', '{}')::text, true);
    end if;
    return v_ids;
end;
$$;
-- As in 0025, and a job that does not fit a budget says which, with the figures.
create or replace function job_wait_reason(p_job_id uuid) returns text
    language plpgsql stable
as $$
declare
    v_job job_queue;
    v_group text;
    v_cap integer;
    v_running integer;
    v_list text;
begin
    select * into v_job from job_queue where id = p_job_id;
    if not found or v_job.status not in ('pending', 'waiting') then
        return null;
    end if;
    if v_job.status = 'waiting' then
        select string_agg(format('%s %s (%s)', coalesce(d.node_name, d.job_type),
                                 left(d.id::text, 8), d.status), ', ' order by u.n)
        into v_list
        from (select * from unnest(v_job.depends_on) with ordinality u(id, n)) u
        join job_queue d on d.id = u.id
        where d.status in ('pending', 'processing', 'waiting')
          and u.n in (select u2.n from unnest(v_job.depends_on) with ordinality u2(id, n)
                      join job_queue d2 on d2.id = u2.id
                      where d2.status in ('pending', 'processing', 'waiting')
                      order by u2.n limit 3);
        return format('waiting for %s of its %s dependencies: %s%s',
                      coalesce(v_job.waiting_on, 0), cardinality(v_job.depends_on),
                      coalesce(v_list, 'none unfinished (the reaper will release it)'),
                      case when coalesce(v_job.waiting_on, 0) > 3 then ', …' else '' end);
    end if;
    v_group := coalesce(v_job.concurrency_key, v_job.user_id, '');
    if v_job.run_at > now() then
        return format('not due yet: due at %s', to_char(v_job.run_at at time zone 'UTC',
                                                        'YYYY-MM-DD HH24:MI:SS "UTC"'));
    end if;
    if exists (select 1 from job_type_limits where job_type = v_job.job_type
               and paused_at is not null) then
        return format('job type %s is paused (resume_job_type or processor resume)',
                      v_job.job_type);
    end if;
    select max_running into v_cap from job_type_limits where job_type = v_job.job_type;
    v_running := job_type_running(v_job.job_type);
    if v_cap is not null and v_running >= v_cap then
        return format('job type %s is at its cap: %s of %s running', v_job.job_type,
                      v_running, v_cap);
    end if;
    v_cap := job_group_cap(v_group);
    v_running := job_group_running(v_group);
    if v_cap is not null and v_running >= v_cap then
        return format('its group %s is at its cap: %s of %s running',
                      case when v_group = '' then '(none)' else v_group end, v_running, v_cap);
    end if;
    v_list := job_queue_budget_reason(v_job.id, v_group, v_job.job_type);
    if v_list is not null then
        return v_list;
    end if;
    if v_job.turn = '-infinity' then
        return format('held with its group''s other jobs, which did not fit its cap or budget: '
                      'back in line when a job of the group ends, or within %s',
                      (select rebuild_every from job_queue_settings where id));
    end if;
    return 'due: waiting for a free processor slot';
end;
$$;
-- As in 0018/0020, and a group whose budget has no room for its next held job stays held (its
-- reset noted for the claims), so a group held by its budget costs the periodic release one
-- estimate and no placing; raising the budget, its reset or a job of the group ending
-- releases it.
create or replace function job_queue_release_held(p_group text) returns integer
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
set jit = off
set enable_sort = off  -- its group's held jobs in job_queue_held_idx's order (see release_freed)
as $$
declare
    v_cap integer := job_group_cap(p_group);
    v_room integer;
    v_left record;
    v_usd numeric;
begin
    v_room := v_cap - job_group_running(p_group);  -- null without a cap: no limit below
    if v_room <= 0 then
        return 0;
    end if;
    if exists (select 1 from spend_budgets where scope = 'group') then
        select * into v_left from job_queue_budget_left('group', p_group);
        v_usd := v_left.budget - v_left.spent - v_left.reserved;
        -- The next held job of each type (held jobs of several types are held together): the
        -- group stays held while none of them fits (one without an estimate fits any room).
        if v_usd <= 0
           or v_usd < (select min(coalesce(job_estimated_cost(n.id), 0))
                       from (select distinct on (q.job_type) q.id from job_queue q
                             where q.status = 'pending' and q.turn = '-infinity'
                               and coalesce(q.concurrency_key, q.user_id, '') = p_group
                             order by q.job_type, q.priority desc, q.run_at, q.created_at) n)
        then
            update job_queue_scheduler set budget_resets_at = v_left.resets
            where budget_resets_at > v_left.resets;
            return 0;
        end if;
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

-- As in 0018, and with a budget set, a group is released under the same lock as a capped
-- one (a job that stops running gives back what is left of its reservation: job_queue_touch).
create or replace function job_queue_release_freed() returns trigger
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
set enable_sort = off
as $$
declare
    v_group text := coalesce(new.concurrency_key, new.user_id, '');
    v_timeout text := current_setting('lock_timeout');
    v_limited boolean;
    v_budgeted boolean;
begin
    select limited, budgeted into v_limited, v_budgeted from job_queue_limited;
    if not (v_limited or v_budgeted) then
        return null;
    end if;
    if (v_budgeted or v_limited and job_group_cap(v_group) is not null)
       and not pg_try_advisory_xact_lock_shared(hashtext('processor:caps')) then
        begin
            perform set_config('lock_timeout', '100ms', true);
            perform pg_advisory_xact_lock_shared(hashtext('processor:caps'));
            perform set_config('lock_timeout', v_timeout, true);
        exception when lock_not_available then
            return null;
        end;
    end if;
    -- In job_queue_held_idx's order, sorting off: with statistics taken before any job was
    -- held, the planner otherwise read job_queue_held_type_idx and sorted, which reads every
    -- held job of every group (6 ms a completion with 20,000 jobs held).
    perform 1 from job_queue
    where status = 'pending' and turn = '-infinity'
      and coalesce(concurrency_key, user_id, '') = v_group
    order by priority desc, run_at, created_at
    limit 1;
    if found then
        perform job_queue_release_held(v_group);
    end if;
    return null;
end;
$$;

-- As in 0017, and job_queue_limited.budgeted says whether a budget is set.
create or replace function job_queue_note_limits() returns trigger
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
as $$
begin
    perform pg_advisory_xact_lock(hashtext('processor:limited'));
    update job_queue_limited
    set limited = exists (select 1 from job_type_limits
                          where paused_at is not null or max_running is not null)
                  or exists (select 1 from job_concurrency_limits where max_running is not null),
        budgeted = exists (select 1 from spend_budgets);
    return null;
end;
$$;

create trigger spend_budgets_noted
after insert or update or delete or truncate on spend_budgets
for each statement execute function job_queue_note_limits();

update job_queue_limited set budgeted = exists (select 1 from spend_budgets);

-- As in 0026, and a budget set, changed or removed takes effect at once: under
-- processor:limits (claims in flight end first, as for a cap), its counter is seeded from the
-- ledger, and the groups it held are released when it has room.
create or replace function job_queue_set_budget(p_what text, p_scope text, p_key text,
                                                p_usd numeric, p_period interval)
    returns void
language plpgsql
set search_path = pg_catalog, public, pg_temp
as $$
begin
    if p_key is null or length(p_key) not between 1 and 200 then
        raise exception '%: the key must be 1 to 200 characters', p_what using errcode = '22023';
    end if;
    if p_usd is not null and (p_usd < 0 or p_usd > 1e9) then
        raise exception '%: usd must be a number from 0 to 1000000000, got %', p_what, p_usd
            using errcode = '22023';
    end if;
    perform job_queue_lock_limits(p_what);
    if p_usd is null then
        delete from spend_budgets where scope = p_scope and key = p_key;
    else
        insert into spend_budgets (scope, key, usd, period)
        values (p_scope, p_key, p_usd, job_queue_budget_period(p_what, p_period))
        on conflict (scope, key) do update
            set usd = excluded.usd, period = excluded.period, updated_at = now();
    end if;
    perform job_queue_seed_spend(p_scope, p_key);
    perform job_queue_refresh_type_costs();  -- the ledger's estimates, from the first claim on
    if (case when p_scope = 'group' and p_key <> '*' then job_queue_release_held(p_key)
             when p_scope = 'group' then job_queue_release_all_held()
             else 0 end) > 0
       or p_scope <> 'group' then
        perform job_queue_wake();  -- what it let through starts now, not at the next tick
    end if;
end;
$$;

-- As in 0020, and a job under a budget starts only if its estimate fits (reserved here).
create or replace function mark_job_processing(p_job_id uuid, p_worker text,
                                               p_lease interval default '1 minute')
    returns setof job_queue
language plpgsql
set plan_cache_mode = force_generic_plan
set jit = off
as $$
declare
    v_job job_queue;
    v_group text;
    v_cap integer;
    v_timeout text;
    v_blocked text;
    v_limited boolean;
    v_budgeted boolean;
    v_est numeric;
    v_under_budget boolean := false;
begin
    select * into v_job from job_queue where id = p_job_id and status = 'pending' for update;
    if not found or v_job.run_at > now() then
        return;
    end if;
    -- As a claim: the limits lock before the limits are read (a cap committed meanwhile is
    -- seen), 100 ms at most for each lock, else nothing starts now (the job stays pending), so
    -- a claim left open elsewhere never makes this call hang.
    v_timeout := current_setting('lock_timeout');
    if not pg_try_advisory_xact_lock_shared(hashtext('processor:limits')) then
        begin
            perform set_config('lock_timeout', '100ms', true);
            perform pg_advisory_xact_lock_shared(hashtext('processor:limits'));
            perform set_config('lock_timeout', v_timeout, true);
        exception when lock_not_available then
            return;
        end;
    end if;
    select limited, budgeted into v_limited, v_budgeted from job_queue_limited;
    if v_limited or v_budgeted then
        if exists (select 1 from job_type_limits
                   where job_type = v_job.job_type and paused_at is not null) then
            return;
        end if;
        v_group := coalesce(v_job.concurrency_key, v_job.user_id, '');
        begin
            perform set_config('lock_timeout', '100ms', true);
            perform pg_advisory_xact_lock(hashtext('processor:caps'));
            perform set_config('lock_timeout', v_timeout, true);
        exception when lock_not_available then
            return;
        end;
        v_cap := job_group_cap(v_group);
        if v_cap is not null and job_group_running(v_group) >= v_cap then
            return;
        end if;
        select max_running into v_cap from job_type_limits where job_type = v_job.job_type;
        if v_cap is not null and job_type_running(v_job.job_type) >= v_cap then
            return;
        end if;
        if v_budgeted then
            select b.blocked, b.est, b.budgeted into v_blocked, v_est, v_under_budget
            from job_queue_budget_take(v_job.id, v_group, v_job.job_type, '{}') b;
            if v_blocked is not null then
                perform job_queue_budget_note_held(
                    v_blocked, case v_blocked when 'group' then v_group
                                              when 'type' then v_job.job_type else '*' end);
                return;
            end if;
        end if;
    end if;
    return query
    update job_queue
    set status = 'processing',
        locked_by = p_worker,
        locked_until = now() + p_lease,
        lease_token = gen_random_uuid(),
        processed_at = now(),
        budget_reserved = case when v_under_budget then coalesce(v_est, 0) end,
        budget_estimate = case when v_under_budget then v_est else budget_estimate end
    where id = p_job_id and status = 'pending'
    returning *;
end;
$$;

-- Every budget with what is spent and reserved against it in its current period, and when it
-- resets; the default group budget (*) has a row of its own (no figures) and one per group it
-- covers that has spent in the period.
drop view spend_budgets_now;
create view spend_budgets_now with (security_invoker = on) as
select b.scope, b.key, b.usd as budget_usd, b.period, l.starts, l.resets,
       case when b.scope = 'group' and b.key = '*' then null else l.spent end as spent_usd,
       case when b.scope = 'group' and b.key = '*' then null else l.reserved end as reserved_usd,
       true as own
from spend_budgets b
cross join lateral job_queue_budget_left(b.scope, b.key) l
union all
select 'group', c.key, l.budget, l.period, l.starts, l.resets, l.spent, l.reserved, false
from spend_counters c
cross join lateral job_queue_budget_left('group', c.key) l
where c.scope = 'group' and l.own is false;
comment on view spend_budgets_now is
    'Every spend budget with what is spent (the ledger) and reserved (running jobs'' estimates) against it in its current period and when it resets; own false: a group under the default budget *.';

select processor_keep_private(array[
    'table spend_counters',
    'table spend_budget_reached',
    'table job_type_costs',
    'table spend_budgets_now',
    'function job_queue_budget_left(text, text)',
    'function job_queue_budgeted(text, text)',
    'function job_queue_budget_note_held(text, text)',
    'function job_queue_period_start(interval, text)',
    'function job_queue_budget_fit(uuid[], text[], text[], numeric[])',
    'function job_items_stored(uuid, uuid[])',
    'function job_queue_budget_fits(numeric, boolean, numeric)',
    'function job_queue_budget_take(uuid, text, text, jsonb)',
    'function job_queue_pick_within_budgets(integer)',
    'function job_queue_hold_for_budget(text, text, uuid[])',
    'function job_queue_spent_since(text, text, timestamptz, timestamptz)',
    'function job_queue_seed_spend(text, text)',
    'function job_queue_budget_zone_changed()',
    'function job_queue_count_spend(text, text, numeric, timestamptz)',
    'function job_queue_spend_recorded()',
    'function job_queue_refresh_type_costs()',
    'function job_queue_budget_reason(uuid, text, text)'
]);
