-- Limits shared by every processor (processor.providers.shared_limits).
-- Each block is one statement the code runs by name (processor.sql.query).

-- provider_limits_set --
insert into provider_limits (provider, max_concurrent, per_minute)
values (%(provider)s, %(max_concurrent)s, %(per_minute)s)
on conflict (provider) do update
set max_concurrent = excluded.max_concurrent, per_minute = excluded.per_minute,
    updated_at = now();

-- provider_acquire --
select granted, slot_id, wait_seconds, reason
from provider_acquire(%(provider)s, %(holder)s, make_interval(secs => %(ttl_seconds)s),
                      make_interval(secs => %(max_wait_seconds)s));

-- provider_release --
select provider_release(%(slot_id)s);

-- provider_pause --
select provider_pause(%(provider)s, %(seconds)s, %(reason)s) as paused_until;
