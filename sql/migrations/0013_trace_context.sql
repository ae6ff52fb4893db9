-- Trace context across the queue: a job may carry the W3C traceparent of the request that
-- enqueued it, and the processor continues that trace (processor.tracing).

-- Version 00 of the W3C format; an all-zero trace or span id is invalid.
create function processor_valid_traceparent(p_value text) returns boolean
language sql immutable as $$
    select p_value ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
       and substr(p_value, 4, 32) <> repeat('0', 32)
       and substr(p_value, 37, 16) <> repeat('0', 16)
$$;

alter table job_queue
    add column traceparent text
    constraint job_queue_traceparent_format
        check (traceparent is null or processor_valid_traceparent(traceparent));
comment on column job_queue.traceparent is
    'W3C trace context (00-<trace id>-<span id>-<flags>) of the request that enqueued the job: its spans continue that trace.';

drop function enqueue_job(text, jsonb, text, bigint, timestamptz, integer, text, text);
create function enqueue_job(
    p_job_type text,
    p_payload jsonb default '{}'::jsonb,
    p_user_id text default null,
    p_priority bigint default 0,
    p_run_at timestamptz default now(),
    p_max_retries integer default 3,
    p_idempotency_key text default null,
    p_concurrency_key text default null,
    p_traceparent text default null
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

select processor_keep_private(array[
    'function processor_valid_traceparent(text)',
    'function enqueue_job(text, jsonb, text, bigint, timestamptz, integer, text, text, text)'
]);
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function
            enqueue_job(text, jsonb, text, bigint, timestamptz, integer, text, text, text),
            processor_valid_traceparent(text)  -- job_queue's check calls it on INSERT
            to service_role;
    end if;
end;
$$;
