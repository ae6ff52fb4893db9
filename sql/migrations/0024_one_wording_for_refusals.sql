-- One wording for a number out of its range (issue 25): "NAME must be an integer from LOW to
-- HIGH, got VALUE", as the HTTP API and the command line say it. The functions below are
-- unchanged but for their messages and two bounds: enqueue_job refuses max_retries over 25
-- itself, in those words, where it left the table's check to say it in others, and a cap
-- (max_running) is at most 1,000,000, as the command line has always required. A number with
-- only a lower bound: "NAME must be an integer of at least LOW, got VALUE".

CREATE OR REPLACE FUNCTION public.job_queue_select_for_action(p_statuses text[], p_job_type text, p_user_id text, p_since timestamp with time zone, p_until timestamp with time zone, p_error text, p_limit integer) RETURNS SETOF uuid
    LANGUAGE plpgsql STABLE
    AS $$
begin
    if p_limit is null or p_limit not between 1 and 10000 then
        raise exception 'limit must be an integer from 1 to 10000, got %', p_limit using errcode = '22023';
    end if;
    if p_since is not null and p_until is not null and p_since > p_until then
        raise exception 'since (%) is after until (%)', p_since, p_until using errcode = '22023';
    end if;
    return query
    select j.id from job_queue j
    where j.status = any (p_statuses)
      and (p_job_type is null or j.job_type = p_job_type)
      and (p_user_id is null or j.user_id = p_user_id)
      and (p_since is null or coalesce(j.completed_at, j.updated_at) >= p_since)
      and (p_until is null or coalesce(j.completed_at, j.updated_at) < p_until)
      and (p_error is null or strpos(lower(coalesce(j.error_message, '')), lower(p_error)) > 0)
    order by coalesce(j.completed_at, j.updated_at), j.id
    limit p_limit;
end;
$$;

CREATE OR REPLACE FUNCTION public.enqueue_job(p_job_type text, p_payload jsonb DEFAULT '{}'::jsonb, p_user_id text DEFAULT NULL::text, p_priority bigint DEFAULT 0, p_run_at timestamp with time zone DEFAULT now(), p_max_retries integer DEFAULT 3, p_idempotency_key text DEFAULT NULL::text, p_concurrency_key text DEFAULT NULL::text, p_traceparent text DEFAULT NULL::text) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
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
    if p_max_retries is null or p_max_retries not between 0 and 25 then
        raise exception 'enqueue_job: max_retries must be an integer from 0 to 25, got %',
            coalesce(p_max_retries::text, 'null') using errcode = '22023';
    end if;
    if p_priority not between -2147483648 and 2147483647 then
        raise exception 'enqueue_job: priority must be an integer from -2147483648 to 2147483647, got %',
            p_priority using errcode = '22003';
    end if;
    if p_run_at is not null and (not isfinite(p_run_at)
       or p_run_at not between '1970-01-01 00:00:00+00' and '9999-12-31 00:00:00+00') then
        raise exception 'enqueue_job: run_at must be a time from 1970 to 9999, got %', p_run_at
            using errcode = '22008';
    end if;
    if p_traceparent is not null and not processor_valid_traceparent(p_traceparent) then
        raise exception 'enqueue_job: traceparent must be a W3C trace context '
            '(00-<32 hex trace id>-<16 hex span id>-<2 hex flags>), got %', left(p_traceparent, 80)
            using errcode = '22023';
    end if;
    if p_concurrency_key is not null and length(p_concurrency_key) not between 1 and 200 then
        raise exception 'enqueue_job: concurrency_key must be 1 to 200 characters, got %',
            length(p_concurrency_key) using errcode = '22023';
    end if;

    insert into job_queue (job_type, payload, user_id, priority, run_at, max_retries,
                           idempotency_key, concurrency_key, traceparent)
    values (p_job_type, p_payload, p_user_id, coalesce(p_priority, 0)::integer,
            coalesce(p_run_at, now()), p_max_retries, p_idempotency_key, p_concurrency_key,
            p_traceparent)
    on conflict (idempotency_key) where idempotency_key is not null do nothing
    returning id into v_id;

    if v_id is null then
        select id into v_id from job_queue where idempotency_key = p_idempotency_key;
    end if;
    return v_id;
end;
$$;

CREATE OR REPLACE FUNCTION public.job_queue_check_row() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
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
        raise exception 'job_queue: max_retries must be an integer from 0 to 25, got %', new.max_retries
            using errcode = '22023';
    end if;
    return new;
end;
$$;

CREATE OR REPLACE FUNCTION public.set_concurrency_limit(p_key text, p_max_running integer, p_weight integer DEFAULT 1) RETURNS void
    LANGUAGE plpgsql
    AS $$
declare
    v_old job_concurrency_limits;
    v_weight integer;  -- the group's weight before
begin
    if p_key is null or length(p_key) not between 1 and 200 then
        raise exception 'set_concurrency_limit: key must be 1 to 200 characters (''*'': every group)'
            using errcode = '22023';
    end if;
    if p_max_running not between 0 and 1000000 then
        raise exception 'set_concurrency_limit: max_running must be an integer from 0 to 1000000, or null for no cap, got %',
            p_max_running using errcode = '22023';
    end if;
    if p_weight is null or p_weight not between 1 and 1000 then
        raise exception 'set_concurrency_limit: weight must be an integer from 1 to 1000, got %', p_weight
            using errcode = '22023';
    end if;
    select * into v_old from job_concurrency_limits where key = p_key;
    v_weight := case when p_key = '*' then coalesce(v_old.weight, 1)
                     else job_group_weight(p_key) end;
    if p_weight <> v_weight then
        perform job_queue_replace(null, p_key, p_weight);
    end if;
    if v_old.key is null or v_old.max_running is distinct from p_max_running then
        perform job_queue_lock_limits('set_concurrency_limit');
    end if;
    insert into job_concurrency_limits (key, max_running, weight)
    values (p_key, p_max_running, p_weight)
    on conflict (key) do update
    set max_running = excluded.max_running, weight = excluded.weight, updated_at = now();
    if p_key = '*' then
        update job_queue_scheduler set rebuilt_at = '-infinity'
        where ctid = (select ctid from job_queue_scheduler for update skip locked);
    else
        perform job_queue_release_held(p_key);
    end if;
end;
$$;

CREATE OR REPLACE FUNCTION public.set_job_type_limit(p_job_type text, p_max_running integer) RETURNS void
    LANGUAGE plpgsql
    AS $$
declare
    v_old integer;
begin
    if p_job_type is null or length(p_job_type) not between 1 and 200 then
        raise exception 'set_job_type_limit: job_type must be 1 to 200 characters'
            using errcode = '22023';
    end if;
    if p_max_running not between 0 and 1000000 then
        raise exception 'set_job_type_limit: max_running must be an integer from 0 to 1000000, or null for no cap, got %',
            p_max_running using errcode = '22023';
    end if;
    select max_running into v_old from job_type_limits where job_type = p_job_type;
    if v_old is not null and (p_max_running is null or p_max_running > v_old) then
        perform job_queue_replace(p_job_type, null);
    end if;
    perform job_queue_lock_limits('set_job_type_limit');
    insert into job_type_limits (job_type, max_running) values (p_job_type, p_max_running)
    on conflict (job_type) do update
    set max_running = excluded.max_running, updated_at = now();
end;
$$;

CREATE OR REPLACE FUNCTION public.prune_jobs(p_keep_completed interval DEFAULT NULL::interval, p_keep_failed interval DEFAULT NULL::interval, p_keep_cron_history interval DEFAULT NULL::interval, p_batch integer DEFAULT 1000, p_max_rows integer DEFAULT 100000) RETURNS TABLE(kind text, deleted bigint)
    LANGUAGE plpgsql
    AS $_$
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
    if p_batch < 1 then
        raise exception 'prune_jobs: batch must be an integer of at least 1, got %', p_batch
            using errcode = '22023';
    end if;
    if p_max_rows < 1 then
        raise exception 'prune_jobs: max_rows must be an integer of at least 1, got %', p_max_rows
            using errcode = '22023';
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
$_$;

CREATE OR REPLACE FUNCTION public.grant_credits(p_user_id text, p_amount integer, p_note text DEFAULT NULL::text) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
    v_available integer;
begin
    if p_amount is null or p_amount <= 0 then
        raise exception 'grant_credits: amount must be an integer of at least 1, got %',
            coalesce(p_amount::text, 'null') using errcode = '22023';
    end if;
    insert into credit_accounts (user_id) values (p_user_id) on conflict do nothing;
    insert into credit_ledger (user_id, kind, amount, note)
    values (p_user_id, 'grant', p_amount, p_note);
    select available into v_available from credit_accounts where user_id = p_user_id;
    return v_available;
end;
$$;

CREATE OR REPLACE FUNCTION public.processor_scaling_metric(p_job_types text[] DEFAULT NULL::text[], p_slots integer DEFAULT NULL::integer) RETURNS double precision
    LANGUAGE plpgsql STABLE
    AS $$
declare
    v_slots integer := coalesce(p_slots,
                                (select slots_per_processor from job_queue_settings where id), 20);
    v_bound integer;
    v_skip text[];
    v_running bigint;
    v_due bigint;
    v_type record;
begin
    if v_slots < 1 then
        raise exception 'processor_scaling_metric: slots must be an integer of at least 1, got %', v_slots
            using errcode = '22023';
    end if;
    v_bound := v_slots * 100;
    -- Paused types and types with a cap are counted apart (or not at all).
    select coalesce(array_agg(job_type), '{}') into v_skip from job_type_limits
    where paused_at is not null or max_running is not null;
    select count(*) into v_running from job_queue
    where status = 'processing' and (p_job_types is null or job_type = any (p_job_types));
    select count(*) into v_due from (
        select 1 from job_queue
        where status = 'pending' and run_at <= now()
          and (p_job_types is null or job_type = any (p_job_types))
          and job_type <> all (v_skip)
        limit v_bound) d;
    for v_type in
        select t.job_type, t.max_running from job_type_limits t
        where t.paused_at is null and t.max_running is not null
          and (p_job_types is null or t.job_type = any (p_job_types))
    loop
        v_due := v_due + (
            select count(*) from (
                select 1 from job_queue
                where status = 'pending' and run_at <= now() and job_type = v_type.job_type
                limit greatest(v_type.max_running - job_type_running(v_type.job_type), 0)) d);
    end loop;
    return (v_running + least(v_due, v_bound))::double precision / v_slots;
end;
$$;
