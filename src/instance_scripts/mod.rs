//! The instance scripts: the shell commands spotpool runs on instances over SSM Run Command.
//! There are two: the readiness probe ([`probe_script`], sent to fresh instances) and the start
//! of a user's container ([`start_container_script`], sent to a claimed or move-target instance).
//! Nothing stops or wipes a container: an instance that was sent a start is terminated.
//!
//! Owns: turning the scripts in `scripts/instance/` into command text. Must not: put a secret
//! value in a command. The container's secrets are fetched on the instance, by ARN, with the
//! instance role; the command text only names the ARN.
//!
//! Each command is `#!/bin/bash`, a header of single-quoted variable assignments (the script's
//! inputs, every value quoted with [`shell_quote`]), then the script file with its
//! `# spotpool:inline-lib` line replaced by `scripts/instance/lib.sh`. The scripts validate every
//! input again before use, so a malformed value fails with a clear message instead of doing
//! something else.
//!
//! Output discipline: spotpool reads a failed command's standard error into the user's `error`
//! (and so the API, the journal and the log). Every script therefore sends all command output to
//! standard output and writes only its own one-line `spotpool:` messages to standard error, so
//! no tool (docker, the AWS CLI, the container's logs) can echo a secret into it.

/// Where the instance's user data writes its readiness marker (its very last step). The probe
/// checks it; the Terraform user data must write exactly this path.
pub const READY_MARKER: &str = "/var/lib/spotpool/ready";

/// The DOCKER-USER rule the user data installs so containers cannot reach the instance metadata
/// service; the probe and the start command check it with `iptables -C DOCKER-USER <rule>`.
pub const METADATA_BLOCK_RULE: &str = "-d 169.254.169.254/32 -j DROP";

/// The uid and gid the user container runs as (no account on the host).
pub const CONTAINER_USER: &str = "10001:10001";

const LIB: &str = include_str!("../../scripts/instance/lib.sh");
const PROBE: &str = include_str!("../../scripts/instance/probe.sh");
const START_CONTAINER: &str = include_str!("../../scripts/instance/start-container.sh");

/// The line (suffix) of a script that the library replaces.
const INLINE_MARKER: &str = "# spotpool:inline-lib";

/// Quotes a value for POSIX sh: `'...'`, with embedded single quotes closed and escaped.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Builds one command: shebang, title, the quoted inputs, then `script` with the library inlined.
fn render(title: &str, file: &str, script: &str, inputs: &[(&str, String)]) -> String {
    let mut out =
        format!("#!/bin/bash\n# spotpool: {title} (generated from scripts/instance/{file})\n");
    for (name, value) in inputs {
        out.push_str(name);
        out.push('=');
        out.push_str(&shell_quote(value));
        out.push('\n');
    }
    for line in script.lines() {
        if line.starts_with("#!") || line.starts_with("# shellcheck source") {
            continue;
        }
        if line.trim_end().ends_with(INLINE_MARKER) {
            for lib_line in LIB
                .lines()
                .filter(|l| !l.starts_with("# shellcheck shell="))
            {
                out.push_str(lib_line);
                out.push('\n');
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The readiness probe: Docker answers, the user data finished (readiness marker), the image is
/// present, the metadata block is in place and no user container ever ran here.
pub fn probe_script(image: &str) -> String {
    render(
        "readiness probe",
        "probe.sh",
        PROBE,
        &[("IMAGE", image.to_string())],
    )
}

/// What the start-container command needs to know.
#[derive(Debug, Clone)]
pub struct ContainerSpec<'a> {
    pub user_id: &'a str,
    pub secret_arn: &'a str,
    pub image: &'a str,
    pub port: u16,
    /// The instance's private address; the port is published only there. `None` makes the
    /// instance ask its metadata service (IMDSv2) for it; never `0.0.0.0`.
    pub host_ip: Option<&'a str>,
    /// The container's health path (the target group checks the same one).
    pub health_path: &'a str,
    /// How long to wait for the container's health endpoint.
    pub health_timeout_seconds: u32,
    /// Memory limit in MiB; swap is the same, so the container gets none.
    pub memory_mb: u32,
    /// CPU limit in CPUs (Docker's `--cpus`), sent rounded to thousandths (millicores).
    pub cpus: f64,
    /// Most processes and threads in the container.
    pub pids_limit: u32,
}

/// `cpus` as Docker's `--cpus` text, rounded to millicores: 1.0 -> "1.000". A value that is not
/// a positive number becomes "0.000", which the script refuses with a clear message.
fn cpus_text(cpus: f64) -> String {
    let milli = (cpus * 1000.0).round().clamp(0.0, 999_999.0) as u32;
    format!("{}.{:03}", milli / 1000, milli % 1000)
}

/// Starts (or replaces) the user's container and waits until it is healthy. The secret is read
/// on the instance by ARN into a root-only env file that is removed once the container started.
pub fn start_container_script(spec: &ContainerSpec<'_>) -> String {
    render(
        "start the user's container",
        "start-container.sh",
        START_CONTAINER,
        &[
            ("USER_ID", spec.user_id.to_string()),
            ("SECRET_ARN", spec.secret_arn.to_string()),
            ("IMAGE", spec.image.to_string()),
            ("PORT", spec.port.to_string()),
            ("HOST_IP", spec.host_ip.unwrap_or("").to_string()),
            ("HEALTH_PATH", spec.health_path.to_string()),
            ("HEALTH_TIMEOUT", spec.health_timeout_seconds.to_string()),
            ("MEMORY_MB", spec.memory_mb.to_string()),
            ("CPUS", cpus_text(spec.cpus)),
            ("PIDS_LIMIT", spec.pids_limit.to_string()),
        ],
    )
}

#[cfg(test)]
mod tests;
