#!/bin/bash
# spotpool: stop the user's container and unmount the user's workspace, so the
# daemon can detach the volume (DetachVolume) next. Exits 0 once nothing on
# this instance uses the volume; otherwise non-zero with one `spotpool: ...`
# line on standard error, and the daemon must not detach it.
#
# Inputs (shell variables spotpool prepends):
#   USER_ID               the spotpool user id; container openclaw-$USER_ID,
#                         workspace mounted at $SPOTPOOL_WORKSPACE_ROOT/$USER_ID
#   WORKSPACE_VOLUME_ID   the user's EBS workspace volume (vol-...); with
#                         WIPE, empty when the user has none
#   WORKSPACE_DEVICE      the device name it was attached as (default sdf)
#   WORKSPACE_DEVICE_DIR  where udev links NVMe EBS volumes by serial
#                         (default /dev/disk/by-id)
#   WIPE                  1 when the user leaves a shared instance whose slot
#                         another user will take: after the workspace, its
#                         Docker network, its Docker volume (without a
#                         workspace, its /data) and its mount point go too, so
#                         nothing of the user is left on the instance
#
# Idempotent: no container, nothing mounted, or the device gone already all
# succeed. Never unmounts lazily (umount -l would hide a mount that is still in
# use, and the daemon would detach a live file system): a mount that stays
# busy for $SPOTPOOL_UNMOUNT_WAIT seconds (default 10) fails. The mount point directory stays (root, 0700,
# empty): the readiness probe sees it and refuses the instance as not fresh.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh" # spotpool:inline-lib

require_user_id
optional WIPE '^1$' '1 (wipe the slot) or nothing'
if [[ -n ${WIPE-} && -z ${WORKSPACE_VOLUME_ID-} ]]; then
    NO_WORKSPACE=1
else
    NO_WORKSPACE=
    require_workspace_volume
fi

NAME="openclaw-$USER_ID"
WORKSPACE_MOUNT="$SPOTPOOL_WORKSPACE_ROOT/$USER_ID"

# wipe_slot: the rest of the user on a shared instance: its network, its Docker
# volume, its (unmounted, empty) mount point and any env file left. Missing
# ones are fine; one that cannot go fails the wipe (the daemon then retires
# the instance instead of handing the slot to someone else).
wipe_slot() {
    local network="spotpool-$USER_ID" volume="spotpool-$USER_ID"
    if docker network inspect "$network" >/dev/null 2>&1; then
        docker network rm "$network" >/dev/null || fail "could not remove the Docker network $network"
    fi
    if docker volume inspect "$volume" >/dev/null 2>&1; then
        docker volume rm "$volume" >/dev/null || fail "could not remove the Docker volume $volume"
    fi
    if [[ -d $WORKSPACE_MOUNT ]] && ! mountpoint -q -- "$WORKSPACE_MOUNT"; then
        rmdir -- "$WORKSPACE_MOUNT" || fail "$WORKSPACE_MOUNT is not empty"
    fi
    rm -f -- "$SPOTPOOL_RUN_DIR/$NAME.env"
    echo "the slot of $USER_ID is wiped"
}

# 1. The container, with a grace of 20 seconds to write its state out; removed,
#    so that its mount namespace, which holds its own bind of the workspace,
#    is gone too.
remove_user_container "$NAME" 20

# 2. Everything written reaches the volume.
sync
if [[ -n $NO_WORKSPACE ]]; then
    wipe_slot
    exit 0
fi

# 3. Unmount, as often as it is mounted there, retrying while it is busy (a
#    process of the container that is still exiting).
deadline=$((SECONDS + 10#$SPOTPOOL_UNMOUNT_WAIT))
while mountpoint -q -- "$WORKSPACE_MOUNT"; do
    if umount -- "$WORKSPACE_MOUNT"; then
        continue
    fi
    ((SECONDS < deadline)) \
        || fail "the workspace of $USER_ID at $WORKSPACE_MOUNT stays busy: volume $WORKSPACE_VOLUME_ID could not be unmounted"
    sleep 1
done

# 4. The volume is mounted nowhere else: not in this mount namespace, and (its
#    ext4 instance in sysfs lives as long as any mount of it, in any
#    namespace) not in another one.
if device=$(workspace_device); then
    if findmnt -n --source "$device" >/dev/null; then
        fail "volume $WORKSPACE_VOLUME_ID is still mounted elsewhere on the instance"
    fi
    while [[ -e /sys/fs/ext4/${device##*/} ]]; do
        ((SECONDS < deadline)) \
            || fail "volume $WORKSPACE_VOLUME_ID is still mounted in another mount namespace"
        sleep 1
    done
fi
echo "workspace of $USER_ID (volume $WORKSPACE_VOLUME_ID) is not mounted"
if [[ -n ${WIPE-} ]]; then
    wipe_slot
fi
