#!/bin/bash
# spotpool readiness probe: is this fresh instance fit to be handed to a user?
#
# Inputs (shell variables spotpool prepends):
#   IMAGE   the user container image: once the daemon pinned it, by digest
#           (name@sha256:...), else the configured tag the user data pre-pulled
#   WARM_PORT, WARM_HEALTH_PATH
#           empty: no check; else the container port and the target groups'
#           health check path, on which the warm responder (the user data's
#           spotpool-warm.service) must answer 200
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
# another user; stop-workspace.sh leaves the empty mount point behind); and,
# with WARM_PORT, that something (the warm responder) answers 200 on
#   http://127.0.0.1:$WARM_PORT$WARM_HEALTH_PATH
# so that the spare passes the load balancer's health check before a claim.
# Prints "ready" on standard output when all hold.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh" # spotpool:inline-lib

require_image
if [[ -n ${WARM_PORT-} ]]; then
    require WARM_PORT '^[1-9][0-9]{0,4}$' 'a port number from 1 to 65535'
    ((10#$WARM_PORT <= 65535)) || fail "input WARM_PORT is malformed (expected a port number from 1 to 65535)"
    require WARM_HEALTH_PATH '^/[A-Za-z0-9._~/%?=&+-]{0,1023}$' \
        'a path starting with / of letters, digits and . _ ~ / % ? = & + -'
fi

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
if [[ -n ${WARM_PORT-} ]]; then
    # A few tries: systemd restarts a responder that failed within a second.
    warm_url="http://127.0.0.1:$WARM_PORT$WARM_HEALTH_PATH"
    for attempt in 1 2 3; do
        code=$(curl --silent --globoff --max-time 2 --output /dev/null --write-out '%{http_code}' \
            "$warm_url") || code=000
        if [[ $code == 200 ]]; then
            break
        fi
        if ((attempt < 3)); then
            sleep 1
        fi
    done
    [[ $code =~ ^[0-9]{3}$ ]] || code=000
    [[ $code == 200 ]] \
        || fail "nothing answers 200 on $warm_url (got $code): the launch template's user data must run the warm responder (spotpool-warm.service) on port $WARM_PORT with the health check path $WARM_HEALTH_PATH (see docs/DEPLOY.md)"
fi
echo ready
