//! The instance scripts: the shell commands spotpool runs on instances over SSM Run Command.
//! There are three: the readiness probe ([`probe_script`], sent to fresh instances), the start
//! of a user's container ([`start_container_script`], sent to a claimed or move-target instance)
//! and the release of a user's workspace volume ([`stop_workspace_script`], sent before
//! `DetachVolume`), which on a shared instance also wipes what is left of a leaving user
//! ([`wipe_slot_script`]: network, Docker volume, mount point) before another takes the slot. A
//! dedicated instance that was sent a start is terminated, never reused.
//!
//! Shared instances (a tier of several slots): each user's container publishes its port at the
//! slot's host port ([`ContainerSpec::host_port`]), runs on a Docker network of its own
//! (`spotpool-<user>`, a bridge without inter-container traffic), and the start refuses an
//! instance without the rules the user data installs between users' bridges and from them to
//! the host (`check_shared_isolation` in `lib.sh`; tested in network namespaces by
//! `tests/it/isolation.rs`).
//!
//! Pre-wired spares: until a claim, the user data's warm responder ([`WARM_RESPONDER_UNIT`])
//! answers the load balancer's health checks on the container port (200 `warm` on the health
//! path, 503 `starting` with `Retry-After: 5` elsewhere). The probe can check that it answers
//! ([`WarmCheck`]); the start disables and stops it right before `docker run` publishes the
//! port (a missing unit is fine).
//!
//! Workspaces: with [`ContainerSpec::workspace_volume_id`] the container's `/data` is the user's
//! EBS volume, which the daemon has attached as [`WORKSPACE_DEVICE_NAME`]. The start finds its
//! device by volume id (the NVMe serial link under [`WORKSPACE_DEVICE_DIR`]; on Xen instances
//! `/dev/xvdf` or `/dev/sdf` when not an NVMe device), creates an ext4 file system only on a
//! blank device, and mounts it at [`WORKSPACE_ROOT`]`/<user id>` (`nodev,nosuid,noexec,noatime`),
//! bound into the container at `/data`. The stop removes the container and unmounts it (never
//! lazily); only once it succeeded may the daemon detach the volume.
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

/// The systemd unit of the warm responder, which the Terraform user data installs and starts
/// before its readiness marker (`terraform/modules/spotpool/warm-responder.py`): it answers the
/// load balancer's health checks on the container port until the start command disables and
/// stops it, just before the user's container binds that port.
pub const WARM_RESPONDER_UNIT: &str = "spotpool-warm.service";

/// The uid and gid the user container runs as (no account on the host).
pub const CONTAINER_USER: &str = "10001:10001";

/// The device name the daemon attaches a workspace volume with (`AttachVolume`'s `Device`). On
/// Xen instances the volume appears as `/dev/xvdf`; on Nitro it is an NVMe device found by serial.
pub const WORKSPACE_DEVICE_NAME: &str = "/dev/sdf";
/// Users one instance may serve at most: each user's workspace is attached at a device name of
/// its slot's ([`workspace_device_name`]), `/dev/sdf` and `/dev/sdh` to `/dev/sdz`.
pub const MAX_SLOTS: u32 = 20;

/// The device name the workspace of the user on `slot` is attached with: slot 0 (every
/// dedicated instance) [`WORKSPACE_DEVICE_NAME`], then `/dev/sdh`, `/dev/sdi`, ... (`/dev/sdg`
/// is the blank workspace's). None past [`MAX_SLOTS`].
pub fn workspace_device_name(slot: u32) -> Option<String> {
    match slot {
        0 => Some(WORKSPACE_DEVICE_NAME.to_string()),
        1..MAX_SLOTS => Some(format!("/dev/sd{}", char::from(b'h' + (slot - 1) as u8))),
        _ => None,
    }
}

/// The device name of the blank workspace a spare is launched with (RunInstances'
/// `BlockDeviceMappings`); a first claim keeps it as the user's workspace where it is. On Xen
/// instances it appears as `/dev/xvdg`.
pub const BLANK_WORKSPACE_DEVICE_NAME: &str = "/dev/sdg";

/// Where udev links NVMe EBS volumes by serial (`nvme-Amazon_Elastic_Block_Store_vol<hex>`); the
/// start and stop commands pass it as `WORKSPACE_DEVICE_DIR`.
pub const WORKSPACE_DEVICE_DIR: &str = "/dev/disk/by-id";

/// Where the instance mounts workspaces, one directory per user id (root, 0700).
pub const WORKSPACE_ROOT: &str = "/var/lib/spotpool/workspaces";

const LIB: &str = include_str!("../../scripts/instance/lib.sh");
const PROBE: &str = include_str!("../../scripts/instance/probe.sh");
const START_CONTAINER: &str = include_str!("../../scripts/instance/start-container.sh");
const STOP_WORKSPACE: &str = include_str!("../../scripts/instance/stop-workspace.sh");
const RESTART_CONTAINER: &str = include_str!("../../scripts/instance/restart-container.sh");
const OPENCLAW_CONFIG: &str = include_str!("../../scripts/instance/openclaw-config.py");

/// Programs a script holds as a variable: a line `NAME='' # spotpool:inline-program FILE` becomes
/// `NAME=<the file, quoted>`, without its comment lines.
const PROGRAMS: [(&str, &str); 1] = [("openclaw-config.py", OPENCLAW_CONFIG)];
const PROGRAM_MARKER: &str = "# spotpool:inline-program ";

/// The line (suffix) of a script that the library replaces.
const INLINE_MARKER: &str = "# spotpool:inline-lib";

/// Quotes a value for POSIX sh: `'...'`, with embedded single quotes closed and escaped.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Builds one command: shebang, title, the quoted inputs, then `script` with the library inlined
/// and its comment lines emptied ([`without_comments`]).
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
        if let Some((assignment, file)) = line.split_once(PROGRAM_MARKER) {
            out.push_str(&inline_program(assignment, file.trim()));
            out.push('\n');
        } else if line.trim_end().ends_with(INLINE_MARKER) {
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
    without_comments(&out)
}

/// `NAME=''` from a script line and the program `file` as one assignment of the quoted program
/// text, whose comment lines are left out (the programs are Python, with no multi-line strings).
fn inline_program(assignment: &str, file: &str) -> String {
    let (_, text) = PROGRAMS
        .iter()
        .find(|(name, _)| *name == file)
        .unwrap_or_else(|| panic!("no inline program {file}"));
    let name = assignment
        .trim()
        .trim_end_matches("''")
        .trim_end_matches('=');
    let program: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    format!("{name}={}", shell_quote(&program))
}

/// `command` with every line that is only a comment emptied (the newline stays, so the line
/// numbers of error messages still match the script files), except the shebang, the title and
/// `shellcheck` directives. The scripts' comments are most of their text, and SendCommand's parameters are
/// limited in size. A line inside a multi-line quoted string (the secret parser's Python) is
/// never touched: a small lexer follows single and double quotes and unquoted `#` comments.
fn without_comments(command: &str) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let mut quote = Quote::None;
    let mut out = String::with_capacity(command.len());
    for (number, line) in command.lines().enumerate() {
        let trimmed = line.trim_start();
        let comment_only = quote == Quote::None
            && trimmed.starts_with('#')
            && number > 1
            && !trimmed.starts_with("# shellcheck");
        if !comment_only {
            out.push_str(line);
        }
        out.push('\n');
        if comment_only {
            continue;
        }
        // The quoting state at the end of the line; an unquoted `#` at the start of a word
        // begins a comment, which ends the line.
        let mut previous = ' ';
        let mut escaped = false;
        for c in line.chars() {
            match quote {
                Quote::Single if c == '\'' => quote = Quote::None,
                Quote::Single => {}
                Quote::Double if escaped => escaped = false,
                Quote::Double if c == '\\' => escaped = true,
                Quote::Double if c == '"' => quote = Quote::None,
                Quote::Double => {}
                Quote::None if escaped => escaped = false,
                Quote::None if c == '\\' => escaped = true,
                Quote::None if c == '\'' => quote = Quote::Single,
                Quote::None if c == '"' => quote = Quote::Double,
                Quote::None if c == '#' && (previous.is_whitespace() || previous == ';') => break,
                Quote::None => {}
            }
            previous = c;
        }
    }
    out
}

/// What the readiness probe checks of the warm responder: the container's port and the target
/// groups' health check path (the same as the users' groups').
#[derive(Debug, Clone, Copy)]
pub struct WarmCheck<'a> {
    pub port: u16,
    pub health_path: &'a str,
}

/// The readiness probe: Docker answers, the user data finished (readiness marker), the image is
/// present, the metadata block is in place and no user container ever ran here; with `warm`,
/// also that something (the user data's warm responder, [`WARM_RESPONDER_UNIT`]) answers 200 on
/// `http://127.0.0.1:<port><health path>`, so the spare passes the load balancer's health
/// check in its own target group before it is claimed.
pub fn probe_script(image: &str, warm: Option<WarmCheck<'_>>) -> String {
    render(
        "readiness probe",
        "probe.sh",
        PROBE,
        &[
            ("IMAGE", image.to_string()),
            (
                "WARM_PORT",
                warm.map(|w| w.port.to_string()).unwrap_or_default(),
            ),
            (
                "WARM_HEALTH_PATH",
                warm.map(|w| w.health_path.to_string()).unwrap_or_default(),
            ),
        ],
    )
}

/// What the start-container command needs to know.
#[derive(Debug, Clone)]
pub struct ContainerSpec<'a> {
    pub user_id: &'a str,
    pub secret_arn: &'a str,
    pub image: &'a str,
    pub port: u16,
    /// The instance's port for it: `port` on a dedicated instance, `port` plus the user's slot
    /// on a shared one.
    pub host_port: u16,
    /// A shared instance: the container gets a Docker network of its own, and the start checks
    /// the isolation rules between users first.
    pub shared: bool,
    /// The device name the workspace was attached with ([`workspace_device_name`]).
    pub workspace_device: &'a str,
    /// The instance's private address; the port is published only there. `None` makes the
    /// instance ask its metadata service (IMDSv2) for it; never `0.0.0.0`.
    pub host_ip: Option<&'a str>,
    /// The container's health path (the target group checks the same one).
    pub health_path: &'a str,
    /// The HTTP codes that pass it, in the target group's matcher syntax (`200`, `200-299`).
    pub health_codes: &'a str,
    /// How long to wait for the container's health endpoint.
    pub health_timeout_seconds: u32,
    /// Memory limit in MiB; swap is the same, so the container gets none.
    pub memory_mb: u32,
    /// CPU limit in CPUs (Docker's `--cpus`), sent rounded to thousandths (millicores).
    pub cpus: f64,
    /// Most processes and threads in the container.
    pub pids_limit: u32,
    /// The user's EBS workspace volume (`vol-...`), attached to the instance as
    /// [`WORKSPACE_DEVICE_NAME`] before the start is sent; mounted at the container's `/data`.
    /// `None`: `/data` is a Docker volume on the instance's root disk, lost with the instance.
    pub workspace_volume_id: Option<&'a str>,
    /// The container's arguments after the image (words of plain characters).
    pub args: &'a [String],
    /// Fixed, not secret, environment of the container (`NAME`, value of plain characters).
    pub env: &'a [(String, String)],
    /// A path the start waits for (200) once the health path answers, e.g. `/readyz`.
    pub ready_path: Option<&'a str>,
    /// Names the user's secret must carry; the start refuses a secret without one.
    pub required_secrets: &'a [String],
    /// The OpenClaw gateway's configuration to merge into the user's before the start.
    pub gateway: Option<GatewaySettings<'a>>,
}

/// What spotpool writes into an OpenClaw gateway's configuration (`$OPENCLAW_STATE_DIR/
/// openclaw.json` on the user's `/data`) before each start, merged with the user's own settings
/// by `scripts/instance/openclaw-config.py`: `gateway.mode` `local` when unset, the user's
/// `origin` added to `gateway.controlUi.allowedOrigins`, `gateway.controlUi.basePath` set to the
/// path the load balancer routes (`/<route>`), and `gateway.auth.token` removed, because a
/// configured token beats `OPENCLAW_GATEWAY_TOKEN` and the user's secret is the one that counts.
#[derive(Debug, Clone, Copy)]
pub struct GatewaySettings<'a> {
    /// The browser origin of the user's url, e.g. `https://agents.example.com`.
    pub origin: &'a str,
    /// The path prefix the load balancer routes to the user, e.g. `/r-abc123`.
    pub base_path: &'a str,
    /// The state directory inside the container, under `/data`.
    pub state_dir: &'a str,
}

/// `cpus` as Docker's `--cpus` text, rounded to millicores: 1.0 -> "1.000". A value that is not
/// a positive number becomes "0.000", which the script refuses with a clear message.
fn cpus_text(cpus: f64) -> String {
    let milli = (cpus * 1000.0).round().clamp(0.0, 999_999.0) as u32;
    format!("{}.{:03}", milli / 1000, milli % 1000)
}

/// Starts (or replaces) the user's container and waits until it is healthy. The secret is read
/// on the instance by ARN into a root-only env file that is removed once the container started.
/// With a workspace volume it is mounted first (created on a blank volume only); it stays mounted
/// when the start fails later, so [`stop_workspace_script`] must run before a detach either way.
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
            ("HOST_PORT", spec.host_port.to_string()),
            ("SHARED", if spec.shared { "1" } else { "" }.to_string()),
            ("HOST_IP", spec.host_ip.unwrap_or("").to_string()),
            ("HEALTH_PATH", spec.health_path.to_string()),
            ("HEALTH_CODES", spec.health_codes.to_string()),
            ("HEALTH_TIMEOUT", spec.health_timeout_seconds.to_string()),
            ("MEMORY_MB", spec.memory_mb.to_string()),
            ("CPUS", cpus_text(spec.cpus)),
            ("PIDS_LIMIT", spec.pids_limit.to_string()),
            (
                "WORKSPACE_VOLUME_ID",
                spec.workspace_volume_id.unwrap_or("").to_string(),
            ),
            ("WORKSPACE_DEVICE", device_letters(spec.workspace_device)),
            ("WORKSPACE_DEVICE_DIR", WORKSPACE_DEVICE_DIR.to_string()),
            ("CONTAINER_ARGS", spec.args.join(" ")),
            (
                "CONTAINER_ENV",
                spec.env
                    .iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            ("READY_PATH", spec.ready_path.unwrap_or("").to_string()),
            ("REQUIRED_SECRETS", spec.required_secrets.join(" ")),
            (
                "GATEWAY_ORIGIN",
                spec.gateway.map(|g| g.origin).unwrap_or("").to_string(),
            ),
            (
                "GATEWAY_BASE_PATH",
                spec.gateway.map(|g| g.base_path).unwrap_or("").to_string(),
            ),
            (
                "GATEWAY_STATE_DIR",
                spec.gateway.map(|g| g.state_dir).unwrap_or("").to_string(),
            ),
        ],
    )
}

/// Stops and removes the user's container (20 s grace), syncs and unmounts the user's workspace
/// `volume_id`, attached as `device`. Succeeds when nothing on the instance mounts the volume any
/// more (also when there was no container, no mount or no device); fails with one `spotpool:`
/// line when the mount stays busy, and then the volume must not be detached.
pub fn stop_workspace_script(user_id: &str, volume_id: &str, device: &str) -> String {
    render(
        "stop the user's container and unmount the workspace",
        "stop-workspace.sh",
        STOP_WORKSPACE,
        &[
            ("USER_ID", user_id.to_string()),
            ("WORKSPACE_VOLUME_ID", volume_id.to_string()),
            ("WORKSPACE_DEVICE", device_letters(device)),
            ("WORKSPACE_DEVICE_DIR", WORKSPACE_DEVICE_DIR.to_string()),
            ("WIPE", String::new()),
        ],
    )
}

/// What [`stop_workspace_script`] does, then the rest of the user on a shared instance whose
/// slot someone else will take: its Docker network, its Docker volume, its mount point and any
/// env file. `volume_id` is None for a user without a workspace.
pub fn wipe_slot_script(user_id: &str, volume_id: Option<&str>, device: &str) -> String {
    render(
        "wipe the user's slot",
        "stop-workspace.sh",
        STOP_WORKSPACE,
        &[
            ("USER_ID", user_id.to_string()),
            ("WORKSPACE_VOLUME_ID", volume_id.unwrap_or("").to_string()),
            ("WORKSPACE_DEVICE", device_letters(device)),
            ("WORKSPACE_DEVICE_DIR", WORKSPACE_DEVICE_DIR.to_string()),
            ("WIPE", "1".into()),
        ],
    )
}

/// Restarts the user's container as it was created (`docker restart`, 20 s grace; the health
/// watch's first answer to a container failing its health checks). Fails with one `spotpool:`
/// line when there is no such container or the restart fails.
pub fn restart_container_script(user_id: &str) -> String {
    render(
        "restart the user's container",
        "restart-container.sh",
        RESTART_CONTAINER,
        &[("USER_ID", user_id.to_string())],
    )
}

/// `sdh` of `/dev/sdh`: the scripts take the name without its directory.
fn device_letters(device: &str) -> String {
    device.trim_start_matches("/dev/").to_string()
}

#[cfg(test)]
mod tests;
