//! The network rules of a shared instance, tested in network namespaces (no Docker here): a
//! "host" namespace with two users' bridges (`br-…`, as Docker names a user-defined network's),
//! a container namespace on each, the load balancer and the metadata service behind the host's
//! private address, and Docker's port publishing as the DNAT rules it installs. With the rules
//! the user data installs (read from `scripts/instance/lib.sh` and the instance scripts'
//! metadata rule, which the user data is checked to install too), a container reaches the
//! internet but not the other container, not the other user's published port, not the host and
//! not the metadata service, while the load balancer reaches both containers. Without the rules
//! (the control), the other user's port is reachable: the rules are what makes the difference.
//!
//! Needs root, `ip` and `iptables` (scripts/test.sh installs iptables when missing).

use std::process::Command;

const LIB: &str = include_str!("../../scripts/instance/lib.sh");
const USER_DATA: &str = include_str!("../../terraform/modules/spotpool/user-data.sh.tftpl");

/// The words of a bash array assignment `NAME=(...)` in lib.sh.
fn lib_rule(name: &str) -> String {
    let start = LIB
        .find(&format!("{name}=("))
        .unwrap_or_else(|| panic!("lib.sh has no {name}"));
    let rest = &LIB[start + name.len() + 2..];
    rest[..rest.find(')').unwrap()].to_string()
}

/// The namespaces of one run, deleted on drop.
struct Lab {
    tag: String,
    listeners: std::cell::RefCell<Vec<std::process::Child>>,
}

impl Lab {
    fn ns(&self, name: &str) -> String {
        format!("sp{}{name}", self.tag)
    }

    /// Runs `script` with bash; panics with its output when it fails.
    fn run(&self, script: &str) {
        let output = Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .env("T", &self.tag)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{script}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Whether a TCP connection from namespace `from` to `address:port` is accepted within a
    /// second (a dropped SYN is never answered).
    fn reaches(&self, from: &str, address: &str, port: u16) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(from),
                "timeout",
                "1",
                "bash",
                "-c",
            ])
            .arg(format!("exec 3<>/dev/tcp/{address}/{port}"))
            .status()
            .unwrap()
            .success()
    }

    /// A listener in namespace `ns` on `address:port`, and a wait (bounded) until it accepts.
    fn listen(&self, ns: &str, address: &str, port: u16) {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(ns),
                "python3",
                "-m",
                "http.server",
            ])
            .args(["--bind", address, &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.listeners.borrow_mut().push(child);
        // Polled until it accepts (Python takes a moment to start), for at most ten seconds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let ready = loop {
            if self.reaches(ns, address, port) {
                break true;
            }
            if std::time::Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(
            ready,
            "the listener {address}:{port} in {ns} never answered"
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut child in self.listeners.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in ["h", "a", "b", "x"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(ns)])
                .status();
        }
    }
}

/// The lab: namespaces h (the instance), a and b (two users' containers on bridges br-a and
/// br-b), x (the VPC and beyond: the load balancer at 10.0.0.2, the metadata service at
/// 169.254.169.254, the internet at 198.51.100.1). The host's private address is 10.0.0.1; user
/// a's container port 8080 is published at 10.0.0.1:8080, user b's at 10.0.0.1:8081 (slot 1).
fn lab(rules: &[String]) -> Lab {
    let tag = format!("{}{}", std::process::id() % 100_000, rules.len());
    let lab = Lab {
        tag,
        listeners: Default::default(),
    };
    let (h, a, b, x) = (lab.ns("h"), lab.ns("a"), lab.ns("b"), lab.ns("x"));
    let mut script = format!(
        "for n in {h} {a} {b} {x}; do ip netns add $n; ip -n $n link set lo up; done
         ip netns exec {h} sysctl -qw net.ipv4.ip_forward=1
         for u in a b; do
           ip -n {h} link add br-$u type bridge
           ip -n {h} link set br-$u up
         done
         ip -n {h} addr add 172.18.1.1/24 dev br-a
         ip -n {h} addr add 172.18.2.1/24 dev br-b
         ip link add va netns {a} type veth peer name va-h netns {h}
         ip link add vb netns {b} type veth peer name vb-h netns {h}
         ip -n {h} link set va-h master br-a up
         ip -n {h} link set vb-h master br-b up
         ip -n {a} addr add 172.18.1.2/24 dev va; ip -n {a} link set va up
         ip -n {b} addr add 172.18.2.2/24 dev vb; ip -n {b} link set vb up
         ip -n {a} route add default via 172.18.1.1
         ip -n {b} route add default via 172.18.2.1
         ip link add vx netns {x} type veth peer name eth0 netns {h}
         ip -n {h} addr add 10.0.0.1/24 dev eth0; ip -n {h} link set eth0 up
         ip -n {x} addr add 10.0.0.2/24 dev vx; ip -n {x} link set vx up
         ip -n {x} addr add 169.254.169.254/32 dev lo
         ip -n {x} addr add 198.51.100.1/32 dev lo
         ip -n {x} route add default via 10.0.0.1
         ip -n {h} route add 169.254.169.254/32 via 10.0.0.2
         ip -n {h} route add 198.51.100.1/32 via 10.0.0.2
         ipt() {{ ip netns exec {h} iptables -w 5 \"$@\"; }}
         # What Docker installs: DOCKER-USER first in FORWARD, publishing as DNAT, masquerade.
         ipt -N DOCKER-USER
         ipt -A FORWARD -j DOCKER-USER
         ipt -t nat -A PREROUTING -d 10.0.0.1 -p tcp --dport 8080 -j DNAT --to-destination 172.18.1.2:8080
         ipt -t nat -A PREROUTING -d 10.0.0.1 -p tcp --dport 8081 -j DNAT --to-destination 172.18.2.2:8080
         ipt -t nat -A POSTROUTING -s 172.18.0.0/16 -o eth0 -j MASQUERADE
"
    );
    for rule in rules {
        script.push_str(&format!("ipt {rule}\n"));
    }
    lab.run(&script);
    lab.listen("a", "172.18.1.2", 8080);
    lab.listen("b", "172.18.2.2", 8080);
    lab.listen("h", "0.0.0.0", 2222);
    lab.listen("x", "169.254.169.254", 80);
    lab.listen("x", "198.51.100.1", 443);
    lab
}

#[test]
fn on_a_shared_instance_a_container_reaches_the_internet_and_nothing_of_another_user() {
    let metadata = format!(
        "-I DOCKER-USER {}",
        spotpool::instance_scripts::METADATA_BLOCK_RULE
    );
    let forward = format!("-I DOCKER-USER {}", lib_rule("SHARED_FORWARD_RULE"));
    let input = format!("-I INPUT {}", lib_rule("SHARED_INPUT_RULE"));
    // The user data installs exactly these.
    for rule in [&forward, &input] {
        let (chain, words) = rule.trim_start_matches("-I ").split_once(' ').unwrap();
        let installed = format!("iptables -w 5 -I {chain} {words}\n");
        assert!(
            USER_DATA.contains(&installed),
            "the user data lacks {installed}"
        );
    }
    assert!(USER_DATA.contains("-I DOCKER-USER -d $METADATA_ADDRESS/32 -j DROP"));

    let control = lab(std::slice::from_ref(&metadata));
    assert!(
        control.reaches("x", "10.0.0.1", 8081),
        "the load balancer reaches b"
    );
    assert!(
        control.reaches("a", "172.18.1.1", 2222),
        "without the rules, a reaches the host"
    );
    assert!(
        control.reaches("a", "10.0.0.1", 8081),
        "without the rules, a reaches b's published port: the control must fail open"
    );
    drop(control);

    let lab = lab(&[metadata, forward, input]);
    for (port, user) in [(8080, "a"), (8081, "b")] {
        assert!(
            lab.reaches("x", "10.0.0.1", port),
            "the load balancer reaches {user}"
        );
    }
    assert!(
        lab.reaches("a", "198.51.100.1", 443),
        "a reaches the internet"
    );
    assert!(
        !lab.reaches("a", "172.18.2.2", 8080),
        "a reaches b's container"
    );
    assert!(
        !lab.reaches("a", "10.0.0.1", 8081),
        "a reaches b's published port"
    );
    assert!(
        !lab.reaches("b", "10.0.0.1", 8080),
        "b reaches a's published port"
    );
    assert!(
        !lab.reaches("a", "10.0.0.1", 2222),
        "a reaches the host's own service"
    );
    assert!(
        !lab.reaches("a", "172.18.1.1", 2222),
        "a reaches the host on its bridge"
    );
    assert!(
        !lab.reaches("a", "169.254.169.254", 80),
        "a reaches the metadata service"
    );
}
