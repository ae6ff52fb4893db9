-- Every privilege that PUBLIC, anon, authenticated and service_role hold on the objects in
-- public: relations (tables, views, sequences) and functions, defaults included.
with objects as (
    select case c.relkind when 'S' then 'sequence' when 'v' then 'view' else 'table' end as kind,
           c.relname::text as name,
           coalesce(c.relacl, acldefault((case c.relkind when 'S' then 's' else 'r' end)::"char",
                                         c.relowner)) as acl
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm', 'S')
    union all
    select 'function', p.oid::regprocedure::text,
           coalesce(p.proacl, acldefault('f'::"char", p.proowner))
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'public'
)
select o.kind, o.name,
       case a.grantee when 0 then 'public' else a.grantee::regrole::text end as grantee,
       a.privilege_type as privilege
from objects o, aclexplode(o.acl) a
where a.grantee = 0
   or a.grantee::regrole::text in ('anon', 'authenticated', 'service_role')
order by 1, 2, 3, 4;
