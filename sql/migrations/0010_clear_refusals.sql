-- Odd values refused with a reason, and the states they used to leave behind repaired:
--
--   * run_at is a time from 1970 to 9999. infinity, -infinity, 4713 BC or year 294276 were
--     accepted before and made every read of the row fail (no client library holds them, and
--     now() - run_at is undefined for the infinite ones); rows that have one are moved to the
--     nearest bound, which keeps their order against every real time.
--   * job_type and user_id at most 200 characters, idempotency_key at most 500: longer ones
--     ended in "index row requires N bytes".
--   * enqueue_job takes its priority as bigint, so a value out of range is refused by name
--     instead of "function enqueue_job(…, bigint) does not exist".
--   * include_aplus that is not true or false is named when credits price a pack.
--   * a job failed by lease expiry says how many attempts it had, and its error entries say
--     when each started, like every other final failure.
--   * prune_jobs refuses a batch below 1 (it never ended) and negative ages (they deleted
--     jobs that had just finished).
--   * switching credits off releases what jobs still hold: with credits off nothing is
--     charged, and a hold that no trigger will settle would stay "held" for good.

update job_queue set run_at = '1970-01-01 00:00:00+00'
where run_at < '1970-01-01 00:00:00+00';
update job_queue set run_at = '9999-12-31 00:00:00+00'
where run_at >= '9999-12-31 00:00:00+00';

alter table job_queue
    add constraint job_queue_run_at_range
    check (run_at >= '1970-01-01 00:00:00+00' and run_at <= '9999-12-31 00:00:00+00');

create or replace function job_queue_check_row() returns trigger
language plpgsql security definer set search_path from current as $$
declare
    v_limits job_queue_settings;
    v_text text;
    v_bytes integer;
    v_depth integer;
begin
    if tg_op = 'INSERT' or new.job_type is distinct from old.job_type then
        if length(new.job_type) > 200 then
            raise exception 'job_queue: job_type is % characters; the limit is 200',
                length(new.job_type) using errcode = '22023';
        end if;
    end if;
    if tg_op = 'INSERT' or new.user_id is distinct from old.user_id then
        if length(new.user_id) > 200 then
            raise exception 'job_queue: user_id is % characters; the limit is 200',
                length(new.user_id) using errcode = '22023';
        end if;
    end if;
    if tg_op = 'INSERT' or new.idempotency_key is distinct from old.idempotency_key then
        if length(new.idempotency_key) > 500 then
            raise exception 'job_queue: idempotency_key is % characters; the limit is 500',
                length(new.idempotency_key) using errcode = '22023';
        end if;
    end if;
    if tg_op = 'INSERT' or new.run_at is distinct from old.run_at then
        if new.run_at is null or not isfinite(new.run_at)
           or new.run_at not between '1970-01-01 00:00:00+00' and '9999-12-31 00:00:00+00' then
            raise exception 'job_queue: run_at must be a time from 1970 to 9999, got %',
                coalesce(new.run_at::text, 'null') using errcode = '22008';
        end if;
    end if;
    if tg_op = 'UPDATE' and new.payload is not distinct from old.payload
       and new.max_retries is not distinct from old.max_retries then
        return new;
    end if;
    select * into v_limits from job_queue_settings where id;
    if new.payload is not null and jsonb_typeof(new.payload) <> 'object' then
        raise exception 'job_queue: payload must be a JSON object, got %', jsonb_typeof(new.payload)
            using errcode = '22023';
    end if;
    v_text := new.payload::text;
    v_bytes := octet_length(v_text);
    if v_bytes > coalesce(v_limits.max_payload_bytes, 1048576) then
        raise exception 'job_queue: payload is % bytes; the limit is % (job_queue_settings.max_payload_bytes)',
            v_bytes, coalesce(v_limits.max_payload_bytes, 1048576)
            using errcode = '54000';
    end if;
    if length(v_text) - length(translate(v_text, '{[', '')) > coalesce(v_limits.max_payload_depth, 64)
    then
        v_depth := jsonb_depth(new.payload, coalesce(v_limits.max_payload_depth, 64) + 1);
    end if;
    if v_depth > coalesce(v_limits.max_payload_depth, 64) then
        raise exception 'job_queue: payload nests more than % levels deep (job_queue_settings.max_payload_depth)',
            coalesce(v_limits.max_payload_depth, 64)
            using errcode = '54000';
    end if;
    if new.max_retries is null or new.max_retries not between 0 and 25 then
        raise exception 'job_queue: max_retries must be from 0 to 25, got %', new.max_retries
            using errcode = '22023';
    end if;
    return new;
end;
$$;

-- The claim and finish paths change run_at (backoff) but never these columns' lengths; the
-- column list keeps the trigger off the claim path, and the CHECK above covers run_at there.
drop trigger job_queue_check_row on job_queue;
create trigger job_queue_check_row
    before insert or update of payload, max_retries, job_type, user_id, idempotency_key
    on job_queue
    for each row execute function job_queue_check_row();

drop function enqueue_job(text, jsonb, text, integer, timestamptz, integer, text);
create function enqueue_job(
    p_job_type text,
    p_payload jsonb default '{}'::jsonb,
    p_user_id text default null,
    p_priority bigint default 0,
    p_run_at timestamptz default now(),
    p_max_retries integer default 3,
    p_idempotency_key text default null
) returns uuid
language plpgsql security definer set search_path from current as $$
declare
    v_id uuid;
begin
    if p_job_type is null or length(btrim(p_job_type)) = 0 then
        raise exception 'enqueue_job: job_type must be a non-empty string'
            using errcode = '22023';
    end if;
    if p_payload is null or jsonb_typeof(p_payload) <> 'object' then
        raise exception 'enqueue_job: payload must be a JSON object, got %',
            coalesce(jsonb_typeof(p_payload), 'null') using errcode = '22023';
    end if;
    if p_max_retries is null or p_max_retries < 0 then
        raise exception 'enqueue_job: max_retries must be >= 0' using errcode = '22023';
    end if;
    if p_priority not between -2147483648 and 2147483647 then
        raise exception 'enqueue_job: priority must be from -2147483648 to 2147483647, got %',
            p_priority using errcode = '22003';
    end if;
    if p_run_at is not null and (not isfinite(p_run_at)
       or p_run_at not between '1970-01-01 00:00:00+00' and '9999-12-31 00:00:00+00') then
        raise exception 'enqueue_job: run_at must be a time from 1970 to 9999, got %', p_run_at
            using errcode = '22008';
    end if;

    insert into job_queue (job_type, payload, user_id, priority, run_at, max_retries,
                           idempotency_key)
    values (p_job_type, p_payload, p_user_id, coalesce(p_priority, 0)::integer,
            coalesce(p_run_at, now()), p_max_retries, p_idempotency_key)
    on conflict (idempotency_key) where idempotency_key is not null do nothing
    returning id into v_id;

    if v_id is null then
        select id into v_id from job_queue where idempotency_key = p_idempotency_key;
    end if;
    return v_id;
end;
$$;

select processor_keep_private(array[
    'function enqueue_job(text, jsonb, text, bigint, timestamptz, integer, text)'
]);
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function enqueue_job(text, jsonb, text, bigint, timestamptz, integer, text)
            to service_role;
    end if;
end;
$$;

create or replace function job_credit_cost(p_job_type text, p_payload jsonb) returns integer
language plpgsql stable as $$
declare
    v_aplus jsonb := p_payload -> 'include_aplus';
begin
    if p_job_type = 'generate-complete-pack' and v_aplus is not null
       and jsonb_typeof(v_aplus) not in ('boolean', 'null') then
        raise exception 'generate-complete-pack: include_aplus must be true or false, got %',
            v_aplus using errcode = '22023';
    end if;
    return coalesce((select credits from credit_prices where job_type = p_job_type), 0)
         + case when p_job_type = 'generate-complete-pack' and v_aplus = 'true'::jsonb
                then coalesce((select credits from credit_prices
                               where job_type = 'generate-aplus'), 0)
                else 0 end;
end;
$$;

create or replace function requeue_expired_jobs() returns integer
language plpgsql as $$
declare
    v_count integer;
begin
    with expired as (
        select id
        from job_queue
        where status = 'processing'
          and locked_until < now()
        for update skip locked
    )
    update job_queue j
    set status = case when j.retry_count < j.max_retries then 'pending' else 'failed' end,
        retry_count = j.retry_count + case when j.retry_count < j.max_retries then 1 else 0 end,
        run_at = now(),
        error_message = case
            when j.retry_count < j.max_retries or j.retry_count = 0
                then format('lease expired: worker %s stopped reporting', j.locked_by)
            else format('lease expired: worker %s stopped reporting (gave up after %s attempts)',
                        j.locked_by, j.retry_count + 1) end,
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.retry_count + 1,
            'started', j.processed_at,
            'at', now(),
            'error', format('lease expired: worker %s stopped reporting', j.locked_by),
            'retryable', true)),
        completed_at = case when j.retry_count < j.max_retries then null else now() end,
        locked_by = null,
        locked_until = null,
        lease_token = null
    from expired
    where j.id = expired.id;
    get diagnostics v_count = row_count;
    return v_count;
end;
$$;

create or replace function prune_jobs(
    p_keep_completed interval default null,
    p_keep_failed interval default null,
    p_keep_cron_history interval default null,
    p_batch integer default 1000,
    p_max_rows integer default 100000
) returns table (kind text, deleted bigint)
language plpgsql volatile as $$
declare
    v_limits job_queue_settings;
    v_kind record;
    v_n bigint;
    v_total bigint;
begin
    select * into v_limits from job_queue_settings where id;
    p_keep_completed := coalesce(p_keep_completed, v_limits.keep_completed, interval '14 days');
    p_keep_failed := coalesce(p_keep_failed, v_limits.keep_failed, interval '30 days');
    p_keep_cron_history := coalesce(p_keep_cron_history, v_limits.keep_cron_history,
                                    interval '7 days');
    p_batch := coalesce(p_batch, 1000);
    p_max_rows := coalesce(p_max_rows, 100000);
    if p_batch < 1 or p_max_rows < 1 then
        raise exception 'prune_jobs: batch and max_rows must be at least 1, got % and %',
            p_batch, p_max_rows using errcode = '22023';
    end if;
    if p_keep_completed < interval '0' or p_keep_failed < interval '0'
       or p_keep_cron_history < interval '0' then
        raise exception 'prune_jobs: ages must not be negative, got completed %, failed %, cron history %',
            p_keep_completed, p_keep_failed, p_keep_cron_history using errcode = '22023';
    end if;

    for v_kind in
        select * from (values ('completed', array['completed'], p_keep_completed),
                              ('failed_or_cancelled', array['failed', 'cancelled'], p_keep_failed)
                      ) k(kind, statuses, keep)
    loop
        v_total := 0;
        loop
            delete from job_queue
            where id in (select id from job_queue
                         where status = any(v_kind.statuses)
                           and completed_at < now() - v_kind.keep
                         limit p_batch for update skip locked);
            get diagnostics v_n = row_count;
            v_total := v_total + v_n;
            exit when v_n < p_batch or v_total >= p_max_rows;
        end loop;
        kind := v_kind.kind; deleted := v_total; return next;
    end loop;

    delete from processor_net_calls where created_at < now() - interval '1 day';

    v_total := 0;
    if to_regclass('cron.job_run_details') is not null then
        loop
            execute 'delete from cron.job_run_details where runid in (
                         select runid from cron.job_run_details
                         where end_time < now() - $1 limit $2)'
                using p_keep_cron_history, p_batch;
            get diagnostics v_n = row_count;
            v_total := v_total + v_n;
            exit when v_n < p_batch or v_total >= p_max_rows;
        end loop;
    end if;
    kind := 'cron_history'; deleted := v_total; return next;
end;
$$;

alter table job_queue_settings
    add constraint job_queue_settings_keep_not_negative
    check (keep_completed >= interval '0' and keep_failed >= interval '0'
           and keep_cron_history >= interval '0') not valid;

create or replace function job_queue_settings_credits_switch() returns trigger
language plpgsql as $$
declare
    v_verb text := case when new.credits_enabled then 'enable' else 'disable' end;
begin
    if new.credits_enabled is distinct from old.credits_enabled then
        if not new.credits_enabled then
            insert into credit_ledger (user_id, job_id, kind, amount, note)
            select user_id, job_id, 'release',
                   sum(case kind when 'reserve' then amount else -amount end),
                   'credits switched off'
            from credit_ledger
            where job_id is not null and kind in ('reserve', 'charge', 'release')
            group by user_id, job_id
            having sum(case kind when 'reserve' then amount else -amount end) > 0;
        end if;
        execute format('alter table job_queue %s trigger job_queue_credits_on_insert', v_verb);
        execute format('alter table job_queue %s trigger job_queue_credits_on_status', v_verb);
    end if;
    return null;
end;
$$;

-- Status-page sessions that were signed out, by the SHA-256 of their id, kept until the cookie
-- would have expired anyway: a saved copy of a signed-out cookie opens nothing, on any
-- processor that shares this database.
create table processor_ui_signouts (
    sid_hash text primary key,
    until timestamptz not null
);

select processor_keep_private(array['table processor_ui_signouts']);
