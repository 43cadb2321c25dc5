//! The systemd readiness protocol (`sd_notify`), for `Type=notify` units.
//!
//! systemd passes a Unix datagram socket in `NOTIFY_SOCKET`: a path, or an
//! abstract-namespace name written with a leading `@`. Each state is one
//! datagram of `KEY=VALUE` lines: `READY=1` once every listener is bound,
//! `STOPPING=1` when the drain begins, `STATUS=…` for `systemctl status`.
//! Written here rather than taken from a crate: it is one `send_to` on a
//! std socket, and the crates that do it either link libsystemd or bring
//! `unsafe` environment handling this crate forbids.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::UnixDatagram;

/// Where to send notifications; `None` outside systemd (no `NOTIFY_SOCKET`).
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: Target,
}

#[derive(Debug)]
enum Target {
    Path(std::path::PathBuf),
    Abstract(std::os::unix::net::SocketAddr),
}

/// Longest `NOTIFY_SOCKET` taken: a Unix socket address holds 108 bytes.
const MAX_ADDRESS: usize = 108;

impl Notifier {
    /// The notifier for the socket named by `value` (the contents of
    /// `NOTIFY_SOCKET`); `Ok(None)` when it is unset or empty.
    pub fn from_value(value: Option<&OsStr>) -> io::Result<Option<Notifier>> {
        let Some(value) = value.filter(|v| !v.is_empty()) else { return Ok(None) };
        let bytes = value.as_bytes();
        if bytes.len() >= MAX_ADDRESS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is too long"));
        }
        let target = match bytes.strip_prefix(b"@") {
            Some(name) => Target::Abstract(abstract_address(name)?),
            None if bytes.first() == Some(&b'/') => Target::Path(value.into()),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "NOTIFY_SOCKET is neither an absolute path nor an @abstract name",
                ));
            }
        };
        Ok(Some(Notifier { socket: UnixDatagram::unbound()?, target }))
    }

    /// The notifier of this process's environment (`NOTIFY_SOCKET`).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        Notifier::from_value(std::env::var_os("NOTIFY_SOCKET").as_deref())
    }

    /// Sends one notification, such as `"READY=1\nSTATUS=serving"`.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let sent = match &self.target {
            Target::Path(path) => self.socket.send_to(state.as_bytes(), path)?,
            Target::Abstract(addr) => self.socket.send_to_addr(state.as_bytes(), addr)?,
        };
        if sent == state.len() {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::WriteZero, "the notification was cut short"))
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract socket names exist only on Linux"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(socket: &UnixDatagram) -> String {
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notifies_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::from_value(Some(path.as_os_str())).unwrap().unwrap();
        notifier.notify("READY=1\nSTATUS=serving").unwrap();
        assert_eq!(receive(&listener), "READY=1\nSTATUS=serving");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn notifies_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("voxproxy-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let value = format!("@{name}");
        let notifier = Notifier::from_value(Some(OsStr::new(&value))).unwrap().unwrap();
        notifier.notify("STOPPING=1").unwrap();
        assert_eq!(receive(&listener), "STOPPING=1");
    }

    #[test]
    fn unset_empty_and_bad_values() {
        assert!(Notifier::from_value(None).unwrap().is_none());
        assert!(Notifier::from_value(Some(OsStr::new(""))).unwrap().is_none());
        assert!(Notifier::from_value(Some(OsStr::new("relative/path"))).is_err());
        let long = format!("/{}", "x".repeat(200));
        assert!(Notifier::from_value(Some(OsStr::new(&long))).is_err());
        // A socket nobody listens on is an error to report, not a panic.
        let gone = Notifier::from_value(Some(OsStr::new("/nonexistent/voxproxy.sock"))).unwrap().unwrap();
        assert!(gone.notify("READY=1").is_err());
    }
}
