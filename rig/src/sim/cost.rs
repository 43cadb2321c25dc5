//! What the proxy under test spends: CPU time per bridged frame and resident
//! memory per active call.
//!
//! Two ways to look: a separate process (`voxproxy sim --proxy-pid PID`,
//! read from `/proc/PID`), or a proxy in the same process (`voxproxy demo`,
//! read from its metrics: the time its media path spent per frame, and the
//! process's memory, which there includes the simulator and echo backend).
//! A [`CostMeter`] samples on its own thread every [`SAMPLE_EVERY`] while the
//! run goes on: memory at its peak of active calls, CPU from start to end,
//! and CPU over the *steady window*: from the first sample at which (nearly)
//! the most calls were up to the last sample at which they still were. The window
//! leaves out call set-up and tear-down (webhooks, handshakes, call records),
//! so its CPU per frame is the media path's alone; it is what
//! `benches/capacity.sh` reports.

use std::sync::atomic::{AtomicBool, Ordering};
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
    /// User CPU time during the run, seconds (`cpu_seconds` = user + system).
    #[serde(default)]
    pub user_seconds: Option<f64>,
    /// System CPU time during the run, seconds.
    #[serde(default)]
    pub system_seconds: Option<f64>,
    /// The steady window (see the module docs); `None` when fewer than two
    /// samples saw the peak of calls (a run shorter than about 0.5 s).
    #[serde(default)]
    pub steady: Option<SteadyCost>,
}

/// CPU over the steady window: from the first to the last sample at which
/// at least [`STEADY_SHARE`] of the most calls were up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct SteadyCost {
    /// Fewest calls up at a sample of the window.
    pub calls: u64,
    /// Most calls up at any sample of the run.
    #[serde(default)]
    pub peak_calls: u64,
    /// Length of the window, seconds.
    pub seconds: f64,
    /// Frames bridged in the window, one way each (sent plus received by
    /// the simulator).
    pub frames: u64,
    /// User CPU per bridged frame in the window, microseconds.
    pub user_us_per_frame: Option<f64>,
    /// System CPU per bridged frame in the window, microseconds.
    pub system_us_per_frame: Option<f64>,
    /// User plus system CPU per bridged frame in the window, microseconds.
    pub cpu_us_per_frame: Option<f64>,
    /// The proxy's CPU use in the window, in cores (1.0 = one core busy).
    pub cores: Option<f64>,
}

/// What the run tells the meter at each sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// Calls up now.
    pub calls: u64,
    /// Frames bridged so far, one way each.
    pub frames: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    cpu: Option<Duration>,
    user: Option<Duration>,
    system: Option<Duration>,
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
                user: usage.user_time,
                system: usage.system_time,
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
                user: usage.user_time,
                system: usage.system_time,
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

/// The steady window: samples with at least this share of the most calls
/// seen up. All calls up would be the exact definition, but on a loaded rig
/// the first calls can end (or a few fail) before the last ones are up, and
/// then no two samples see them all.
pub const STEADY_SHARE: f64 = 0.95;

/// Most samples kept for the steady window: [`crate::sim::MAX_MEDIA`] at
/// [`SAMPLE_EVERY`]; later samples only move the window's end.
const MAX_SAMPLES: usize = 5 * 3600 * 5;

#[derive(Debug, Default)]
struct Peak {
    rss: Option<u64>,
    calls: u64,
    /// Every sample: calls up, frames so far, what the target had spent, when.
    samples: Vec<(u64, u64, Sample, std::time::Instant)>,
}

impl Peak {
    fn update(&mut self, live: Live, now: Sample) {
        let at = (live.calls, live.frames, now, std::time::Instant::now());
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(at);
        } else if let Some(last) = self.samples.last_mut() {
            *last = at;
        }
        if live.calls > self.calls {
            (self.rss, self.calls) = (now.rss, live.calls);
        } else if live.calls == self.calls && live.calls > 0 && now.rss > self.rss {
            self.rss = now.rss;
        }
    }

    fn steady(&self) -> Option<SteadyCost> {
        let floor = (self.calls as f64 * STEADY_SHARE).ceil() as u64;
        let mut inside = self.samples.iter().filter(|s| s.0 >= floor.max(1));
        let &(calls_a, frames_a, a, t_a) = inside.next()?;
        let (mut calls, mut last) = (calls_a, (frames_a, a, t_a));
        for &(c, frames, sample, t) in inside {
            calls = calls.min(c);
            last = (frames, sample, t);
        }
        let (frames_b, b, t_b) = last;
        let seconds = t_b.saturating_duration_since(t_a).as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }
        let frames = frames_b.saturating_sub(frames_a);
        let spent = |x: Option<Duration>, y: Option<Duration>| Some(y?.saturating_sub(x?).as_secs_f64());
        let per_frame = |s: Option<f64>| s.filter(|_| frames > 0).map(|s| s * 1e6 / frames as f64);
        let cpu = spent(a.cpu, b.cpu);
        Some(SteadyCost {
            calls,
            peak_calls: self.calls,
            seconds,
            frames,
            user_us_per_frame: per_frame(spent(a.user, b.user)),
            system_us_per_frame: per_frame(spent(a.system, b.system)),
            cpu_us_per_frame: per_frame(cpu),
            cores: cpu.map(|c| c / seconds),
        })
    }
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
    /// Takes the baseline now and starts sampling; `live` is called at
    /// every sample for the calls up (to find the peak and the steady
    /// window) and the frames bridged so far.
    #[must_use]
    pub fn start(target: CostTarget, live: impl Fn() -> Live + Send + 'static) -> CostMeter {
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
                        // Frames first: the window's CPU then never covers
                        // fewer frames than it counts.
                        let counts = live();
                        let now = sample(&target);
                        peak.lock().unwrap_or_else(std::sync::PoisonError::into_inner).update(counts, now);
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
        let spent = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?).as_secs_f64());
        let cpu_seconds = spent(self.start.cpu, end.cpu);
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
            user_seconds: spent(self.start.user, end.user),
            system_seconds: spent(self.start.system, end.system),
            steady: peak.steady(),
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
    use std::sync::atomic::AtomicU64;

    #[test]
    fn this_process_is_measured_and_per_call_memory_divides_by_the_peak() {
        let calls = Arc::new(AtomicU64::new(0));
        let frames = Arc::new(AtomicU64::new(0));
        let live = {
            let (calls, frames) = (Arc::clone(&calls), Arc::clone(&frames));
            move || Live { calls: calls.load(Ordering::Relaxed), frames: frames.load(Ordering::Relaxed) }
        };
        let meter = CostMeter::start(CostTarget::Process(std::process::id()), live);
        calls.store(4, Ordering::Relaxed);
        // Touch 64 MiB so the peak sample sees more resident memory, and
        // count frames while spinning so the steady window has CPU in it.
        // The other tests of this process allocate and free at the same
        // time (4 MiB here once measured 0.2 MiB per call): the block is
        // large, and the bound a quarter of it, so their noise cannot matter.
        let block = vec![1u8; 64 << 20];
        let until = std::time::Instant::now() + SAMPLE_EVERY * 4;
        let mut spin = 0u64;
        while std::time::Instant::now() < until {
            spin = std::hint::black_box(spin.wrapping_add(1));
            if spin.is_multiple_of(1024) {
                frames.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Calls ending close the window: a later sample at fewer calls
        // must not move it.
        calls.store(1, Ordering::Relaxed);
        let frames_at_peak = frames.load(Ordering::Relaxed);
        std::thread::sleep(SAMPLE_EVERY * 2);
        frames.fetch_add(1_000_000, Ordering::Relaxed);
        let cost = meter.finish(1000);
        assert!(block.iter().all(|&b| b == 1));
        let steady = cost.steady.clone().expect("at least two samples at 4 calls");
        assert_eq!((steady.calls, steady.peak_calls), (4, 4));
        assert!(steady.frames > 0 && steady.frames <= frames_at_peak, "{steady:?}");
        assert!(steady.seconds > 0.0 && steady.seconds < (SAMPLE_EVERY * 5).as_secs_f64(), "{steady:?}");
        assert!(steady.user_us_per_frame.is_some() && steady.system_us_per_frame.is_some());
        assert!(cost.user_seconds.is_some() && cost.system_seconds.is_some());
        assert_eq!(cost.measured, format!("process {}", std::process::id()));
        assert_eq!(cost.calls_at_peak, 4);
        let per_call = cost.rss_bytes_per_call.expect("Linux /proc is readable");
        assert!(per_call >= f64::from(4u32 << 20), "{per_call} bytes per call, 16 MiB touched per call");
        assert!(cost.cpu_us_per_frame.is_some());
        assert!(cost.open_fds_before.is_some());
    }
}
