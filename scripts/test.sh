#!/usr/bin/env bash
# Run all the tests. Extra arguments go to `cargo nextest run`, e.g.
#   scripts/test.sh e2e          # only tests whose name contains "e2e"
# The tests start their own moto servers (moto_server on PATH); the terraform
# test lints the IAM policies with parliament (installed when missing); the
# store tests get one throwaway PostgreSQL cluster for the run
# (scripts/throwaway-postgres.sh: initdb, pg_ctl and postgres must be there);
# the isolation test builds network namespaces (root, ip and iptables); the
# dashboard test drives Debian's chromium (installed when missing).
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

ensure_moto
ensure_parliament
# The shared-instance network rules are tested in network namespaces (tests/it/isolation.rs).
ensure_command iptables iptables
ensure_command ip iproute2
# The on-call dashboard is tested in headless Chromium (tests/it/dashboard.rs).
ensure_command chromium chromium
if ! cargo nextest --version >/dev/null 2>&1; then
    log "cargo-nextest is missing: cargo install cargo-nextest --locked (takes a few minutes)"
    cargo install cargo-nextest --locked
fi

# One throwaway PostgreSQL cluster for the whole run: the PostgreSQL half of the
# store suite and the worlds over PostgreSQL create their databases on it
# (src/store/testing.rs). Without PostgreSQL's binaries this fails: the
# PostgreSQL half is never skipped. Stopped by its PID when this script exits.
ensure_postgres
pg_out=$(scripts/throwaway-postgres.sh start) || {
    log "could not start a throwaway PostgreSQL cluster for the store tests (see above)"
    exit 1
}
pg_dir=${pg_out%%$'\n'*}
stop_postgres() {
    scripts/throwaway-postgres.sh stop "$pg_dir"
}
trap stop_postgres EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
SPOTPOOL_TEST_POSTGRES_URL=${pg_out#*$'\n'}
export SPOTPOOL_TEST_POSTGRES_URL
log "throwaway PostgreSQL at $SPOTPOOL_TEST_POSTGRES_URL ($pg_dir)"

cargo nextest run --workspace --all-targets --no-fail-fast "$@"
