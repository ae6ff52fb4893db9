-- A database laid out as a hosted Supabase project's is, for the privilege tests: run as the
-- bootstrap superuser (named supabase_admin, as on Supabase) in the project's database. The
-- roles, their attributes and the default privileges follow Supabase's own init scripts
-- (supabase/postgres, migrations/db/init-scripts); what this does not build (Vault, GoTrue's
-- tables, pg_graphql) is not touched by the processor's migrations.

create role postgres login createrole createdb replication bypassrls;
create role anon nologin noinherit;
create role authenticated nologin noinherit;
create role service_role nologin noinherit bypassrls;
create role authenticator login noinherit;
grant anon, authenticated, service_role to authenticator;
grant anon, authenticated, service_role to postgres;

do $$ begin execute format('alter database %I owner to postgres', current_database()); end $$;
grant usage on schema public to postgres, anon, authenticated, service_role;
grant all on schema public to postgres;

-- What every new object in public gets, whoever of the two makes it.
alter default privileges in schema public
    grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges in schema public
    grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges in schema public
    grant all on sequences to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public
    grant all on tables to anon, authenticated, service_role;
alter default privileges for role postgres in schema public
    grant all on functions to anon, authenticated, service_role;
alter default privileges for role postgres in schema public
    grant all on sequences to anon, authenticated, service_role;

-- auth.uid() as GoTrue's schema defines it (the JWT's sub claim).
create schema auth authorization supabase_admin;
grant usage on schema auth to postgres, anon, authenticated, service_role;
create function auth.uid() returns uuid language sql stable as $$
    select nullif(coalesce(current_setting('request.jwt.claim.sub', true),
                           (current_setting('request.jwt.claims', true)::jsonb ->> 'sub')),
                  '')::uuid
$$;
grant execute on function auth.uid() to postgres, anon, authenticated, service_role;

create publication supabase_realtime;
alter publication supabase_realtime owner to postgres;

-- pg_cron, installed by supabase_admin and usable by postgres.
create extension if not exists pg_cron;
grant usage on schema cron to postgres;
grant all on all tables in schema cron to postgres;
grant execute on all functions in schema cron to postgres;
