-- Credits, optional and exact. Off until `update job_queue_settings set credits_enabled = true`.
-- When on, a built-in job reserves its user's credits as it is inserted (enqueue_job and a plain
-- INSERT alike; refused when the balance is short, unless the account is unlimited), the
-- reservation is charged once when the job completes, and released when it ends failed or
-- cancelled (a retried job reserves again). Accounts and an append-only ledger; an account's
-- balance is the sum of its ledger, and credit_accounts.available caches that sum.

alter table job_queue_settings add column credits_enabled boolean not null default false;

create table credit_prices (
    job_type text primary key,
    credits  integer not null check (credits >= 0)
);

insert into credit_prices values
    ('generate-image', 1), ('generate-images', 1),
    ('generate-complete-pack', 6), ('generate-aplus', 6);

create table credit_accounts (
    user_id    text primary key,
    unlimited  boolean not null default false,
    available  integer not null default 0 check (available >= 0),
    created_at timestamptz not null default now()
);

create table credit_ledger (
    id         bigint generated always as identity primary key,
    user_id    text not null references credit_accounts (user_id),
    job_id     uuid,            -- no foreign key: the ledger outlives pruned jobs
    kind       text not null check (kind in ('grant', 'reserve', 'charge', 'release')),
    amount     integer not null check (amount >= 0),
    note       text,
    created_at timestamptz not null default now()
);

create index credit_ledger_job_idx on credit_ledger (job_id) where job_id is not null;
create index credit_ledger_user_idx on credit_ledger (user_id, id);

comment on table credit_ledger is
    'Append-only. available = grants - reserves + releases; a charge turns a reservation into '
    'spend.';

create function credit_ledger_append_only() returns trigger
language plpgsql as $$
begin
    raise exception 'credit_ledger is append-only: % refused', tg_op using errcode = '42501';
end;
$$;

create trigger credit_ledger_append_only
    before update or delete on credit_ledger
    for each statement execute function credit_ledger_append_only();

-- Every entry moves the cached balance in the same transaction.
create function credit_ledger_apply() returns trigger
language plpgsql as $$
begin
    update credit_accounts
    set available = available + case new.kind when 'grant' then new.amount
                                              when 'reserve' then -new.amount
                                              when 'release' then new.amount
                                              else 0 end
    where user_id = new.user_id;
    return null;
end;
$$;

create trigger credit_ledger_apply
    after insert on credit_ledger
    for each row execute function credit_ledger_apply();

-- What a job costs: its type's price, plus the A+ document a pack may include.
create function job_credit_cost(p_job_type text, p_payload jsonb) returns integer
language sql stable as $$
    select coalesce((select credits from credit_prices where job_type = p_job_type), 0)
         + case when p_job_type = 'generate-complete-pack'
                     and coalesce((p_payload ->> 'include_aplus')::boolean, false)
                then coalesce((select credits from credit_prices
                               where job_type = 'generate-aplus'), 0)
                else 0 end
$$;

-- The credits a job holds now: reserved, not yet charged or released.
create function job_credits_held(p_job_id uuid) returns integer
language sql stable as $$
    select coalesce(sum(case kind when 'reserve' then amount else -amount end), 0)::integer
    from credit_ledger
    where job_id = p_job_id and kind in ('reserve', 'charge', 'release')
$$;

create function credit_reserve(p_user_id text, p_job_id uuid, p_cost integer) returns void
language plpgsql as $$
declare
    v_account credit_accounts;
begin
    if p_user_id is null then
        raise exception 'credits are on: a built-in job needs a user_id to charge'
            using errcode = '22023';
    end if;
    -- The account row is the lock: concurrent enqueues of one user take turns here.
    select * into v_account from credit_accounts where user_id = p_user_id for update;
    if not found then
        raise exception 'insufficient credits: user % has no credit account (needs %)',
            p_user_id, p_cost using errcode = '53000';
    end if;
    if v_account.unlimited then
        return;
    end if;
    if v_account.available < p_cost then
        raise exception 'insufficient credits: user % has %, the job needs %',
            p_user_id, v_account.available, p_cost using errcode = '53000';
    end if;
    insert into credit_ledger (user_id, job_id, kind, amount) values
        (p_user_id, p_job_id, 'reserve', p_cost);
end;
$$;

create function job_queue_credits_on_insert() returns trigger
language plpgsql as $$
declare
    v_cost integer;
begin
    if not (select credits_enabled from job_queue_settings where id) then
        return null;
    end if;
    v_cost := job_credit_cost(new.job_type, new.payload);
    if v_cost > 0 then
        perform credit_reserve(new.user_id, new.id, v_cost);
    end if;
    return null;
end;
$$;

-- AFTER INSERT: an enqueue_job whose idempotency key already exists inserts nothing, and so
-- reserves nothing.
create trigger job_queue_credits_on_insert
    after insert on job_queue
    for each row execute function job_queue_credits_on_insert();

create function job_queue_credits_on_status() returns trigger
language plpgsql as $$
declare
    v_held integer;
    v_cost integer;
begin
    v_held := job_credits_held(new.id);
    if new.status = 'completed' and v_held > 0 then
        insert into credit_ledger (user_id, job_id, kind, amount)
        values (new.user_id, new.id, 'charge', v_held);
    elsif new.status in ('failed', 'cancelled') and v_held > 0 then
        insert into credit_ledger (user_id, job_id, kind, amount)
        values (new.user_id, new.id, 'release', v_held);
    elsif new.status = 'pending' and old.status in ('failed', 'cancelled')
          and (select credits_enabled from job_queue_settings where id) then
        v_cost := job_credit_cost(new.job_type, new.payload);
        if v_cost > 0 then
            perform credit_reserve(new.user_id, new.id, v_cost);  -- a retry pays again
        end if;
    end if;
    return null;
end;
$$;

-- Only jobs with a user can hold credits; the WHEN clause keeps every other status change free.
create trigger job_queue_credits_on_status
    after update of status on job_queue
    for each row
    when (new.user_id is not null and new.status is distinct from old.status
          and new.status in ('completed', 'failed', 'cancelled', 'pending'))
    execute function job_queue_credits_on_status();

-- Admin: add credits to an account (made on first use); returns what is available after.
create function grant_credits(p_user_id text, p_amount integer, p_note text default null)
returns integer
language plpgsql as $$
declare
    v_available integer;
begin
    if p_amount is null or p_amount <= 0 then
        raise exception 'grant_credits: amount must be positive' using errcode = '22023';
    end if;
    insert into credit_accounts (user_id) values (p_user_id) on conflict do nothing;
    insert into credit_ledger (user_id, kind, amount, note)
    values (p_user_id, 'grant', p_amount, p_note);
    select available into v_available from credit_accounts where user_id = p_user_id;
    return v_available;
end;
$$;

create function set_credits_unlimited(p_user_id text, p_unlimited boolean) returns void
language sql as $$
    insert into credit_accounts (user_id, unlimited) values (p_user_id, p_unlimited)
    on conflict (user_id) do update set unlimited = excluded.unlimited
$$;

-- The balance as the ledger says it, beside the cached one (they are always equal).
create view credit_balances with (security_invoker = on) as
select a.user_id, a.unlimited, a.available,
       coalesce(sum(l.amount) filter (where l.kind = 'grant'), 0) as granted,
       coalesce(sum(l.amount) filter (where l.kind = 'charge'), 0) as spent,
       coalesce(sum(l.amount) filter (where l.kind = 'reserve'), 0)
         - coalesce(sum(l.amount) filter (where l.kind in ('charge', 'release')), 0) as held,
       coalesce(sum(case l.kind when 'grant' then l.amount when 'reserve' then -l.amount
                                when 'release' then l.amount else 0 end), 0) as ledger_available
from credit_accounts a left join credit_ledger l using (user_id)
group by a.user_id, a.unlimited, a.available;

select processor_keep_private(array[
    'table credit_prices',
    'table credit_accounts',
    'table credit_ledger',
    'table credit_balances',
    'function credit_ledger_append_only()',
    'function credit_ledger_apply()',
    'function job_credit_cost(text, jsonb)',
    'function job_credits_held(uuid)',
    'function credit_reserve(text, uuid, integer)',
    'function job_queue_credits_on_insert()',
    'function job_queue_credits_on_status()',
    'function grant_credits(text, integer, text)',
    'function set_credits_unlimited(text, boolean)'
]);

-- While credits are off, the credit triggers are disabled, so they cost inserts and status
-- changes nothing; turning the setting on or off switches them (a short ACCESS EXCLUSIVE lock on
-- job_queue, once).
create function job_queue_settings_credits_switch() returns trigger
language plpgsql as $$
declare
    v_verb text := case when new.credits_enabled then 'enable' else 'disable' end;
begin
    if new.credits_enabled is distinct from old.credits_enabled then
        execute format('alter table job_queue %s trigger job_queue_credits_on_insert', v_verb);
        execute format('alter table job_queue %s trigger job_queue_credits_on_status', v_verb);
    end if;
    return null;
end;
$$;

create trigger job_queue_settings_credits_switch
    after update of credits_enabled on job_queue_settings
    for each row execute function job_queue_settings_credits_switch();

alter table job_queue disable trigger job_queue_credits_on_insert;
alter table job_queue disable trigger job_queue_credits_on_status;

select processor_keep_private(array['function job_queue_settings_credits_switch()']);
