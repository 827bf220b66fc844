//! Telling a supervisor where Weft listens and that it is ready: the ready file
//! (`weft run --ready-file PATH`, as Envoy's `--admin-address-path`) and systemd's
//! `sd_notify` protocol.
//!
//! Both are written once every listener, its HTTP/3 side and the admin listener are bound,
//! so a reader never sees a half-started proxy; a listener configured on port 0 is
//! reported with the port the kernel gave it, which is how a test harness (or anything
//! that starts Weft next to other processes) avoids picking a port and hoping.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// What was bound, as the ready file shows it.
#[derive(Serialize, Debug, Default)]
pub struct Bound {
    pub listeners: Vec<BoundListener>,
    /// The admin listener, when configured.
    pub admin: Option<SocketAddr>,
    pub pid: u32,
}

#[derive(Serialize, Debug)]
pub struct BoundListener {
    pub name: String,
    /// The TCP address (HTTP/1.1, h2c or TLS).
    pub address: SocketAddr,
    /// The UDP address of its HTTP/3 side, when `http3 = true`.
    pub http3: Option<SocketAddr>,
}

/// The ready file while Weft runs: removed when dropped, so a file that exists names a
/// live process.
pub struct ReadyFile {
    path: PathBuf,
}

impl ReadyFile {
    /// Writes `bound` as JSON to `path` atomically (a temporary file in the same folder,
    /// then a rename): a reader sees no file or the whole file, never a part.
    pub fn write(path: &Path, bound: &Bound) -> anyhow::Result<ReadyFile> {
        ReadyFile::rewrite(path, bound)?;
        Ok(ReadyFile { path: path.to_owned() })
    }

    /// Writes the file again, the same way, when listeners are added or dropped.
    pub fn rewrite(path: &Path, bound: &Bound) -> anyhow::Result<()> {
        let context = |e: std::io::Error| anyhow::anyhow!("ready file {}: {e}", path.display());
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(context)?;
        let mut text = serde_json::to_vec_pretty(bound)?;
        text.push(b'\n');
        tmp.write_all(&text).map_err(context)?;
        tmp.persist(path).map_err(|e| context(e.error))?;
        Ok(())
    }
}

impl Drop for ReadyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends `state` (`READY=1`, `STOPPING=1`…) to systemd when it started Weft with
/// `Type=notify` (it sets `NOTIFY_SOCKET`); does nothing otherwise. A failure is logged,
/// never fatal: the proxy serves either way.
pub fn sd_notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = notify(Path::new(&socket), state) {
        tracing::warn!(socket = %Path::new(&socket).display(), error = %e, "sd_notify failed");
    }
}

/// The protocol is one datagram of `KEY=VALUE` lines on a Unix socket; a name starting
/// with `@` is in the abstract namespace (sd_notify(3)).
fn notify(socket: &Path, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let sender = UnixDatagram::unbound()?;
    let message = format!("{state}\nMAINPID={}\n", std::process::id());
    let name = socket.as_os_str().as_bytes();
    if let Some(abstract_name) = name.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
        sender.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        sender.send_to(message.as_bytes(), socket)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_file_is_whole_json_and_removed_on_drop() {
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("ready.json");
        let bound = Bound {
            listeners: vec![BoundListener {
                name: "main".into(),
                address: "127.0.0.1:41000".parse().expect("test setup"),
                http3: None,
            }],
            admin: Some("127.0.0.1:41001".parse().expect("test setup")),
            pid: 7,
        };
        let file = ReadyFile::write(&path, &bound).expect("test setup");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("test setup")).expect("test setup");
        assert_eq!(json["listeners"][0]["address"], "127.0.0.1:41000");
        assert_eq!(json["admin"], "127.0.0.1:41001");
        // Nothing but the file itself is left in the folder (the temporary was renamed).
        assert_eq!(std::fs::read_dir(dir.path()).expect("test setup").count(), 1);
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn notify_reaches_a_path_socket_and_an_abstract_one() {
        use std::os::unix::net::UnixDatagram;
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).expect("test setup");
        notify(&path, "READY=1").expect("test setup");
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).expect("test setup");
        let text = std::str::from_utf8(&buf[..n]).expect("test setup");
        assert!(text.starts_with("READY=1\nMAINPID="), "{text}");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("weft-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("test setup");
        let receiver = UnixDatagram::bind_addr(&addr).expect("test setup");
        notify(Path::new(&format!("@{name}")), "STOPPING=1").expect("test setup");
        let n = receiver.recv(&mut buf).expect("test setup");
        assert!(
            std::str::from_utf8(&buf[..n])
                .expect("test setup")
                .starts_with("STOPPING=1\n")
        );
    }
}
