# shellcheck shell=bash
# Helpers shared by the developer scripts. Source it; do not execute it:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Every function reports errors on stderr and returns non-zero, so it works
# both with and without `set -e` in the caller.

# Print a message on stderr, prefixed with the calling script's name.
log() {
    printf '%s: %s\n' "$(basename -- "${0:-lib.sh}")" "$*" >&2
}

# Put the directories where pip drops console scripts (the interpreter's own
# and the --user one) on PATH, so a freshly installed moto_server is found.
_add_python_script_dirs_to_path() {
    local dir
    while IFS= read -r dir; do
        [[ -n $dir && -d $dir ]] || continue
        case ":$PATH:" in
            *":$dir:"*) ;;
            *) PATH="$dir:$PATH" ;;
        esac
    done < <(python3 - <<'PY'
import os, sysconfig
print(sysconfig.get_path("scripts"))
print(sysconfig.get_path("scripts", f"{os.name}_user"))
PY
    )
    export PATH
    if command -v pyenv >/dev/null 2>&1; then
        pyenv rehash >/dev/null 2>&1 || true
    fi
    hash -r
}

# pip_install PKG...: install Python packages for python3 with pip, then put
# pip's script directories on PATH. A venv/pyenv interpreter takes a plain
# install. A Debian system python refuses it (PEP 668,
# "externally-managed-environment"), so fall back to a --user install, and
# last to --user --break-system-packages.
pip_install() {
    local pip_log ok=0 extra
    pip_log=$(mktemp)
    for extra in "" "--user" "--user --break-system-packages"; do
        # shellcheck disable=SC2086  # $extra is a list of flags
        if python3 -m pip install --quiet --disable-pip-version-check $extra "$@" >"$pip_log" 2>&1; then
            ok=1
            break
        fi
    done
    if ((!ok)); then
        cat -- "$pip_log" >&2
        rm -f -- "$pip_log"
        log "pip could not install $* (is pip installed? apt-get install -y python3-pip)"
        return 1
    fi
    rm -f -- "$pip_log"
    _add_python_script_dirs_to_path
}

# ensure_postgres: make sure PostgreSQL's server binaries (initdb, pg_ctl,
# postgres) are there, on PATH or in Debian's /usr/lib/postgresql/*/bin, for
# scripts/throwaway-postgres.sh; installs the postgresql package with apt-get
# when they are not (needs root). Fails, with the reason, when it cannot.
ensure_postgres() {
    local dir
    for dir in "" /usr/lib/postgresql/*/bin; do
        if [[ -z $dir ]]; then
            command -v initdb >/dev/null 2>&1 && return 0
        elif [[ -x $dir/initdb ]]; then
            return 0
        fi
    done
    log "PostgreSQL's initdb is missing: installing the postgresql package with apt-get"
    if ((EUID != 0)); then
        log "installing needs root: run apt-get install -y postgresql as root"
        return 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

# ensure_command CMD PACKAGE: make sure CMD is on PATH, installing the Debian
# PACKAGE that provides it with apt-get when it is missing (needs root, as on the
# developers' machines and CI).
ensure_command() {
    local cmd=$1 package=$2
    command -v "$cmd" >/dev/null 2>&1 && return 0
    log "$cmd is missing: installing the $package package with apt-get"
    if ((EUID != 0)); then
        log "installing needs root: run apt-get install -y $package as root"
        return 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null
}

# ensure_moto: make sure `moto_server` is on PATH and boto3 imports in python3.
# Installs moto[server] and boto3 with pip when either is missing.
ensure_moto() {
    if ! command -v python3 >/dev/null 2>&1; then
        log "python3 is required (apt-get install -y python3 python3-pip)"
        return 1
    fi
    if command -v moto_server >/dev/null 2>&1 && python3 -c 'import boto3' >/dev/null 2>&1; then
        return 0
    fi
    log "moto_server or boto3 is missing: installing moto[server] and boto3 with pip"
    pip_install 'moto[server]' boto3 || return 1
    if ! command -v moto_server >/dev/null 2>&1; then
        log "moto was installed but moto_server is not on PATH (PATH=$PATH)"
        return 1
    fi
    if ! python3 -c 'import boto3' >/dev/null 2>&1; then
        log "boto3 was installed but python3 cannot import it"
        return 1
    fi
    log "installed: $(command -v moto_server)"
}

# The IAM linter the terraform test runs on the applied policies
# (tests/it/iam_requests.rs PARLIAMENT: the same release).
PARLIAMENT_REQUIREMENT='parliament==1.6.4'

# ensure_parliament: make sure duo-labs' `parliament` is on PATH at the pinned
# release. It works offline: its IAM data ships in the package.
ensure_parliament() {
    if command -v parliament >/dev/null 2>&1 &&
        [[ $(parliament --version 2>/dev/null) == "parliament ${PARLIAMENT_REQUIREMENT#parliament==}" ]]; then
        return 0
    fi
    log "parliament is missing or another release: installing $PARLIAMENT_REQUIREMENT with pip"
    pip_install "$PARLIAMENT_REQUIREMENT" || return 1
    if ! command -v parliament >/dev/null 2>&1; then
        log "parliament was installed but is not on PATH (PATH=$PATH)"
        return 1
    fi
}

# free_port: print a TCP port on 127.0.0.1 that is free right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# _http_ok URL: true when URL answers with a 2xx/3xx status.
_http_ok() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -o /dev/null --max-time 2 "$1" >/dev/null 2>&1
    else
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" >/dev/null 2>&1
    fi
}

# wait_http URL DEADLINE_SECONDS [PID]
# Poll URL until it answers 2xx/3xx, for at most DEADLINE_SECONDS. With PID,
# give up at once if that process exits (it will never answer then).
wait_http() {
    local url=$1 deadline=$2 pid=${3:-}
    local end=$((SECONDS + deadline))
    while true; do
        if _http_ok "$url"; then
            return 0
        fi
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            log "process $pid exited before $url answered"
            return 1
        fi
        if ((SECONDS >= end)); then
            log "$url did not answer within ${deadline}s"
            return 1
        fi
        sleep 0.2
    done
}

# stop_pid PID [NAME]: TERM the process, wait up to 15 s for it to exit, then KILL.
stop_pid() {
    local pid=$1 name=${2:-process}
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    local end=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= end)); then
            log "$name (pid $pid) ignored SIGTERM for 15s: sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    # Reap it if it is our child; harmless otherwise.
    wait "$pid" 2>/dev/null || true
}

# stop_pidfile FILE PATTERN: stop the process whose PID is in FILE, but only if
# its command line still matches PATTERN (the PID may have been reused since).
# Removes FILE.
stop_pidfile() {
    local file=$1 pattern=$2 pid args
    [[ -f $file ]] || return 0
    pid=$(<"$file")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        args=$(ps -o args= -p "$pid" 2>/dev/null || true)
        if [[ $args == *"$pattern"* ]]; then
            log "stopping $pattern (pid $pid)"
            stop_pid "$pid" "$pattern"
        else
            log "pid $pid from $file is now '$args', not $pattern: leaving it alone"
        fi
    fi
    rm -f -- "$file"
}

# start_moto DIR: start moto_server on a free 127.0.0.1 port in the background.
# Log: DIR/moto.log, PID: DIR/moto.pid. Waits until it answers, then exports
# MOTO_ENDPOINT (http://127.0.0.1:PORT), MOTO_PORT and MOTO_PID.
start_moto() {
    local dir=$1 port pid attempt
    mkdir -p -- "$dir"
    # The port may be taken between free_port and the bind: retry a few times.
    for attempt in 1 2 3; do
        port=$(free_port) || return 1
        MOTO_IAM_LOAD_MANAGED_POLICIES=true moto_server -H 127.0.0.1 -p "$port" \
            >"$dir/moto.log" 2>&1 &
        pid=$!
        echo "$pid" >"$dir/moto.pid"
        if wait_http "http://127.0.0.1:$port/moto-api/" 60 "$pid"; then
            MOTO_PORT=$port
            MOTO_PID=$pid
            MOTO_ENDPOINT="http://127.0.0.1:$port"
            export MOTO_PORT MOTO_PID MOTO_ENDPOINT
            return 0
        fi
        stop_pid "$pid" moto_server
        rm -f -- "$dir/moto.pid"
        log "moto_server did not start (attempt $attempt/3); last log lines:"
        tail -n 20 -- "$dir/moto.log" >&2 || true
    done
    return 1
}

# --- Building the daemon -----------------------------------------------------

# build_daemon: build the daemon (<target dir>/debug/spotpool) so that it
# shares one build with the tests. Building the examples turns on the
# dev-dependencies and with them the `fake` feature (see Cargo.toml), so every
# dependency gets the same features as in scripts/test.sh's build and is
# reused: after the tests, only spotpool's example is compiled. A plain
# `cargo build` compiles tokio and the whole AWS SDK a second time with other
# features (7 min on a 2-core machine). The daemon built this way contains the
# test fakes, unused; release builds (docs/DEPLOY.md) do not.
build_daemon() {
    log "cargo build --bins --examples (the first build compiles the AWS SDK, several minutes; the tests share it)"
    cargo build --bins --examples
}

# --- Terraform ---------------------------------------------------------------

# tf_plugin_dir: print the machine's local Terraform plugin mirror, the folder
# above registry.terraform.io that holds the AWS provider (there is no registry
# access, so `terraform init` must get the provider from there with
# -plugin-dir). SPOTPOOL_TF_PLUGIN_DIR overrides the search.
tf_plugin_dir() {
    if [[ -n ${SPOTPOOL_TF_PLUGIN_DIR:-} ]]; then
        printf '%s\n' "$SPOTPOOL_TF_PLUGIN_DIR"
        return 0
    fi
    local provider
    provider=$(find / -xdev -name 'terraform-provider-aws_*' -print -quit 2>/dev/null || true)
    if [[ $provider != */registry.terraform.io/* ]]; then
        log "no Terraform AWS provider on this machine (find / -xdev -name 'terraform-provider-aws_*' found ${provider:-nothing})"
        return 1
    fi
    printf '%s\n' "${provider%%/registry.terraform.io/*}"
}

# tf_setup: check that terraform and the plugin mirror are there, export
# TF_PLUGIN_DIR, and make terraform quiet and offline (no version check, no
# prompts). Returns non-zero, with a message, when either is missing.
tf_setup() {
    if ! command -v terraform >/dev/null 2>&1; then
        log "terraform is not on PATH"
        return 1
    fi
    TF_PLUGIN_DIR=$(tf_plugin_dir) || return 1
    export TF_PLUGIN_DIR
    export TF_IN_AUTOMATION=1 TF_INPUT=0 CHECKPOINT_DISABLE=1
    # A CLI config variable naming a missing file only earns a warning on every call.
    if [[ -n ${TF_CLI_CONFIG_FILE:-} && ! -e $TF_CLI_CONFIG_FILE ]]; then
        unset TF_CLI_CONFIG_FILE
    fi
}

# tf_init DIR: `terraform init` DIR offline from the mirror, quietly (its
# output is shown only when it fails). Call tf_setup first. TF_DATA_DIR, if
# set, decides where .terraform goes.
tf_init() {
    local dir=$1 out
    if ! out=$(terraform -chdir="$dir" init -backend=false -plugin-dir "$TF_PLUGIN_DIR" -input=false -no-color 2>&1); then
        printf '%s\n' "$out" >&2
        log "terraform init failed in $dir"
        return 1
    fi
}
