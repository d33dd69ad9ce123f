# shellcheck shell=bash
# spotpool instance prologue. spotpool inlines this file into every command it
# sends over SSM (src/instance_scripts/mod.rs replaces the line of the
# including script that ends in "spotpool:inline-lib" with it); run by hand,
# the scripts source it from beside themselves.
#
# Output discipline: spotpool copies a failed command's standard error into the
# user's `error` (the API, the journal, the log). So every tool's output goes
# to standard output, and standard error only ever carries this script's own
# one-line `spotpool: ...` messages, written by `fail` or the ERR trap. Nothing
# here prints a secret, container logs or an input value that failed
# validation. Never use `set -x`: a trace would print the secret handling.

if [ -z "${BASH_VERSION:-}" ]; then
    echo "spotpool: this script needs bash" >&2
    exit 1
fi
# SSM's AWS-RunShellScript runs the text with sh, which is bash in POSIX mode
# on Amazon Linux: switch to plain bash.
set +o posix
# -E: the ERR trap below fires for a failure inside a function too (without it
# such a failure exits silently, and the user's error would be empty).
set -Eeuo pipefail
exec 3>&2 2>&1
umask 077

# fail MESSAGE...: one line on the original standard error, then exit 1.
fail() {
    printf 'spotpool: %s\n' "$*" >&3
    exit 1
}
trap 'printf "spotpool: line %s: command failed (exit %s)\n" "$LINENO" "$?" >&3' ERR
# A signal (SSM's timeout, a cancel) still runs the EXIT traps of the scripts.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# Overridable only so the tests can point them at a sandbox; spotpool never
# sets them.
SPOTPOOL_RUN_DIR=${SPOTPOOL_RUN_DIR:-/run/spotpool}
SPOTPOOL_READY_MARKER=${SPOTPOOL_READY_MARKER:-/var/lib/spotpool/ready}
# Where users' workspace volumes are mounted (one directory per user id), the
# directory holding the Xen names of attached volumes, how many seconds to wait
# for a workspace volume's device to appear, and how long a busy workspace may
# take to become unmountable.
SPOTPOOL_WORKSPACE_ROOT=${SPOTPOOL_WORKSPACE_ROOT:-/var/lib/spotpool/workspaces}
SPOTPOOL_DEV_DIR=${SPOTPOOL_DEV_DIR:-/dev}
SPOTPOOL_WORKSPACE_WAIT=${SPOTPOOL_WORKSPACE_WAIT:-30}
SPOTPOOL_UNMOUNT_WAIT=${SPOTPOOL_UNMOUNT_WAIT:-10}

# The rule the instance's user data installs (and re-installs whenever dockerd
# starts) so that containers cannot reach the instance metadata service:
#   iptables -I DOCKER-USER -d 169.254.169.254/32 -j DROP
# DOCKER-USER is evaluated in FORWARD, i.e. for container traffic only; the
# host's own requests to the metadata service (OUTPUT) are unaffected.
METADATA_ADDRESS=169.254.169.254

# require NAME PATTERN WHAT: the variable NAME is set, non-empty and matches
# the extended regular expression PATTERN; WHAT describes the expected form.
# The message never repeats the value.
require() {
    local name=$1 pattern=$2 what=$3
    local value=${!name-}
    [[ -n $value ]] || fail "input $name is missing (expected $what)"
    [[ $value =~ $pattern ]] || fail "input $name is malformed (expected $what)"
}

# optional NAME PATTERN WHAT: like require, but an empty or unset NAME is fine.
optional() {
    local name=$1
    local value=${!name-}
    if [[ -n $value ]]; then
        require "$@"
    fi
}

# The inputs every script shares, checked the same way everywhere.
require_user_id() {
    require USER_ID '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$' \
        'a spotpool user id: lowercase letters, digits and inner hyphens, at most 63'
}
require_image() {
    require IMAGE '^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$' \
        'an image reference of letters, digits and . _ / : @ -'
}

# require_workspace_volume: WORKSPACE_VOLUME_ID names an EBS volume, and
# WORKSPACE_DEVICE_DIR (default /dev/disk/by-id) is an absolute path.
require_workspace_volume() {
    require WORKSPACE_VOLUME_ID '^vol-[0-9a-f]{8,17}$' \
        'an EBS volume id: vol- and 8 to 17 lowercase hex digits'
    WORKSPACE_DEVICE_DIR=${WORKSPACE_DEVICE_DIR:-/dev/disk/by-id}
    WORKSPACE_DEVICE=${WORKSPACE_DEVICE:-sdf}
    require WORKSPACE_DEVICE '^sd[f-z]$' 'the device name the volume is attached as, sdf to sdz'
    require WORKSPACE_DEVICE_DIR '^/[A-Za-z0-9._/-]{0,255}$' \
        'an absolute path of letters, digits and . _ / -'
    [[ $SPOTPOOL_WORKSPACE_WAIT =~ ^[0-9]{1,4}$ && $SPOTPOOL_UNMOUNT_WAIT =~ ^[0-9]{1,4}$ ]] \
        || fail "SPOTPOOL_WORKSPACE_WAIT and SPOTPOOL_UNMOUNT_WAIT must be numbers of seconds"
}

# workspace_device: prints the block device of the volume WORKSPACE_VOLUME_ID
# if it is attached now (its canonical path, e.g. /dev/nvme1n1); returns 1
# otherwise. The daemon attaches workspaces as /dev/$WORKSPACE_DEVICE (sdf;
# on a shared instance each slot's own, sdh to sdz). A spare's blank
# workspace, which a first claim keeps, is attached at launch as /dev/sdg: on
# Nitro it is found by its serial like any other; on Xen it is not looked for
# (an unused blank could be there beside the user's volume, and mounting the
# wrong one would hide the user's data), so the start fails and the claim's
# retry attaches the volume as /dev/sdf.
#  - Nitro: EBS volumes are NVMe devices numbered in attach order, so the name
#    says nothing; their serial is the volume id, and udev links
#    $WORKSPACE_DEVICE_DIR/nvme-Amazon_Elastic_Block_Store_vol<hex> to the
#    device. Only that link is trusted for an NVMe device.
#  - Xen: no such link; the volume is the block device /dev/xvdf (/dev/sdf
#    where udev keeps the requested name; another slot's letter likewise). Taken only if it is not an NVMe
#    device: on Nitro, /dev/sdf is a udev alias, and waiting for the serial
#    link is the only way to be sure which volume it is.
workspace_device() {
    local link candidate real
    link="$WORKSPACE_DEVICE_DIR/nvme-Amazon_Elastic_Block_Store_${WORKSPACE_VOLUME_ID/-/}"
    if [[ -b $link ]]; then
        readlink -f -- "$link"
        return
    fi
    for candidate in "$SPOTPOOL_DEV_DIR/$WORKSPACE_DEVICE" "$SPOTPOOL_DEV_DIR/xv${WORKSPACE_DEVICE#s}"; do
        [[ -b $candidate ]] || continue
        real=$(readlink -f -- "$candidate") || continue
        [[ ${real##*/} != nvme* ]] || continue
        printf '%s\n' "$real"
        return
    done
    return 1
}

# require_private_dir DIR: DIR exists (created 0700 if missing), is a real
# directory, is owned by this user and has mode 0700.
require_private_dir() {
    local dir=$1
    install -d -m 0700 "$dir"
    [[ -d $dir && ! -L $dir && -O $dir ]] || fail "$dir is not a directory owned by $(id -un)"
    [[ $(stat -c %a "$dir") == 700 ]] || fail "$dir is not mode 0700"
}

# The rules a shared instance's user data installs beside the metadata block
# (terraform/modules/spotpool/user-data.sh.tftpl), so that a container reaches
# neither another user's network (also not through the other user's published
# port: that traffic is forwarded between the two bridges) nor the host's own
# services. Each user's network is a bridge br-<id>; replies to the host's own
# connections (health checks) are ESTABLISHED.
SHARED_FORWARD_RULE=(-i br-+ -o br-+ -j DROP)
SHARED_INPUT_RULE=(-i br-+ -m conntrack --ctstate NEW -j DROP)

# check_shared_isolation: both rules are in place.
check_shared_isolation() {
    iptables -w 5 -C DOCKER-USER "${SHARED_FORWARD_RULE[@]}" \
        || fail "the DOCKER-USER rule dropping traffic between users' networks is missing"
    iptables -w 5 -C INPUT "${SHARED_INPUT_RULE[@]}" \
        || fail "the INPUT rule dropping containers' connections to the host is missing"
}

# check_metadata_block: the DOCKER-USER rule above is in place.
check_metadata_block() {
    iptables -w 5 -C DOCKER-USER -d "$METADATA_ADDRESS/32" -j DROP \
        || fail "the DOCKER-USER rule dropping container traffic to $METADATA_ADDRESS is missing"
}

# remove_user_container NAME [GRACE]: stop the container (SIGTERM, then
# SIGKILL after GRACE seconds, default 10) and remove it and its anonymous
# volumes; a missing container is fine.
remove_user_container() {
    local name=$1 grace=${2:-10}
    if ! docker container inspect "$name" >/dev/null 2>&1; then
        echo "no container $name"
        return 0
    fi
    docker stop --time "$grace" "$name" || true
    if ! docker rm --force --volumes "$name"; then
        # It may have gone in the meantime.
        if docker container inspect "$name" >/dev/null 2>&1; then
            fail "could not remove container $name"
        fi
    fi
    echo "removed container $name"
}
