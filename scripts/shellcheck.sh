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

ensure_command shellcheck shellcheck
log "$(shellcheck --version | sed -n 's/^version: /shellcheck /p')"

files=(scripts/*.sh scripts/instance/*.sh)
shellcheck -x "${files[@]}"
log "${#files[@]} scripts are clean"
