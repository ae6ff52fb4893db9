-- Hardening: bounded payloads and retries, a backoff that cannot overflow, a final error that
-- says how many attempts it took, and retention (prune_jobs).

-- One row of settings the database enforces itself, so a plain INSERT obeys them as much as
-- enqueue_job does. Change them with an UPDATE; they apply to the next statement.
create table job_queue_settings (
    id                  boolean primary key default true check (id),
    max_payload_bytes   integer not null default 1048576 check (max_payload_bytes > 0),
    max_payload_depth   integer not null default 64 check (max_payload_depth between 1 and 1000),
    keep_completed      interval not null default interval '14 days',
    keep_failed         interval not null default interval '30 days',
    keep_cron_history   interval not null default interval '7 days'
);

insert into job_queue_settings default values;

comment on table job_queue_settings is
    'Limits and retention for job_queue (one row). max_payload_*: refused at insert; keep_*: '
    'how long prune_jobs keeps finished jobs and pg_cron run history.';

-- How deeply a JSON value nests (a scalar is 0, {} or [] is 1), counted no further than p_stop:
-- the walk stops there, so a hostile value costs no more than a valid one. (plpgsql, so its
-- plan is cached: an SQL-language function would be planned again on every call.)
create function jsonb_depth(p_value jsonb, p_stop integer default 1000) returns integer
language plpgsql immutable parallel safe as $$
declare
    v_depth integer;
begin
    with recursive walk(v, depth) as (
        select p_value, case when jsonb_typeof(p_value) in ('object', 'array') then 1 else 0 end
        union all
        select child.value, walk.depth + 1
        from walk
        cross join lateral (
            select value from jsonb_each(case when jsonb_typeof(walk.v) = 'object'
                                              then walk.v else '{}'::jsonb end)
            union all
            select value from jsonb_array_elements(case when jsonb_typeof(walk.v) = 'array'
                                                        then walk.v else '[]'::jsonb end)
        ) child
        where walk.depth < p_stop and jsonb_typeof(child.value) in ('object', 'array')
    )
    select max(depth) into v_depth from walk;
    return v_depth;
end;
$$;

-- max_retries bounded by the table itself (an attempt count that can still be waited out);
-- rows from before this migration are brought into range first.
update job_queue set max_retries = 25 where max_retries > 25;
alter table job_queue
    add constraint job_queue_max_retries_range check (max_retries between 0 and 25);

-- Every INSERT (enqueue_job's included) and every payload UPDATE: the payload must be an object
-- within the size and depth limits, and max_retries in range, with a message that says so.
create function job_queue_check_row() returns trigger
language plpgsql as $$
declare
    v_limits job_queue_settings;
    v_text text;
    v_bytes integer;
    v_depth integer;
begin
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
    -- A payload with no more brackets than the limit cannot nest deeper than it: most payloads
    -- stop here, without walking.
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

create trigger job_queue_check_row
    before insert or update of payload, max_retries on job_queue
    for each row execute function job_queue_check_row();

-- The exponent is capped before it is used: 10 s * 2^n is out of interval range from n = 43.
create or replace function job_backoff(
    p_retry integer,
    p_base interval default interval '10 seconds',
    p_cap interval default interval '15 minutes'
) returns interval
language sql volatile as $$
    select d / 2 + d / 2 * random()
    from (select least(p_cap, p_base * power(2, least(greatest(p_retry, 1) - 1, 30))) as d) s
$$;

-- As in 0004, and a job that ends failed after more than one attempt says how many it took;
-- each entry of `errors` also records when its attempt started (so its duration is known).
create or replace function fail_jobs(
    p_ids uuid[],
    p_lease_tokens uuid[],
    p_errors text[],
    p_retryable boolean[]
) returns table (job_id uuid, new_status text)
language plpgsql volatile as $$
begin
    return query
    with outcome as (
        select * from unnest(p_ids, p_lease_tokens, p_errors, p_retryable)
            as o(id, lease_token, error, retryable)
    ), held as (
        select j.id, o.error, coalesce(o.retryable, true) as retryable,
               coalesce(o.retryable, true) and j.retry_count < j.max_retries as retry
        from job_queue j join outcome o on o.id = j.id and o.lease_token = j.lease_token
        where j.status = 'processing'
        order by j.id
        for update of j
    )
    update job_queue j
    set status = case when held.retry then 'pending' else 'failed' end,
        retry_count = j.retry_count + case when held.retry then 1 else 0 end,
        run_at = case when held.retry then now() + job_backoff(j.retry_count + 1)
                      else j.run_at end,
        error_message = case when not held.retry and j.retry_count > 0
                             then format('%s (gave up after %s attempts)', held.error,
                                         j.retry_count + 1)
                             else held.error end,
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.retry_count + 1,
            'started', j.processed_at,
            'at', now(),
            'error', held.error,
            'retryable', held.retryable)),
        completed_at = case when held.retry then null else now() end,
        locked_by = null,
        locked_until = null,
        lease_token = null
    from held
    where j.id = held.id
    returning j.id, j.status;
end;
$$;

-- Retention. Deletes finished jobs older than their keep_* age (their generated_images and
-- aplus_contents rows go with them), the processor's pg_net bookkeeping older than a day, and
-- pg_cron's run history older than keep_cron_history. Rows go in batches of p_batch, at most
-- p_max_rows per kind per call: the rows it deletes are finished ones, which no claim reads, so
-- it never blocks the claim path. Arguments left null take job_queue_settings' values. Returns
-- what it deleted, per kind.
create function prune_jobs(
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

-- prune_jobs finds finished jobs by age through this index (completed_at is set only when a
-- job finishes, and "completed_at < x" implies the predicate, so the planner can use it).
create index job_queue_finished_idx on job_queue (completed_at) where completed_at is not null;

select processor_keep_private(array[
    'table job_queue_settings',
    'function jsonb_depth(jsonb, integer)',
    'function job_queue_check_row()',
    'function prune_jobs(interval, interval, interval, integer, integer)'
]);
