-- pg_cron, pg_net, Vault and the local relay (processor.ops.schedule, relay, verify).
-- Each block is one statement the code runs by name (processor.sql.query).

-- relay_take --
-- The local pg_net stand-in's queue: a batch of committed requests to send. The delete commits
-- with their answers, so until then the rows stay visible in the queue, as with pg_net.
delete from net.http_request_queue
where id in (select id from net.http_request_queue order by id
             for update skip locked limit %(batch)s)
returning id, method, url, headers, body, timeout_milliseconds;

-- relay_record --
insert into net._http_response (id, status_code, content_type, headers, content, timed_out,
                                error_msg)
values (%(id)s, %(status_code)s, %(content_type)s, %(headers)s, %(content)s, %(timed_out)s,
        %(error_msg)s);

-- relay_prune --
delete from net._http_response where created < now() - make_interval(secs => %(ttl_seconds)s);

-- relay_listen --
listen processor_net;

-- net_state --
-- pg_net (the real extension), the local stand-in, or neither.
select (select extversion from pg_extension where extname = 'pg_net') as pg_net_version,
       to_regprocedure('net.http_post(text, jsonb, jsonb, jsonb, integer)') is not null
           as has_http_post;

-- vault_present --
select to_regclass('vault.decrypted_secrets') is not null as ok;

-- vault_secret_id --
select id from vault.secrets where name = %(name)s;

-- vault_create --
select vault.create_secret(%(value)s, %(name)s, 'processor: set by `processor schedule`');

-- vault_update --
select vault.update_secret(%(id)s, %(value)s);

-- setting_upsert --
insert into processor_settings (key, value) values (%(key)s, %(value)s)
on conflict (key) do update set value = excluded.value, updated_at = now();

-- endpoint --
select url, token from processor_endpoint();

-- cron_extension --
create extension if not exists pg_cron;

-- cron_version --
select extversion from pg_extension where extname = 'pg_cron';

-- cron_schedule --
-- Named: a second call updates the job instead of adding another.
select cron.schedule(%(name)s, %(schedule)s, %(command)s) as jobid;

-- cron_unschedule --
select cron.unschedule(jobname) as ok from cron.job where jobname = %(name)s;

-- cron_job --
select jobid, schedule, command, active, database from cron.job where jobname = %(name)s;

-- cron_recent_runs --
select d.status, d.return_message, d.start_time
from cron.job_run_details d join cron.job j on j.jobid = d.jobid
where j.jobname = %(name)s
order by d.start_time desc
limit 5;

-- net_recent_responses --
-- Only the processor's own calls (pg_net's responses do not say where a request went).
select r.status_code, r.timed_out, r.error_msg, r.created
from net._http_response r
join processor_net_calls c on c.request_id = r.id
where r.created > now() - interval '1 hour'
order by r.created desc
limit 20;

-- pending_health --
select extract(epoch from now() - min(run_at) filter (where status = 'pending'
                                                      and run_at <= now()))
           as oldest_due_seconds,
       count(*) filter (where status = 'processing' and locked_until < now()) as expired_leases
from job_queue;

-- connection_budget --
-- Connections the server allows to ordinary roles, and those other clients hold now.
select current_setting('max_connections')::integer as max_connections,
       current_setting('superuser_reserved_connections')::integer as reserved,
       (select count(*) from pg_stat_activity
        where backend_type = 'client backend'
          and coalesce(application_name, '') not like 'processor%%')::integer as others
;

-- functions_present --
select array_agg(name) filter (where to_regproc(name) is null) as missing
from unnest(%(names)s::text[]) as name;

-- net_queue_waiting --
-- Requests queued but not sent yet (pg_net's queue has no timestamp: compare ids over time).
select count(*) as queued, min(id) as oldest_id from net.http_request_queue;

-- backend --
-- Which server connection ran this transaction, and the port the server itself listens on
-- (processor verify compares both with what the client sees, to tell a pooler's mode).
select pg_backend_pid() as pid, inet_server_port() as port;

-- server_version --
select current_setting('server_version') as version;
