-- Who may touch what through Supabase's API. Supabase grants ALL on every new table, view,
-- sequence and function in public to anon, authenticated and service_role, and its REST API
-- (PostgREST) serves whatever those roles hold, to anyone with the anon key every web client
-- ships. So every object of the processor is first closed to PUBLIC and all three roles, then
-- opened again only as an app needs it:
--
--   anon           nothing
--   authenticated  SELECT on job_queue, generated_images, aplus_contents and provider_calls,
--                  which have row level security and a policy that shows a user their own rows
--   service_role   (an app's backend) reads jobs, their images and A+ content, spend and
--                  credit balances; enqueues (enqueue_job or a plain INSERT), cancels and
--                  retries jobs; grants credits
--
-- Everything else (the migration record, settings, pg_net call record, provider slots and
-- limits, ledgers, the claim and finish functions) belongs to the processor's own role alone.
-- The functions service_role may call run as their owner, with a fixed search_path, so the
-- role needs no write privilege on the tables behind them.

create or replace function processor_keep_private(p_objects text[]) returns void
language plpgsql as $$
declare
    v_object text;
    v_role text;
begin
    foreach v_object in array p_objects loop
        execute format('revoke all on %s from public', v_object);
        foreach v_role in array array['anon', 'authenticated', 'service_role'] loop
            if exists (select 1 from pg_roles where rolname = v_role) then
                execute format('revoke all on %s from %I', v_object, v_role);
            end if;
        end loop;
    end loop;
end;
$$;

select processor_keep_private(array[
    'table processor_migrations',
    'table job_queue',
    'table job_queue_settings',
    'table generated_images',
    'table aplus_contents',
    'table processor_settings',
    'table processor_net_calls',
    'table provider_calls',
    'table provider_limits',
    'table provider_slots',
    'table credit_prices',
    'table credit_accounts',
    'table credit_ledger',
    'table credit_balances',
    'table job_queue_recent_failures',
    'table job_queue_stats',
    'table job_queue_stuck',
    'table job_trigger_health',
    'table provider_spend_by_project',
    'table provider_spend_by_provider',
    'table provider_spend_by_user',
    'table provider_spend_daily',
    'sequence aplus_contents_id_seq',
    'sequence credit_ledger_id_seq',
    'sequence generated_images_id_seq',
    'sequence provider_calls_id_seq',
    'sequence provider_slots_id_seq',
    'function cancel_job(uuid)',
    'function claim_jobs(text, integer, text[], interval)',
    'function complete_jobs(uuid[], uuid[], jsonb[])',
    'function credit_ledger_append_only()',
    'function credit_ledger_apply()',
    'function credit_reserve(text, uuid, integer)',
    'function enqueue_job(text, jsonb, text, integer, timestamptz, integer, text)',
    'function extend_job_lease(uuid, uuid, interval)',
    'function extend_job_leases(uuid[], uuid[], interval)',
    'function fail_jobs(uuid[], uuid[], text[], boolean[])',
    'function get_next_job(text[])',
    'function grant_credits(text, integer, text)',
    'function invoke_job_processor(boolean)',
    'function job_backoff(integer, interval, interval)',
    'function job_credit_cost(text, jsonb)',
    'function job_credits_held(uuid)',
    'function job_queue_check_row()',
    'function job_queue_credits_on_insert()',
    'function job_queue_credits_on_status()',
    'function job_queue_instant_pickup()',
    'function job_queue_settings_credits_switch()',
    'function job_queue_touch()',
    'function job_trigger_health()',
    'function jsonb_depth(jsonb, integer)',
    'function mark_job_completed(uuid, uuid, jsonb)',
    'function mark_job_failed(uuid, uuid, text, boolean)',
    'function mark_job_processing(uuid, text, interval)',
    'function postpone_job(uuid, uuid, interval, text, interval, integer)',
    'function processor_endpoint()',
    'function processor_keep_private(text[])',
    'function processor_share_own_rows(regclass, boolean)',
    'function provider_acquire(text, text, interval, interval)',
    'function provider_pause(text, double precision, text)',
    'function provider_release(bigint)',
    'function prune_jobs(interval, interval, interval, integer, integer)',
    'function requeue_expired_jobs()',
    'function retry_job(uuid)',
    'function set_credits_unlimited(text, boolean)',
    'function set_job_progress(uuid, uuid, jsonb)'
]);

-- Signed-in users: their own rows (the policies are made again, with the grant beside them).
select processor_share_own_rows('job_queue', false);
select processor_share_own_rows('generated_images', false);
select processor_share_own_rows('aplus_contents', false);
select processor_share_own_rows('provider_calls', false);

-- What service_role's calls reach runs as the owner: the credit triggers a plain INSERT or an
-- UPDATE fires, and the functions it may call.
alter function job_queue_check_row() security definer set search_path from current;
alter function job_queue_credits_on_insert() security definer set search_path from current;
alter function job_queue_credits_on_status() security definer set search_path from current;
alter function enqueue_job(text, jsonb, text, integer, timestamptz, integer, text)
    security definer set search_path from current;
alter function cancel_job(uuid) security definer set search_path from current;
alter function retry_job(uuid) security definer set search_path from current;
alter function grant_credits(text, integer, text) security definer set search_path from current;

do $$
begin
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant select, insert on job_queue to service_role;
        grant select on generated_images, aplus_contents, provider_calls, credit_balances
            to service_role;
        grant select on provider_spend_daily, provider_spend_by_user, provider_spend_by_project,
            provider_spend_by_provider to service_role;
        grant execute on function enqueue_job(text, jsonb, text, integer, timestamptz, integer,
            text), cancel_job(uuid), retry_job(uuid), grant_credits(text, integer, text)
            to service_role;
    end if;
end;
$$;

-- credit_balances reads the ledger: as its owner, so service_role sees balances without being
-- given the ledger (no one else holds the view).
alter view credit_balances set (security_invoker = off);
