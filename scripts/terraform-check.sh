#!/usr/bin/env bash
# Static checks of terraform/, offline: `terraform fmt -check`, then `terraform
# init -backend=false` (the AWS provider from the machine's plugin mirror) and
# `terraform validate` in the module and in the example root, `terraform test`
# (offline plans with a mocked provider) in the module, then shellcheck
# on the rendered user data of the pool instances and of the daemon host, and
# on the config script the latter installs (when shellcheck is installed).
#
# Works on a copy in a temporary folder, so the tree gets no .terraform/, no
# lock file and no state. Exits non-zero on the first failure.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd -- "$ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

tf_setup
log "terraform $(terraform version | head -n 1 | cut -d' ' -f2), provider mirror $TF_PLUGIN_DIR"

log "terraform fmt -check -recursive terraform"
if ! terraform fmt -check -recursive -diff terraform; then
    log "terraform fmt found unformatted files (above); run: terraform fmt -recursive terraform"
    exit 1
fi

WORK=$(mktemp -d)
# shellcheck disable=SC2317  # invoked through the trap
cleanup() { rm -rf -- "$WORK"; }
trap cleanup EXIT
cp -R terraform "$WORK/terraform"
# The daemon host's units, which the example root reads from ../../../deploy.
cp -R deploy "$WORK/deploy"

for dir in modules/spotpool examples/basic; do
    log "terraform init + validate: terraform/$dir"
    export TF_DATA_DIR="$WORK/data/${dir//\//-}"
    tf_init "$WORK/terraform/$dir"
    terraform -chdir="$WORK/terraform/$dir" validate -no-color
done
# The module's offline plan tests (tests/*.tftest.hcl, a mocked AWS provider):
# image pull permissions, its precondition, CPU credits.
log "terraform test: terraform/modules/spotpool"
export TF_DATA_DIR="$WORK/data/modules-spotpool"
terraform -chdir="$WORK/terraform/modules/spotpool" test -no-color
unset TF_DATA_DIR

# render_and_check NAME EXPRESSION: render a templatefile() EXPRESSION with
# `terraform console` into $WORK/NAME.sh, check that it is a bash script, and
# run shellcheck on it.
render_and_check() {
    local name=$1 expression=$2 out="$WORK/$1.sh"
    log "shellcheck on the rendered $name"
    # The console prints a multi-line string as <<EOT ... EOT: drop those two lines.
    printf '%s\n' "$expression" | terraform -chdir="$WORK/console" console | sed '1d;$d' >"$out"
    if ! head -n 1 "$out" | grep -q '^#!/bin/bash'; then
        log "rendering the $name failed:"
        cat -- "$out" >&2
        exit 1
    fi
    shellcheck --shell=bash "$out"
}

if command -v shellcheck >/dev/null 2>&1; then
    mkdir -p "$WORK/console"
    # The user data exactly as the launch template gets it (the warm responder
    # and the OpenClaw preset's port and health path included), with an ECR
    # image so that the login branch is rendered too.
    template="$WORK/terraform/modules/spotpool/user-data.sh.tftpl"
    render_and_check user-data "templatefile(\"$template\", { region = \"eu-west-1\", container_image = \"123456789012.dkr.ecr.eu-west-1.amazonaws.com/openclaw:1.2.3\", ready_marker = \"/var/lib/spotpool/ready\", container_port = 18789, health_check_path = \"/healthz\", warm_responder = file(\"$WORK/terraform/modules/spotpool/warm-responder.py\") })"

    # The daemon host's user data (examples/basic/daemon-host.sh.tftpl), with TLS
    # and a binary hash so that every branch is rendered, and the script it installs.
    template="$WORK/terraform/examples/basic/daemon-host.sh.tftpl"
    secret="arn:aws:secretsmanager:eu-west-1:123456789012:secret:spotpool-daemon"
    render_and_check daemon-host-user-data "templatefile(\"$template\", { region = \"eu-west-1\", binary_s3_uri = \"s3://artifacts/spotpool\", binary_sha256 = \"$(printf '%064d' 0)\", env_secret_arn = \"$secret/env-AbCdEf\", config_secret_arn = \"$secret/config-AbCdEf\", tokens_secret_arn = \"$secret/tokens-AbCdEf\", tls_secret_arn = \"$secret/tls-AbCdEf\", spotpool_service = file(\"$WORK/deploy/spotpool.service\"), spotpool_failed_service = file(\"$WORK/deploy/spotpool-failed.service\") })"
    log "shellcheck on the daemon host's spotpool-config"
    sed -n "/^cat >\/usr\/local\/libexec\/spotpool-config <<'SPOTPOOL_CONFIG'$/,/^SPOTPOOL_CONFIG$/p" "$WORK/daemon-host-user-data.sh" | sed '1d;$d' >"$WORK/spotpool-config.sh"
    shellcheck --shell=bash "$WORK/spotpool-config.sh"
else
    log "shellcheck is not installed: skipping the user data checks"
fi

log "ok"
