#!/bin/bash
# spotpool: remove everything a user's container could have written, so the
# instance holds nothing of that user: the container (with its anonymous
# volumes, its tmpfs and its log file), the user's named volume
# spotpool-$USER_ID and every other volume labelled spotpool.user=$USER_ID,
# and any leftover env file. Idempotent. Run it before an instance is ever
# reused or returned; spotpool itself terminates an instance on which a
# container ran (see docs/SECURITY.md for why wiping alone is not enough).
#
# Inputs (shell variables spotpool prepends):
#   USER_ID   the spotpool user id
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh" # spotpool:inline-lib

require_user_id
NAME="openclaw-$USER_ID"
VOLUME="spotpool-$USER_ID"

# A volume in use cannot be removed: the container goes first.
remove_user_container "$NAME"
rm -f -- "$SPOTPOOL_RUN_DIR/$NAME.env"

listed=$(docker volume ls --quiet --filter "label=spotpool.user=$USER_ID") \
    || fail "could not list the volumes of user $USER_ID"
readarray -t volumes <<<"$listed"
for volume in "$VOLUME" "${volumes[@]}"; do
    [[ -n $volume ]] || continue
    if docker volume inspect "$volume" >/dev/null 2>&1; then
        docker volume rm --force "$volume" || fail "could not remove volume $volume"
        echo "removed volume $volume"
    fi
done
if docker volume inspect "$VOLUME" >/dev/null 2>&1; then
    fail "volume $VOLUME is still present"
fi
[[ ! -e $SPOTPOOL_RUN_DIR/$NAME.env ]] || fail "the env file of $NAME is still present"
echo wiped
