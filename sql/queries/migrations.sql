-- The migration record (processor.ops.migrate).
-- Each block is one statement the code runs by name (processor.sql.query).

-- migrations_lock --
-- Serialises concurrent migrators (any constant works if every processor uses the same one).
-- Transaction-scoped, so it is held and released on the same server connection even behind a
-- transaction-mode pooler.
select pg_advisory_xact_lock(1886547811);

-- migrations_table --
create table if not exists processor_migrations (
    version integer primary key,
    name text not null,
    checksum text not null,
    applied_at timestamptz not null default now()
);

-- migrations_exists --
select to_regclass('processor_migrations') is not null as ok;

-- migrations_applied --
select version, name, checksum, applied_at from processor_migrations order by version;

-- migrations_record --
insert into processor_migrations (version, name, checksum)
values (%(version)s, %(name)s, %(checksum)s);
