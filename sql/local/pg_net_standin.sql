-- A local stand-in for Supabase's pg_net, for `processor dev` and the tests only.
--
-- Same function signature and tables as pg_net: net.http_post() queues a request in
-- net.http_request_queue and returns its id; something outside the database sends it after the
-- calling transaction commits and records the answer in net._http_response. Here that
-- something is the processor's relay (`processor relay`, or inside `processor dev`), woken by a
-- NOTIFY, which PostgreSQL delivers only at commit; it paces itself as pg_net's worker does
-- (processor/ops/relay.py), so timings measured locally carry over. On Supabase, enable the real pg_net
-- extension instead: `processor schedule` refuses to install this where pg_net exists.

create schema if not exists net;

comment on schema net is
    'processor: local stand-in for pg_net (requests are sent by `processor relay`)';

do $$
begin
    if not exists (select 1 from pg_type t join pg_namespace n on n.oid = t.typnamespace
                   where n.nspname = 'net' and t.typname = 'http_method') then
        create domain net.http_method as text
            check (value ilike 'get' or value ilike 'post' or value ilike 'delete');
    end if;
end;
$$;

create table if not exists net.http_request_queue (
    id                   bigserial primary key,
    method               net.http_method not null,
    url                  text not null,
    headers              jsonb not null,
    body                 bytea,
    timeout_milliseconds integer not null
);

create unlogged table if not exists net._http_response (
    id           bigint,
    status_code  integer,
    content_type text,
    headers      jsonb,
    content      text,
    timed_out    boolean,
    error_msg    text,
    created      timestamptz not null default now()
);

create index if not exists _http_response_created_idx on net._http_response (created);

-- Percent-encodes a string the way curl_escape does (pg_net encodes params with it): every
-- byte but A-Z a-z 0-9 - . _ ~ becomes %XX.
create or replace function net._urlencode_string(string varchar) returns text
language sql immutable strict as $$
    select coalesce(string_agg(
        case when b between 48 and 57 or b between 65 and 90 or b between 97 and 122
                  or b in (45, 46, 95, 126)
             then chr(b)
             else '%' || upper(lpad(to_hex(b), 2, '0')) end, '' order by i), '')
    from (select i, get_byte(convert_to(string, 'UTF8'), i) as b
          from generate_series(0, octet_length(convert_to(string, 'UTF8')) - 1) as i) bytes
$$;

-- As pg_net 0.20: Content-Type must be application/json (added when missing), a null body
-- sends an empty body, params are URL-encoded onto the URL. The request stays in
-- net.http_request_queue until the relay has its answer.
create or replace function net.http_post(
    url text,
    body jsonb default '{}'::jsonb,
    params jsonb default '{}'::jsonb,
    headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
    timeout_milliseconds integer default 5000
) returns bigint
language plpgsql volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_id bigint;
    v_url text := url;
    v_headers jsonb := coalesce(headers, '{}'::jsonb);
    v_content_type text;
    v_query text;
begin
    select value into v_content_type
    from jsonb_each_text(v_headers) as h(key, value)
    where lower(key) = 'content-type'
    limit 1;
    if v_content_type is null then
        v_headers := v_headers || '{"Content-Type": "application/json"}'::jsonb;
    elsif v_content_type <> 'application/json' then
        raise exception 'Content-Type header must be "application/json"';
    end if;
    select string_agg(net._urlencode_string(key) || '=' || net._urlencode_string(value), '&')
    into v_query
    from jsonb_each_text(coalesce(params, '{}'::jsonb));
    if v_query is not null then
        v_url := v_url || case when position('?' in v_url) > 0 then '&' else '?' end || v_query;
    end if;
    insert into net.http_request_queue (method, url, headers, body, timeout_milliseconds)
    values ('POST', v_url, v_headers, convert_to(body::text, 'UTF8'), timeout_milliseconds)
    returning id into v_id;
    -- Delivered at commit, never before: the relay cannot send an uncommitted request.
    perform pg_notify('processor_net', v_id::text);
    return v_id;
end;
$$;
