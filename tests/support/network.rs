//! The network real nodes live on, kept inside this machine.
//!
//! A bridge on the host (`sapp<pid>`) with an address in 198.18.0.0/15 (the
//! benchmarking range, RFC 2544: never routed anywhere). Each real node is a
//! network namespace joined to it by a veth pair, with no default route:
//! a packet for any address other than the bridge's subnet, its own pods or
//! loopback fails at once in the node's namespace ("network unreachable"),
//! before it could reach an interface that leaves the machine. The API
//! server listens on the bridge address; the `kubernetes` Service IP is
//! translated to it inside each node (there is no kube-proxy).

use std::net::Ipv4Addr;
use std::process::Command;

use super::janitor;

const BRIDGE_PREFIX: &str = "sapp";

pub struct TestNetwork {
    pub bridge: String,
    /// Third octet of 198.18.X.0/24, chosen free among running test binaries.
    subnet: u8,
}

impl TestNetwork {
    /// Creates this test binary's bridge (removed by the janitor).
    pub fn create() -> TestNetwork {
        sweep_stale_bridges();
        let bridge = format!("{BRIDGE_PREFIX}{}", std::process::id());
        let used = host_addresses();
        let subnet = (1..=254u8)
            .find(|x| !used.contains(&Ipv4Addr::new(198, 18, *x, 1)))
            .expect("a free 198.18.x.0/24 for the test bridge");
        janitor::on_exit(format!("del_link {bridge}"));
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let network = TestNetwork { bridge, subnet };
        let cidr = format!("{}/24", network.host_address());
        ip(&["addr", "add", &cidr, "dev", &network.bridge]);
        ip(&["link", "set", &network.bridge, "up"]);
        network
    }

    /// The host's address on the bridge: where nodes reach the API server.
    pub fn host_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, 1)
    }

    /// Address of the `index`th node on the bridge.
    pub fn node_address(&self, index: usize) -> Ipv4Addr {
        Ipv4Addr::new(
            198,
            18,
            self.subnet,
            10 + u8::try_from(index).expect("few nodes"),
        )
    }

    /// Joins the network namespace of process `pid` as node `index`: a veth
    /// pair, `eth0` inside with the node's address and no default route.
    pub fn attach(&self, pid: u32, index: usize) {
        let host_end = format!("{}n{index}", self.bridge);
        // A rebooted node's old pair went with its namespace.
        let _ = Command::new("ip").args(["link", "del", &host_end]).output();
        ip(&[
            "link",
            "add",
            &host_end,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pid.to_string(),
        ]);
        ip(&["link", "set", &host_end, "master", &self.bridge]);
        ip(&["link", "set", &host_end, "up"]);
        let address = format!("{}/24", self.node_address(index));
        let pid = pid.to_string();
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", &address, "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
        ] {
            let mut all = vec!["-t", &pid, "-n", "ip"];
            all.extend(args);
            run("nsenter", &all);
        }
    }
}

/// Runs `ip` with `args`; panics with its stderr on failure.
fn ip(args: &[&str]) {
    run("ip", args);
}

pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn host_addresses() -> Vec<Ipv4Addr> {
    run("ip", &["-4", "-o", "addr", "show"])
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .collect()
}

/// Bridges of test binaries that are gone (their janitor was killed too).
fn sweep_stale_bridges() {
    let links = run("ip", &["-o", "link", "show", "type", "bridge"]);
    for line in links.lines() {
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if janitor::owner_is_gone(name, BRIDGE_PREFIX) {
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
    }
}
