#!/bin/bash
# spotpool: start (or replace) the user's container and wait until it is
# healthy (and ready, with READY_PATH). Exits 0 once it answers; otherwise
# non-zero with one `spotpool: ...` line on standard error.
#
# Inputs (shell variables spotpool prepends):
#   USER_ID         the spotpool user id; container openclaw-$USER_ID, its
#                   /data the user's workspace volume or, without one, the
#                   Docker volume spotpool-$USER_ID
#   SECRET_ARN      the user's secret in Secrets Manager, read here by ARN with
#                   the instance role (the region is taken from the ARN)
#   IMAGE           the user container image: pinned (name@sha256:...) once the
#                   daemon resolved it, present since the readiness probe
#   PORT            the container's port, published as HOST_IP:HOST_PORT
#   HOST_PORT       the instance's port for it (default PORT; on a shared
#                   instance PORT plus the user's slot)
#   SHARED          1 on a shared instance (several users): the container gets
#                   a Docker network of its own, spotpool-$USER_ID (a bridge,
#                   no inter-container traffic), and the start refuses an
#                   instance without the isolation rules (check_shared_isolation
#                   in lib.sh); empty: the default bridge
#   HOST_IP         the instance's private IPv4 address; empty: asked from the
#                   instance metadata service (IMDSv2). Never 0.0.0.0.
#   HEALTH_PATH     the container's health path, e.g. /healthz
#   HEALTH_CODES    the HTTP codes that pass it, as the target group's matcher
#                   says them: codes or ranges separated by commas (200,
#                   200-299); the wait accepts exactly these
#   HEALTH_TIMEOUT  seconds to wait for it
#   MEMORY_MB       memory limit in MiB, swap included (so no swap)
#   CPUS            CPU limit, e.g. 1.000 (at most three decimals)
#   PIDS_LIMIT      most processes and threads in the container
#   WORKSPACE_VOLUME_ID   the user's EBS workspace volume (vol-...), attached
#                   to this instance by the daemon as /dev/$WORKSPACE_DEVICE;
#                   empty: no workspace, /data is a Docker volume on the root
#                   disk
#   WORKSPACE_DEVICE      the device name it was attached as (default sdf; a
#                   shared instance's slot has its own)
#   WORKSPACE_DEVICE_DIR  where udev links NVMe EBS volumes by serial
#                   (default /dev/disk/by-id)
#   CONTAINER_ARGS  the container's arguments after the image, separated by
#                   spaces (words of letters, digits and - _ . / : @ = , +)
#   CONTAINER_ENV   fixed environment, NAME=value pairs separated by spaces
#   READY_PATH      empty, or a path that must answer 200 after HEALTH_PATH
#                   does (e.g. the OpenClaw gateway's /readyz)
#   REQUIRED_SECRETS  names the user's secret must carry, separated by spaces
#   GATEWAY_ORIGIN  empty, or the user's browser origin: the OpenClaw gateway's
#                   configuration is merged before the start (with
#                   GATEWAY_BASE_PATH, its path prefix, and GATEWAY_STATE_DIR,
#                   its state directory under /data); see openclaw-config.py
#
# The workspace: the volume's device is found by its volume id (see
# workspace_device in lib.sh), waited for up to $SPOTPOOL_WORKSPACE_WAIT
# seconds (default 30), and mounted at $SPOTPOOL_WORKSPACE_ROOT/$USER_ID
# (default /var/lib/spotpool/workspaces, 0700 root) with nodev,nosuid,noexec,
# noatime; a re-run finds it mounted and does not mount it again. A file
# system is created only on a blank device (blkid finds no signature at all:
# no file system, partition table, LVM, RAID, swap...): ext4 labelled
# spotpool-ws. A device holding anything else is refused, never formatted nor
# mounted. The root of the file system belongs to the container's uid, mode
# 0700. stop-workspace.sh unmounts it before the daemon detaches the volume.
#
# The secret's values travel only through a pipe into a root-only env file on
# tmpfs ($SPOTPOOL_RUN_DIR, default /run/spotpool, mode 0700; the file 0600),
# which is removed as soon as `docker run` returns and on every exit path.
# They never appear in a command line, in standard error or in the output.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh" # spotpool:inline-lib

require_user_id
require SECRET_ARN '^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+$' \
    'a Secrets Manager secret ARN'
require_image
require PORT '^[1-9][0-9]{0,4}$' 'a port number from 1 to 65535'
((10#$PORT <= 65535)) || fail "input PORT is malformed (expected a port number from 1 to 65535)"
HOST_PORT=${HOST_PORT:-$PORT}
require HOST_PORT '^[1-9][0-9]{0,4}$' 'a port number from 1 to 65535'
((10#$HOST_PORT <= 65535)) || fail "input HOST_PORT is malformed (expected a port number from 1 to 65535)"
optional SHARED '^1$' '1 (a shared instance) or nothing'
IPV4_PATTERN='^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$'
optional HOST_IP "$IPV4_PATTERN" 'an IPv4 address'
NOT_ALL="HOST_IP must be the instance's private address, not 0.0.0.0"
[[ ${HOST_IP-} != 0.0.0.0 ]] || fail "$NOT_ALL"
require HEALTH_PATH '^/[A-Za-z0-9._~/%?=&+-]{0,1023}$' \
    'a path starting with / of letters, digits and . _ ~ / % ? = & + -'
CODE='[2-4][0-9]{2}'
require HEALTH_CODES "^$CODE(-$CODE)?(,$CODE(-$CODE)?)*\$" 'HTTP codes or ranges like 200 or 200-299'
require HEALTH_TIMEOUT '^[1-9][0-9]{0,4}$' 'a number of seconds'
require MEMORY_MB '^[1-9][0-9]{0,6}$' 'a number of MiB'
require CPUS '^[0-9]{1,3}(\.[0-9]{1,3})?$' 'a number of CPUs like 1.000'
[[ $CPUS =~ [1-9] ]] || fail "input CPUS is malformed (expected more than 0 CPUs)"
require PIDS_LIMIT '^[1-9][0-9]{0,6}$' 'a number of processes'
if [[ -n ${WORKSPACE_VOLUME_ID-} ]]; then
    require_workspace_volume
fi
WORD_PATTERN='^[A-Za-z0-9_./:@=,+-]{1,256}$'
read -ra ARGS <<<"${CONTAINER_ARGS-}"
for word in "${ARGS[@]}"; do
    [[ $word =~ $WORD_PATTERN ]] \
        || fail "input CONTAINER_ARGS is malformed (expected words of letters, digits and - _ . / : @ = , +)"
done
read -ra ENV_PAIRS <<<"${CONTAINER_ENV-}"
ENV_FLAGS=()
for pair in "${ENV_PAIRS[@]}"; do
    [[ $pair =~ ^[A-Za-z_][A-Za-z0-9_]{0,127}=[A-Za-z0-9_./:@=,+-]{0,1024}$ ]] \
        || fail "input CONTAINER_ENV is malformed (expected NAME=value pairs of plain characters)"
    ENV_FLAGS+=(--env "$pair")
done
optional READY_PATH '^/[A-Za-z0-9._~/%?=&+-]{0,1023}$' \
    'a path starting with / of letters, digits and . _ ~ / % ? = & + -'
read -ra REQUIRED <<<"${REQUIRED_SECRETS-}"
for name in "${REQUIRED[@]}"; do
    [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]{0,127}$ ]] \
        || fail "input REQUIRED_SECRETS is malformed (expected names like environment variables)"
done
if [[ -n ${GATEWAY_ORIGIN-} ]]; then
    require GATEWAY_ORIGIN '^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$' 'an origin like https://agents.example.com'
    optional GATEWAY_BASE_PATH '^/[A-Za-z0-9._~-]{1,128}$' 'a path of one segment like /r-abc123'
    require GATEWAY_STATE_DIR '^/data(/[A-Za-z0-9._-]{1,128})?$' 'a directory of /data, e.g. /data/.openclaw'
    [[ $GATEWAY_STATE_DIR != */. && $GATEWAY_STATE_DIR != */.. ]] \
        || fail "input GATEWAY_STATE_DIR is malformed (expected a directory of /data, e.g. /data/.openclaw)"
fi

# The uid:gid the container runs as: not 0, and no account on the host (on
# Amazon Linux uid 1000 is ec2-user, who may sudo).
CONTAINER_UID=10001
CONTAINER_GID=10001
NAME="openclaw-$USER_ID"
VOLUME="spotpool-$USER_ID"
WORKSPACE_MOUNT="$SPOTPOOL_WORKSPACE_ROOT/$USER_ID"
WORKSPACE_LABEL=spotpool-ws
# The gateway configuration merge (openclaw-config.py), inlined by spotpool.
GATEWAY_CONFIG_PROGRAM='' # spotpool:inline-program openclaw-config.py
ENV_FILE="$SPOTPOOL_RUN_DIR/$NAME.env"
arn_rest=${SECRET_ARN#arn:*:secretsmanager:}
REGION=${arn_rest%%:*}

# Removed on every exit path: success, failure, a signal.
trap 'rm -f -- "$ENV_FILE"' EXIT

# 1. The instance is fit: the image is here and containers cannot reach the
#    instance metadata service.
docker image inspect "$IMAGE" >/dev/null || fail "image $IMAGE is not present on the instance"
check_metadata_block
NETWORK=bridge
if [[ -n ${SHARED-} ]]; then
    check_shared_isolation
    NETWORK="spotpool-$USER_ID"
    if ! docker network inspect "$NETWORK" >/dev/null 2>&1; then
        docker network create --driver bridge \
            --opt com.docker.network.bridge.enable_icc=false \
            --label "spotpool.user=$USER_ID" "$NETWORK" >/dev/null \
            || fail "could not create the Docker network $NETWORK"
    fi
fi

# 2. The address to publish on: the instance's private address, never all.
imds_private_ip() {
    local token
    token=$(curl --fail --silent --show-error --max-time 2 --request PUT \
        --header 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
        "http://$METADATA_ADDRESS/latest/api/token") || return 1
    # The token goes in through standard input, not the command line.
    printf 'X-aws-ec2-metadata-token: %s\n' "$token" \
        | curl --fail --silent --show-error --max-time 2 --header @- \
            "http://$METADATA_ADDRESS/latest/meta-data/local-ipv4"
}
if [[ -z ${HOST_IP-} ]]; then
    HOST_IP=$(imds_private_ip) \
        || fail "HOST_IP was not given and the instance metadata service did not give the private address"
    require HOST_IP "$IPV4_PATTERN" 'an IPv4 address from the instance metadata service'
    [[ $HOST_IP != 0.0.0.0 ]] || fail "$NOT_ALL"
fi

# 3. Replace a previous container of this user (a re-run of this command).
remove_user_container "$NAME"

# device_number PATH: the major:minor (decimal) of the block device PATH.
device_number() {
    local hex
    hex=$(stat -L -c '%t:%T' -- "$1") || return 1
    printf '%d:%d\n' "0x${hex%:*}" "0x${hex#*:}"
}

# format_if_blank DEVICE: creates the workspace file system on DEVICE if it
# is blank; returns if it already holds one spotpool created; fails otherwise.
format_if_blank() {
    local device=$1 probe status=0 key value fs_type='' fs_label='' table='' what
    # blkid also answers 2 for a device it cannot read: read it first, so 2
    # can only mean "no signature".
    head -c 1048576 -- "$device" >/dev/null \
        || fail "the device of volume $WORKSPACE_VOLUME_ID cannot be read"
    # -p: probe the device itself (no cache), for file systems, partition
    # tables and other signatures alike.
    probe=$(blkid -p -o export -- "$device") || status=$?
    if ((status == 2)); then
        command -v mkfs.ext4 >/dev/null \
            || fail "mkfs.ext4 is missing on the instance (package e2fsprogs)"
        echo "volume $WORKSPACE_VOLUME_ID is blank: creating its file system"
        mkfs.ext4 -q -L "$WORKSPACE_LABEL" -m 0 -E nodiscard "$device" </dev/null \
            || fail "could not create a file system on volume $WORKSPACE_VOLUME_ID"
        return
    fi
    ((status == 0)) \
        || fail "could not probe volume $WORKSPACE_VOLUME_ID for signatures (blkid exit $status)"
    while IFS='=' read -r key value; do
        case $key in
        TYPE) fs_type=$value ;;
        LABEL) fs_label=$value ;;
        PTTYPE) table=$value ;;
        esac
    done <<<"$probe"
    if [[ -z $table && $fs_type == ext4 && $fs_label == "$WORKSPACE_LABEL" ]]; then
        echo "volume $WORKSPACE_VOLUME_ID holds its workspace file system"
        return
    fi
    # Only blkid's type names, checked, go into the message: never a label.
    if [[ $table =~ ^[a-z0-9_-]{1,32}$ ]]; then
        what="a $table partition table"
    elif [[ -n $table ]]; then
        what="a partition table"
    elif [[ $fs_type == ext4 ]]; then
        what="ext4 not labelled $WORKSPACE_LABEL"
    elif [[ $fs_type =~ ^[a-z0-9_-]{1,32}$ ]]; then
        what=$fs_type
    else
        what="an unknown signature"
    fi
    fail "volume $WORKSPACE_VOLUME_ID is not a spotpool workspace (blkid finds $what): refusing to format or mount it"
}

# mount_workspace: the user's volume mounted at WORKSPACE_MOUNT, its root
# owned by the container's uid.
mount_workspace() {
    local device='' deadline number
    require_private_dir "$SPOTPOOL_WORKSPACE_ROOT"
    if [[ ! -e $WORKSPACE_MOUNT && ! -L $WORKSPACE_MOUNT ]]; then
        install -d -m 0700 "$WORKSPACE_MOUNT"
    fi
    [[ -d $WORKSPACE_MOUNT && ! -L $WORKSPACE_MOUNT ]] \
        || fail "$WORKSPACE_MOUNT is not a directory"
    # Attaching is asynchronous: the device appears a few seconds after the
    # volume is attached.
    deadline=$((SECONDS + 10#$SPOTPOOL_WORKSPACE_WAIT))
    until device=$(workspace_device); do
        ((SECONDS < deadline)) \
            || fail "volume $WORKSPACE_VOLUME_ID is not attached: no device for it appeared within ${SPOTPOOL_WORKSPACE_WAIT}s"
        sleep 1
    done
    number=$(device_number "$device") \
        || fail "the device of volume $WORKSPACE_VOLUME_ID vanished"
    if mountpoint -q -- "$WORKSPACE_MOUNT"; then
        # A re-run of this command: mounted already, and never twice.
        [[ $(findmnt -n -r -o MAJ:MIN --mountpoint "$WORKSPACE_MOUNT" | sort -u) == "$number" ]] \
            || fail "$WORKSPACE_MOUNT holds another file system than volume $WORKSPACE_VOLUME_ID"
        echo "volume $WORKSPACE_VOLUME_ID is mounted at $WORKSPACE_MOUNT already"
    else
        if findmnt -n --source "$device" >/dev/null; then
            fail "volume $WORKSPACE_VOLUME_ID is mounted elsewhere on the instance"
        fi
        format_if_blank "$device"
        mount -t ext4 -o nodev,nosuid,noexec,noatime -- "$device" "$WORKSPACE_MOUNT" \
            || fail "could not mount volume $WORKSPACE_VOLUME_ID at $WORKSPACE_MOUNT"
        echo "volume $WORKSPACE_VOLUME_ID mounted at $WORKSPACE_MOUNT"
    fi
    chown "$CONTAINER_UID:$CONTAINER_GID" "$WORKSPACE_MOUNT"
    chmod 0700 "$WORKSPACE_MOUNT"
}

# 4. The user's data, writable by the container's uid only: the workspace
#    volume, or without one a Docker volume on the root disk.
if [[ -n ${WORKSPACE_VOLUME_ID-} ]]; then
    mount_workspace
    DATA_DIR=$WORKSPACE_MOUNT
    DATA_MOUNT="type=bind,source=$WORKSPACE_MOUNT,target=/data"
else
    docker volume create --label "spotpool.user=$USER_ID" "$VOLUME" >/dev/null \
        || fail "could not create volume $VOLUME"
    mountpoint=$(docker volume inspect --format '{{.Mountpoint}}' "$VOLUME") \
        || fail "could not inspect volume $VOLUME"
    [[ $mountpoint == /* && -d $mountpoint && ! -L $mountpoint ]] \
        || fail "volume $VOLUME has no usable mount point"
    chown "$CONTAINER_UID:$CONTAINER_GID" "$mountpoint"
    chmod 0700 "$mountpoint"
    DATA_DIR=$mountpoint
    DATA_MOUNT="type=volume,source=$VOLUME,target=/data,volume-nocopy"
fi

# 5. The secret, by ARN, with the instance role, into the root-only env file.
require_private_dir "$SPOTPOOL_RUN_DIR"
rm -f -- "$ENV_FILE"
# Reads the GetSecretValue response on standard input and writes KEY=value
# lines to the file named by its argument (created 0600, never followed if a
# link). On a refusal it prints one line naming the rule broken (never a value)
# and exits non-zero.
PARSE_SECRET='
import json, os, re, sys

def refuse(reason):
    print(reason)
    sys.exit(2)

def main():
    try:
        response = json.loads(sys.stdin.read())
    except ValueError:
        refuse("the GetSecretValue response is not JSON")
    secret = response.get("SecretString") if isinstance(response, dict) else None
    if not isinstance(secret, str):
        refuse("it has no SecretString (binary secrets are not supported)")
    try:
        entries = json.loads(secret)
    except ValueError:
        refuse("it is not a JSON object of names to values")
    if not isinstance(entries, dict):
        refuse("it is not a JSON object of names to values")
    for required in sys.argv[2:]:
        if not entries.get(required):
            refuse(f"it has no {required}, which the container needs")
    name = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
    lines = []
    for number, (key, value) in enumerate(entries.items(), 1):
        if not name.match(key):
            refuse(f"entry {number} is not named like an environment variable")
        if not isinstance(value, str):
            refuse(f"the value of {key} is not a string")
        if any(c in value for c in "\n\r\0"):
            refuse(f"the value of {key} contains a line break or NUL")
        try:
            lines.append(f"{key}={value}\n".encode("utf-8"))
        except UnicodeError:
            refuse(f"the value of {key} is not valid Unicode")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with os.fdopen(os.open(sys.argv[1], flags, 0o600), "wb") as out:
        out.write(b"".join(lines))

try:
    main()
except Exception:
    refuse("it could not be written to the env file")
'
# The response holds the values: it goes into a shell variable and a pipe,
# never into a command line or a file other than the env file.
response=$(aws secretsmanager get-secret-value --region "$REGION" --secret-id "$SECRET_ARN" \
    --output json) \
    || fail "could not read the user's secret $SECRET_ARN with the instance role"
if ! reason=$(printf '%s' "$response" | python3 -I -c "$PARSE_SECRET" "$ENV_FILE" "${REQUIRED[@]}"); then
    unset response
    reason=${reason%%$'\n'*}
    fail "the user's secret $SECRET_ARN was refused: ${reason:-it could not be parsed}"
fi
unset response

# 6. The OpenClaw gateway's configuration on /data: spotpool's settings merged
#    into the user's, by a program running as the container's uid (it can do
#    no more than the container could) on a descriptor of the data directory
#    opened here, as root (the uid may not traverse Docker's directories).
if [[ -n ${GATEWAY_ORIGIN-} ]]; then
    command -v setpriv >/dev/null || fail "setpriv is missing on the instance (package util-linux)"
    exec {data_fd}<"$DATA_DIR"
    if ! merged=$(setpriv --reuid="$CONTAINER_UID" --regid="$CONTAINER_GID" --clear-groups \
        --no-new-privs python3 -I -c "$GATEWAY_CONFIG_PROGRAM" "$data_fd" \
        "${GATEWAY_STATE_DIR#/data/}" "$GATEWAY_ORIGIN" "${GATEWAY_BASE_PATH-}"); then
        fail "the gateway's configuration in $GATEWAY_STATE_DIR ${merged##*$'\n'}"
    fi
    exec {data_fd}<&-
    printf '%s\n' "$merged"
fi

# 7. The port: until now the warm responder (spotpool-warm.service, installed
#    by the user data) answered the load balancer's health checks on it. It is
#    disabled (so that a reboot never starts it again in front of the
#    container) and stopped right before docker run publishes the port, which
#    keeps the moment in which nothing answers as short as can be. An
#    instance without the unit (older user data, local mode) is fine.
stop_warm_responder() {
    local unit=spotpool-warm.service
    if ! command -v systemctl >/dev/null; then
        echo "no systemctl: no warm responder to stop"
        return 0
    fi
    systemctl disable --no-reload --quiet "$unit" || echo "$unit is not installed"
    systemctl stop "$unit" || echo "$unit could not be stopped (it may not exist)"
}
stop_warm_responder

# 8. The hardened container.
#    --restart unless-stopped: the gateway is a long-running server; it comes
#    back after a crash, an exit of its own, a dockerd restart or a reboot, with
#    Docker's doubling back-off against a crash loop. A re-sent start's
#    docker rm --force (step 3) is never fought by it.
#    --init: a minimal init as PID 1 forwards signals and reaps the
#    processes the gateway spawns (OpenClaw's own compose file runs it so);
#    only where Docker's init binary is installed (its place varies by
#    distribution; Amazon Linux's docker package is not known to ship it).
#    HOME=/data: the root filesystem is read-only, so the gateway's state goes
#    to the user's workspace or volume (step 4); /tmp is a small tmpfs (its pages count against the
#    memory limit).
INIT_FLAGS=()
if command -v docker-init >/dev/null || [[ -x /usr/libexec/docker/docker-init ]]; then
    INIT_FLAGS=(--init)
else
    echo "docker-init is not on the instance: the container runs without --init"
fi
docker run --detach --name "$NAME" \
    "${INIT_FLAGS[@]}" \
    --label "spotpool.user=$USER_ID" \
    --pull never \
    --restart unless-stopped \
    --user "$CONTAINER_UID:$CONTAINER_GID" \
    --read-only \
    --tmpfs /tmp:rw,noexec,nosuid,nodev,size=256m \
    --mount "$DATA_MOUNT" \
    --env HOME=/data \
    "${ENV_FLAGS[@]}" \
    --env-file "$ENV_FILE" \
    --cap-drop ALL \
    --security-opt no-new-privileges \
    --memory "${MEMORY_MB}m" \
    --memory-swap "${MEMORY_MB}m" \
    --cpus "$CPUS" \
    --pids-limit "$PIDS_LIMIT" \
    --network "$NETWORK" \
    --publish "$HOST_IP:$HOST_PORT:$PORT" \
    --log-driver json-file \
    --log-opt max-size=10m \
    --log-opt max-file=3 \
    "$IMAGE" "${ARGS[@]}" \
    || fail "docker run of $IMAGE for $NAME failed"
rm -f -- "$ENV_FILE"

# 9. Wait for the health endpoint, then the ready one. Container logs are never
#    shown: they may hold the user's secrets.
deadline=$((SECONDS + 10#$HEALTH_TIMEOUT))
# code_in CODE CODES: CODE is one of CODES (the matcher syntax).
code_in() {
    local item
    for item in ${2//,/ }; do
        if ((10#$1 >= 10#${item%-*} && 10#$1 <= 10#${item#*-})); then
            return 0
        fi
    done
    return 1
}
# wait_for PATH CODES: until http://HOST_IP:HOST_PORT/PATH answers one of
# CODES, or the deadline.
wait_for() {
    local url="http://$HOST_IP:$HOST_PORT$1" code
    while true; do
        code=$(curl --silent --globoff --max-time 2 --output /dev/null --write-out '%{http_code}' \
            "$url") || code=000
        if [[ $code =~ ^[0-9]{3}$ ]] && code_in "$code" "$2"; then
            return 0
        fi
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}
# wait_until WORD PATH CODES: PATH answers one of CODES, or the start fails.
wait_until() {
    if wait_for "$2" "$3"; then
        echo "container $NAME is $1 on $2"
        return
    fi
    status=$(docker inspect --format '{{.State.Status}}' "$NAME") || status=unknown
    [[ $status =~ ^[a-z]{1,20}$ ]] || status=unknown
    fail "container $NAME did not become $1 on $2 within ${HEALTH_TIMEOUT}s (container status: $status)"
}
# The health path passes with the target group's codes; the ready path with 200.
wait_until healthy "$HEALTH_PATH" "$HEALTH_CODES"
if [[ -n ${READY_PATH-} ]]; then
    wait_until ready "$READY_PATH" 200
fi
