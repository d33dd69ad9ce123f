#!/usr/bin/env bash
# Apply (or destroy) the example root terraform/examples/basic against a local
# moto, the way a platform team applies it against AWS.
#
#   scripts/terraform_moto.sh check
#       exit 0 when terraform and the provider mirror are there, else 3
#   scripts/terraform_moto.sh apply   ENDPOINT STATE_DIR [-var NAME=VALUE ...]
#       apply, then print the daemon's environment (`terraform output -raw
#       daemon_env`: KEY=value lines, endpoint and test credentials included,
#       no API tokens) on stdout
#   scripts/terraform_moto.sh plan    ENDPOINT STATE_DIR [-var NAME=VALUE ...]
#       after an apply: fail (exit 1, the plan on stderr) unless the plan is
#       empty, i.e. the applied state does not drift
#   scripts/terraform_moto.sh destroy ENDPOINT STATE_DIR [-var NAME=VALUE ...]
#   scripts/terraform_moto.sh output  STATE_DIR NAME
#       print one output of an applied STATE_DIR (`terraform output -raw NAME`)
#
# ENDPOINT is moto's loopback URL (the root refuses anything else). Everything
# (a copy of terraform/, .terraform, the lock file and the state) lives in
# STATE_DIR, so the source tree stays clean and a destroy finds its state. The
# extra arguments go to terraform (apply and destroy must get the same ones).
# Progress and terraform's own output go to stderr; exit 3 means terraform or
# the provider mirror is missing, any other failure exits 1.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}

(($# >= 1)) || usage
action=$1
shift
if [[ $action == check ]]; then
    tf_setup || exit 3
    exit 0
fi
if [[ $action == output ]]; then
    (($# == 2)) || usage
    tf_setup || exit 3
    TF_DATA_DIR=$1/.terraform terraform -chdir="$1/terraform/examples/basic" output -no-color -raw "$2"
    exit
fi
[[ $action == apply || $action == plan || $action == destroy ]] || usage
(($# >= 2)) || usage
endpoint=$1 state=$2
shift 2

tf_setup || exit 3

mkdir -p -- "$state"
state=$(cd -- "$state" && pwd -P)
# A fresh copy of the configuration each time (the state file stays beside it).
rm -rf -- "$state/terraform/modules" "$state/deploy"
mkdir -p -- "$state/terraform"
cp -R "$ROOT/terraform/modules" "$state/terraform/modules"
mkdir -p -- "$state/terraform/examples/basic"
cp "$ROOT"/terraform/examples/basic/*.tf "$ROOT"/terraform/examples/basic/*.tftpl "$state/terraform/examples/basic/"
# The daemon host's units (daemon_units_dir: ../../../deploy from the root).
cp -R "$ROOT/deploy" "$state/deploy"
dir=$state/terraform/examples/basic
export TF_DATA_DIR=$state/.terraform

# The root only takes test credentials when aws_endpoint is set; make sure
# nothing from the caller's environment can point the provider elsewhere.
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN \
    AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE \
    AWS_ENDPOINT_URL
export AWS_EC2_METADATA_DISABLED=true

tf_init "$dir" >&2
start=$SECONDS
case $action in
    apply)
        log "terraform apply against $endpoint (state in $state)"
        terraform -chdir="$dir" apply -auto-approve -input=false -no-color \
            -var "aws_endpoint=$endpoint" "$@" >&2
        log "applied in $((SECONDS - start))s"
        terraform -chdir="$dir" output -raw daemon_env
        ;;
    plan)
        log "terraform plan against $endpoint: expecting no changes"
        rc=0
        terraform -chdir="$dir" plan -detailed-exitcode -input=false -no-color \
            -var "aws_endpoint=$endpoint" "$@" >&2 || rc=$?
        if ((rc == 2)); then
            log "the plan after apply is not empty (above): something drifts"
            exit 1
        fi
        exit "$rc"
        ;;
    destroy)
        log "terraform destroy against $endpoint (state in $state)"
        terraform -chdir="$dir" destroy -auto-approve -input=false -no-color \
            -var "aws_endpoint=$endpoint" "$@" >&2
        log "destroyed in $((SECONDS - start))s"
        ;;
esac
