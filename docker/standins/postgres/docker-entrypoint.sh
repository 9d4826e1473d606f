#!/usr/bin/env bash
# The official postgres image's entry point, reduced to what users of the
# exercise's image rely on:
#   - as root: own PGDATA, then run again as the postgres user;
#   - an empty PGDATA: initdb with POSTGRES_USER as superuser and
#     POSTGRES_PASSWORD (md5 for TCP clients), POSTGRES_DB created, then every
#     /docker-entrypoint-initdb.d/*.sql and *.sh run against a server that
#     listens on its socket only (so TCP health checks wait for the real one);
#   - `postgres [OPTIONS]` (the default command) runs the server listening on
#     every interface; any other command is run as given.
set -Eeuo pipefail

if [ "${1:-}" != postgres ]; then
    exec "$@"
fi

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "docker-entrypoint: POSTGRES_PASSWORD is empty; set it" >&2
        exit 1
    fi
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" > /dev/null
    printf 'host all all all md5\n' >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -k /var/run/postgresql" start > /dev/null
    psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc -h /var/run/postgresql -U "$POSTGRES_USER" -q)
    if [ "$POSTGRES_DB" != postgres ]; then
        "${psql[@]}" -d postgres -c "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    for script in /docker-entrypoint-initdb.d/*; do
        case "$script" in
            *.sql) echo "docker-entrypoint: running $script"; "${psql[@]}" -d "$POSTGRES_DB" -f "$script" ;;
            *.sh) echo "docker-entrypoint: running $script"; . "$script" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop > /dev/null
    echo "docker-entrypoint: PostgreSQL init process complete; ready for start up."
fi

exec "$@" -c listen_addresses='*' -k /var/run/postgresql
