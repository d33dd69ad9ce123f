#!/usr/bin/env bash
# Run shellcheck on the project's shell scripts: the developer scripts in
# scripts/ and the instance scripts spotpool sends over SSM
# (scripts/instance/). Installs shellcheck from the Debian packages when it is
# missing (needs root, as on the developers' machines and CI). Exits non-zero
# on any finding.
#   scripts/shellcheck.sh
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

if ! command -v shellcheck >/dev/null 2>&1; then
    log "shellcheck is missing: installing it with apt-get"
    if ((EUID != 0)); then
        log "installing needs root: run apt-get install -y shellcheck as root"
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq shellcheck >/dev/null
fi
log "$(shellcheck --version | sed -n 's/^version: /shellcheck /p')"

files=(scripts/*.sh scripts/instance/*.sh)
shellcheck -x "${files[@]}"
log "${#files[@]} scripts are clean"
