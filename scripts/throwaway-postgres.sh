#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: initdb in a new temporary
# directory, the server on a free loopback port with trust authentication and
# no durability (fsync off), stopped by its PID. With openssl on PATH the
# server speaks TLS with a certificate for 127.0.0.1 from a CA made for it,
# and the URL asks for sslmode=verify-full with that CA (sslrootcert), so every
# test connection goes through the store's rustls path. PostgreSQL refuses to run as
# root, so as root the cluster belongs to and runs as the postgres user
# (runuser). Needs initdb, pg_ctl and postgres on PATH (Debian: the
# postgresql package; its binaries are in /usr/lib/postgresql/<version>/bin,
# which is searched too).
#   scripts/throwaway-postgres.sh start   start one; print its directory and
#                                         URL (two lines)
#   scripts/throwaway-postgres.sh stop DIR
#                                         stop the cluster of DIR by its PID,
#                                         delete DIR
#   scripts/throwaway-postgres.sh serve   start one, print its URL, and stop
#                                         it once standard input closes: the
#                                         store tests' helper holds the pipe,
#                                         so the cluster lives as long as the
#                                         test process (src/store/testing.rs)
# The URL names the database `postgres` as the user `postgres`, no password.

# tls DIR: a CA (DIR/ca.crt) and the server's key and certificate, signed by it,
# in DIR/data; prints the server options and the URL's query. Nothing without
# openssl.
tls() {
    local dir=$1
    if ! command -v openssl >/dev/null 2>&1; then
        echo "throwaway-postgres: no openssl: the cluster speaks plain TCP" >&2
        echo ""
        echo ""
        return 0
    fi
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -days 2 -subj /CN=spotpool-test-ca \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    openssl req "${ec[@]}" -subj /CN=127.0.0.1 \
        -keyout "$dir/data/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/data/server.crt" 2>/dev/null
    rm -f -- "$dir/ca.key" "$dir/server.csr" "$dir/server.ext" "$dir/ca.srl"
    chmod 600 "$dir/data/server.key"
    chmod 644 "$dir/ca.crt"
    if (($(id -u) == 0)); then
        chown postgres: "$dir/data/server.key" "$dir/data/server.crt"
    fi
    echo "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
    echo "?sslmode=verify-full&sslrootcert=$dir/ca.crt"
}
set -euo pipefail

# Debian keeps the server binaries out of PATH.
for dir in /usr/lib/postgresql/*/bin; do
    [[ -d $dir ]] && PATH="$PATH:$dir"
done

as_postgres() {
    if (($(id -u) == 0)); then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

check_binaries() {
    local missing=() tool
    for tool in initdb pg_ctl postgres; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        echo "throwaway-postgres: ${missing[*]} not found: the PostgreSQL half of the store tests needs PostgreSQL's server binaries (apt-get install postgresql)" >&2
        exit 1
    fi
    if (($(id -u) == 0)) && ! id postgres >/dev/null 2>&1; then
        echo "throwaway-postgres: running as root needs a postgres user to run the server as (apt-get install postgresql creates it)" >&2
        exit 1
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start: prints DIR, then the URL.
start() {
    check_binaries
    local dir port attempt tls_options query
    dir=$(mktemp -d "${TMPDIR:-/tmp}/spotpool-postgres.XXXXXX")
    chmod 755 "$dir"
    if (($(id -u) == 0)); then
        chown postgres: "$dir"
    fi
    if ! as_postgres initdb -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C \
        --no-sync >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        rm -rf -- "$dir"
        echo "throwaway-postgres: initdb failed" >&2
        exit 1
    fi
    {
        read -r tls_options
        read -r query
    } < <(tls "$dir")
    # A port taken between free_port and the server's bind: try another.
    for attempt in 1 2 3; do
        port=$(free_port)
        if as_postgres pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 $tls_options" \
            start >/dev/null; then
            echo "$dir"
            echo "postgres://postgres@127.0.0.1:$port/postgres$query"
            return 0
        fi
        echo "throwaway-postgres: the server did not start on port $port (attempt $attempt):" >&2
        tail -n 5 "$dir/server.log" >&2 || true
    done
    rm -rf -- "$dir"
    exit 1
}

# stop DIR: the postmaster's PID is the first line of postmaster.pid.
stop() {
    local dir=$1 pid
    if [[ -f $dir/data/postmaster.pid ]]; then
        pid=$(head -n 1 "$dir/data/postmaster.pid")
        # SIGINT is PostgreSQL's fast shutdown: sessions are ended, no checkpoint wait.
        if kill -INT "$pid" 2>/dev/null; then
            while kill -0 "$pid" 2>/dev/null; do
                sleep 0.1
            done
        fi
    fi
    rm -rf -- "$dir"
}

case ${1:-} in
    start) start ;;
    stop)
        [[ -n ${2:-} ]] || {
            echo "usage: $0 stop DIR" >&2
            exit 2
        }
        stop "$2"
        ;;
    serve)
        {
            read -r dir
            read -r url
        } < <(start)
        [[ -n ${url:-} ]] || exit 1
        echo "$url"
        exec >/dev/null 2>&1
        # Until whoever started us closes the pipe (or exits, or is killed).
        cat >/dev/null || true
        stop "$dir"
        ;;
    *)
        echo "usage: $0 start | stop DIR | serve" >&2
        exit 2
        ;;
esac
