-- The status page (/ui) and `processor jobs`: newest-first lists, a page at a time, through an
-- index whatever the table's size. Status and type filters walk the newest-first index and
-- skip what does not match (a page of a rare status reads a few thousand entries at most);
-- users have their own index from 0001, projects this one. Every index is paid for on each
-- status change of every job, so only these two are added.

create index job_queue_newest_idx on job_queue (created_at desc, id desc);
create index job_queue_project_newest_idx
    on job_queue ((payload ->> 'project_id'), created_at desc, id desc)
    where payload ? 'project_id';
