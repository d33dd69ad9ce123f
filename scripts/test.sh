#!/usr/bin/env bash
# Run all the tests. Extra arguments go to `cargo nextest run`, e.g.
#   scripts/test.sh e2e          # only tests whose name contains "e2e"
# The tests start their own moto servers (moto_server on PATH); the terraform
# test lints the IAM policies with parliament (installed when missing).
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

ensure_moto
ensure_parliament
if ! cargo nextest --version >/dev/null 2>&1; then
    log "cargo-nextest is missing: cargo install cargo-nextest --locked (takes a few minutes)"
    cargo install cargo-nextest --locked
fi

exec cargo nextest run --workspace --all-targets --no-fail-fast "$@"
