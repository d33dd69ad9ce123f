#!/usr/bin/env bash
# Static checks of terraform/, offline: `terraform fmt -check`, then `terraform
# init -backend=false` (the AWS provider from the machine's plugin mirror) and
# `terraform validate` in the module and in the example root, `terraform test`
# (offline plans with a mocked provider) in the module, then shellcheck
# on the rendered user data (when shellcheck is installed).
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

# The user data exactly as the launch template gets it, with an ECR image so
# that the login branch is rendered too.
if command -v shellcheck >/dev/null 2>&1; then
    log "shellcheck on the rendered user data"
    mkdir -p "$WORK/console"
    template="$WORK/terraform/modules/spotpool/user-data.sh.tftpl"
    expression="templatefile(\"$template\", { region = \"eu-west-1\", container_image = \"123456789012.dkr.ecr.eu-west-1.amazonaws.com/openclaw:1.2.3\", ready_marker = \"/var/lib/spotpool/ready\" })"
    # The console prints a multi-line string as <<EOT ... EOT: drop those two lines.
    printf '%s\n' "$expression" | terraform -chdir="$WORK/console" console | sed '1d;$d' >"$WORK/user-data.sh"
    if ! head -n 1 "$WORK/user-data.sh" | grep -q '^#!/bin/bash'; then
        log "rendering the user data failed:"
        cat -- "$WORK/user-data.sh" >&2
        exit 1
    fi
    shellcheck --shell=bash "$WORK/user-data.sh"
else
    log "shellcheck is not installed: skipping the user data check"
fi

log "ok"
