#!/usr/bin/env bash
# Run the whole system locally: moto (fake AWS) + the infrastructure (built
# with the project's Terraform when possible) + `spotpool serve`, wired
# together. Ctrl-C stops everything.
#
# State lives in .local/ (gitignored): moto.log, spotpool.log, spotpool.db,
# the PID files, terraform/ (the Terraform working copy and its state), and env
# (source it in another terminal to reuse the settings).
#
# Knobs (all optional):
#   SPOTPOOL_API_TOKEN, SPOTPOOL_ADMIN_TOKEN  reuse tokens instead of random ones
#   CONTAINER_IMAGE      default ghcr.io/openclaw/openclaw:latest
#   POOL_SPARE_COUNT, POOL_MAX_INSTANCES, USER_INSTANCE_TYPE, SPOTPOOL_POOL,
#   CONTAINER_PORT       passed through to the daemon
#   SPOTPOOL_KEEP_DB=1   keep .local/spotpool.db from the previous run (moto
#                        always starts empty, so by default the database is reset)
#   SPOTPOOL_SKIP_BUILD=1  do not build (use the existing binary); the build is
#                        build_daemon in scripts/lib.sh, which shares the
#                        test build (scripts/test.sh)
#   SPOTPOOL_BIN         binary to run (default <target dir>/debug/spotpool)
#   SPOTPOOL_LOCAL_INFRA how to create the infrastructure in moto: `terraform`
#                        (terraform/examples/basic, as in production), `python`
#                        (scripts/moto_infra.py), or `auto` (default: terraform
#                        when it and its provider mirror are installed)
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd -- "$ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

STATE=.local
STATE_ABS=$ROOT/$STATE
mkdir -p "$STATE"

# A previous run that was killed hard may have left processes behind.
stop_pidfile "$STATE/spotpool.pid" spotpool
stop_pidfile "$STATE/moto.pid" moto_server

DAEMON_PID=
# shellcheck disable=SC2317  # invoked through the trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $DAEMON_PID ]]; then
        log "stopping spotpool (pid $DAEMON_PID)"
        stop_pid "$DAEMON_PID" spotpool
        rm -f "$STATE/spotpool.pid"
    fi
    if [[ -n ${MOTO_PID:-} ]]; then
        log "stopping moto_server (pid $MOTO_PID)"
        stop_pid "$MOTO_PID" moto_server
        rm -f "$STATE/moto.pid"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_moto

# Build first: a compile error should not cost a moto start, and the daemon's
# port is picked right before it starts, not minutes earlier.
if [[ ${SPOTPOOL_SKIP_BUILD:-0} != 1 ]]; then
    build_daemon
fi
BIN=${SPOTPOOL_BIN:-${CARGO_TARGET_DIR:-target}/debug/spotpool}
if [[ ! -x $BIN ]]; then
    log "$BIN not found or not executable"
    exit 1
fi

log "starting moto"
start_moto "$STATE"
log "moto is up at $MOTO_ENDPOINT (log: $STATE/moto.log)"

# Never let the local daemon pick up real AWS credentials or profiles.
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN \
    AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE
export AWS_ENDPOINT_URL=$MOTO_ENDPOINT
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_EC2_METADATA_DISABLED=true

# The knobs that shape the infrastructure too (Terraform bakes the image into
# the launch template's user data and the pool name into its tags).
export CONTAINER_IMAGE=${CONTAINER_IMAGE:-ghcr.io/openclaw/openclaw:latest}
export CONTAINER_PORT=${CONTAINER_PORT:-18789}
export USER_INSTANCE_TYPE=${USER_INSTANCE_TYPE:-t3.small}
export SPOTPOOL_POOL=${SPOTPOOL_POOL:-spotpool}

infra_tool=${SPOTPOOL_LOCAL_INFRA:-auto}
case $infra_tool in
    auto)
        if scripts/terraform_moto.sh check 2>/dev/null; then
            infra_tool=terraform
        else
            log "terraform or its provider mirror is missing: falling back to scripts/moto_infra.py"
            infra_tool=python
        fi
        ;;
    terraform | python) ;;
    *)
        log "SPOTPOOL_LOCAL_INFRA must be auto, terraform or python, not '$infra_tool'"
        exit 1
        ;;
esac
if [[ $infra_tool == terraform ]]; then
    log "creating the local infrastructure in moto with Terraform (terraform/examples/basic; state in $STATE/terraform)"
    # moto starts empty, so the state of an earlier run describes nothing; like a
    # fresh account it has no EC2 Spot service-linked role, which the root then creates.
    # One path-routed shard (no DNS here): daemon_env carries its ALB_LISTENER_ARN.
    rm -rf -- "$STATE/terraform"
    instance_types=$(python3 -c 'import json, sys; print(json.dumps([t.strip() for t in sys.argv[1].split(",") if t.strip()]))' "$USER_INSTANCE_TYPE")
    if ! daemon_env=$(scripts/terraform_moto.sh apply "$MOTO_ENDPOINT" "$STATE/terraform" \
        -var "container_image=$CONTAINER_IMAGE" -var "container_port=$CONTAINER_PORT" \
        -var "instance_types=$instance_types" -var "pool=$SPOTPOOL_POOL" \
        -var create_spot_service_linked_role=true \
        -var routing=path \
        2>"$STATE/terraform.log"); then
        tail -n 40 -- "$STATE/terraform.log" >&2
        log "terraform apply failed (above; whole log: $STATE/terraform.log)"
        exit 1
    fi
    log "terraform's log: $STATE/terraform.log"
    # KEY=value lines; exported one by one, never evaluated.
    while IFS= read -r line; do
        [[ $line == [A-Z]*=* ]] || continue
        export "${line%%=*}=${line#*=}"
    done <<<"$daemon_env"
else
    log "creating the local infrastructure in moto with scripts/moto_infra.py"
    infra=$(python3 scripts/moto_infra.py --endpoint "$MOTO_ENDPOINT")
    eval "$infra"
fi
log "infrastructure created with $infra_tool"

new_token() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
if [[ -z ${SPOTPOOL_API_TOKEN:-} ]]; then
    SPOTPOOL_API_TOKEN=$(new_token)
fi
if [[ -z ${SPOTPOOL_ADMIN_TOKEN:-} ]]; then
    SPOTPOOL_ADMIN_TOKEN=$(new_token)
fi
if [[ -z ${SPOTPOOL_WEBHOOK_SECRET:-} ]]; then
    SPOTPOOL_WEBHOOK_SECRET=$(new_token)
fi
# Local mode: callbacks to a receiver on this machine (plain http, loopback) are allowed.
SPOTPOOL_WEBHOOK_ALLOW_PRIVATE=${SPOTPOOL_WEBHOOK_ALLOW_PRIVATE:-true}
export SPOTPOOL_API_TOKEN SPOTPOOL_ADMIN_TOKEN SPOTPOOL_WEBHOOK_SECRET SPOTPOOL_WEBHOOK_ALLOW_PRIVATE
daemon_port=$(free_port)
export SPOTPOOL_LISTEN="127.0.0.1:$daemon_port"
export SPOTPOOL_DATABASE_URL="sqlite://$STATE/spotpool.db"
export SPOTPOOL_RECONCILE_INTERVAL=2s
export POOL_SPARE_COUNT=${POOL_SPARE_COUNT:-2}
if [[ -n ${POOL_MAX_INSTANCES:-} ]]; then
    export POOL_MAX_INSTANCES
fi

# moto starts empty on every run, so a database from an earlier run describes
# instances that no longer exist. An empty file is a valid empty SQLite database,
# so the daemon can open it whether or not it creates missing files itself.
if [[ ${SPOTPOOL_KEEP_DB:-0} != 1 ]]; then
    rm -f "$STATE"/spotpool.db "$STATE"/spotpool.db-wal "$STATE"/spotpool.db-shm
fi
[[ -e $STATE/spotpool.db ]] || : >"$STATE/spotpool.db"

ENV_VARS=(AWS_ENDPOINT_URL AWS_REGION AWS_DEFAULT_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
    VPC_ID SUBNET_IDS SECURITY_GROUP_ID ALB_LISTENER_ARN LAUNCH_TEMPLATE_ID INSTANCE_PROFILE_ARN
    PUBLIC_BASE_URL SECRET_PREFIX HEALTH_CHECK_PATH HEALTH_CHECK_INTERVAL_SECONDS
    HEALTH_CHECK_TIMEOUT_SECONDS HEALTH_CHECK_HEALTHY_THRESHOLD HEALTH_CHECK_UNHEALTHY_THRESHOLD
    CONTAINER_IMAGE CONTAINER_PORT USER_INSTANCE_TYPE POOL_SPARE_COUNT POOL_MAX_INSTANCES
    SPOTPOOL_POOL SPOTPOOL_LISTEN SPOTPOOL_DATABASE_URL SPOTPOOL_RECONCILE_INTERVAL
    SPOTPOOL_API_TOKEN SPOTPOOL_ADMIN_TOKEN SPOTPOOL_WEBHOOK_SECRET SPOTPOOL_WEBHOOK_ALLOW_PRIVATE)
# It holds the tokens: readable by the owner only.
rm -f "$STATE/env"
(umask 077 && : >"$STATE/env")
{
    echo "# Written by scripts/local-up.sh; valid while it runs. Source it to reuse these settings."
    for name in "${ENV_VARS[@]}"; do
        if [[ -n ${!name:-} ]]; then
            printf 'export %s=%q\n' "$name" "${!name}"
        fi
    done
} >"$STATE/env"

BASE_URL="http://$SPOTPOOL_LISTEN"
log "starting $BIN serve on $BASE_URL (log: $STATE/spotpool.log)"
: >"$STATE/spotpool.log"
# tee ignores SIGINT so that Ctrl-C cannot cut the daemon's output off while it
# shuts down; it exits by itself when the daemon closes the pipe.
"$BIN" serve > >(trap '' INT && exec tee -a "$STATE/spotpool.log") 2>&1 &
DAEMON_PID=$!
echo "$DAEMON_PID" >"$STATE/spotpool.pid"

if ! wait_http "$BASE_URL/readyz" 120 "$DAEMON_PID"; then
    log "spotpool did not become ready; see $STATE/spotpool.log and $STATE/moto.log"
    exit 1
fi

cat <<BANNER

================================================================================
 spotpool is running locally against moto.  Ctrl-C stops everything.
================================================================================
 daemon:  $BASE_URL   (pid $DAEMON_PID, log $STATE_ABS/spotpool.log)
 moto:    $MOTO_ENDPOINT   (pid $MOTO_PID, log $STATE_ABS/moto.log)
 infra:   created with $infra_tool

 Claim an instance for user alice, with a secret:

   curl -sS -X PUT '$BASE_URL/v1/users/alice/instance' \\
     -H 'Authorization: Bearer $SPOTPOOL_API_TOKEN' \\
     -H 'Content-Type: application/json' \\
     -d '{"secrets":{"OPENCLAW_GATEWAY_TOKEN":"gw-demo-token","OPENAI_API_KEY":"sk-demo"}}'

 Read her instance:

   curl -sS '$BASE_URL/v1/users/alice/instance' \\
     -H 'Authorization: Bearer $SPOTPOOL_API_TOKEN'

 The on-call dashboard (it asks for the admin token above):

   $BASE_URL/dashboard

 Look at moto directly (see docs/local-mode.md):

   source $STATE_ABS/env
   aws ec2 describe-instances --filters Name=tag:Name,Values=openclaw-user-instance \\
     --query 'Reservations[].Instances[].[InstanceId,State.Name,Tags[?Key==\`Status\`]|[0].Value]'

 Environment used (also in $STATE_ABS/env):
BANNER
for name in "${ENV_VARS[@]}"; do
    if [[ -n ${!name:-} ]]; then
        printf '   %s=%s\n' "$name" "${!name}"
    fi
done
echo "================================================================================"
echo

# Wait on the daemon. Ctrl-C/TERM interrupt the wait and run the trap; if the
# daemon exits on its own, stop moto and pass its exit status on.
set +e
wait "$DAEMON_PID"
rc=$?
set -e
log "spotpool exited with status $rc"
DAEMON_PID=
rm -f "$STATE/spotpool.pid"
exit "$rc"
