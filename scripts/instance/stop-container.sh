#!/bin/bash
# spotpool: stop and remove the user's container (idempotent: a missing
# container is fine). The user's data volume is kept; wipe-user-data.sh
# removes it.
#
# Inputs (shell variables spotpool prepends):
#   USER_ID   the spotpool user id; the container is openclaw-$USER_ID
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh" # spotpool:inline-lib

require_user_id
NAME="openclaw-$USER_ID"

remove_user_container "$NAME"
# A start that was killed before its EXIT trap ran may have left this behind.
rm -f -- "$SPOTPOOL_RUN_DIR/$NAME.env"
echo stopped
