-- Deleting finished jobs (processor.ops.retention).
-- Each block is one statement the code runs by name (processor.sql.query).

-- prune_jobs --
-- One batch per kind per call (its own transaction): callers loop until nothing is deleted.
select kind, deleted
from prune_jobs(%(keep_completed)s::interval, %(keep_failed)s::interval,
                %(keep_cron_history)s::interval, %(batch)s::integer, %(batch)s::integer);

-- prune_jobs_with_files --
-- A batch of finished jobs past their age, deleted, with the storage paths of their images
-- (read before the delete cascades to them), so the caller can delete the files.
with limits as (
    select coalesce(%(keep_completed)s::interval, keep_completed) as keep_completed,
           coalesce(%(keep_failed)s::interval, keep_failed) as keep_failed
    from job_queue_settings where id
), doomed as (
    select j.id, j.status
    from job_queue j, limits l
    where (j.status = 'completed' and j.completed_at < now() - l.keep_completed)
       or (j.status in ('failed', 'cancelled') and j.completed_at < now() - l.keep_failed)
    limit %(batch)s
    for update of j skip locked
), paths as (
    select g.storage_path from generated_images g join doomed d on d.id = g.job_id
), gone as (
    delete from job_queue j using doomed d where j.id = d.id returning j.id, d.status
)
select (select count(*) from gone) as jobs,
       (select count(*) from gone where status = 'completed') as completed,
       array(select storage_path from paths) as paths;
