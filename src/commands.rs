//! The shell scripts spotpool runs on instances over SSM Run Command.
//!
//! Owns: the text of every command. Must not: put a secret value in a script. The container's
//! secrets are fetched on the instance, by ARN, with the instance role; the command text only
//! names the ARN. Every interpolated value is single-quoted with [`shell_quote`].
//!
//! Output discipline: spotpool reads a failed command's standard error into the user's `error`
//! (and so the API, the journal and the log). Every script therefore sends all command output to
//! standard output and writes only its own one-line `spotpool:` messages to standard error, so
//! no tool (docker, the AWS CLI, the container's logs) can echo a secret into it.

/// Where the instance's user data writes its readiness marker.
pub const READY_MARKER: &str = "/var/lib/spotpool/ready";

/// The prologue every script starts with: strict mode, all output to stdout, and `fail` plus an
/// ERR trap that write one line to the original stderr.
const PROLOGUE: &str = r#"set -euo pipefail
exec 3>&2 2>&1
fail() { echo "spotpool: $*" >&3; exit 1; }
trap 'echo "spotpool: line $LINENO: command failed (exit $?)" >&3' ERR
"#;

/// Quotes a value for POSIX sh: `'...'`, with embedded single quotes closed and escaped.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The readiness probe: Docker answers, the image is present and the user data finished.
pub fn probe_script(image: &str) -> String {
    format!(
        "#!/bin/bash
# spotpool readiness probe
{PROLOGUE}IMAGE={image}
docker info >/dev/null || fail \"docker is not running\"
docker image inspect \"$IMAGE\" >/dev/null || fail \"image $IMAGE is not present\"
test -f {marker} || fail \"user data has not finished (no readiness marker)\"
echo ready
",
        image = shell_quote(image),
        marker = shell_quote(READY_MARKER),
    )
}

/// What the start-container command needs to know.
#[derive(Debug, Clone)]
pub struct ContainerSpec<'a> {
    pub user_id: &'a str,
    pub secret_arn: &'a str,
    pub image: &'a str,
    pub port: u16,
    /// The instance's private address; the port is published only there.
    pub host_ip: Option<&'a str>,
    /// The container's health path (the target group checks the same one).
    pub health_path: &'a str,
    /// How long to wait for the container's health endpoint.
    pub health_timeout_seconds: u32,
}

/// Starts (or restarts) the user's container. The secret is read on the instance by ARN into a
/// root-only env file that is removed once the container has started.
pub fn start_container_script(spec: &ContainerSpec<'_>) -> String {
    // The secret's region is part of its ARN: arn:aws:secretsmanager:<region>:<account>:secret:<name>.
    let region = spec.secret_arn.split(':').nth(3).unwrap_or("us-east-1");
    format!(
        r#"#!/bin/bash
# spotpool: start the user's container
{prologue}USER_ID={user}
SECRET_ARN={secret}
REGION={region}
IMAGE={image}
PORT={port}
HOST_IP={host_ip}
HEALTH_PATH={health_path}
NAME="openclaw-$USER_ID"
install -d -m 700 /run/spotpool
ENV_FILE="/run/spotpool/$NAME.env"
trap 'rm -f "$ENV_FILE"' EXIT
umask 077
aws secretsmanager get-secret-value --region "$REGION" --secret-id "$SECRET_ARN" \
  --query SecretString --output text \
  | python3 -c 'import json,sys
for k, v in json.load(sys.stdin).items():
    print(f"{{k}}={{v}}")' > "$ENV_FILE" || fail "could not read the user's secret $SECRET_ARN"
docker rm -f "$NAME" >/dev/null 2>&1 || true
docker run -d --name "$NAME" --restart unless-stopped \
  --env-file "$ENV_FILE" \
  --read-only --tmpfs /tmp \
  --cap-drop ALL --security-opt no-new-privileges \
  --pids-limit 512 \
  -v "spotpool-$USER_ID:/data" \
  -p "$HOST_IP:$PORT:$PORT" \
  "$IMAGE" || fail "docker run of $IMAGE failed"
rm -f "$ENV_FILE"
for _ in $(seq 1 {health_timeout}); do
  if curl -fsS --max-time 2 -o /dev/null "http://$HOST_IP:$PORT$HEALTH_PATH"; then echo started; exit 0; fi
  sleep 1
done
fail "container $NAME did not become healthy on $HEALTH_PATH within {health_timeout}s"
"#,
        prologue = PROLOGUE,
        user = shell_quote(spec.user_id),
        secret = shell_quote(spec.secret_arn),
        region = shell_quote(region),
        image = shell_quote(spec.image),
        port = spec.port,
        host_ip = shell_quote(spec.host_ip.unwrap_or("0.0.0.0")),
        health_path = shell_quote(spec.health_path),
        health_timeout = spec.health_timeout_seconds,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_start_script_names_the_secret_by_arn_and_hardens_the_container() {
        let script = start_container_script(&ContainerSpec {
            user_id: "alice",
            secret_arn: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:openclaw/alice-AbCdEf",
            image: "ghcr.io/openclaw/openclaw:latest",
            port: 8080,
            host_ip: Some("10.0.1.5"),
            health_path: "/healthz",
            health_timeout_seconds: 60,
        });
        assert!(script.contains("SECRET_ARN='arn:aws:secretsmanager:eu-west-1:123456789012:secret:openclaw/alice-AbCdEf'"));
        assert!(script.contains("REGION='eu-west-1'"));
        for flag in [
            "--read-only",
            "--cap-drop ALL",
            "no-new-privileges",
            "--pids-limit",
            "-p \"$HOST_IP:$PORT:$PORT\"",
        ] {
            assert!(script.contains(flag), "missing {flag}");
        }
        assert!(script.contains("HOST_IP='10.0.1.5'"));
        assert!(script.contains("HEALTH_PATH='/healthz'"));
        // Nothing but the script's own messages reaches stderr: no container logs.
        assert!(!script.contains("docker logs"));
        assert!(script.contains("exec 3>&2 2>&1"));
    }

    #[test]
    fn scripts_are_valid_bash() {
        let start = start_container_script(&ContainerSpec {
            user_id: "alice",
            secret_arn: "arn:aws:secretsmanager:us-east-1:1:secret:openclaw/alice",
            image: "img:1",
            port: 8080,
            host_ip: None,
            health_path: "/",
            health_timeout_seconds: 30,
        });
        for script in [start, probe_script("img:1")] {
            let output = std::process::Command::new("bash")
                .args(["-n", "-c", &script])
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}
