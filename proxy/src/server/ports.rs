//! The pool of local RTP ports (`rtp.ports`), shared by all workers.
//!
//! A call takes one port for its whole life and gives it back when its
//! record is on disk. Ports are reused oldest-freed first, so a late packet
//! meant for a call that just ended is unlikely to reach the next call on
//! the same port. A port some other program holds is skipped and tried again
//! later, never fatal.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use crate::config::PortRange;
use crate::runtime::{IoBackend, RtpSocket as _, RtpUdp};

/// Free RTP ports.
#[derive(Debug)]
pub struct PortPool {
    bind: IpAddr,
    free: Mutex<VecDeque<u16>>,
    /// Ports of the range.
    size: usize,
}

/// Why no RTP socket could be had for a call.
#[derive(Debug)]
#[non_exhaustive]
pub enum PortError {
    /// Every port of the range is held by a call (or by another program).
    Exhausted {
        /// How many ports the range has.
        size: u32,
    },
    /// The process or the system is out of file descriptors: no port would
    /// do, so the pool stopped at the first try.
    NoDescriptors(io::Error),
}

impl std::fmt::Display for PortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortError::Exhausted { size } => {
                write!(
                    f,
                    "no free RTP port: all {size} ports of rtp.ports are in use; widen rtp.ports or lower limits.max_calls"
                )
            }
            PortError::NoDescriptors(e) => write!(
                f,
                "cannot open an RTP socket: {e}; the process is out of file descriptors, not of ports \
                 (raise the limit: systemd LimitNOFILE=, ulimit -n)"
            ),
        }
    }
}

impl std::error::Error for PortError {}

impl PortPool {
    /// A pool holding every port of `range` on `bind`.
    #[must_use]
    pub fn new(bind: IpAddr, range: PortRange) -> Arc<Self> {
        let free: VecDeque<u16> = (range.low..=range.high).collect();
        Arc::new(PortPool { bind, size: free.len(), free: Mutex::new(free) })
    }

    /// Ports of the range.
    #[must_use]
    pub fn size(&self) -> usize {
        self.size
    }

    /// Ports leased to calls now (each one an open socket).
    #[must_use]
    pub fn leased(&self) -> usize {
        self.size.saturating_sub(self.available())
    }

    /// Ports currently free.
    #[must_use]
    pub fn available(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<u16>> {
        // A panic while holding this lock cannot leave the queue half-updated
        // (push and pop are single operations), so poisoning is ignored.
        self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a free port and binds a socket of `backend` to it. Ports that
    /// fail to bind (another program has them) go to the back of the queue;
    /// at most one pass over the pool is made, and none at all once the
    /// process is out of descriptors (no other port would do better). Other
    /// failures are logged once per call, not once per port.
    pub fn bind(self: &Arc<Self>, backend: IoBackend) -> Result<(RtpUdp, PortLease), PortError> {
        let attempts = self.available();
        let mut failed: Option<(u16, io::Error, usize)> = None;
        for _ in 0..attempts {
            let Some(port) = self.lock().pop_front() else { break };
            match backend.bind_rtp(SocketAddr::new(self.bind, port)) {
                Ok(socket) => {
                    let lease = PortLease { pool: Arc::clone(self), port };
                    debug_assert_eq!(socket.local_addr().map(|a| a.port()).ok(), Some(port));
                    return Ok((socket, lease));
                }
                Err(e) if super::fds::is_exhaustion(&e) => {
                    // Not the port's fault: it keeps its place in the queue.
                    self.lock().push_front(port);
                    return Err(PortError::NoDescriptors(e));
                }
                Err(e) => {
                    self.lock().push_back(port);
                    if e.kind() != io::ErrorKind::AddrInUse {
                        match &mut failed {
                            Some((_, _, count)) => *count += 1,
                            None => failed = Some((port, e, 1)),
                        }
                    }
                }
            }
        }
        if let Some((port, error, ports)) = failed {
            tracing::warn!(port, ports, error = %error, "could not bind RTP ports");
        }
        let size = u32::try_from(self.available()).unwrap_or(u32::MAX);
        Err(PortError::Exhausted { size })
    }
}

/// One port taken from the pool; dropping it gives the port back.
#[derive(Debug)]
pub struct PortLease {
    pool: Arc<PortPool>,
    port: u16,
}

impl PortLease {
    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.lock().push_back(self.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::run_on;

    #[test]
    fn ports_are_leased_once_and_come_back_last() {
        // Find three consecutive free ports by asking the kernel for one and
        // taking its neighbours' chances: a port that is busy is skipped,
        // which is itself the behaviour under test.
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port().min(65_000);
        drop(probe);
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), PortRange { low: base, high: base + 2 });
        run_on(IoBackend::Epoll, || async {
            let mut leases = Vec::new();
            while let Ok((socket, lease)) = pool.bind(IoBackend::Epoll) {
                assert!((base..=base + 2).contains(&lease.port()));
                leases.push((socket, lease));
            }
            assert!(!leases.is_empty() && leases.len() <= 3);
            let err = pool.bind(IoBackend::Epoll).unwrap_err();
            assert!(err.to_string().contains("no free RTP port"), "{err}");
            let first = leases[0].1.port();
            leases.remove(0);
            // The freed port is the only free one, so it is the next one bound.
            let (_socket, again) = pool.bind(IoBackend::Epoll).unwrap();
            assert_eq!(again.port(), first);
        });
    }
}
