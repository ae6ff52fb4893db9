-- invoke_job_processor() skips a call while requests already wait in pg_net's queue. Some
-- pg_net installations do not let the function's owner read net.http_request_queue: then the
-- call is made anyway rather than failing (which broke both cron and instant pickup).

create or replace function invoke_job_processor(p_quiet boolean default false) returns bigint
language plpgsql volatile security definer
set search_path = public, pg_temp
as $$
declare
    v_endpoint record;
    v_target text;
    v_waiting integer := 0;
    v_id bigint;
begin
    if to_regprocedure('net.http_post(text, jsonb, jsonb, jsonb, integer)') is null then
        if not p_quiet then
            raise warning 'invoke_job_processor: pg_net is not installed (create extension pg_net)';
        end if;
        return null;
    end if;
    select * into v_endpoint from processor_endpoint();
    if v_endpoint.url is null or v_endpoint.token is null then
        if not p_quiet then
            raise warning 'invoke_job_processor: no processor URL/token: run `processor schedule`';
        end if;
        return null;
    end if;
    v_target := v_endpoint.url || '/process-jobs';
    -- pg_net slows down with hundreds of queued requests; a few waiting is plenty, as each one
    -- drains every due job it can.
    begin
        execute 'select count(*) from (select 1 from net.http_request_queue
                                       where url = $1 limit 3) q'
            into v_waiting using v_target;
    exception when insufficient_privilege or undefined_table then
        v_waiting := 0;
    end;
    if v_waiting >= 3 then
        return null;
    end if;
    execute 'select net.http_post(url := $1, body := $2, headers := $3,
                                  timeout_milliseconds := $4)'
        into v_id
        using v_target, '{"drain": true}'::jsonb,
              jsonb_build_object('Content-Type', 'application/json',
                                 'Authorization', 'Bearer ' || v_endpoint.token),
              5000;
    return v_id;
end;
$$;

revoke all on function invoke_job_processor(boolean) from public;
do $$
declare
    v_role text;
begin
    foreach v_role in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_roles where rolname = v_role) then
            execute format('revoke all on function invoke_job_processor(boolean) from %I', v_role);
        end if;
    end loop;
end;
$$;
