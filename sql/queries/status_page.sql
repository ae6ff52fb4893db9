-- What the status page reads and its sign-outs (processor.web.ui).
-- Each block is one statement the code runs by name (processor.sql.query).

-- dashboard_stats --
select s.job_type, s.status, s.jobs, s.oldest_due_seconds, s.p50_seconds, s.p95_seconds,
       t.paused_at is not null as paused
from job_queue_stats s
left join job_type_limits t using (job_type)
order by s.job_type, s.status;

-- ui_counts --
select job_type, status, count(*) as jobs from job_queue group by 1, 2 order by 1, 2;

-- ui_oldest_due --
select id, job_type, extract(epoch from now() - run_at) as waited_seconds
from job_queue
where status = 'pending' and run_at <= now()
order by run_at
limit 1;

-- ui_durations --
-- Run time of the attempts that completed in the last hour, per type.
select job_type, count(*) as jobs,
       extract(epoch from percentile_cont(0.5) within group (order by completed_at - processed_at))
           as p50_seconds,
       extract(epoch from percentile_cont(0.95) within group (order by completed_at - processed_at))
           as p95_seconds
from job_queue
where completed_at > now() - interval '1 hour' and status = 'completed'
group by job_type
order by job_type;

-- ui_per_minute --
select date_trunc('minute', completed_at) as minute,
       count(*) filter (where status = 'completed') as completed,
       count(*) filter (where status = 'failed') as failed
from job_queue
where completed_at > now() - interval '1 hour' and status in ('completed', 'failed')
group by 1
order by 1;

-- ui_signed_out --
select exists (select 1 from processor_ui_signouts
               where sid_hash = %(sid_hash)s and until > now()) as signed_out;

-- ui_sign_out --
-- Records the sign-out and drops records whose cookies have expired by now.
with gone as (delete from processor_ui_signouts where until <= now())
insert into processor_ui_signouts (sid_hash, until)
values (%(sid_hash)s, now() + make_interval(secs => %(max_age)s))
on conflict (sid_hash) do nothing
returning sid_hash;
