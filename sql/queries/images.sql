-- What the built-in handlers record under a job's lease: progress, images and A+ content.
-- Each block is one statement the code runs by name (processor.sql.query).

-- set_job_progress --
select set_job_progress(%(id)s, %(lease_token)s, %(progress)s::jsonb) as ok;

-- images_for_job --
select slot, kind, storage_path, url, width, height, mime_type, provider, model
from generated_images
where job_id = %(job_id)s
order by id;

-- images_shown_for_job --
-- What the job page shows: the job's images and its children's (a pack's images are made by
-- jobs of its own), in the order they were stored.
select slot, kind, storage_path, url, width, height, mime_type, provider, model
from generated_images
where job_id = %(job_id)s
   or job_id in (select c.id from job_queue p
                 join job_queue c on c.id = any (p.depends_on) and c.parent_id = p.id
                 where p.id = %(job_id)s)
order by id;

-- record_image --
-- The image is recorded whether or not the lease is still held (it was paid for, and a retry
-- reuses it); `held` tells the handler whether to go on.
with recorded as (
    insert into generated_images (job_id, project_id, user_id, kind, slot, storage_path, url,
                                  width, height, mime_type, provider, model, prompt)
    values (%(job_id)s, %(project_id)s, %(user_id)s, %(kind)s, %(slot)s, %(storage_path)s,
            %(url)s, %(width)s, %(height)s, %(mime_type)s, %(provider)s, %(model)s, %(prompt)s)
    on conflict (job_id, slot) do nothing
)
select exists (select 1 from job_queue
               where id = %(job_id)s and status = 'processing'
                 and lease_token = %(lease_token)s) as held;

-- lease_held --
select exists (select 1 from job_queue
               where id = %(id)s and status = 'processing' and lease_token = %(lease_token)s)
    as held;

-- aplus_for_job --
select content, provider, model from aplus_contents where job_id = %(job_id)s;

-- record_aplus --
insert into aplus_contents (job_id, project_id, user_id, content, provider, model)
values (%(job_id)s, %(project_id)s, %(user_id)s, %(content)s::jsonb, %(provider)s, %(model)s)
on conflict (job_id) do nothing;

-- use_delivery --
-- A built-in handler's claim on one signed delivery: false when it already ran (a replay).
select use_delivery(%(delivery)s, %(path)s, %(job_id)s) as fresh;
