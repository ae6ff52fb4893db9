-- Results of the built-in handlers, one row per generated asset, keyed by job and slot so a
-- retried job finds what an earlier attempt finished and never generates it twice.
-- Plus job progress and rate-limit postponement.

create table generated_images (
    id           bigint generated always as identity primary key,
    job_id       uuid not null references job_queue (id) on delete cascade,
    project_id   text,
    user_id      text,
    kind         text not null,
    slot         text not null,
    storage_path text not null,
    url          text not null,
    width        integer not null check (width > 0),
    height       integer not null check (height > 0),
    mime_type    text not null,
    provider     text not null,
    model        text not null,
    prompt       text,
    created_at   timestamptz not null default now(),
    unique (job_id, slot)
);

create index generated_images_project_idx on generated_images (project_id, created_at desc);

create table aplus_contents (
    id         bigint generated always as identity primary key,
    job_id     uuid not null unique references job_queue (id) on delete cascade,
    project_id text,
    user_id    text,
    content    jsonb not null,
    provider   text not null,
    model      text not null,
    created_at timestamptz not null default now()
);

create index aplus_contents_project_idx on aplus_contents (project_id, created_at desc);

-- How many times a job was postponed by a provider's rate limit (those waits spend no attempt).
alter table job_queue add column postponements integer not null default 0;

-- Progress of a running job, for the dashboard, Realtime and GET /jobs/{id}. Only the lease
-- holder writes it.
create function set_job_progress(p_job_id uuid, p_lease_token uuid, p_progress jsonb)
returns boolean
language sql volatile as $$
    with updated as (
        update job_queue
        set progress = p_progress
        where id = p_job_id
          and status = 'processing'
          and lease_token = p_lease_token
        returning 1
    )
    select exists (select 1 from updated)
$$;

-- A provider said "slow down, come back in p_delay": the job goes back to pending until then
-- without spending an attempt. The wait is capped, and after p_max_postponements the wait
-- counts as a failed attempt, so a permanently throttled job cannot loop for ever.
-- Returns the new status, or null when the caller does not hold the lease.
create function postpone_job(
    p_job_id uuid,
    p_lease_token uuid,
    p_delay interval,
    p_reason text,
    p_max_delay interval default interval '15 minutes',
    p_max_postponements integer default 20
) returns text
language plpgsql as $$
declare
    v_job job_queue;
begin
    select * into v_job from job_queue
    where id = p_job_id and status = 'processing' and lease_token = p_lease_token
    for update;
    if not found then
        return null;
    end if;
    if v_job.postponements >= p_max_postponements then
        return mark_job_failed(p_job_id, p_lease_token,
                               format('%s (rate limited %s times)', p_reason, v_job.postponements),
                               true);
    end if;
    update job_queue
    set status = 'pending',
        run_at = now() + least(greatest(p_delay, interval '1 second'), p_max_delay),
        postponements = postponements + 1,
        error_message = p_reason,
        locked_by = null,
        locked_until = null,
        lease_token = null
    where id = p_job_id;
    return 'pending';
end;
$$;


select processor_keep_private(array[
    'function set_job_progress(uuid, uuid, jsonb)',
    'function postpone_job(uuid, uuid, interval, text, interval, integer)'
]);

select processor_share_own_rows('generated_images', true);
select processor_share_own_rows('aplus_contents', false);
