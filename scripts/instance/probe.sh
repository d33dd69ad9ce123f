#!/bin/bash
# spotpool readiness probe: is this fresh instance fit to be handed to a user?
#
# Inputs (shell variables spotpool prepends):
#   IMAGE   the user container image: once the daemon pinned it, by digest
#           (name@sha256:...), else the configured tag the user data pre-pulled
#
# Checks, in order: Docker answers; the user data finished (it writes the
# readiness marker /var/lib/spotpool/ready as its very last step); the image is
# present, by digest when pinned (docker matches name@sha256:... against the
# image's RepoDigests, so a spare that pre-pulled other bytes of the tag pulls
# the pinned ones here, after an ECR login as the user data does; a tag that is
# missing fails); the DOCKER-USER rule that keeps containers away from the instance
# metadata service is in place, exactly
#   iptables -C DOCKER-USER -d 169.254.169.254/32 -j DROP
# and no user container, volume or workspace mount point was ever left here
# (an instance that ran a user's container is terminated, never handed to
# another user; stop-workspace.sh leaves the empty mount point behind).
# Prints "ready" on standard output when all hold.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh" # spotpool:inline-lib

require_image

docker info >/dev/null || fail "docker is not running"
[[ -f $SPOTPOOL_READY_MARKER ]] \
    || fail "user data has not finished (no readiness marker $SPOTPOOL_READY_MARKER)"
if ! docker image inspect "$IMAGE" >/dev/null; then
    [[ $IMAGE == *@sha256:* ]] || fail "image $IMAGE is not present"
    registry=${IMAGE%%/*}
    ecr_pattern='^[0-9]{12}\.dkr\.ecr(-fips)?\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$'
    if [[ $registry =~ $ecr_pattern ]]; then
        aws ecr get-login-password --region "${BASH_REMATCH[2]}" \
            | docker login --username AWS --password-stdin "$registry" \
            || fail "could not log in to $registry"
    fi
    docker pull "$IMAGE" || fail "could not pull the pinned image $IMAGE"
    docker image inspect "$IMAGE" >/dev/null || fail "image $IMAGE is not present after its pull"
fi
check_metadata_block
containers=$(docker ps --all --quiet --filter label=spotpool.user) \
    || fail "could not list containers"
[[ -z $containers ]] || fail "a user container exists on this instance; it is not fresh"
volumes=$(docker volume ls --quiet --filter label=spotpool.user) \
    || fail "could not list volumes"
[[ -z $volumes ]] || fail "a user volume exists on this instance; it is not fresh"
if [[ -d $SPOTPOOL_WORKSPACE_ROOT ]] \
    && [[ -n $(find "$SPOTPOOL_WORKSPACE_ROOT" -mindepth 1 -maxdepth 1 -print -quit) ]]; then
    fail "a user workspace was mounted on this instance; it is not fresh"
fi
echo ready
