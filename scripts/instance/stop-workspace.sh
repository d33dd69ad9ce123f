#!/bin/bash
# spotpool: stop the user's container and unmount the user's workspace, so the
# daemon can detach the volume (DetachVolume) next. Exits 0 once nothing on
# this instance uses the volume; otherwise non-zero with one `spotpool: ...`
# line on standard error, and the daemon must not detach it.
#
# Inputs (shell variables spotpool prepends):
#   USER_ID               the spotpool user id; container openclaw-$USER_ID,
#                         workspace mounted at $SPOTPOOL_WORKSPACE_ROOT/$USER_ID
#   WORKSPACE_VOLUME_ID   the user's EBS workspace volume (vol-...)
#   WORKSPACE_DEVICE_DIR  where udev links NVMe EBS volumes by serial
#                         (default /dev/disk/by-id)
#
# Idempotent: no container, nothing mounted, or the device gone already all
# succeed. Never unmounts lazily (umount -l would hide a mount that is still in
# use, and the daemon would detach a live file system): a mount that stays
# busy for $SPOTPOOL_UNMOUNT_WAIT seconds (default 10) fails. The mount point directory stays (root, 0700,
# empty): the readiness probe sees it and refuses the instance as not fresh.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh" # spotpool:inline-lib

require_user_id
require_workspace_volume

NAME="openclaw-$USER_ID"
WORKSPACE_MOUNT="$SPOTPOOL_WORKSPACE_ROOT/$USER_ID"

# 1. The container, with a grace of 20 seconds to write its state out; removed,
#    so that its mount namespace, which holds its own bind of the workspace,
#    is gone too.
remove_user_container "$NAME" 20

# 2. Everything written reaches the volume.
sync

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
