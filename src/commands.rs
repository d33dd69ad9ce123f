//! The shell scripts spotpool runs on instances over SSM Run Command.
//!
//! Owns: the text of every command. Must not: put a secret value in a script. The container's
//! secrets are fetched on the instance, by ARN, with the instance role; the command text only
//! names the ARN. Every interpolated value is single-quoted with [`shell_quote`].

/// Where the instance's user data writes its readiness marker.
pub const READY_MARKER: &str = "/var/lib/spotpool/ready";

/// Quotes a value for POSIX sh: `'...'`, with embedded single quotes closed and escaped.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The readiness probe: Docker answers, the image is present and the user data finished.
pub fn probe_script(image: &str) -> String {
    format!(
        "#!/bin/bash
# spotpool readiness probe
set -euo pipefail
IMAGE={image}
docker info >/dev/null
docker image inspect \"$IMAGE\" >/dev/null
test -f {marker}
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
set -euo pipefail
USER_ID={user}
SECRET_ARN={secret}
REGION={region}
IMAGE={image}
PORT={port}
HOST_IP={host_ip}
NAME="openclaw-$USER_ID"
install -d -m 700 /run/spotpool
ENV_FILE="/run/spotpool/$NAME.env"
trap 'rm -f "$ENV_FILE"' EXIT
umask 077
aws secretsmanager get-secret-value --region "$REGION" --secret-id "$SECRET_ARN" \
  --query SecretString --output text \
  | python3 -c 'import json,sys
for k, v in json.load(sys.stdin).items():
    print(f"{{k}}={{v}}")' > "$ENV_FILE"
docker rm -f "$NAME" >/dev/null 2>&1 || true
docker run -d --name "$NAME" --restart unless-stopped \
  --env-file "$ENV_FILE" \
  --read-only --tmpfs /tmp \
  --cap-drop ALL --security-opt no-new-privileges \
  --pids-limit 512 \
  -v "spotpool-$USER_ID:/data" \
  -p "$HOST_IP:$PORT:$PORT" \
  "$IMAGE"
rm -f "$ENV_FILE"
for _ in $(seq 1 {health_timeout}); do
  if curl -fsS -o /dev/null "http://$HOST_IP:$PORT/"; then echo started; exit 0; fi
  sleep 1
done
echo "container $NAME did not become healthy within {health_timeout}s" >&2
docker logs --tail 50 "$NAME" >&2 || true
exit 1
"#,
        user = shell_quote(spec.user_id),
        secret = shell_quote(spec.secret_arn),
        region = shell_quote(region),
        image = shell_quote(spec.image),
        port = spec.port,
        host_ip = shell_quote(spec.host_ip.unwrap_or("0.0.0.0")),
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
    }
}
