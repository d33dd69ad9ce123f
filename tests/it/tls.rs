//! The API over HTTPS: the real binary with `SPOTPOOL_TLS_CERT`/`SPOTPOOL_TLS_KEY`, the `spotpool`
//! CLI as its client (`SPOTPOOL_CA_CERT` for a private CA), plain HTTP refused, a renewed
//! certificate taken on SIGHUP, and a pair that does not load refused at start-up and on reload.
//! The certificates come from `openssl`, made fresh in the test's folder.

use crate::daemon::{ADMIN_TOKEN, Daemon, daemon_env};
use crate::support::infra::Infra;
use crate::support::moto::Moto;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

/// Runs `openssl` with `args` in `dir`; panics with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (the tests need it on PATH)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA (`<name>-ca.pem`) and a server certificate for 127.0.0.1 that it signed
/// (`<name>.pem`, `<name>.key`), in `dir`.
fn make_pki(dir: &Path, name: &str) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let (ca, ca_key) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
    args.extend(ec);
    args.extend([
        "-subj",
        "/CN=spotpool test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    openssl(dir, &args);
    let (key, csr, cert) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let mut args = vec!["req", "-nodes", "-subj", "/CN=spotpool"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr]);
    openssl(dir, &args);
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
}

/// `spotpool status` against `url`, trusting `ca` when given; (exit code, stdout, stderr).
fn status(url: &str, ca: Option<&Path>) -> (i32, String, String) {
    let mut command = Command::new(crate::daemon::binary());
    command
        .arg("status")
        .env_clear()
        .env("SPOTPOOL_URL", url)
        .env("SPOTPOOL_ADMIN_TOKEN", ADMIN_TOKEN);
    if let Some(ca) = ca {
        command.env("SPOTPOOL_CA_CERT", ca);
    }
    let output = command.output().expect("running the spotpool CLI");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn tls_env(base: &[(String, String)], cert: &Path, key: &Path) -> Vec<(String, String)> {
    let mut env = base.to_vec();
    env.push(("SPOTPOOL_TLS_CERT".into(), cert.display().to_string()));
    env.push(("SPOTPOOL_TLS_KEY".into(), key.display().to_string()));
    env
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "spotpool-tls-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn the_api_serves_https_only_and_takes_a_renewed_certificate_on_sighup() {
    let moto = Moto::start().await;
    let infra = Infra::create(&moto.sdk_config().await).await;
    let pki = scratch();
    make_pki(&pki, "first");
    make_pki(&pki, "second");
    // The daemon reads its pair from fixed paths; a renewal replaces the files.
    let (cert, key) = (pki.join("live.pem"), pki.join("live.key"));
    std::fs::copy(pki.join("first.pem"), &cert).unwrap();
    std::fs::copy(pki.join("first.key"), &key).unwrap();
    let daemon = Daemon::start(&tls_env(&daemon_env(&moto, &infra), &cert, &key)).await;
    assert!(daemon.base.starts_with("https://"), "{}", daemon.base);
    let first_ca = pki.join("first-ca.pem");
    let second_ca = pki.join("second-ca.pem");

    // The CLI over HTTPS, trusting the private CA: the status answers.
    let (code, stdout, stderr) = status(&daemon.base, Some(&first_ca));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("default"),
        "the status names the tier: {stdout}"
    );
    // Without the CA the certificate is not trusted, and the CLI says so.
    let (code, _, stderr) = status(&daemon.base, None);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot reach the daemon"), "{stderr}");
    // Plain HTTP on the TLS port gets no answer from the API.
    let plain = daemon.base.replacen("https://", "http://", 1);
    let answer = daemon.client.get(format!("{plain}/readyz")).send().await;
    assert!(
        answer.is_err(),
        "plain HTTP must not be served: {:?}",
        answer.map(|r| r.status())
    );

    // A renewal: new files, then SIGHUP. The new chain is served, the old CA no longer matches.
    std::fs::copy(pki.join("second.pem"), &cert).unwrap();
    std::fs::copy(pki.join("second.key"), &key).unwrap();
    let hangup = || {
        let sent = Command::new("kill")
            .args(["-HUP", &daemon.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    hangup();
    let renewed = daemon
        .wait_for(DEADLINE, || async {
            status(&daemon.base, Some(&second_ca)).0 == 0
        })
        .await;
    assert!(
        renewed,
        "the renewed certificate is served; log:\n{}",
        daemon.log()
    );
    assert_eq!(status(&daemon.base, Some(&first_ca)).0, 2);
    assert!(daemon.log().contains("TLS certificate reloaded"));

    // A broken renewal (a key of another certificate) is refused; the served pair stays.
    std::fs::copy(pki.join("first.key"), &key).unwrap();
    hangup();
    let refused = daemon
        .wait_for(DEADLINE, || async {
            daemon.log().contains("TLS certificate not reloaded")
        })
        .await;
    assert!(refused, "log:\n{}", daemon.log());
    assert_eq!(status(&daemon.base, Some(&second_ca)).0, 0);
    let _ = std::fs::remove_dir_all(&pki);
}

#[tokio::test]
async fn a_certificate_and_key_that_do_not_match_stop_the_start_with_the_reason() {
    let pki = scratch();
    make_pki(&pki, "one");
    make_pki(&pki, "two");
    let mut env = crate::daemon::test_settings();
    for (key, value) in [
        ("LAUNCH_TEMPLATE_ID", "lt-0123456789abcdef0"),
        ("SUBNET_IDS", "subnet-0123456789abcdef0"),
        ("VPC_ID", "vpc-0123456789abcdef0"),
        (
            "ALB_LISTENER_ARN",
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/a/1/2",
        ),
        ("CONTAINER_IMAGE", "ghcr.io/openclaw/openclaw:latest"),
        ("AWS_REGION", "eu-west-1"),
        ("SPOTPOOL_LISTEN", "127.0.0.1:0"),
        ("SPOTPOOL_DATABASE_URL", "sqlite::memory:"),
    ] {
        env.push((key.into(), value.into()));
    }
    let env = tls_env(&env, &pki.join("one.pem"), &pki.join("two.key"));
    let output = Command::new(crate::daemon::binary())
        .arg("serve")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("running the binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("SPOTPOOL_TLS_CERT=") && stderr.contains("SPOTPOOL_TLS_KEY="),
        "the error names both settings: {stderr}"
    );
    let key_text = std::fs::read_to_string(pki.join("two.key")).unwrap();
    let key_body = key_text.lines().nth(1).unwrap();
    assert!(!stderr.contains(key_body), "no key material in the error");
    let _ = std::fs::remove_dir_all(&pki);
}

#[test]
fn serve_help_lists_the_tls_settings_and_the_cli_its_ca() {
    let help = |args: &[&str]| {
        let output = Command::new(crate::daemon::binary())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let serve = help(&["serve", "--help"]);
    for setting in ["SPOTPOOL_TLS_CERT", "SPOTPOOL_TLS_KEY"] {
        assert!(
            serve.contains(setting),
            "serve --help lacks {setting}:\n{serve}"
        );
    }
    let status = help(&["status", "--help"]);
    assert!(status.contains("SPOTPOOL_CA_CERT"), "{status}");
}
