-- processor on Supabase: paste into the SQL editor after the migrations are applied
-- (`DATABASE_URL=<your Supabase connection string> processor migrate`, see README.md here).
-- Replace the two values in step 2. Safe to run again: it updates instead of duplicating.

-- 1. The extensions. (Dashboard: Database → Extensions → pg_cron and pg_net does the same.)
create extension if not exists pg_cron;
create extension if not exists pg_net;

-- 2. Where the processor lives and its token, in Vault: encrypted at rest, and never written
--    into cron.job. invoke_job_processor() reads them from vault.decrypted_secrets.
do $$
declare
    v_url   text := 'https://processor.example.com';           -- your processor's public URL
    v_token text := 'paste-the-PROCESSOR_TOKEN-of-your-service'; -- the same token it was given
    v_id    uuid;
begin
    select id into v_id from vault.secrets where name = 'processor_url';
    if v_id is null then
        perform vault.create_secret(v_url, 'processor_url', 'processor: base URL');
    else
        perform vault.update_secret(v_id, v_url);
    end if;
    select id into v_id from vault.secrets where name = 'processor_token';
    if v_id is null then
        perform vault.create_secret(v_token, 'processor_token', 'processor: bearer token');
    else
        perform vault.update_secret(v_id, v_token);
    end if;
end;
$$;

-- 3. Every 10 seconds (Supabase's pg_cron is 1.5+). The command holds no secret.
--    Naming the job makes a second run update it rather than add another.
select cron.schedule('process-job-queue', '10 seconds', 'select invoke_job_processor()');
-- Retention, hourly: finished jobs past the ages in job_queue_settings, old pg_cron history.
select cron.schedule('processor-prune', '17 * * * *', 'select prune_jobs()');

-- Optional: turn off instant pickup on insert (cron alone then starts jobs, within 10 s).
-- insert into processor_settings (key, value) values ('instant_pickup', 'off')
-- on conflict (key) do update set value = excluded.value;

-- Check: the job, its last runs, and pg_net's answers.
select jobname, schedule, command, active from cron.job where jobname = 'process-job-queue';
select * from job_trigger_health;
