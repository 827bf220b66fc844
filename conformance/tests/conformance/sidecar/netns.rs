//! Network namespaces for the sidecar tests: two of them ("pods") joined by a veth pair,
//! named uniquely per test run, and deleted when dropped — on panic too — which takes their
//! interfaces, nftables rules and routes with them, and their `/etc/netns/<name>/` (the
//! files `ip netns exec` mounts over `/etc`: a pod's `hosts`). Creating them needs root (CAP_SYS_ADMIN
//! and CAP_NET_ADMIN); a test that cannot create them fails, it never skips.

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The IPv4 and IPv6 addresses of pod `a` and pod `b`.
pub const A4: &str = "10.77.0.1";
pub const B4: &str = "10.77.0.2";
pub const A6: &str = "fd77::1";
pub const B6: &str = "fd77::2";

/// One network namespace, deleted when dropped.
pub struct Netns {
    pub name: String,
    /// Processes started inside, killed before the namespace goes.
    children: Vec<Child>,
}

/// Runs `args` and panics with its output unless it succeeds.
fn must(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Netns {
    fn new(name: String) -> Netns {
        must(&["ip", "netns", "add", &name]);
        let ns = Netns {
            name,
            children: Vec::new(),
        };
        ns.must(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The pod's `/etc/hosts`: `ip netns exec` mounts `/etc/netns/<name>/hosts` over it,
    /// so names resolve inside as `lines` say.
    pub fn hosts(&self, lines: &str) {
        let dir = format!("/etc/netns/{}", self.name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot make {dir}: {e}"));
        let text = format!("127.0.0.1 localhost\n::1 localhost\n{lines}");
        std::fs::write(format!("{dir}/hosts"), text).unwrap_or_else(|e| panic!("cannot write {dir}/hosts: {e}"));
    }

    /// `args` run inside, its output; panics unless it succeeds.
    pub fn must(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        must(&full)
    }

    /// `args` run inside, whatever comes of it.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
    }

    /// `args` started inside, running until the namespace is dropped (or waited on).
    pub fn spawn(&mut self, args: &[&str]) -> usize {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?}: {e}"));
        self.children.push(child);
        self.children.len() - 1
    }

    /// Waits for a process [`Netns::spawn`] started and returns its output.
    pub fn wait(&mut self, index: usize) -> Output {
        // Replaced by a finished stand-in so that indices stay put.
        let stand_in = Command::new("true").spawn().expect("true");
        let child = std::mem::replace(&mut self.children[index], stand_in);
        child.wait_with_output().expect("wait")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Processes still inside (a sidecar whose Weft handle outlived this) keep the
        // namespace's interfaces alive but not its name; deleting the name is what matters.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// Two pods, `a` (10.77.0.1, fd77::1) and `b` (10.77.0.2, fd77::2), on one veth pair.
pub struct Pods {
    pub a: Netns,
    pub b: Netns,
}

impl Pods {
    pub fn new() -> Pods {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let a = Netns::new(format!("weft-{id}-a"));
        let b = Netns::new(format!("weft-{id}-b"));
        // Interface names are made inside `a`, so they need not be unique on the host.
        a.must(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]);
        a.must(&["ip", "link", "set", "eth1", "netns", &b.name]);
        b.must(&["ip", "link", "set", "eth1", "name", "eth0"]);
        for (ns, v4, v6) in [(&a, A4, A6), (&b, B4, B6)] {
            ns.must(&["ip", "addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
            ns.must(&["ip", "-6", "addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"]);
            ns.must(&["ip", "link", "set", "eth0", "up"]);
        }
        Pods { a, b }
    }
}
