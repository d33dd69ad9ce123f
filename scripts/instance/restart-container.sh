#!/bin/bash
# spotpool: restart the user's container, which the load balancer reports as
# failing its health checks (the health watch, ARCHITECTURE.md "Health
# watch"). `docker restart` keeps the container as it was created, its
# environment included: nothing is read from Secrets Manager and no secret is
# written anywhere. First it prints what Docker knows of the container (state,
# last exit code, whether the kernel killed it for memory, Docker's own restart
# count) on one `spotpool-health:` line, never its logs, which may hold
# anything. Exits non-zero with one `spotpool: ...` line on standard error when
# there is no such container or the restart fails.
#
# Inputs (shell variables spotpool prepends):
#   USER_ID   the spotpool user id; container openclaw-$USER_ID
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh" # spotpool:inline-lib

require_user_id

NAME="openclaw-$USER_ID"
docker container inspect "$NAME" >/dev/null 2>&1 || fail "there is no container $NAME"
docker container inspect --format \
    'spotpool-health: status={{.State.Status}} exit={{.State.ExitCode}} oom={{.State.OOMKilled}} restarts={{.RestartCount}}' \
    "$NAME" || true
# A grace of 20 seconds to write its state out, as when it is stopped for a move.
docker restart --time 20 "$NAME" >/dev/null || fail "docker restart of $NAME failed"
echo "restarted $NAME"
