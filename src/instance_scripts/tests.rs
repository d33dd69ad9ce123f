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

fn spec(host_ip: Option<&'static str>) -> ContainerSpec<'static> {
    ContainerSpec {
        user_id: "alice",
        secret_arn: ARN,
        image: IMAGE,
        port: 8080,
        host_ip,
        health_path: "/healthz",
        health_timeout_seconds: 60,
        memory_mb: 1536,
        cpus: 1.0,
        pids_limit: 512,
    }
}

fn all_commands() -> Vec<(&'static str, String)> {
    vec![
        ("probe", probe_script(IMAGE)),
        ("start", start_container_script(&spec(Some("10.0.1.5")))),
        ("start without HOST_IP", start_container_script(&spec(None))),
    ]
}

const SCRIPT_FILES: [(&str, &str); 3] = [
    ("lib.sh", LIB),
    ("probe.sh", PROBE),
    ("start-container.sh", START_CONTAINER),
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
        "--network bridge",
        "--publish \"$HOST_IP:$PORT:$PORT\"",
        "--log-opt max-size=10m",
        "--log-opt max-file=3",
        "--label \"spotpool.user=$USER_ID\"",
        "--mount \"type=volume,source=$VOLUME,target=/data,volume-nocopy\"",
        "--env-file \"$ENV_FILE\"",
        "--pull never",
        "NAME=\"openclaw-$USER_ID\"",
        "curl --fail --silent --show-error --globoff --max-time 2",
        "did not become healthy on $HEALTH_PATH within ${HEALTH_TIMEOUT}s",
    ] {
        assert!(command.contains(flag), "missing {flag}");
    }
    let (uid, gid) = CONTAINER_USER.split_once(':').unwrap();
    assert!(command.contains(&format!("CONTAINER_UID={uid}\nCONTAINER_GID={gid}\n")));
    // Without a known address the instance asks IMDSv2, with a token; never 0.0.0.0.
    let command = start_container_script(&spec(None));
    assert_eq!(header_line(&command, "HOST_IP"), "HOST_IP=''");
    assert!(command.contains("X-aws-ec2-metadata-token-ttl-seconds"));
    assert!(command.contains("[[ $HOST_IP != 0.0.0.0 ]]"));
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
    let probe = probe_script(IMAGE);
    assert_eq!(header_line(&probe, "IMAGE"), format!("IMAGE='{IMAGE}'"));
    assert!(probe.contains(&format!("SPOTPOOL_READY_MARKER:-{READY_MARKER}}}")));
    assert!(probe.contains("METADATA_ADDRESS=169.254.169.254\n"));
    assert!(probe.contains(r#"iptables -w 5 -C DOCKER-USER -d "$METADATA_ADDRESS/32" -j DROP"#));
    assert!(probe.contains(&format!("iptables -C DOCKER-USER {METADATA_BLOCK_RULE}")));
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
        probe_script(&hostile),
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

/// A temporary directory with fake `docker`, `aws`, `curl`, `iptables` and `chown` on PATH
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
image) exit "${FAKE_IMAGE_EXIT:-0}" ;;
container | stop) [[ -e $state/containers/$last ]] ;;
inspect) echo "${FAKE_STATUS:-running}" ;;
rm) rm -f "$state/containers/$last" ;;
ps) ls "$state/containers" ;;
volume)
    case $2 in
    create) touch "$state/volumes/$last"; mkdir -p "$FAKE_DIR/mnt/$last"; echo "$last" ;;
    inspect)
        [[ -e $state/volumes/$last ]] || exit 1
        if [[ $3 == --format ]]; then echo "$FAKE_DIR/mnt/$last"; fi ;;
    ls) ls "$state/volumes" ;;
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
*/latest/api/token) echo imds-token-abc ;;
*/latest/meta-data/local-ipv4) cat >"$FAKE_DIR/imds-headers"; echo "${FAKE_IMDS_IP:-10.9.8.7}" ;;
*) exit "${FAKE_HEALTH_EXIT:-0}" ;;
esac
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
            ("iptables", r#"exit "${FAKE_IPTABLES_EXIT:-0}""#),
            ("chown", r#"exit "${FAKE_CHOWN_EXIT:-0}""#),
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
    for (flag, value) in [
        ("--name", "openclaw-alice"),
        ("--label", "spotpool.user=alice"),
        ("--pull", "never"),
        ("--restart", "unless-stopped"),
        ("--user", CONTAINER_USER),
        ("--tmpfs", "/tmp:rw,noexec,nosuid,nodev,size=256m"),
        (
            "--mount",
            "type=volume,source=spotpool-alice,target=/data,volume-nocopy",
        ),
        ("--env", "HOME=/data"),
        ("--cap-drop", "ALL"),
        ("--security-opt", "no-new-privileges"),
        ("--memory", "1536m"),
        ("--memory-swap", "1536m"),
        ("--cpus", "1.000"),
        ("--pids-limit", "512"),
        ("--network", "bridge"),
        ("--publish", "10.0.1.5:8080:8080"),
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
        .position(|l| l.starts_with("chown "))
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
    let output = sandbox.run(&probe_script(IMAGE), &[]);
    assert_eq!(
        one_spotpool_line(&output),
        format!(
            "spotpool: user data has not finished (no readiness marker {})",
            sandbox.path("ready").display()
        )
    );
    std::fs::write(sandbox.path("ready"), "").unwrap();
    let output = sandbox.run(&probe_script(IMAGE), &[]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output).trim_end().lines().last(), Some("ready"));
    assert!(output.stderr.is_empty());

    let output = sandbox.run(&probe_script(IMAGE), &[("FAKE_IMAGE_EXIT", "1")]);
    assert_eq!(
        one_spotpool_line(&output),
        format!("spotpool: image {IMAGE} is not present")
    );
    let output = sandbox.run(&probe_script(IMAGE), &[("FAKE_IPTABLES_EXIT", "1")]);
    assert!(one_spotpool_line(&output).contains("DOCKER-USER"));

    std::fs::write(sandbox.path("state/containers/openclaw-bob"), "").unwrap();
    let output = sandbox.run(&probe_script(IMAGE), &[]);
    assert_eq!(
        one_spotpool_line(&output),
        "spotpool: a user container exists on this instance; it is not fresh"
    );
}
