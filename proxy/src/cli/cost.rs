//! The two ways `voxproxy sim` and `voxproxy demo` read what the proxy under
//! test spends ([`voxproxy_rig::sim::cost`]): a `voxproxy serve` process by
//! PID from `/proc`, or the proxy of `voxproxy demo` from its own metrics.

use std::sync::Arc;

use voxproxy::metrics::{Metrics, process_cpu_and_memory, process_usage};
use voxproxy_rig::sim::cost::{CostProbe, CostSample, CostTarget};

/// A separate process, read from `/proc/<pid>`.
#[derive(Debug)]
struct Process(u32);

impl CostProbe for Process {
    fn sample(&self) -> CostSample {
        let usage = process_cpu_and_memory(self.0);
        CostSample {
            cpu: usage.cpu_time,
            user: usage.user_time,
            system: usage.system_time,
            rss: usage.resident_memory_bytes,
            processing: None,
        }
    }

    fn open_fds(&self) -> Option<u64> {
        process_usage(self.0).open_fds
    }

    fn describe(&self) -> String {
        format!("process {}", self.0)
    }
}

/// A proxy running in this process, read from its metrics.
#[derive(Debug)]
struct InProcess(Arc<Metrics>);

impl CostProbe for InProcess {
    fn sample(&self) -> CostSample {
        let snap = self.0.snapshot();
        let usage = process_cpu_and_memory(std::process::id());
        CostSample {
            cpu: snap.cpu_time,
            user: usage.user_time,
            system: usage.system_time,
            rss: snap.resident_memory_bytes,
            processing: Some((
                snap.inbound_frames_timed + snap.outbound_frames_timed,
                snap.inbound_processing + snap.outbound_processing,
            )),
        }
    }

    fn open_fds(&self) -> Option<u64> {
        process_usage(std::process::id()).open_fds
    }

    fn describe(&self) -> String {
        "in-process".to_owned()
    }
}

/// The `voxproxy serve` process `pid`.
pub fn process(pid: u32) -> CostTarget {
    CostTarget::new(Process(pid))
}

/// The proxy in this process whose metrics these are.
pub fn in_process(metrics: Arc<Metrics>) -> CostTarget {
    CostTarget::new(InProcess(metrics))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read_from_proc() {
        let target = process(std::process::id());
        let sample = target.0.sample();
        assert!(sample.cpu.is_some() && sample.user.is_some() && sample.system.is_some(), "{sample:?}");
        assert!(sample.rss.is_some_and(|r| r > 0), "{sample:?}");
        assert!(target.0.open_fds().is_some_and(|f| f > 0));
        assert_eq!(sample.processing, None);
        assert_eq!(target.0.describe(), format!("process {}", std::process::id()));
    }
}
