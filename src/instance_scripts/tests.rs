use super::*;
use std::path::PathBuf;
use std::process::{Command, Output};

const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:openclaw/alice-AbCdEf";
const IMAGE: &str = "ghcr.io/openclaw/openclaw:latest";
/// Made up here, far from the generator: it must never reach a command line, the command
/// text, standard error or standard output.
const SECRET_VALUE: &str = "sk-live-7f3a9c-DO-NOT-LEAK";
/// A value the env file must carry verbatim: quotes, spaces, `$()`, backquotes, backslashes.
const TRICKY_VALUE: &str = r#"it's "quoted" $(touch /tmp/x) `id` \n spaced"#;
const VOLUME_ID: &str = "vol-0123456789abcdef0";
/// The OpenClaw preset's port and health path, as the warm responder serves them.
const WARM: WarmCheck<'static> = WarmCheck {
    port: 18789,
    health_path: "/healthz",
};

fn spec(host_ip: Option<&'static str>) -> ContainerSpec<'static> {
    ContainerSpec {
        user_id: "alice",
        secret_arn: ARN,
        image: IMAGE,
        port: 8080,
        host_port: 8080,
        shared: false,
        workspace_device: WORKSPACE_DEVICE_NAME,
        host_ip,
        health_path: "/healthz",
        health_codes: "200",
        health_timeout_seconds: 60,
        memory_mb: 1536,
        cpus: 1.0,
        pids_limit: 512,
        workspace_volume_id: None,
        args: &[],
        env: &[],
        ready_path: None,
        required_secrets: &[],
        gateway: None,
    }
}

/// The OpenClaw preset's start, as the daemon sends it by default.
fn openclaw_spec() -> ContainerSpec<'static> {
    use crate::config::Preset;
    let leak = |v: Vec<String>| -> &'static [String] { Box::leak(v.into_boxed_slice()) };
    ContainerSpec {
        port: Preset::OpenClaw.port(),
        host_port: Preset::OpenClaw.port(),
        health_path: Preset::OpenClaw.health_path(),
        args: leak(Preset::OpenClaw.args(Preset::OpenClaw.port())),
        env: Box::leak(Preset::OpenClaw.env(1536).into_boxed_slice()),
        ready_path: Preset::OpenClaw.ready_path(),
        required_secrets: leak(Preset::OpenClaw.required_secrets()),
        gateway: Some(GatewaySettings {
            origin: "https://agents.example.com",
            base_path: "/r-abc123",
            state_dir: crate::config::preset::OPENCLAW_STATE_DIR,
        }),
        ..spec(Some("10.0.1.5"))
    }
}

fn workspace_spec() -> ContainerSpec<'static> {
    ContainerSpec {
        workspace_volume_id: Some(VOLUME_ID),
        ..spec(Some("10.0.1.5"))
    }
}

fn all_commands() -> Vec<(&'static str, String)> {
    vec![
        ("probe", probe_script(IMAGE, None)),
        ("probe with the warm check", probe_script(IMAGE, Some(WARM))),
        ("start", start_container_script(&spec(Some("10.0.1.5")))),
        ("start without HOST_IP", start_container_script(&spec(None))),
        (
            "start with a workspace",
            start_container_script(&workspace_spec()),
        ),
        (
            "stop workspace",
            stop_workspace_script("alice", VOLUME_ID, WORKSPACE_DEVICE_NAME),
        ),
        (
            "wipe slot",
            wipe_slot_script("alice", Some(VOLUME_ID), "/dev/sdh"),
        ),
        (
            "wipe slot without a workspace",
            wipe_slot_script("alice", None, "/dev/sdh"),
        ),
        ("start openclaw", start_container_script(&openclaw_spec())),
        ("restart container", restart_container_script("alice")),
    ]
}

const SCRIPT_FILES: [(&str, &str); 5] = [
    ("lib.sh", LIB),
    ("probe.sh", PROBE),
    ("start-container.sh", START_CONTAINER),
    ("stop-workspace.sh", STOP_WORKSPACE),
    ("restart-container.sh", RESTART_CONTAINER),
];

/// The lines that are not comments.
fn code(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim_start().starts_with('#'))
}

fn header_line(command: &str, name: &str) -> String {
    command
        .lines()
        .find(|l| l.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= line"))
        .to_string()
}

/// `command` with the header input `name` set to `value` instead.
fn with_input(command: &str, name: &str, value: &str) -> String {
    let line = header_line(command, name);
    command.replacen(
        &format!("{line}\n"),
        &format!("{name}={}\n", shell_quote(value)),
        1,
    )
}

#[test]
fn quoting_survives_single_quotes() {
    assert_eq!(shell_quote("plain"), "'plain'");
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
    assert_eq!(shell_quote(""), "''");
}

#[test]
fn cpus_are_sent_as_millicores() {
    assert_eq!(cpus_text(1.0), "1.000");
    assert_eq!(cpus_text(0.5), "0.500");
    assert_eq!(cpus_text(2.0004), "2.000");
    assert_eq!(cpus_text(0.1 + 0.2), "0.300");
    assert_eq!(cpus_text(f64::NAN), "0.000");
    assert_eq!(cpus_text(-1.0), "0.000");
}

#[test]
fn every_script_includes_the_library_exactly_once() {
    for (file, text) in &SCRIPT_FILES[1..] {
        let markers = text
            .lines()
            .filter(|l| l.trim_end().ends_with(INLINE_MARKER))
            .count();
        assert_eq!(markers, 1, "{file}");
    }
    for (name, command) in all_commands() {
        assert!(command.starts_with("#!/bin/bash\n"), "{name}");
        assert!(!command.contains(INLINE_MARKER), "{name}");
        assert!(
            !code(&command).any(|l| l.trim_start().starts_with("source ")),
            "{name}: a command must not source files on the instance"
        );
        assert_eq!(command.matches("\nfail() {").count(), 1, "{name}");
        assert_eq!(command.matches("\nexec 3>&2 2>&1\n").count(), 1, "{name}");
        // The inputs come first, then the library, then the script's own code.
        let prologue = command.find("\nset -Eeuo pipefail\n").unwrap();
        let first_input = command.find("\nUSER_ID=").or(command.find("\nIMAGE="));
        assert!(first_input.unwrap() < prologue, "{name}");
    }
}

#[test]
fn every_command_is_valid_bash() {
    for (name, command) in all_commands() {
        let output = Command::new("bash")
            .args(["-n", "-c", &command])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn no_script_traces_or_shows_container_logs_or_loosens_the_sandbox() {
    for (file, text) in SCRIPT_FILES {
        for line in code(text) {
            for banned in [
                "set -x",
                "xtrace",
                "docker logs",
                "--privileged",
                "docker.sock",
                "unconfined",
                "--cap-add",
                "0.0.0.0:",
                "--network host",
                "--pid host",
                "umount -l",
                "--lazy",
                "wipefs",
            ] {
                assert!(!line.contains(banned), "{file}: {banned:?} in {line:?}");
            }
        }
    }
}

#[test]
fn the_start_command_hardens_the_container() {
    let command = start_container_script(&spec(Some("10.0.1.5")));
    for (name, quoted) in [
        ("USER_ID", "'alice'"),
        ("IMAGE", "'ghcr.io/openclaw/openclaw:latest'"),
        ("PORT", "'8080'"),
        ("HOST_IP", "'10.0.1.5'"),
        ("HEALTH_PATH", "'/healthz'"),
        ("HEALTH_TIMEOUT", "'60'"),
        ("MEMORY_MB", "'1536'"),
        ("CPUS", "'1.000'"),
        ("PIDS_LIMIT", "'512'"),
    ] {
        assert_eq!(header_line(&command, name), format!("{name}={quoted}"));
    }
    for flag in [
        "--read-only",
        "--tmpfs /tmp:rw,noexec,nosuid,nodev,size=256m",
        "--cap-drop ALL",
        "--security-opt no-new-privileges",
        "--memory \"${MEMORY_MB}m\"",
        "--memory-swap \"${MEMORY_MB}m\"",
        "--cpus \"$CPUS\"",
        "--pids-limit \"$PIDS_LIMIT\"",
        "--restart unless-stopped",
        "--user \"$CONTAINER_UID:$CONTAINER_GID\"",
        "NETWORK=bridge",
        "--network \"$NETWORK\"",
        "--publish \"$HOST_IP:$HOST_PORT:$PORT\"",
        "--log-opt max-size=10m",
        "--log-opt max-file=3",
        "--label \"spotpool.user=$USER_ID\"",
        "DATA_MOUNT=\"type=volume,source=$VOLUME,target=/data,volume-nocopy\"",
        "--mount \"$DATA_MOUNT\"",
        "--env-file \"$ENV_FILE\"",
        "--pull never",
        "NAME=\"openclaw-$USER_ID\"",
        "curl --silent --globoff --max-time 2 --output /dev/null --write-out '%{http_code}'",
        "did not become $1 on $2 within ${HEALTH_TIMEOUT}s",
    ] {
        assert!(command.contains(flag), "missing {flag}");
    }
    let (uid, gid) = CONTAINER_USER.split_once(':').unwrap();
    assert!(command.contains(&format!("CONTAINER_UID={uid}\nCONTAINER_GID={gid}\n")));
    // Without a workspace, /data is the Docker volume, as before workspaces.
    assert_eq!(
        header_line(&command, "WORKSPACE_VOLUME_ID"),
        "WORKSPACE_VOLUME_ID=''"
    );
    // Without a known address the instance asks IMDSv2, with a token; never 0.0.0.0.
    let command = start_container_script(&spec(None));
    assert_eq!(header_line(&command, "HOST_IP"), "HOST_IP=''");
    assert!(command.contains("X-aws-ec2-metadata-token-ttl-seconds"));
    assert!(command.contains("[[ $HOST_IP != 0.0.0.0 ]]"));
}

/// The command's header names the volume and the real device directory.
fn assert_workspace_header(command: &str) {
    assert_eq!(
        header_line(command, "WORKSPACE_VOLUME_ID"),
        format!("WORKSPACE_VOLUME_ID='{VOLUME_ID}'")
    );
    assert_eq!(
        header_line(command, "WORKSPACE_DEVICE_DIR"),
        format!("WORKSPACE_DEVICE_DIR='{WORKSPACE_DEVICE_DIR}'")
    );
}

#[test]
fn the_start_command_with_a_workspace_binds_its_mount_point_at_data() {
    let command = start_container_script(&workspace_spec());
    assert_workspace_header(&command);
    for text in [
        "WORKSPACE_MOUNT=\"$SPOTPOOL_WORKSPACE_ROOT/$USER_ID\"",
        &format!("SPOTPOOL_WORKSPACE_ROOT=${{SPOTPOOL_WORKSPACE_ROOT:-{WORKSPACE_ROOT}}}"),
        "DATA_MOUNT=\"type=bind,source=$WORKSPACE_MOUNT,target=/data\"",
        "--mount \"$DATA_MOUNT\"",
        "mount -t ext4 -o nodev,nosuid,noexec,noatime -- \"$device\" \"$WORKSPACE_MOUNT\"",
        "nvme-Amazon_Elastic_Block_Store_${WORKSPACE_VOLUME_ID/-/}",
        "\"$SPOTPOOL_DEV_DIR/$WORKSPACE_DEVICE\"",
        "blkid -p -o export -- \"$device\"",
        "WORKSPACE_LABEL=spotpool-ws",
    ] {
        assert!(command.contains(text), "missing {text}");
    }
    // The Docker volume is only the branch without a workspace.
    let (with, without) = command
        .split_once("if [[ -n ${WORKSPACE_VOLUME_ID-} ]]; then\n    mount_workspace\n")
        .unwrap();
    assert!(!with.contains("docker volume"));
    let without = without.split_once("\nfi\n").unwrap().0;
    let (bind, volume) = without.split_once("\nelse\n").unwrap();
    assert!(!bind.contains("docker volume") && volume.contains("docker volume create"));
    // The hardening is the same with and without a workspace: one docker run, in both cases.
    assert_eq!(
        code(&command)
            .filter(|l| l.trim_start().starts_with("docker run "))
            .count(),
        1
    );
}

#[test]
fn the_stop_command_removes_the_container_and_unmounts_without_lazy() {
    let command = stop_workspace_script("alice", VOLUME_ID, WORKSPACE_DEVICE_NAME);
    assert_eq!(header_line(&command, "USER_ID"), "USER_ID='alice'");
    assert_workspace_header(&command);
    for text in [
        "remove_user_container \"$NAME\" 20",
        "docker stop --time \"$grace\" \"$name\"",
        "\nsync\n",
        "umount -- \"$WORKSPACE_MOUNT\"",
        "/sys/fs/ext4/${device##*/}",
    ] {
        assert!(command.contains(text), "missing {text}");
    }
    assert!(!command.contains("docker run"));
}

#[test]
fn the_start_command_names_the_secret_by_arn_and_never_a_value() {
    let command = start_container_script(&spec(Some("10.0.1.5")));
    assert_eq!(
        header_line(&command, "SECRET_ARN"),
        format!("SECRET_ARN='{ARN}'")
    );
    for (name, command) in all_commands() {
        assert!(!command.contains(SECRET_VALUE), "{name}");
        assert!(!command.contains(TRICKY_VALUE), "{name}");
    }
}

#[test]
fn the_probe_and_the_user_data_agree_on_the_marker_and_the_rule() {
    let probe = probe_script(IMAGE, None);
    assert_eq!(header_line(&probe, "IMAGE"), format!("IMAGE='{IMAGE}'"));
    assert!(probe.contains(&format!("SPOTPOOL_READY_MARKER:-{READY_MARKER}}}")));
    assert!(probe.contains("METADATA_ADDRESS=169.254.169.254\n"));
    assert!(probe.contains(r#"iptables -w 5 -C DOCKER-USER -d "$METADATA_ADDRESS/32" -j DROP"#));
    // The rule as the user data writes it is documented in the probe's source (the sent
    // command carries no comments).
    assert!(PROBE.contains(&format!("iptables -C DOCKER-USER {METADATA_BLOCK_RULE}")));
    assert!(
        !probe.contains("# spotpool readiness probe: is this fresh instance fit"),
        "comments are not sent"
    );
}

#[test]
fn hostile_inputs_stay_inside_their_quotes() {
    let hostile = r#"a'b c$(touch /tmp/spotpool-pwned)`id`;"x" \'"#;
    let command = start_container_script(&ContainerSpec {
        user_id: hostile,
        ..spec(Some("10.0.1.5"))
    });
    assert_eq!(
        header_line(&command, "USER_ID"),
        r#"USER_ID='a'\''b c$(touch /tmp/spotpool-pwned)`id`;"x" \'\'''"#
    );
    // Run, it refuses the value without expanding it, and runs nothing.
    let sandbox = Sandbox::new();
    let pwned = sandbox.path("pwned");
    let pwned = pwned.display();
    let hostile = format!("a'b $(touch {pwned}) `touch {pwned}` \"\n");
    for command in [
        probe_script(&hostile, None),
        probe_script(
            IMAGE,
            Some(WarmCheck {
                port: 18789,
                health_path: &hostile,
            }),
        ),
        start_container_script(&ContainerSpec {
            user_id: &hostile,
            ..spec(Some("10.0.1.5"))
        }),
        start_container_script(&ContainerSpec {
            health_path: &hostile,
            ..spec(Some("10.0.1.5"))
        }),
        start_container_script(&ContainerSpec {
            host_ip: Some(&hostile),
            ..spec(Some("10.0.1.5"))
        }),
        start_container_script(&ContainerSpec {
            workspace_volume_id: Some(&hostile),
            ..spec(Some("10.0.1.5"))
        }),
        stop_workspace_script(&hostile, VOLUME_ID, WORKSPACE_DEVICE_NAME),
        stop_workspace_script("alice", &hostile, WORKSPACE_DEVICE_NAME),
    ] {
        let output = sandbox.run(&command, &[]);
        assert!(!output.status.success());
        let line = one_spotpool_line(&output);
        assert!(line.contains("is malformed"), "{line}");
        assert!(
            !line.contains("touch"),
            "the message repeats the value: {line}"
        );
    }
    assert!(!sandbox.path("pwned").exists());
    assert!(sandbox.calls().is_empty(), "{:?}", sandbox.calls());
}

#[test]
fn a_missing_input_is_named() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(
        &start_container_script(&ContainerSpec {
            user_id: "",
            ..spec(Some("10.0.1.5"))
        }),
        &[],
    );
    assert_eq!(
        one_spotpool_line(&output),
        "spotpool: input USER_ID is missing (expected a spotpool user id: lowercase \
         letters, digits and inner hyphens, at most 63)"
    );
    let output = sandbox.run(
        &start_container_script(&ContainerSpec {
            cpus: 0.0,
            ..spec(Some("10.0.1.5"))
        }),
        &[],
    );
    assert_eq!(
        one_spotpool_line(&output),
        "spotpool: input CPUS is malformed (expected more than 0 CPUs)"
    );
    let output = sandbox.run(
        &start_container_script(&ContainerSpec {
            host_ip: Some("0.0.0.0"),
            ..spec(Some("10.0.1.5"))
        }),
        &[],
    );
    assert_eq!(
        one_spotpool_line(&output),
        "spotpool: HOST_IP must be the instance's private address, not 0.0.0.0"
    );
    let output = sandbox.run(
        &stop_workspace_script("alice", "", WORKSPACE_DEVICE_NAME),
        &[],
    );
    assert_eq!(
        one_spotpool_line(&output),
        "spotpool: input WORKSPACE_VOLUME_ID is missing (expected an EBS volume id: vol- and \
         8 to 17 lowercase hex digits)"
    );
    for volume_id in [
        "vol-0123456789ABCDEF0",
        "vol-0123456",
        "i-0123456789abcdef0",
    ] {
        let output = sandbox.run(
            &start_container_script(&ContainerSpec {
                workspace_volume_id: Some(volume_id),
                ..spec(Some("10.0.1.5"))
            }),
            &[],
        );
        assert!(one_spotpool_line(&output).contains("input WORKSPACE_VOLUME_ID is malformed"));
    }
    assert!(sandbox.calls().is_empty());
}

// --- shellcheck ---------------------------------------------------------------------------

/// Whether shellcheck can run. Missing on CI (CI=true) is a failure, not a skip.
fn have_shellcheck() -> bool {
    let found = Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "shellcheck is not installed and CI=true: the instance scripts must be checked \
             (apt-get install -y shellcheck, or run scripts/shellcheck.sh)"
        );
        eprintln!("SKIPPED: shellcheck is not installed (apt-get install -y shellcheck)");
    }
    found
}

fn assert_shellcheck_clean(args: &[&str], what: &str) {
    let output = Command::new("shellcheck")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "shellcheck finds problems in {what}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn script_files_pass_shellcheck() {
    if !have_shellcheck() {
        return;
    }
    let files: Vec<String> = SCRIPT_FILES
        .iter()
        .map(|(file, _)| format!("scripts/instance/{file}"))
        .collect();
    let mut args = vec!["-x"];
    args.extend(files.iter().map(String::as_str));
    assert_shellcheck_clean(&args, "scripts/instance");
}

#[test]
fn generated_commands_pass_shellcheck() {
    if !have_shellcheck() {
        return;
    }
    let sandbox = Sandbox::new();
    for (name, command) in all_commands() {
        let file = sandbox.path(&format!("{}.sh", name.replace(' ', "-")));
        std::fs::write(&file, &command).unwrap();
        assert_shellcheck_clean(&["--shell=bash", file.to_str().unwrap()], name);
    }
}

// --- behaviour, with fake tools ------------------------------------------------------------

/// A temporary directory with fake `docker`, `aws`, `curl`, `iptables`, `chown` and `systemctl` on PATH
/// (python3, install, stat and the rest are the real ones). Each fake appends its argv to
/// `calls`; `docker` keeps containers and volumes as files under `state/`.
struct Sandbox {
    dir: PathBuf,
}

const FAKE_RECORD: &str = r#"#!/bin/bash
{ printf 'CALL %s\n' "${0##*/}"; for arg in "$@"; do printf 'ARG %s\n' "$arg"; done; } >>"$FAKE_DIR/calls"
"#;

const FAKE_DOCKER: &str = r#"state=$FAKE_DIR/state
last=${!#}
case $1 in
info) ;;
image) [[ -e $state/pulled ]] || exit "${FAKE_IMAGE_EXIT:-0}" ;;
pull) [[ ${FAKE_PULL_EXIT:-0} != 0 ]] && exit "$FAKE_PULL_EXIT"; touch "$state/pulled" ;;
login) cat >/dev/null; echo "Login Succeeded" ;;
container | stop) [[ -e $state/containers/$last ]] ;;
inspect) echo "${FAKE_STATUS:-running}" ;;
rm) rm -f "$state/containers/$last" ;;
restart) [[ -e $state/containers/$last ]] || exit 1; exit "${FAKE_RESTART_EXIT:-0}" ;;
ps) ls "$state/containers" ;;
volume)
    case $2 in
    create) touch "$state/volumes/$last"; mkdir -p "$FAKE_DIR/mnt/$last"; echo "$last" ;;
    inspect)
        [[ -e $state/volumes/$last ]] || exit 1
        if [[ $3 == --format ]]; then echo "$FAKE_DIR/mnt/$last"; fi ;;
    ls) ls "$state/volumes" ;;
    rm) rm "$state/volumes/$last" ;;
    *) exit 64 ;;
    esac ;;
network)
    mkdir -p "$state/networks"
    case $2 in
    inspect) [[ -e $state/networks/$last ]] ;;
    create) touch "$state/networks/$last" ;;
    rm) rm "$state/networks/$last" ;;
    *) exit 64 ;;
    esac ;;
run)
    env_file='' name=''
    while (($#)); do
        case $1 in
        --env-file) env_file=$2; shift ;;
        --name) name=$2; shift ;;
        esac
        shift
    done
    stat -c %a "$env_file" >"$FAKE_DIR/env-file.mode"
    stat -c %a "${env_file%/*}" >"$FAKE_DIR/run-dir.mode"
    cp "$env_file" "$FAKE_DIR/env-file.seen"
    touch "$state/containers/$name"
    echo 4f1c0ffee
    exit "${FAKE_RUN_EXIT:-0}" ;;
*) echo "fake docker: unexpected $*"; exit 64 ;;
esac
"#;

const FAKE_AWS: &str = r#"if [[ ${FAKE_AWS_EXIT:-0} != 0 ]]; then
    echo "An error occurred (AccessDeniedException) when calling the GetSecretValue operation" >&2
    exit "$FAKE_AWS_EXIT"
fi
cat "$FAKE_DIR/aws-response"
"#;

const FAKE_CURL: &str = r#"url=${!#}
case $url in
http://127.0.0.1:*)
    if [[ ${FAKE_WARM_EXIT:-0} != 0 ]]; then printf 000; exit "$FAKE_WARM_EXIT"; fi
    printf %s "${FAKE_WARM_CODE:-200}" ;;
*/latest/api/token) echo imds-token-abc ;;
*/latest/meta-data/local-ipv4) cat >"$FAKE_DIR/imds-headers"; echo "${FAKE_IMDS_IP:-10.9.8.7}" ;;
*/readyz) printf %s "${FAKE_READY_CODE:-200}" ;;
*)
    if [[ ${FAKE_HEALTH_EXIT:-0} != 0 ]]; then printf 000; exit "$FAKE_HEALTH_EXIT"; fi
    printf %s "${FAKE_HEALTH_CODE:-200}" ;;
esac
"#;

/// Runs the rest of its argv after setpriv's options, as the caller (the sandbox is not the
/// container's uid's to write).
const FAKE_SETPRIV: &str = r#"while [[ $1 == --* ]]; do shift; done
exec "$@"
"#;

impl Sandbox {
    fn new() -> Sandbox {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "spotpool-instance-scripts-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["bin", "state/containers", "state/volumes"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for (tool, body) in [
            ("docker", FAKE_DOCKER),
            ("aws", FAKE_AWS),
            ("curl", FAKE_CURL),
            (
                "iptables",
                r#"if [[ -n ${FAKE_IPTABLES_MISSING-} && "$*" == *"$FAKE_IPTABLES_MISSING"* ]]; then
    exit 1
fi
exit "${FAKE_IPTABLES_EXIT:-0}""#,
            ),
            ("chown", r#"exit "${FAKE_CHOWN_EXIT:-0}""#),
            ("setpriv", FAKE_SETPRIV),
            ("systemctl", r#"exit "${FAKE_SYSTEMCTL_EXIT:-0}""#),
            ("docker-init", "exit 0"),
        ] {
            let path = dir.join("bin").join(tool);
            std::fs::write(&path, format!("{FAKE_RECORD}{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let sandbox = Sandbox { dir };
        sandbox.set_secret(&serde_json::json!({
            "API_KEY": SECRET_VALUE,
            "OTHER_TOKEN": TRICKY_VALUE,
        }));
        sandbox
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    /// What the fake `aws secretsmanager get-secret-value` answers.
    fn set_secret(&self, secret: &serde_json::Value) {
        let response = serde_json::json!({
            "ARN": ARN,
            "Name": "openclaw/alice",
            "SecretString": secret.to_string(),
        });
        std::fs::write(self.path("aws-response"), response.to_string()).unwrap();
    }

    fn run(&self, command: &str, env: &[(&str, &str)]) -> Output {
        let file = self.path("command.sh");
        std::fs::write(&file, command).unwrap();
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("bash")
            .arg(&file)
            .env_remove("BASH_ENV")
            .env("PATH", path)
            .env("FAKE_DIR", &self.dir)
            .env("SPOTPOOL_RUN_DIR", self.path("run"))
            .env("SPOTPOOL_READY_MARKER", self.path("ready"))
            .env("SPOTPOOL_WORKSPACE_ROOT", self.path("workspaces"))
            .env("SPOTPOOL_DEV_DIR", self.path("dev"))
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// Every recorded call, as argv (tool name first).
    fn calls(&self) -> Vec<Vec<String>> {
        let log = std::fs::read_to_string(self.path("calls")).unwrap_or_default();
        let mut calls: Vec<Vec<String>> = Vec::new();
        for line in log.lines() {
            if let Some(tool) = line.strip_prefix("CALL ") {
                calls.push(vec![tool.to_string()]);
            } else if let (Some(arg), Some(call)) = (line.strip_prefix("ARG "), calls.last_mut()) {
                call.push(arg.to_string());
            }
        }
        calls
    }

    fn docker_runs(&self) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter(|c| c.len() > 1 && c[0] == "docker" && c[1] == "run")
            .collect()
    }

    fn has_call(&self, argv: &[&str]) -> bool {
        self.calls().iter().any(|c| c == argv)
    }

    fn exists(&self, relative: &str) -> bool {
        self.path(relative).exists()
    }

    fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path(relative)).unwrap_or_default()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Standard error holds exactly one line, a `spotpool:` message; returns it.
fn one_spotpool_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stderr: {stderr:?}\nstdout: {}",
        stdout(output)
    );
    assert!(lines[0].starts_with("spotpool: "), "{stderr:?}");
    lines[0].to_string()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// No secret value in any recorded argv, in standard error or in standard output.
fn assert_no_secret_leaked(sandbox: &Sandbox, output: &Output) {
    let calls = sandbox.read("calls");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for value in [SECRET_VALUE, TRICKY_VALUE, "imds-token-abc"] {
        assert!(
            !calls.contains(value),
            "{value:?} in a command line:\n{calls}"
        );
        assert!(!stderr.contains(value), "{value:?} in stderr");
    }
    for value in [SECRET_VALUE, TRICKY_VALUE] {
        assert!(!stdout(output).contains(value), "{value:?} in stdout");
    }
}

/// `flag value` appears as two consecutive arguments of `argv`.
fn has_pair(argv: &[String], flag: &str, value: &str) -> bool {
    argv.windows(2).any(|w| w[0] == flag && w[1] == value)
}

/// The docker run argv has every hardening flag (all but the `--mount` of /data, which the
/// callers check) and no other host path.
fn assert_hardened(argv: &[String]) {
    for (flag, value) in [
        ("--name", "openclaw-alice"),
        ("--label", "spotpool.user=alice"),
        ("--pull", "never"),
        ("--restart", "unless-stopped"),
        ("--user", CONTAINER_USER),
        ("--tmpfs", "/tmp:rw,noexec,nosuid,nodev,size=256m"),
        ("--env", "HOME=/data"),
        ("--cap-drop", "ALL"),
        ("--security-opt", "no-new-privileges"),
        ("--memory", "1536m"),
        ("--memory-swap", "1536m"),
        ("--cpus", "1.000"),
        ("--pids-limit", "512"),
        ("--log-driver", "json-file"),
        ("--log-opt", "max-size=10m"),
        ("--log-opt", "max-file=3"),
    ] {
        assert!(has_pair(argv, flag, value), "no {flag} {value} in {argv:?}");
    }
    for flag in ["--read-only", "--detach"] {
        assert!(argv.iter().any(|a| a == flag), "no {flag} in {argv:?}");
    }
    assert_eq!(argv.last().map(String::as_str), Some(IMAGE));
    // One place for /data, and nothing else from the host.
    assert_eq!(argv.iter().filter(|a| *a == "--mount").count(), 1);
    for banned in ["--volume", "-v", "--volumes-from", "--device"] {
        assert!(!argv.iter().any(|a| a == banned), "{banned} in {argv:?}");
    }
}

#[test]
fn the_start_command_runs_a_hardened_container_and_removes_the_env_file() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&start_container_script(&spec(Some("10.0.1.5"))), &[]);
    assert!(
        output.status.success(),
        "stderr: {}\nstdout: {}",
        String::from_utf8_lossy(&output.stderr),
        stdout(&output)
    );
    assert!(output.stderr.is_empty());
    assert!(stdout(&output).contains("container openclaw-alice is healthy on /healthz"));
    assert_no_secret_leaked(&sandbox, &output);

    let runs = sandbox.docker_runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let argv = &runs[0];
    assert_hardened(argv);
    assert!(has_pair(
        argv,
        "--mount",
        "type=volume,source=spotpool-alice,target=/data,volume-nocopy"
    ));

    // The env file: in the root-only run directory, 0600, the values verbatim, then gone.
    let env_file = argv
        .windows(2)
        .find(|w| w[0] == "--env-file")
        .map(|w| PathBuf::from(&w[1]))
        .unwrap();
    assert_eq!(env_file, sandbox.path("run/openclaw-alice.env"));
    assert_eq!(sandbox.read("env-file.mode").trim(), "600");
    assert_eq!(sandbox.read("run-dir.mode").trim(), "700");
    assert_eq!(
        sandbox.read("env-file.seen"),
        format!("API_KEY={SECRET_VALUE}\nOTHER_TOKEN={TRICKY_VALUE}\n")
    );
    assert!(!env_file.exists(), "the env file outlived docker run");

    // The secret was read by ARN, in the ARN's region, and the volume given to the uid.
    assert!(sandbox.has_call(&[
        "aws",
        "secretsmanager",
        "get-secret-value",
        "--region",
        "eu-west-1",
        "--secret-id",
        ARN,
        "--output",
        "json",
    ]));
    let mount = sandbox.path("mnt/spotpool-alice");
    assert!(sandbox.has_call(&["chown", CONTAINER_USER, mount.to_str().unwrap()]));
    assert!(sandbox.has_call(&[
        "iptables",
        "-w",
        "5",
        "-C",
        "DOCKER-USER",
        "-d",
        "169.254.169.254/32",
        "-j",
        "DROP",
    ]));

    // A second run replaces the container and keeps the volume.
    let output = sandbox.run(&start_container_script(&spec(Some("10.0.1.5"))), &[]);
    assert!(output.status.success());
    assert!(sandbox.has_call(&["docker", "rm", "--force", "--volumes", "openclaw-alice"]));
    assert!(sandbox.exists("state/volumes/spotpool-alice"));
    assert_eq!(sandbox.docker_runs().len(), 2);
}

#[test]
fn a_shared_instances_start_gives_the_container_its_own_network_and_its_slots_port() {
    let sandbox = Sandbox::new();
    let shared = ContainerSpec {
        host_port: 8083,
        shared: true,
        workspace_device: "/dev/sdj",
        ..spec(Some("10.0.1.5"))
    };
    let command = start_container_script(&shared);
    assert!(command.contains("\nWORKSPACE_DEVICE='sdj'\n"), "{command}");
    let output = sandbox.run(&command, &[]);
    assert_success(&output);
    let argv = &sandbox.docker_runs()[0];
    assert_hardened(argv);
    assert!(has_pair(argv, "--network", "spotpool-alice"), "{argv:?}");
    assert!(
        has_pair(argv, "--publish", "10.0.1.5:8083:8080"),
        "{argv:?}"
    );
    assert!(sandbox.has_call(&[
        "docker",
        "network",
        "create",
        "--driver",
        "bridge",
        "--opt",
        "com.docker.network.bridge.enable_icc=false",
        "--label",
        "spotpool.user=alice",
        "spotpool-alice",
    ]));
    for rule in [
        &["DOCKER-USER", "-i", "br-+", "-o", "br-+", "-j", "DROP"][..],
        &[
            "INPUT",
            "-i",
            "br-+",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "DROP",
        ],
    ] {
        let mut check = vec!["iptables", "-w", "5", "-C"];
        check.extend_from_slice(rule);
        assert!(sandbox.has_call(&check), "{rule:?} checked");
    }
    // The health wait asks the slot's port.
    assert!(
        sandbox
            .calls()
            .iter()
            .any(|c| c[0] == "curl" && c.last().unwrap() == "http://10.0.1.5:8083/healthz")
    );

    // Without the rule between users' networks, nothing starts.
    let bare = Sandbox::new();
    let output = bare.run(&command, &[("FAKE_IPTABLES_MISSING", "-o br-+")]);
    assert!(!output.status.success());
    assert!(
        one_spotpool_line(&output).contains("between users' networks"),
        "{}",
        one_spotpool_line(&output)
    );
    assert!(bare.docker_runs().is_empty());

    // A dedicated instance's start keeps the default bridge and checks no such rule.
    let dedicated = Sandbox::new();
    assert_success(&dedicated.run(&start_container_script(&spec(Some("10.0.1.5"))), &[]));
    let argv = &dedicated.docker_runs()[0];
    assert!(has_pair(argv, "--network", "bridge"));
    assert!(has_pair(argv, "--publish", "10.0.1.5:8080:8080"));
    assert!(
        !dedicated
            .calls()
            .iter()
            .any(|c| c.contains(&"br-+".to_string()))
    );
}

#[test]
fn a_wipe_removes_everything_of_the_user_and_a_workspace_device_is_per_slot() {
    assert_eq!(workspace_device_name(0).as_deref(), Some("/dev/sdf"));
    assert_eq!(workspace_device_name(1).as_deref(), Some("/dev/sdh"));
    assert_eq!(workspace_device_name(19).as_deref(), Some("/dev/sdz"));
    assert_eq!(workspace_device_name(MAX_SLOTS), None);
    let sandbox = Sandbox::new();
    let shared = ContainerSpec {
        host_port: 8081,
        shared: true,
        ..spec(Some("10.0.1.5"))
    };
    assert_success(&sandbox.run(&start_container_script(&shared), &[]));
    assert!(sandbox.exists("state/networks/spotpool-alice"));
    assert!(sandbox.exists("state/volumes/spotpool-alice"));
    let output = sandbox.run(&wipe_slot_script("alice", None, "/dev/sdh"), &[]);
    assert_success(&output);
    assert!(stdout(&output).contains("the slot of alice is wiped"));
    assert!(!sandbox.exists("state/containers/openclaw-alice"));
    assert!(!sandbox.exists("state/networks/spotpool-alice"));
    assert!(!sandbox.exists("state/volumes/spotpool-alice"));
    // Again: nothing left is fine.
    assert_success(&sandbox.run(&wipe_slot_script("alice", None, "/dev/sdh"), &[]));
}

#[test]
fn an_unhealthy_container_fails_with_one_line_and_no_logs() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(
        &start_container_script(&ContainerSpec {
            health_timeout_seconds: 1,
            ..spec(Some("10.0.1.5"))
        }),
        &[("FAKE_HEALTH_EXIT", "7"), ("FAKE_STATUS", "restarting")],
    );
    assert!(!output.status.success());
    assert_eq!(
        one_spotpool_line(&output),
        "spotpool: container openclaw-alice did not become healthy on /healthz within 1s \
         (container status: restarting)"
    );
    assert_no_secret_leaked(&sandbox, &output);
    assert!(!sandbox.exists("run/openclaw-alice.env"));
    assert!(
        !sandbox
            .calls()
            .iter()
            .any(|c| c.len() > 1 && c[0] == "docker" && c[1] == "logs")
    );
}

#[test]
fn a_malformed_secret_is_refused_without_echoing_it() {
    for (secret, reason) in [
        (
            serde_json::json!({"API_KEY": "fine", "BAD-NAME": SECRET_VALUE}),
            "entry 2 is not named like an environment variable",
        ),
        (
            serde_json::json!({format!("X{SECRET_VALUE}"): "v"}),
            "entry 1 is not named like an environment variable",
        ),
        (
            serde_json::json!({"API_KEY": format!("{SECRET_VALUE}\nINJECTED=1")}),
            "the value of API_KEY contains a line break or NUL",
        ),
        (
            serde_json::json!({"API_KEY": 42}),
            "the value of API_KEY is not a string",
        ),
        (
            serde_json::json!([SECRET_VALUE]),
            "it is not a JSON object of names to values",
        ),
    ] {
        let sandbox = Sandbox::new();
        sandbox.set_secret(&secret);
        let output = sandbox.run(&start_container_script(&spec(Some("10.0.1.5"))), &[]);
        assert!(!output.status.success());
        assert_eq!(
            one_spotpool_line(&output),
            format!("spotpool: the user's secret {ARN} was refused: {reason}")
        );
        assert_no_secret_leaked(&sandbox, &output);
        assert!(sandbox.docker_runs().is_empty());
        assert!(!sandbox.exists("run/openclaw-alice.env"));
    }
}

#[test]
fn an_unreadable_secret_or_a_missing_metadata_block_stops_the_start() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(
        &start_container_script(&spec(Some("10.0.1.5"))),
        &[("FAKE_AWS_EXIT", "254")],
    );
    assert_eq!(
        one_spotpool_line(&output),
        format!("spotpool: could not read the user's secret {ARN} with the instance role")
    );
    assert!(sandbox.docker_runs().is_empty());

    let sandbox = Sandbox::new();
    let output = sandbox.run(
        &start_container_script(&spec(Some("10.0.1.5"))),
        &[("FAKE_IPTABLES_EXIT", "1")],
    );
    assert_eq!(
        one_spotpool_line(&output),
        "spotpool: the DOCKER-USER rule dropping container traffic to 169.254.169.254 \
         is missing"
    );
    assert!(!sandbox.calls().iter().any(|c| c[0] == "aws"));
    assert!(sandbox.docker_runs().is_empty());
}

#[test]
fn any_other_failure_is_one_line_naming_the_script_line() {
    let sandbox = Sandbox::new();
    let command = start_container_script(&spec(Some("10.0.1.5")));
    let output = sandbox.run(&command, &[("FAKE_CHOWN_EXIT", "3")]);
    assert_eq!(output.status.code(), Some(3));
    let line = command
        .lines()
        .position(|l| l.trim_start() == r#"chown "$CONTAINER_UID:$CONTAINER_GID" "$mountpoint""#)
        .unwrap()
        + 1;
    assert_eq!(
        one_spotpool_line(&output),
        format!("spotpool: line {line}: command failed (exit 3)")
    );
    assert!(sandbox.docker_runs().is_empty());
}

#[test]
fn without_a_host_ip_the_private_address_comes_from_imdsv2() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&start_container_script(&spec(None)), &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_no_secret_leaked(&sandbox, &output);
    let runs = sandbox.docker_runs();
    assert!(has_pair(&runs[0], "--publish", "10.9.8.7:8080:8080"));
    assert!(sandbox.has_call(&[
        "curl",
        "--fail",
        "--silent",
        "--show-error",
        "--max-time",
        "2",
        "--request",
        "PUT",
        "--header",
        "X-aws-ec2-metadata-token-ttl-seconds: 60",
        "http://169.254.169.254/latest/api/token",
    ]));
    // The token went in on standard input, not on the command line.
    assert_eq!(
        sandbox.read("imds-headers"),
        "X-aws-ec2-metadata-token: imds-token-abc\n"
    );

    let sandbox = Sandbox::new();
    let output = sandbox.run(
        &start_container_script(&spec(None)),
        &[("FAKE_IMDS_IP", "0.0.0.0")],
    );
    assert_eq!(
        one_spotpool_line(&output),
        "spotpool: HOST_IP must be the instance's private address, not 0.0.0.0"
    );
    assert!(sandbox.docker_runs().is_empty());
}

#[test]
fn the_probe_checks_docker_the_marker_the_image_the_rule_and_freshness() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&probe_script(IMAGE, None), &[]);
    assert_eq!(
        one_spotpool_line(&output),
        format!(
            "spotpool: user data has not finished (no readiness marker {})",
            sandbox.path("ready").display()
        )
    );
    std::fs::write(sandbox.path("ready"), "").unwrap();
    let output = sandbox.run(&probe_script(IMAGE, None), &[]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output).trim_end().lines().last(), Some("ready"));
    assert!(output.stderr.is_empty());

    let output = sandbox.run(&probe_script(IMAGE, None), &[("FAKE_IMAGE_EXIT", "1")]);
    assert_eq!(
        one_spotpool_line(&output),
        format!("spotpool: image {IMAGE} is not present")
    );
    let output = sandbox.run(&probe_script(IMAGE, None), &[("FAKE_IPTABLES_EXIT", "1")]);
    assert!(one_spotpool_line(&output).contains("DOCKER-USER"));

    // The mount point a workspace leaves behind (empty, after stop-workspace.sh).
    std::fs::create_dir_all(sandbox.path("workspaces/alice")).unwrap();
    let output = sandbox.run(&probe_script(IMAGE, None), &[]);
    assert_eq!(
        one_spotpool_line(&output),
        "spotpool: a user workspace was mounted on this instance; it is not fresh"
    );

    std::fs::write(sandbox.path("state/containers/openclaw-bob"), "").unwrap();
    let output = sandbox.run(&probe_script(IMAGE, None), &[]);
    assert_eq!(
        one_spotpool_line(&output),
        "spotpool: a user container exists on this instance; it is not fresh"
    );
}

#[test]
fn the_probe_pulls_a_pinned_image_by_digest_when_the_spare_lacks_those_bytes() {
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let pinned = format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/openclaw@{digest}");
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path("ready"), "").unwrap();
    // The pre-pulled bytes are the pinned ones: nothing to pull.
    let output = sandbox.run(&probe_script(&pinned, None), &[]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        !sandbox
            .calls()
            .iter()
            .any(|c| c.get(1).is_some_and(|a| a == "pull"))
    );
    // Other bytes of the tag: an ECR login, then a pull of exactly the pinned reference.
    let output = sandbox.run(&probe_script(&pinned, None), &[("FAKE_IMAGE_EXIT", "1")]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output).trim_end().lines().last(), Some("ready"));
    let calls = sandbox.calls();
    let login = calls
        .iter()
        .position(|c| c.starts_with(&["aws".to_string(), "ecr".to_string()]))
        .unwrap();
    assert!(calls[login].contains(&"eu-west-1".to_string()));
    let pull = calls
        .iter()
        .position(|c| c.get(1).is_some_and(|a| a == "pull"))
        .unwrap();
    assert!(login < pull);
    assert_eq!(calls[pull], ["docker", "pull", pinned.as_str()]);
    // A pull that fails keeps the spare from becoming available.
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path("ready"), "").unwrap();
    let env = [("FAKE_IMAGE_EXIT", "1"), ("FAKE_PULL_EXIT", "1")];
    let output = sandbox.run(&probe_script(&pinned, None), &env);
    assert_eq!(
        one_spotpool_line(&output),
        format!("spotpool: could not pull the pinned image {pinned}")
    );
    // A public image needs no login.
    let public = format!("ghcr.io/openclaw/openclaw@{digest}");
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path("ready"), "").unwrap();
    let output = sandbox.run(&probe_script(&public, None), &[("FAKE_IMAGE_EXIT", "1")]);
    assert!(output.status.success(), "{output:?}");
    assert!(!sandbox.calls().iter().any(|c| c[0] == "aws"));
}

// --- workspaces --------------------------------------------------------------------------

#[test]
fn the_stop_command_removes_the_container_and_succeeds_with_nothing_mounted() {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path("state/containers/openclaw-alice"), "").unwrap();
    let command = stop_workspace_script("alice", VOLUME_ID, WORKSPACE_DEVICE_NAME);
    let output = sandbox.run(&command, &[]);
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty());
    assert!(sandbox.has_call(&["docker", "stop", "--time", "20", "openclaw-alice"]));
    assert!(sandbox.has_call(&["docker", "rm", "--force", "--volumes", "openclaw-alice"]));
    assert!(!sandbox.exists("state/containers/openclaw-alice"));
    assert!(stdout(&output).ends_with(&format!(
        "workspace of alice (volume {VOLUME_ID}) is not mounted\n"
    )));
    // Again: no container, no mount point, no device.
    let output = sandbox.run(&command, &[]);
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty());
    assert!(stdout(&output).contains("no container openclaw-alice"));
}

#[test]
fn a_workspace_whose_device_never_appears_fails_before_the_secret_is_read() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(
        &start_container_script(&workspace_spec()),
        &[("SPOTPOOL_WORKSPACE_WAIT", "1")],
    );
    assert_eq!(
        one_spotpool_line(&output),
        format!(
            "spotpool: volume {VOLUME_ID} is not attached: no device for it appeared within 1s"
        )
    );
    assert!(!sandbox.calls().iter().any(|c| c[0] == "aws"));
    assert!(
        !sandbox
            .calls()
            .iter()
            .any(|c| c.len() > 1 && c[1] == "volume")
    );
    assert!(sandbox.docker_runs().is_empty());
    // The mount point is made ready (root, 0700), with nothing mounted on it.
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(sandbox.path(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("workspaces"), 0o700);
    assert_eq!(mode("workspaces/alice"), 0o700);
}

/// Runs a host tool; panics with its output when it fails.
fn host(tool: &str, args: &[&str]) -> String {
    let output = Command::new(tool).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{tool} {args:?}: {}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output)
}

fn is_mountpoint(path: &std::path::Path) -> bool {
    Command::new("mountpoint")
        .arg("-q")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

/// A sandbox with a 64 MiB image on a real loop device, linked as the volume's NVMe serial link
/// in the sandbox's `by-id`, and the start and stop commands that look there. On drop, whatever
/// happened: the workspace and the test's own mount point unmounted, the loop device detached,
/// then (a field, so after that) the sandbox removed.
struct LoopDisk {
    sandbox: Sandbox,
    image: PathBuf,
    device: String,
    mounts: [PathBuf; 2],
    start: String,
    stop: String,
}

impl LoopDisk {
    /// `None` (with the reason printed) where loop devices cannot be used: not root, or
    /// `losetup -f` finds none.
    fn new() -> Option<LoopDisk> {
        let uid = Command::new("id").arg("-u").output().map(|o| stdout(&o));
        if uid.ok().as_deref().map(str::trim) != Some("0") {
            eprintln!("SKIPPED: the workspace tests need root (mount, losetup)");
            return None;
        }
        let free = Command::new("losetup").arg("-f").output();
        if !free.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("SKIPPED: no loop device is available (losetup -f: {free:?})");
            return None;
        }
        let sandbox = Sandbox::new();
        let (start, stop) = workspace_commands(&sandbox);
        let image = sandbox.path("volume.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let device = host("losetup", &["--find", "--show", image.to_str().unwrap()])
            .trim()
            .to_string();
        let disk = LoopDisk {
            image,
            device,
            mounts: [sandbox.path("workspaces/alice"), sandbox.path("prepare")],
            start,
            stop,
            sandbox,
        };
        let sandbox = &disk.sandbox;
        std::fs::create_dir_all(sandbox.path("by-id")).unwrap();
        std::fs::create_dir_all(sandbox.path("dev")).unwrap();
        disk.link(&sandbox.path(&format!(
            "by-id/nvme-Amazon_Elastic_Block_Store_{}",
            VOLUME_ID.replace('-', "")
        )));
        // The real chown: the owner of the workspace's root is checked.
        std::fs::remove_file(sandbox.path("bin/chown")).unwrap();
        Some(disk)
    }

    fn link(&self, at: &std::path::Path) {
        std::os::unix::fs::symlink(&self.device, at).unwrap();
    }

    /// The image as it is now.
    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.image).unwrap()
    }

    /// blkid's value of `tag` (`TYPE`, `LABEL`, `UUID`) for the device.
    fn probe(&self, tag: &str) -> String {
        let output = Command::new("blkid")
            .args(["-p", "-o", "value", "-s", tag, &self.device])
            .output()
            .unwrap();
        stdout(&output).trim().to_string()
    }

    /// Mounts the device at the test's own mount point, runs `write` in it, unmounts it.
    fn prepare(&self, write: impl FnOnce(&std::path::Path)) {
        let at = &self.mounts[1];
        std::fs::create_dir_all(at).unwrap();
        host("mount", &[&self.device, at.to_str().unwrap()]);
        write(at);
        host("umount", &[at.to_str().unwrap()]);
    }

    /// The kernel still has an ext4 instance of the device (mounted in some namespace).
    fn in_use(&self) -> bool {
        let name = self.device.rsplit('/').next().unwrap();
        std::path::Path::new("/sys/fs/ext4").join(name).exists()
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        for at in &self.mounts {
            for _ in 0..8 {
                if !is_mountpoint(at) {
                    break;
                }
                let unmounted = Command::new("umount")
                    .arg(at)
                    .status()
                    .is_ok_and(|s| s.success());
                if !unmounted {
                    // Clean-up only: never what the scripts do.
                    let _ = Command::new("umount").arg("--lazy").arg(at).status();
                }
            }
        }
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// The start and stop commands with the sandbox's `by-id` as their device directory.
fn workspace_commands(sandbox: &Sandbox) -> (String, String) {
    let dir = sandbox.path("by-id");
    let dir = dir.to_str().unwrap();
    (
        with_input(
            &start_container_script(&workspace_spec()),
            "WORKSPACE_DEVICE_DIR",
            dir,
        ),
        with_input(
            &stop_workspace_script("alice", VOLUME_ID, WORKSPACE_DEVICE_NAME),
            "WORKSPACE_DEVICE_DIR",
            dir,
        ),
    )
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "stderr: {}\nstdout: {}",
        String::from_utf8_lossy(&output.stderr),
        stdout(output)
    );
    assert!(output.stderr.is_empty());
}

/// The workspace is mounted once at the sandbox's mount point, from the loop device, with
/// nodev,nosuid,noexec, and its root belongs to the container's uid, mode 0700.
fn assert_mounted(sandbox: &Sandbox, disk: &LoopDisk) {
    use std::os::unix::fs::MetadataExt;
    let mount = sandbox.path("workspaces/alice");
    let found = host(
        "findmnt",
        &["-n", "-r", "-o", "SOURCE,FSTYPE,OPTIONS", "--mountpoint"]
            .into_iter()
            .chain([mount.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    let lines: Vec<&str> = found.lines().collect();
    assert_eq!(lines.len(), 1, "mounted more than once: {found}");
    let fields: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(fields[..2], [disk.device.as_str(), "ext4"], "{found}");
    let options: Vec<&str> = fields[2].split(',').collect();
    for option in ["rw", "nodev", "nosuid", "noexec"] {
        assert!(options.contains(&option), "no {option} in {found}");
    }
    let root = std::fs::metadata(&mount).unwrap();
    assert_eq!(
        format!("{}:{}", root.uid(), root.gid()),
        CONTAINER_USER,
        "owner of the workspace root"
    );
    assert_eq!(root.mode() & 0o7777, 0o700);
    let parent = std::fs::metadata(sandbox.path("workspaces")).unwrap();
    assert_eq!((parent.uid(), parent.mode() & 0o7777), (0, 0o700));
    assert_eq!(disk.probe("TYPE"), "ext4");
    assert_eq!(disk.probe("LABEL"), "spotpool-ws");
}

#[test]
fn a_blank_workspace_is_formatted_mounted_bound_at_data_and_unmounted() {
    let Some(disk) = LoopDisk::new() else {
        return;
    };
    let (sandbox, start, stop) = (&disk.sandbox, &disk.start, &disk.stop);
    // The same start without a workspace first: its docker run is the reference.
    let output = sandbox.run(&start_container_script(&spec(Some("10.0.1.5"))), &[]);
    assert_success(&output);
    let volume_calls = |sandbox: &Sandbox| {
        sandbox
            .calls()
            .iter()
            .filter(|c| c.len() > 1 && c[0] == "docker" && c[1] == "volume")
            .count()
    };
    let before = volume_calls(sandbox);

    let output = sandbox.run(start, &[]);
    assert_success(&output);
    assert!(stdout(&output).contains(&format!(
        "volume {VOLUME_ID} is blank: creating its file system"
    )));
    assert_no_secret_leaked(sandbox, &output);
    assert_mounted(sandbox, &disk);
    assert_eq!(
        volume_calls(sandbox),
        before,
        "docker volume with a workspace"
    );
    let runs = sandbox.docker_runs();
    assert_eq!(runs.len(), 2);
    let mount = sandbox.path("workspaces/alice");
    let bind = format!("type=bind,source={},target=/data", mount.display());
    assert!(has_pair(&runs[1], "--mount", &bind), "{:?}", runs[1]);
    assert_hardened(&runs[1]);
    // Every other argument is exactly as without a workspace.
    let reference: Vec<String> = runs[0]
        .iter()
        .map(|a| {
            if a.starts_with("type=volume,") {
                bind.clone()
            } else {
                a.clone()
            }
        })
        .collect();
    assert_eq!(runs[1], reference);

    // A re-run of the start: mounted already, not twice, not formatted again.
    let uuid = disk.probe("UUID");
    std::fs::write(mount.join("state.json"), "{\"kept\":true}").unwrap();
    let output = sandbox.run(start, &[]);
    assert_success(&output);
    assert!(
        stdout(&output).contains("is mounted at"),
        "{}",
        stdout(&output)
    );
    assert_mounted(sandbox, &disk);
    assert_eq!(disk.probe("UUID"), uuid);
    assert_eq!(
        std::fs::read_to_string(mount.join("state.json")).unwrap(),
        "{\"kept\":true}"
    );
    assert!(sandbox.has_call(&["docker", "rm", "--force", "--volumes", "openclaw-alice"]));

    // The stop: container gone, unmounted, the kernel holds no instance of the file system.
    let output = sandbox.run(stop, &[]);
    assert_success(&output);
    assert!(sandbox.has_call(&["docker", "stop", "--time", "20", "openclaw-alice"]));
    assert!(!sandbox.exists("state/containers/openclaw-alice"));
    assert!(!is_mountpoint(&mount));
    assert!(!disk.in_use());
    // The mount point stays (empty, root's) for the probe's freshness check.
    assert!(mount.is_dir() && std::fs::read_dir(&mount).unwrap().next().is_none());
    // Twice is fine.
    let output = sandbox.run(stop, &[]);
    assert_success(&output);
    assert!(stdout(&output).contains("no container openclaw-alice"));
    assert_eq!(disk.probe("UUID"), uuid);
}

#[test]
fn an_existing_workspace_is_mounted_and_never_formatted_again() {
    let Some(disk) = LoopDisk::new() else {
        return;
    };
    let (sandbox, start, stop) = (&disk.sandbox, &disk.start, &disk.stop);
    host("mkfs.ext4", &["-q", "-L", "spotpool-ws", &disk.device]);
    let content: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    disk.prepare(|at| {
        std::fs::create_dir(at.join("notes")).unwrap();
        std::fs::write(at.join("notes/blob.bin"), &content).unwrap();
    });
    let uuid = disk.probe("UUID");

    let output = sandbox.run(start, &[]);
    assert_success(&output);
    let out = stdout(&output);
    assert!(
        out.contains("holds its workspace file system") && !out.contains("creating"),
        "{out}"
    );
    assert_mounted(sandbox, &disk);
    assert_eq!(disk.probe("UUID"), uuid);
    let mount = sandbox.path("workspaces/alice");
    assert_eq!(
        std::fs::read(mount.join("notes/blob.bin")).unwrap(),
        content
    );
    assert_success(&sandbox.run(stop, &[]));
    assert!(!is_mountpoint(&mount));

    // A Xen instance: no serial link, the volume is /dev/xvdf (not an NVMe device).
    for entry in std::fs::read_dir(sandbox.path("by-id")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    disk.link(&sandbox.path("dev/xvdf"));
    let output = sandbox.run(start, &[]);
    assert_success(&output);
    assert_mounted(sandbox, &disk);
    assert_eq!(
        std::fs::read(mount.join("notes/blob.bin")).unwrap(),
        content
    );
    assert_success(&sandbox.run(stop, &[]));
    assert!(!is_mountpoint(&mount));
    assert!(!disk.in_use());
    assert_eq!(disk.probe("UUID"), uuid);
}

/// Writes a DOS partition table (one Linux partition) onto `device`, with no file system.
fn write_partition_table(device: &str) {
    use std::io::Write;
    let mut mbr = [0u8; 512];
    mbr[446 + 4] = 0x83;
    mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&129_024u32.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .unwrap();
    file.write_all(&mbr).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn a_device_with_any_other_signature_is_refused_and_left_untouched() {
    type Prepare = fn(&str);
    let cases: [(&str, Prepare); 4] = [
        ("ext2", |d| {
            host("mkfs.ext2", &["-q", d]);
        }),
        ("ext4 not labelled spotpool-ws", |d| {
            host("mkfs.ext4", &["-q", "-L", "spotpool", d]);
        }),
        ("swap", |d| {
            host("mkswap", &[d]);
        }),
        ("a dos partition table", write_partition_table),
    ];
    for (found, prepare) in cases {
        let Some(disk) = LoopDisk::new() else {
            return;
        };
        let (sandbox, start) = (&disk.sandbox, &disk.start);
        prepare(&disk.device);
        let before = disk.bytes();
        let output = sandbox.run(start, &[]);
        assert!(!output.status.success(), "{found}");
        assert_eq!(
            one_spotpool_line(&output),
            format!(
                "spotpool: volume {VOLUME_ID} is not a spotpool workspace (blkid finds \
                 {found}): refusing to format or mount it"
            )
        );
        assert!(!is_mountpoint(&sandbox.path("workspaces/alice")), "{found}");
        assert!(disk.bytes() == before, "{found}: the device was written to");
        assert!(sandbox.docker_runs().is_empty());
        assert!(!sandbox.calls().iter().any(|c| c[0] == "aws"));
    }
}

/// A process kept inside the workspace, killed on drop.
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_busy_workspace_fails_the_stop_and_stays_mounted() {
    let Some(disk) = LoopDisk::new() else {
        return;
    };
    let (sandbox, start, stop) = (&disk.sandbox, &disk.start, &disk.stop);
    assert_success(&sandbox.run(start, &[]));
    let mount = sandbox.path("workspaces/alice");

    // A host process inside it: the stop retries, then fails; never a lazy unmount.
    let holder = Holder(
        Command::new("sleep")
            .arg("60")
            .current_dir(&mount)
            .spawn()
            .unwrap(),
    );
    let output = sandbox.run(stop, &[("SPOTPOOL_UNMOUNT_WAIT", "1")]);
    assert_eq!(
        one_spotpool_line(&output),
        format!(
            "spotpool: the workspace of alice at {} stays busy: volume {VOLUME_ID} could not \
             be unmounted",
            mount.display()
        )
    );
    assert_mounted(sandbox, &disk);
    drop(holder);

    // Mounted somewhere else as well: the stop unmounts its own mount point and refuses.
    let elsewhere = &disk.mounts[1];
    std::fs::create_dir_all(elsewhere).unwrap();
    host("mount", &[&disk.device, elsewhere.to_str().unwrap()]);
    let output = sandbox.run(stop, &[]);
    assert_eq!(
        one_spotpool_line(&output),
        format!("spotpool: volume {VOLUME_ID} is still mounted elsewhere on the instance")
    );
    assert!(!is_mountpoint(&mount));
    host("umount", &[elsewhere.to_str().unwrap()]);
    assert_success(&sandbox.run(stop, &[]));
    assert!(!disk.in_use());
}

// --- the OpenClaw preset ------------------------------------------------------------------

fn openclaw_sandbox() -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.set_secret(&serde_json::json!({
        "OPENCLAW_GATEWAY_TOKEN": SECRET_VALUE,
        "OTHER_TOKEN": TRICKY_VALUE,
    }));
    sandbox
}

fn gateway_config(sandbox: &Sandbox) -> serde_json::Value {
    serde_json::from_str(&sandbox.read("mnt/spotpool-alice/.openclaw/openclaw.json")).unwrap()
}

#[test]
fn the_openclaw_start_runs_the_gateway_on_its_port_and_waits_until_it_is_ready() {
    let sandbox = openclaw_sandbox();
    let output = sandbox.run(&start_container_script(&openclaw_spec()), &[]);
    assert_success(&output);
    assert_no_secret_leaked(&sandbox, &output);
    let runs = sandbox.docker_runs();
    let argv = &runs[0];
    let image = argv.iter().position(|a| a == IMAGE).unwrap();
    // The preset's arguments (their words are pinned in config's tests), after the image.
    let args = crate::config::Preset::OpenClaw.args(18789);
    assert_eq!(argv[image + 1..], args[..]);
    assert!(has_pair(argv, "--publish", "10.0.1.5:18789:18789"));
    assert!(argv.iter().any(|a| a == "--init"), "no --init in {argv:?}");
    for pair in [
        "OPENCLAW_STATE_DIR=/data/.openclaw",
        "OPENCLAW_NO_AUTO_UPDATE=1",
        "NODE_OPTIONS=--max-old-space-size=960",
        "HOME=/data",
    ] {
        assert!(has_pair(argv, "--env", pair), "no --env {pair} in {argv:?}");
    }
    let out = stdout(&output);
    let healthy = out.find("is healthy on /healthz").unwrap();
    let ready = out.find("is ready on /readyz").unwrap();
    assert!(healthy < ready, "{out}");
    // The configuration merge ran as the container's uid, before the container.
    let calls = sandbox.calls();
    let merge = calls.iter().position(|c| c[0] == "setpriv").unwrap();
    let run = calls
        .iter()
        .position(|c| c.len() > 1 && c[0] == "docker" && c[1] == "run")
        .unwrap();
    assert!(merge < run);
    for flag in [
        "--reuid=10001",
        "--regid=10001",
        "--clear-groups",
        "--no-new-privs",
    ] {
        assert!(calls[merge].iter().any(|a| a == flag), "{:?}", calls[merge]);
    }
    let config = gateway_config(&sandbox);
    assert_eq!(config["gateway"]["mode"], "local");
    assert_eq!(
        config["gateway"]["controlUi"],
        serde_json::json!({
            "allowedOrigins": ["https://agents.example.com"],
            "basePath": "/r-abc123",
        })
    );
}

#[test]
fn the_gateway_configuration_keeps_the_users_settings_and_drops_only_a_token() {
    let sandbox = openclaw_sandbox();
    let dir = sandbox.path("mnt/spotpool-alice/.openclaw");
    std::fs::create_dir_all(&dir).unwrap();
    // JSON5 as a person writes it, with a token of their own that would beat the secret's.
    std::fs::write(
        dir.join("openclaw.json"),
        r#"// mine
{
  gateway: {
    auth: { mode: 'token', token: 'config-token-DO-NOT-LEAK', },
    controlUi: { allowedOrigins: ["https://mine.example.org"], },
  },
  agents: { defaults: { model: 'it\'s "mine"' } },
}
"#,
    )
    .unwrap();
    let output = sandbox.run(&start_container_script(&openclaw_spec()), &[]);
    assert_success(&output);
    assert!(!stdout(&output).contains("config-token-DO-NOT-LEAK"));
    let config = gateway_config(&sandbox);
    assert_eq!(
        config["gateway"]["controlUi"]["allowedOrigins"],
        serde_json::json!(["https://mine.example.org", "https://agents.example.com"])
    );
    assert_eq!(
        config["gateway"]["auth"],
        serde_json::json!({"mode": "token"})
    );
    assert_eq!(config["agents"]["defaults"]["model"], r#"it's "mine""#);
    assert!(stdout(&output).contains("gateway.auth.token removed"));

    // A re-start changes nothing, so the gateway's file watcher sees no write.
    let before = std::fs::metadata(dir.join("openclaw.json"))
        .unwrap()
        .modified()
        .unwrap();
    let output = sandbox.run(&start_container_script(&openclaw_spec()), &[]);
    assert_success(&output);
    assert!(stdout(&output).contains("gateway config: unchanged"));
    let after = std::fs::metadata(dir.join("openclaw.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);

    // A file it cannot read is kept aside, never lost.
    std::fs::write(dir.join("openclaw.json"), "{ not: json5 at all").unwrap();
    let output = sandbox.run(&start_container_script(&openclaw_spec()), &[]);
    assert_success(&output);
    let kept: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("openclaw.json.invalid-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join(&kept[0])).unwrap(),
        "{ not: json5 at all"
    );
    assert_eq!(gateway_config(&sandbox)["gateway"]["mode"], "local");
}

#[test]
fn a_secret_without_the_gateway_token_or_a_gateway_never_ready_fails_the_start() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&start_container_script(&openclaw_spec()), &[]);
    assert!(!output.status.success());
    assert_eq!(
        one_spotpool_line(&output),
        format!(
            "spotpool: the user's secret {ARN} was refused: it has no OPENCLAW_GATEWAY_TOKEN, \
             which the container needs"
        )
    );
    assert!(sandbox.docker_runs().is_empty());

    let sandbox = openclaw_sandbox();
    let output = sandbox.run(
        &start_container_script(&ContainerSpec {
            health_timeout_seconds: 1,
            ..openclaw_spec()
        }),
        &[("FAKE_READY_CODE", "503")],
    );
    assert!(!output.status.success());
    assert_eq!(
        one_spotpool_line(&output),
        "spotpool: container openclaw-alice did not become ready on /readyz within 1s \
         (container status: running)"
    );
    assert_no_secret_leaked(&sandbox, &output);
}

#[test]
fn the_start_waits_for_exactly_the_codes_the_target_group_accepts() {
    // A redirect (a login page, say) is not healthy to a target group whose matcher is 200:
    // the start must not call it healthy either.
    let sandbox = Sandbox::new();
    let output = sandbox.run(
        &start_container_script(&ContainerSpec {
            health_timeout_seconds: 1,
            ..spec(Some("10.0.1.5"))
        }),
        &[("FAKE_HEALTH_CODE", "302")],
    );
    assert!(!output.status.success());
    assert!(one_spotpool_line(&output).contains("did not become healthy on /healthz"));

    // With the matcher 200-399 the same answer passes, and 204 passes 200,204.
    for (codes, answer) in [("200-399", "302"), ("200,204", "204"), ("200", "200")] {
        let sandbox = Sandbox::new();
        let output = sandbox.run(
            &start_container_script(&ContainerSpec {
                health_timeout_seconds: 1,
                health_codes: codes,
                ..spec(Some("10.0.1.5"))
            }),
            &[("FAKE_HEALTH_CODE", answer)],
        );
        assert_success(&output);
    }
    // A malformed list is refused before anything runs.
    let sandbox = Sandbox::new();
    let output = sandbox.run(
        &start_container_script(&ContainerSpec {
            health_codes: "200;id",
            ..spec(Some("10.0.1.5"))
        }),
        &[],
    );
    assert!(one_spotpool_line(&output).contains("input HEALTH_CODES is malformed"));
    assert!(sandbox.docker_runs().is_empty());
}

// --- the warm responder -------------------------------------------------------------------

/// The position of the first recorded call whose argv starts with `prefix`.
fn call_position(calls: &[Vec<String>], prefix: &[&str]) -> usize {
    calls
        .iter()
        .position(|c| c.len() >= prefix.len() && c.iter().zip(prefix).all(|(a, b)| a == b))
        .unwrap_or_else(|| panic!("no call {prefix:?} in {calls:?}"))
}

#[test]
fn the_start_stops_the_warm_responder_right_before_the_container_binds_the_port() {
    for (name, sandbox, spec) in [
        ("generic", Sandbox::new(), spec(Some("10.0.1.5"))),
        ("openclaw", openclaw_sandbox(), openclaw_spec()),
    ] {
        let output = sandbox.run(&start_container_script(&spec), &[]);
        assert_success(&output);
        let calls = sandbox.calls();
        let unit = WARM_RESPONDER_UNIT;
        let disable = call_position(&calls, &["systemctl", "disable", "--no-reload", "--quiet"]);
        assert_eq!(calls[disable].last().map(String::as_str), Some(unit));
        let stop = call_position(&calls, &["systemctl", "stop", unit]);
        let run = call_position(&calls, &["docker", "run"]);
        // Everything that takes time comes first: the image check, the volume, the secret's
        // fetch and (OpenClaw) the configuration merge; then the stop, then at once docker run.
        let before = [
            &["docker", "image", "inspect"][..],
            &["iptables"],
            &["docker", "volume", "create"],
            &["aws", "secretsmanager", "get-secret-value"],
        ];
        for prefix in before {
            assert!(
                call_position(&calls, prefix) < disable,
                "{name}: {prefix:?}"
            );
        }
        if spec.gateway.is_some() {
            assert!(call_position(&calls, &["setpriv"]) < disable, "{name}");
        }
        assert_eq!(disable + 1, stop, "{name}: {calls:?}");
        assert_eq!(
            stop + 1,
            run,
            "{name}: the stop must come right before docker run"
        );
        assert_eq!(
            calls.iter().filter(|c| c[0] == "systemctl").count(),
            2,
            "{name}: {calls:?}"
        );
        // The wait that follows asks the container on the instance's address, never loopback.
        assert!(
            !calls
                .iter()
                .any(|c| c[0] == "curl" && c.last().unwrap().contains("127.0.0.1")),
            "{name}: {calls:?}"
        );
    }
}

#[test]
fn a_missing_warm_responder_unit_never_fails_the_start() {
    // systemctl answers "Unit spotpool-warm.service not loaded." (exit 5) on an instance whose
    // user data predates the warm responder, and in local mode.
    let sandbox = Sandbox::new();
    let output = sandbox.run(
        &start_container_script(&spec(Some("10.0.1.5"))),
        &[("FAKE_SYSTEMCTL_EXIT", "5")],
    );
    assert_success(&output);
    assert!(output.stderr.is_empty());
    assert!(
        stdout(&output).contains("spotpool-warm.service could not be stopped"),
        "{}",
        stdout(&output)
    );
    assert_eq!(sandbox.docker_runs().len(), 1);
}

#[test]
fn the_probe_checks_the_warm_responder_on_loopback_when_asked() {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path("ready"), "").unwrap();
    let url = "http://127.0.0.1:18789/healthz";
    let command = probe_script(IMAGE, Some(WARM));
    assert_eq!(header_line(&command, "WARM_PORT"), "WARM_PORT='18789'");
    assert_eq!(
        header_line(&command, "WARM_HEALTH_PATH"),
        "WARM_HEALTH_PATH='/healthz'"
    );
    let output = sandbox.run(&command, &[]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output).trim_end().lines().last(), Some("ready"));
    let calls = sandbox.calls();
    let curl = call_position(&calls, &["curl"]);
    assert_eq!(calls[curl].last().map(String::as_str), Some(url));
    assert!(calls[curl].iter().any(|a| a == "--max-time"));
    assert_eq!(calls.iter().filter(|c| c[0] == "curl").count(), 1);

    // Something else (or nothing) on the port: a clear failure naming the port, the path and
    // what the launch template must do.
    for (env, got) in [
        (("FAKE_WARM_CODE", "503"), "503"),
        (("FAKE_WARM_EXIT", "7"), "000"),
    ] {
        let sandbox = Sandbox::new();
        std::fs::write(sandbox.path("ready"), "").unwrap();
        let output = sandbox.run(&command, &[env]);
        assert!(!output.status.success());
        assert_eq!(
            one_spotpool_line(&output),
            format!(
                "spotpool: nothing answers 200 on {url} (got {got}): the launch template's \
                 user data must run the warm responder (spotpool-warm.service) on port 18789 \
                 with the health check path /healthz (see docs/DEPLOY.md)"
            )
        );
        // Tried a few times: systemd restarts a failed responder within a second.
        let tries = sandbox.calls().iter().filter(|c| c[0] == "curl").count();
        assert_eq!(tries, 3);
    }

    // Without the check (the daemon's default until spares are pre-wired), no request at all.
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path("ready"), "").unwrap();
    let command = probe_script(IMAGE, None);
    assert_eq!(header_line(&command, "WARM_PORT"), "WARM_PORT=''");
    let output = sandbox.run(&command, &[("FAKE_WARM_CODE", "503")]);
    assert!(output.status.success(), "{output:?}");
    assert!(!sandbox.calls().iter().any(|c| c[0] == "curl"));

    // A malformed port is refused before anything runs.
    let sandbox = Sandbox::new();
    let output = sandbox.run(&with_input(&command, "WARM_PORT", "70000"), &[]);
    assert_eq!(
        one_spotpool_line(&output),
        "spotpool: input WARM_PORT is malformed (expected a port number from 1 to 65535)"
    );
    assert!(sandbox.calls().is_empty());
}

#[test]
fn the_user_data_runs_the_warm_responder_before_its_readiness_marker() {
    const USER_DATA: &str = include_str!("../../terraform/modules/spotpool/user-data.sh.tftpl");
    const LAUNCH_TEMPLATE: &str = include_str!("../../terraform/modules/spotpool/ec2-per-user.tf");
    const RESPONDER: &str = include_str!("../../terraform/modules/spotpool/warm-responder.py");
    let position = |needle: &str| {
        USER_DATA
            .find(needle)
            .unwrap_or_else(|| panic!("the user data lacks {needle}"))
    };
    let unit = position(&format!(
        "/etc/systemd/system/{WARM_RESPONDER_UNIT} <<'UNIT'"
    ));
    let enabled = position(&format!("systemctl enable --now {WARM_RESPONDER_UNIT}"));
    let answers = position("warm_url=\"http://127.0.0.1:$CONTAINER_PORT$HEALTH_CHECK_PATH\"");
    let marker = position("touch \"$READY_MARKER\"");
    let pulled = position("docker pull \"$IMAGE\"");
    assert!(pulled < unit && unit < enabled && enabled < answers && answers < marker);
    // The program is the repository's file, embedded by Terraform.
    assert!(USER_DATA.contains("\n${warm_responder}\nSPOTPOOL_WARM_RESPONDER\n"));
    assert!(
        LAUNCH_TEMPLATE.contains("warm_responder    = file(\"${path.module}/warm-responder.py\")")
    );
    assert!(LAUNCH_TEMPLATE.contains("container_port    = var.container_port"));
    assert!(LAUNCH_TEMPLATE.contains("health_check_path = var.health_check_path"));
    assert!(!RESPONDER.lines().any(|l| l == "SPOTPOOL_WARM_RESPONDER"));
    assert!(!RESPONDER.contains("${") && !RESPONDER.contains("%{"));
}

#[test]
fn a_restart_restarts_the_users_container_as_it_was_and_fails_in_one_line_without_one() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&restart_container_script("alice"), &[]);
    assert!(!output.status.success());
    assert_eq!(
        one_spotpool_line(&output),
        "spotpool: there is no container openclaw-alice"
    );
    assert_success(&sandbox.run(&start_container_script(&spec(Some("10.0.1.5"))), &[]));
    let output = sandbox.run(&restart_container_script("alice"), &[]);
    assert_success(&output);
    assert!(stdout(&output).contains("restarted openclaw-alice"));
    let calls = sandbox.calls();
    assert!(
        calls
            .iter()
            .any(|c| c == &["docker", "restart", "--time", "20", "openclaw-alice"]),
        "{calls:?}"
    );
    // No secret is read for a restart: the container keeps its environment.
    let after_start = calls
        .iter()
        .rposition(|c| c[0] == "docker" && c[1] == "run");
    assert!(
        !calls[after_start.unwrap()..].iter().any(|c| c[0] == "aws"),
        "{calls:?}"
    );
    let output = sandbox.run(
        &restart_container_script("alice"),
        &[("FAKE_RESTART_EXIT", "1")],
    );
    assert_eq!(
        one_spotpool_line(&output),
        "spotpool: docker restart of openclaw-alice failed"
    );
    assert_no_secret_leaked(&sandbox, &output);
}
