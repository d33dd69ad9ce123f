#!/usr/bin/env bash
# The Prometheus alert rules (deploy/prometheus/alerts.yml): `promtool
# check rules`, then their unit tests (tests/prometheus/*.test.yml). Installs
# promtool (Debian's prometheus package) when it is missing.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

ensure_command promtool prometheus
log "$(promtool --version 2>&1 | head -n 1)"
promtool check rules deploy/prometheus/*.yml
for test in tests/prometheus/*.test.yml; do
    promtool test rules "$test"
done
