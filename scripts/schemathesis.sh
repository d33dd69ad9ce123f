#!/usr/bin/env bash
# Fuzz the HTTP API against its own OpenAPI document with schemathesis.
#
# Starts moto on a free loopback port, creates the minimal infrastructure in it
# with scripts/moto_infra.py, starts the real daemon against it, waits for
# /readyz, and runs schemathesis against http://127.0.0.1:PORT/openapi.json with
# the admin token. It checks that no input gets a server error (5xx), that
# every answer (status, content type, headers, body) is as documented, that bad
# input is refused with a 4xx and valid input accepted, that undocumented
# methods get a 405, and that every operation needing a token refuses a missing
# or wrong one. Exits non-zero when schemathesis reports any failure or error,
# when the daemon logs a panic, or when it dies. Daemon and moto are stopped by
# PID on exit; the work directory (logs, database, reports) is kept on failure.
#
# The daemon must be built already (scripts/test.sh, or build_daemon in
# scripts/lib.sh: `cargo build --bins --examples`): the binary is
# ${CARGO_TARGET_DIR:-target}/debug/spotpool, or SPOTPOOL_BIN. schemathesis is
# installed from PyPI when it is missing; moto too.
#
# Knobs (all optional):
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 50)
#   SCHEMATHESIS_SEED          replay a run (every run prints its seed)
#   SCHEMATHESIS_TIMEOUT       hard limit of the schemathesis run, seconds (default 180)
#   SCHEMATHESIS_KEEP=1        keep the work directory after a passing run too
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd -- "$ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-50}
TIMEOUT=${SCHEMATHESIS_TIMEOUT:-180}
SEED=${SCHEMATHESIS_SEED:-$((RANDOM * 32768 + RANDOM))}
BIN=${SPOTPOOL_BIN:-${CARGO_TARGET_DIR:-target}/debug/spotpool}

# ensure_schemathesis: make sure the `schemathesis` command is on PATH.
ensure_schemathesis() {
    if command -v schemathesis >/dev/null 2>&1; then
        return 0
    fi
    log "schemathesis is missing: installing it with pip"
    pip_install schemathesis || return 1
    if ! command -v schemathesis >/dev/null 2>&1; then
        log "schemathesis was installed but is not on PATH (PATH=$PATH)"
        return 1
    fi
    log "installed: $(command -v schemathesis)"
}

if [[ ! -x $BIN ]]; then
    log "$BIN not found or not executable: build it first (cargo build --bins --examples, or scripts/test.sh)"
    exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/spotpool-schemathesis.XXXXXX")
DAEMON_PID=
KEEP=${SCHEMATHESIS_KEEP:-0}
# shellcheck disable=SC2317  # invoked through the trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $DAEMON_PID ]]; then
        stop_pid "$DAEMON_PID" spotpool
    fi
    if [[ -n ${MOTO_PID:-} ]]; then
        stop_pid "$MOTO_PID" moto_server
    fi
    if ((rc == 0)) && [[ $KEEP != 1 ]]; then
        rm -rf -- "$WORK"
    else
        log "work directory kept: $WORK (daemon.log, moto.log, report/)"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_moto
ensure_schemathesis
version=$(schemathesis --version 2>/dev/null | sed -n 's/.*version \([0-9][0-9.]*\).*/\1/p')
major=${version%%.*}
log "schemathesis $version"

start_moto "$WORK"
log "moto is up at $MOTO_ENDPOINT"

# Never let the daemon or the infrastructure script pick up real AWS settings.
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN \
    AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE
export AWS_ENDPOINT_URL=$MOTO_ENDPOINT
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_EC2_METADATA_DISABLED=true

infra=$(python3 scripts/moto_infra.py --endpoint "$MOTO_ENDPOINT" 2>"$WORK/infra.log") || {
    cat -- "$WORK/infra.log" >&2
    log "scripts/moto_infra.py failed"
    exit 1
}
eval "$infra"

new_token() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
SPOTPOOL_API_TOKEN=$(new_token)
SPOTPOOL_ADMIN_TOKEN=$(new_token)
# Webhooks on: a PUT's callback_url is fuzzed too (public https URLs, as the served schema says).
SPOTPOOL_WEBHOOK_SECRET=$(new_token)
export SPOTPOOL_API_TOKEN SPOTPOOL_ADMIN_TOKEN SPOTPOOL_WEBHOOK_SECRET
port=$(free_port)
BASE_URL="http://127.0.0.1:$port"
export SPOTPOOL_LISTEN="127.0.0.1:$port"
export SPOTPOOL_DATABASE_URL="sqlite://$WORK/spotpool.db"
export CONTAINER_IMAGE=ghcr.io/openclaw/openclaw:latest
export SPOTPOOL_POOL=schemathesis
export SPOTPOOL_RECONCILE_INTERVAL=2s
export SPOTPOOL_POLL_INTERVAL=200ms
# The fuzzer creates many users: keep the pool small so moto stays fast.
export POOL_SPARE_COUNT=1
export POOL_MAX_INSTANCES=4
# The fuzzer may resize the tier (PUT /v1/admin/pool/{tier} up to 10,000): keep
# launches to a trickle so moto is not asked for thousands of instances.
export SPOTPOOL_RATE_LIMITS=ec2-run=2/0.5,ec2-run-instances=4/0.5
export RUST_LOG=${RUST_LOG:-info}
: >"$WORK/spotpool.db"

"$BIN" serve >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
if ! wait_http "$BASE_URL/readyz" 120 "$DAEMON_PID"; then
    tail -n 40 -- "$WORK/daemon.log" >&2
    log "the daemon did not become ready"
    exit 1
fi
log "daemon $BIN is ready at $BASE_URL"

report=$WORK/report
mkdir -p -- "$report"
# The admin token, which every route accepts, so the admin routes are fuzzed in
# their positive scope too; `ignored_auth` also sends none and a wrong one. (That
# the service token is refused on admin routes is tested in `api::tests`.)
auth="Authorization: Bearer $SPOTPOOL_ADMIN_TOKEN"
case $major in
    4)
        formats=junit,ndjson
        # use_after_free expects a GET after a DELETE to be 404 at once; a
        # DELETE here is asynchronous (202, `deleting` until AWS is cleaned up),
        # as documented, so that check does not apply.
        # scripts/schemathesis.toml: per-operation settings (and why).
        cmd=(schemathesis --config-file "$ROOT/scripts/schemathesis.toml"
            run "$BASE_URL/openapi.json"
            --header "$auth"
            --checks all
            --exclude-checks use_after_free
            # The event stream follows the journal until the client leaves (its requests
            # would only time out); tests/it/events.rs and e2e_events.rs test it.
            --exclude-path /v1/events
            --max-examples "$MAX_EXAMPLES"
            --seed "$SEED"
            # One worker: with two, hypothesis parses lambdas' source in two threads,
            # and CPython 3.11 before the gh-106905 fix can raise "SystemError: AST
            # constructor recursion depth mismatch" there (seen here once, a crash
            # of the fuzzer, not a finding about the API).
            --workers 1
            --request-timeout 10
            --generation-database none
            --no-color
            --report "$formats"
            --report-junit-path "$report/junit.xml"
            --report-ndjson-path "$report/events.ndjson")
        ;;
    3)
        # 3.x has no use_after_free to leave out. 3.39 needs hypothesis older
        # than 6.125: with a newer one hypothesis-jsonschema fails inside
        # schemathesis ('many' object has no attribute 'more').
        cmd=(schemathesis run "$BASE_URL/openapi.json"
            --header "$auth"
            --checks all
            --experimental openapi-3.1
            --exclude-path /v1/events
            --hypothesis-max-examples "$MAX_EXAMPLES"
            --hypothesis-seed "$SEED"
            --hypothesis-database none
            --workers 1
            --request-timeout 10000
            --no-color
            --junit-xml "$report/junit.xml")
        ;;
    *)
        log "schemathesis ${version:-(unknown version)} is not supported: install 3.x or 4.x"
        exit 1
        ;;
esac
printf -v shown '%q ' "${cmd[@]}"
log "running (seed $SEED): ${shown//$SPOTPOOL_ADMIN_TOKEN/<admin token>}"
started=$SECONDS
rc=0
# schemathesis writes a .hypothesis directory in its working directory.
(cd -- "$WORK" && timeout --signal INT --kill-after 20 "$TIMEOUT" "${cmd[@]}") \
    >"$report/output.txt" 2>&1 || rc=$?
took=$((SECONDS - started))
cat -- "$report/output.txt"

# A short summary: requests by status class and checks run, from the NDJSON
# events (4.x); operations passed and failed from the JUnit report.
summary=$(python3 - "$report" <<'PY' 2>/dev/null || true
import collections
import json
import os
import sys
import xml.etree.ElementTree as ET

report = sys.argv[1]
events = os.path.join(report, "events.ndjson")
if os.path.exists(events):
    statuses = collections.Counter()
    checks = collections.Counter()
    failed_checks = collections.Counter()
    for line in open(events, encoding="utf-8"):
        event = json.loads(line)
        recorder = event.get("ScenarioFinished", {}).get("recorder") or {}
        for interaction in recorder.get("interactions", {}).values():
            response = interaction.get("response")
            if response:
                statuses[f"{response['status_code'] // 100}xx"] += 1
        for results in recorder.get("checks", {}).values():
            for check in results:
                checks[check["name"]] += 1
                if check["status"] != "success":
                    failed_checks[check["name"]] += 1
    print(f"requests: {sum(statuses.values())} ("
          + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) + ")")
    print(f"checks: {sum(checks.values())} run over {len(checks)} kinds, "
          f"{sum(failed_checks.values())} failed"
          + "".join(f"\n  failed: {name} x{n}" for name, n in sorted(failed_checks.items())))
cases = list(ET.parse(os.path.join(report, "junit.xml")).getroot().iter("testcase"))
bad = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
print(f"operations and phases: {len(cases) - len(bad)} passed, {len(bad)} failed"
      + "".join(f"\n  failed: {c.get('name')}" for c in bad))
PY
)

status_ok=1
if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
    log "the daemon died during the run"
    status_ok=0
fi
if grep -q 'panicked' -- "$WORK/daemon.log"; then
    grep -m 5 'panicked' -- "$WORK/daemon.log" >&2
    log "the daemon panicked during the run"
    status_ok=0
fi

echo
echo "==== schemathesis summary ===="
echo "  schemathesis $version, seed $SEED, max examples $MAX_EXAMPLES: ${took}s, exit $rc"
if [[ -n $summary ]]; then
    while IFS= read -r line; do
        echo "  $line"
    done <<<"$summary"
fi
if ((rc == 124 || rc == 130)); then
    log "schemathesis did not finish within ${TIMEOUT}s"
fi
if ((rc != 0 || !status_ok)); then
    # The daemon's warnings and errors (its AWS SDK debug lines are noise here).
    grep -E ' (WARN|ERROR) ' -- "$WORK/daemon.log" | tail -n 30 >&2 || true
    log "FAILED (the daemon's whole log: $WORK/daemon.log)"
    exit 1
fi
log "passed"
