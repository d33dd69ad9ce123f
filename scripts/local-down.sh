#!/usr/bin/env bash
# Stop what scripts/local-up.sh left running (after a kill -9, a closed
# terminal...), using the PID files in .local/. Safe to run at any time.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd -- "$ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

stop_pidfile .local/spotpool.pid spotpool
stop_pidfile .local/moto.pid moto_server
