#!/usr/bin/env bash
# Installs what the local stack needs from the system: a PostgreSQL server and the pg_cron
# extension built for it (Debian/Ubuntu packages). With --tests, also PgBouncer (the tests'
# stand-in for Supabase's pooler; `make dev` never needs it). Does nothing when all are present.
set -euo pipefail
tests=false
[ "${1:-}" = "--tests" ] && tests=true

have() { command -v "$1" >/dev/null 2>&1; }

server_version() {
    # The newest installed server, e.g. 15 for /usr/lib/postgresql/15/bin/initdb.
    ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sed -E 's#.*/postgresql/([0-9]+)/.*#\1#' \
        | sort -n | tail -n 1
}

have_pgbouncer() { have pgbouncer || [ -x /usr/sbin/pgbouncer ]; }

version=$(server_version || true)
if [ -n "$version" ] && [ -f "/usr/share/postgresql/$version/extension/pg_cron.control" ] \
        && have runuser && { ! $tests || have_pgbouncer; }; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if have sudo; then SUDO=sudo; else
        echo "Need PostgreSQL and pg_cron: run as root, or install postgresql and" \
             "postgresql-<version>-cron yourself." >&2
        exit 1
    fi
else
    SUDO=
fi
if ! have apt-get; then
    echo "No apt-get here: install PostgreSQL (>= 13) and pg_cron with your package manager." >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
if [ -z "$version" ]; then
    $SUDO apt-get install -y -qq postgresql >/dev/null
    version=$(server_version)
fi
packages=("postgresql-$version-cron" util-linux)
$tests && packages+=(pgbouncer)
echo "Installing ${packages[*]} ..."
$SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
# The Debian package starts a machine-wide cluster; this project never uses it.
# The package may start a machine-wide PgBouncer on 6432; this project never uses it either.
echo "PostgreSQL $version with pg_cron$($tests && echo ', and PgBouncer,') ready."
