//! What the proxy under test spends: CPU time per bridged frame and resident
//! memory per active call.
//!
//! A [`CostProbe`] reads the proxy: the `voxproxy` command line has two, a
//! separate process (`voxproxy sim --proxy-pid PID`, read from `/proc/PID`)
//! and a proxy in the same process (`voxproxy demo`, read from its metrics:
//! the time its media path spent per frame, and the process's memory, which
//! there includes the simulator and echo backend).
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

/// How often memory and the number of active calls are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// Reads what the proxy under test has spent so far. The rig does not read
/// `/proc` or a proxy's metrics itself: the `voxproxy` command line, which
/// has both, gives it a probe (a process by PID, or an in-process proxy).
pub trait CostProbe: Send + Sync + std::fmt::Debug {
    /// What the proxy has spent up to now; unknown parts stay `None`.
    /// Called every [`SAMPLE_EVERY`], so it should be cheap.
    fn sample(&self) -> CostSample;
    /// The proxy's open file descriptors; read only before the first call
    /// and after the run (listing thousands of descriptors five times a
    /// second was 4 % of the simulator's CPU at 500 calls).
    fn open_fds(&self) -> Option<u64>;
    /// How the report names what was measured, e.g. `process 1234`.
    fn describe(&self) -> String;
}

/// Whose cost is measured: a shared [`CostProbe`].
#[derive(Clone, Debug)]
pub struct CostTarget(pub Arc<dyn CostProbe>);

impl CostTarget {
    /// Wraps a probe.
    #[must_use]
    pub fn new(probe: impl CostProbe + 'static) -> CostTarget {
        CostTarget(Arc::new(probe))
    }
}

impl PartialEq for CostTarget {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// One reading of a [`CostProbe`]: totals since the proxy started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CostSample {
    /// User plus system CPU time.
    pub cpu: Option<Duration>,
    /// User CPU time.
    pub user: Option<Duration>,
    /// System CPU time.
    pub system: Option<Duration>,
    /// Resident memory, bytes.
    pub rss: Option<u64>,
    /// Frames the proxy's media path timed and the time it spent on them
    /// (an in-process proxy's own metrics); `None` from outside.
    pub processing: Option<(u64, Duration)>,
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
    samples: Vec<(u64, u64, CostSample, std::time::Instant)>,
}

impl Peak {
    fn update(&mut self, live: Live, now: CostSample) {
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
    start: CostSample,
    fds_before: Option<u64>,
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
        let fds_before = target.0.open_fds();
        let start = target.0.sample();
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
                        let now = target.0.sample();
                        peak.lock().unwrap_or_else(std::sync::PoisonError::into_inner).update(counts, now);
                    }
                })
                .ok()
        };
        CostMeter { target, start, fds_before, stop, peak, sampler }
    }

    /// Stops sampling and computes the cost of `frames` bridged frames.
    #[must_use]
    pub fn finish(mut self, frames: u64) -> ProxyCost {
        self.stop.store(true, Ordering::Release);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        let end = self.target.0.sample();
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
            measured: self.target.0.describe(),
            cpu_seconds,
            frames,
            cpu_us_per_frame: cpu_seconds.and_then(per_frame),
            processing_us_per_frame,
            baseline_rss_bytes: self.start.rss,
            peak_rss_bytes: peak.rss,
            calls_at_peak: peak.calls,
            rss_bytes_per_call,
            open_fds_before: self.fds_before,
            open_fds_after: self.target.0.open_fds(),
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

    /// A proxy whose spending the test sets.
    #[derive(Debug, Default)]
    struct Scripted(Mutex<CostSample>);

    impl CostProbe for Scripted {
        fn sample(&self) -> CostSample {
            *self.0.lock().unwrap()
        }
        fn open_fds(&self) -> Option<u64> {
            Some(7)
        }
        fn describe(&self) -> String {
            "scripted".to_owned()
        }
    }

    fn spend(probe: &Scripted, cpu_ms: u64, rss: u64) {
        let mut s = probe.0.lock().unwrap();
        s.user = Some(Duration::from_millis(cpu_ms / 2));
        s.system = Some(Duration::from_millis(cpu_ms - cpu_ms / 2));
        s.cpu = Some(Duration::from_millis(cpu_ms));
        s.rss = Some(rss);
    }

    #[test]
    fn per_call_memory_divides_by_the_peak_and_the_window_ends_when_calls_end() {
        let probe = Arc::new(Scripted::default());
        spend(&probe, 0, 1 << 20);
        let calls = Arc::new(AtomicU64::new(0));
        let frames = Arc::new(AtomicU64::new(0));
        let live = {
            let (calls, frames) = (Arc::clone(&calls), Arc::clone(&frames));
            move || Live { calls: calls.load(Ordering::Relaxed), frames: frames.load(Ordering::Relaxed) }
        };
        let target = CostTarget(Arc::clone(&probe) as Arc<dyn CostProbe>);
        let meter = CostMeter::start(target, live);
        calls.store(4, Ordering::Relaxed);
        spend(&probe, 0, 17 << 20);
        // Frames and CPU rise together while the 4 calls are up.
        for step in 1..=8u64 {
            frames.store(step * 1000, Ordering::Relaxed);
            spend(&probe, step * 10, 17 << 20);
            std::thread::sleep(SAMPLE_EVERY / 2);
        }
        // Calls ending close the window: a later sample at fewer calls
        // must not move it, nor the memory peak.
        calls.store(1, Ordering::Relaxed);
        frames.store(1_000_000, Ordering::Relaxed);
        spend(&probe, 10_000, 2 << 20);
        std::thread::sleep(SAMPLE_EVERY * 2);
        let cost = meter.finish(2000);
        assert_eq!(cost.measured, "scripted");
        assert_eq!(cost.calls_at_peak, 4);
        assert_eq!(cost.rss_bytes_per_call, Some(f64::from(4u32 << 20)), "16 MiB over the baseline, 4 calls");
        assert_eq!(cost.cpu_seconds, Some(10.0));
        assert_eq!(cost.cpu_us_per_frame, Some(5000.0));
        assert_eq!((cost.open_fds_before, cost.open_fds_after), (Some(7), Some(7)));
        let steady = cost.steady.expect("at least two samples at 4 calls");
        assert_eq!((steady.calls, steady.peak_calls), (4, 4));
        assert!(steady.frames > 0 && steady.frames <= 7000, "{steady:?}");
        // 10 ms of CPU per 1000 frames inside the window: 10 µs per frame
        // (a sample can fall between the two stores: one step off at an end).
        let per_frame = steady.cpu_us_per_frame.expect("CPU was read");
        assert!((5.0..=20.0).contains(&per_frame), "{per_frame} µs per frame");
        assert!(steady.user_us_per_frame.is_some() && steady.system_us_per_frame.is_some());
    }
}
