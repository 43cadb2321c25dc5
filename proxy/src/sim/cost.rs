//! What the proxy under test spends: CPU time per bridged frame and resident
//! memory per active call.
//!
//! Two ways to look: a separate process (`voxproxy sim --proxy-pid PID`,
//! read from `/proc/PID`), or a proxy in the same process (`voxproxy demo`,
//! read from its metrics: the time its media path spent per frame, and the
//! process's memory, which there includes the simulator and echo backend).
//! A [`CostMeter`] samples on its own thread every [`SAMPLE_EVERY`] while the
//! run goes on: memory at its peak of active calls, CPU from start to end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::metrics::{Metrics, process_usage};

/// How often memory and the number of active calls are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// Whose cost is measured.
#[derive(Clone, Debug)]
pub enum CostTarget {
    /// A separate process, read from `/proc/<pid>`.
    Process(u32),
    /// A proxy running in this process, read from its metrics.
    InProcess(Arc<Metrics>),
}

impl PartialEq for CostTarget {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (CostTarget::Process(a), CostTarget::Process(b)) => a == b,
            (CostTarget::InProcess(a), CostTarget::InProcess(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The proxy's cost over one run, in the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct ProxyCost {
    /// `process <pid>` or `in-process`.
    pub measured: String,
    /// CPU time the proxy process used during the run, seconds (for an
    /// in-process proxy this is the whole process: simulator and echo too).
    pub cpu_seconds: Option<f64>,
    /// Frames bridged during the run, one way each (sent plus received by
    /// the simulator).
    pub frames: u64,
    /// `cpu_seconds` per bridged frame, microseconds.
    pub cpu_us_per_frame: Option<f64>,
    /// Time the proxy's media path spent per frame (its
    /// `voxproxy_frame_processing_seconds`), microseconds; in-process only.
    pub processing_us_per_frame: Option<f64>,
    /// Resident memory before the first call, bytes.
    pub baseline_rss_bytes: Option<u64>,
    /// Resident memory at the sample with the most active calls, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Active calls at that sample.
    pub calls_at_peak: u64,
    /// `(peak − baseline) / calls_at_peak`, bytes.
    pub rss_bytes_per_call: Option<f64>,
    /// Open file descriptors before the first call and after the last.
    pub open_fds_before: Option<u64>,
    /// Open file descriptors after the run.
    pub open_fds_after: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    cpu: Option<Duration>,
    rss: Option<u64>,
    fds: Option<u64>,
    processing: Option<(u64, Duration)>,
}

fn sample(target: &CostTarget) -> Sample {
    match target {
        CostTarget::Process(pid) => {
            let usage = process_usage(*pid);
            Sample {
                cpu: usage.cpu_time,
                rss: usage.resident_memory_bytes,
                fds: usage.open_fds,
                processing: None,
            }
        }
        CostTarget::InProcess(metrics) => {
            let snap = metrics.snapshot();
            let usage = process_usage(std::process::id());
            Sample {
                cpu: snap.cpu_time,
                rss: snap.resident_memory_bytes,
                fds: usage.open_fds,
                processing: Some((
                    snap.inbound_frames_timed + snap.outbound_frames_timed,
                    snap.inbound_processing + snap.outbound_processing,
                )),
            }
        }
    }
}

#[derive(Debug, Default)]
struct Peak {
    rss: Option<u64>,
    calls: u64,
}

/// Samples the target while a run goes on; see the module docs.
#[derive(Debug)]
pub struct CostMeter {
    target: CostTarget,
    start: Sample,
    stop: Arc<AtomicBool>,
    peak: Arc<Mutex<Peak>>,
    sampler: Option<JoinHandle<()>>,
}

impl CostMeter {
    /// Takes the baseline now and starts sampling; `active_calls` is read at
    /// every sample to find the peak.
    #[must_use]
    pub fn start(target: CostTarget, active_calls: Arc<AtomicU64>) -> CostMeter {
        let start = sample(&target);
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(Mutex::new(Peak::default()));
        let sampler = {
            let (target, stop, peak) = (target.clone(), Arc::clone(&stop), Arc::clone(&peak));
            std::thread::Builder::new()
                .name("voxproxy-sim-cost".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::sleep(SAMPLE_EVERY);
                        let calls = active_calls.load(Ordering::Relaxed);
                        let now = sample(&target);
                        let mut peak = peak.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        if calls > peak.calls || (calls == peak.calls && now.rss > peak.rss) {
                            *peak = Peak { rss: now.rss, calls };
                        }
                    }
                })
                .ok()
        };
        CostMeter { target, start, stop, peak, sampler }
    }

    /// Stops sampling and computes the cost of `frames` bridged frames.
    #[must_use]
    pub fn finish(mut self, frames: u64) -> ProxyCost {
        self.stop.store(true, Ordering::Release);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        let end = sample(&self.target);
        let peak = std::mem::take(&mut *self.peak.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let cpu_seconds = match (self.start.cpu, end.cpu) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64()),
            _ => None,
        };
        let per_frame = |seconds: f64| (frames > 0).then(|| seconds * 1e6 / frames as f64);
        let processing_us_per_frame = match (self.start.processing, end.processing) {
            (Some((n0, t0)), Some((n1, t1))) if n1 > n0 => {
                Some(t1.saturating_sub(t0).as_secs_f64() * 1e6 / (n1 - n0) as f64)
            }
            _ => None,
        };
        let rss_bytes_per_call = match (self.start.rss, peak.rss) {
            (Some(base), Some(top)) if peak.calls > 0 => {
                Some(top.saturating_sub(base) as f64 / peak.calls as f64)
            }
            _ => None,
        };
        ProxyCost {
            measured: match &self.target {
                CostTarget::Process(pid) => format!("process {pid}"),
                CostTarget::InProcess(_) => "in-process".to_owned(),
            },
            cpu_seconds,
            frames,
            cpu_us_per_frame: cpu_seconds.and_then(per_frame),
            processing_us_per_frame,
            baseline_rss_bytes: self.start.rss,
            peak_rss_bytes: peak.rss,
            calls_at_peak: peak.calls,
            rss_bytes_per_call,
            open_fds_before: self.start.fds,
            open_fds_after: end.fds,
        }
    }
}

impl Drop for CostMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_measured_and_per_call_memory_divides_by_the_peak() {
        let calls = Arc::new(AtomicU64::new(0));
        let meter = CostMeter::start(CostTarget::Process(std::process::id()), Arc::clone(&calls));
        calls.store(4, Ordering::Relaxed);
        // Touch 4 MiB so the peak sample sees more resident memory.
        let block = vec![1u8; 4 << 20];
        std::thread::sleep(SAMPLE_EVERY * 3);
        let cost = meter.finish(1000);
        assert!(block.iter().all(|&b| b == 1));
        assert_eq!(cost.measured, format!("process {}", std::process::id()));
        assert_eq!(cost.calls_at_peak, 4);
        let per_call = cost.rss_bytes_per_call.expect("Linux /proc is readable");
        assert!(per_call >= f64::from(1u32 << 20) * 0.5, "{per_call}");
        assert!(cost.cpu_us_per_frame.is_some());
        assert!(cost.open_fds_before.is_some());
    }
}
