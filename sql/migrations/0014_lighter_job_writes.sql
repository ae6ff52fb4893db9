-- Fewer index writes per job.
--
-- A lease extension (every third of LEASE_SECONDS for each running job) changed locked_until,
-- which job_queue_lease_idx indexes, so every extension wrote a new entry into every index of
-- job_queue. Without that index an extension, like a progress update, changes no indexed
-- column and can be a HOT update: one heap tuple on the same page, no index entry. Expired
-- leases are found among the running jobs instead (job_queue_running_idx holds only those: a
-- few hundred at most, read at most once a second per processor).
--
-- A HOT update needs room on the row's page: 10 % of each page is left free for the updates a
-- running job makes.
drop index job_queue_lease_idx;
alter table job_queue set (fillfactor = 90);
