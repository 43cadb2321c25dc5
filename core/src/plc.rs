//! Packet-loss concealment on 16-bit PCM.
//!
//! When the jitter buffer hands out [`Playout::Lost`](crate::jitter::Playout::Lost),
//! something must still be played. [`LossConcealer`] makes that something:
//!
//! 1. **Repetition.** At the start of a loss it looks for the pitch period of
//!    the last audio played (normalised autocorrelation over 2.5–15 ms) and
//!    continues the signal by repeating the last whole periods (up to 20 ms of
//!    them), so the first concealed sample follows the last real one without
//!    a click. The end of the repeated stretch is blended into the samples
//!    that preceded its start, so each repetition joins the next smoothly too.
//! 2. **Fade.** The repetition fades out linearly over `fade` (60 ms by
//!    default) while comfort noise fades in (gain `1 - g²` against the
//!    repetition's `g`, so the loudness falls monotonically as long as the
//!    lost speech was louder than twice the background).
//! 3. **Comfort noise.** After the fade, only noise at the background level
//!    measured on the real audio: uniform white noise from a xorshift
//!    generator seeded by the configuration, so output is deterministic.
//! 4. **Resumption.** The first real frame after a loss is crossfaded in place
//!    from the continuing concealment over `crossfade` (4 ms).
//!
//! The background level is a minimum tracker over the short-term energy of
//! the frames played: it follows a falling level at once and a rising one by
//! about 1.7 dB per second, so speech barely moves it.
//!
//! ## The call contract
//!
//! There is no time here, only samples: feed every real frame you play to
//! [`LossConcealer::handle_frame`] (it may rewrite the start of the first
//! frame after a loss, so call it *before* playing the frame), and call
//! [`LossConcealer::conceal`] for each lost frame with a buffer of the lost
//! frame's length. Frames may have any length; the concealer keeps the last
//! `HISTORY` samples played. It never allocates; concealment costs a few
//! multiplications per sample, plus one pitch search (about `(HISTORY / 2)²`
//! multiply-adds at most) at the start of each loss.
//!
//! ```
//! use voxproxy_core::plc::{ConcealerConfig, LossConcealer};
//!
//! let mut plc: LossConcealer<640> = LossConcealer::new(ConcealerConfig::default());
//! // 20 ms frames of a 250 Hz tone at 8 kHz.
//! let tone = |n: usize| (8000.0 * (n as f64 * 250.0 / 8000.0 * core::f64::consts::TAU).sin()) as i16;
//! let mut frame = [0i16; 160];
//! for f in 0..10 {
//!     frame.iter_mut().enumerate().for_each(|(i, s)| *s = tone(f * 160 + i));
//!     plc.handle_frame(&mut frame);
//! }
//! // Frame 10 is lost: the tone goes on, fading.
//! let mut concealed = [0i16; 160];
//! plc.conceal(&mut concealed);
//! assert!(plc.is_concealing());
//! assert!((i32::from(concealed[0]) - i32::from(tone(1600))).abs() < 400);
//! // Frame 11 arrives; its first 4 ms are blended from the concealment.
//! frame.iter_mut().enumerate().for_each(|(i, s)| *s = tone(11 * 160 + i));
//! plc.handle_frame(&mut frame);
//! assert!(!plc.is_concealing());
//! ```

use core::time::Duration;

/// Q15 unity gain.
const ONE_Q15: i64 = 1 << 15;

/// Settings of one [`LossConcealer`].
///
/// [`LossConcealer::new`] repairs a zero sample rate to 8000 Hz and a zero
/// seed to a fixed non-zero one (xorshift cannot leave zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConcealerConfig {
    /// Sample rate of the PCM in Hz.
    pub sample_rate: u32,
    /// Time over which repeated audio fades into comfort noise.
    pub fade: Duration,
    /// Length of the blends: at each repetition and into resumed audio.
    pub crossfade: Duration,
    /// Seed of the comfort-noise generator.
    pub seed: u32,
}

impl Default for ConcealerConfig {
    /// 8 kHz, 60 ms fade, 4 ms crossfades.
    fn default() -> Self {
        ConcealerConfig {
            sample_rate: 8000,
            fade: Duration::from_millis(60),
            crossfade: Duration::from_millis(4),
            seed: 0x9E37_79B9,
        }
    }
}

/// State of an ongoing loss.
#[derive(Clone, Copy, Debug)]
struct Loss {
    /// Length of the repeated stretch (whole pitch periods) at the end of the history.
    template_len: usize,
    /// How many samples at its end are blended into what preceded its start.
    blend: usize,
    /// Position in the repeated stretch.
    pos: usize,
    /// Repetition gain, Q30, falling by `fade_step` per sample.
    gain_q30: i64,
    fade_step: i64,
    /// Amplitude of the uniform comfort noise (RMS = amplitude / √3).
    noise_amplitude: i64,
}

/// Packet-loss concealer keeping the last `HISTORY` samples played (640 =
/// 40 ms at 16 kHz or 80 ms at 8 kHz; the pitch search wants at least 30 ms).
/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct LossConcealer<const HISTORY: usize> {
    config: ConcealerConfig,
    /// Samples played, a ring whose oldest sample is at `head` (the next
    /// write goes there); the valid ones are the last `history_len`.
    /// [`Self::linearize`] puts it in order (oldest first, `head` 0) before
    /// a loss reads it: frames arrive every 20 ms and losses are rare, so a
    /// frame costs a copy of itself rather than a shift of the whole history.
    history: [i16; HISTORY],
    head: usize,
    history_len: usize,
    /// Short-term mean square of the audio, Q8; `None` before the first frame.
    level_q8: Option<u64>,
    /// Background (minimum) mean square, Q8.
    floor_q8: u64,
    rng: u32,
    loss: Option<Loss>,
    fade_samples: usize,
    crossfade_samples: usize,
}

impl<const HISTORY: usize> LossConcealer<HISTORY> {
    /// A concealer that has heard nothing yet (so conceals with silence).
    #[must_use]
    pub fn new(config: ConcealerConfig) -> Self {
        let sample_rate = if config.sample_rate == 0 { 8000 } else { config.sample_rate };
        let seed = if config.seed == 0 { ConcealerConfig::default().seed } else { config.seed };
        let config = ConcealerConfig { sample_rate, seed, ..config };
        LossConcealer {
            config,
            history: [0; HISTORY],
            head: 0,
            history_len: 0,
            level_q8: None,
            floor_q8: 0,
            rng: seed,
            loss: None,
            fade_samples: samples_in(config.fade, sample_rate),
            crossfade_samples: samples_in(config.crossfade, sample_rate),
        }
    }

    /// The settings in force (after repair, see [`ConcealerConfig`]).
    #[must_use]
    pub fn config(&self) -> &ConcealerConfig {
        &self.config
    }

    /// Whether the last thing produced was concealment (the next real frame
    /// will be crossfaded).
    #[must_use]
    pub fn is_concealing(&self) -> bool {
        self.loss.is_some()
    }

    /// The background level measured so far, as an RMS sample value.
    #[must_use]
    pub fn background_rms(&self) -> u32 {
        (self.floor_q8.isqrt() >> 4) as u32
    }

    /// A real frame about to be played. After a loss, its start is blended
    /// in place from the concealment; play `frame` as it is afterwards.
    /// An empty frame changes nothing.
    pub fn handle_frame(&mut self, frame: &mut [i16]) {
        if frame.is_empty() {
            return;
        }
        if self.loss.is_some() {
            self.linearize();
        }
        if let Some(loss) = self.loss.as_mut() {
            let history = &self.history[HISTORY - self.history_len..];
            let n = self.crossfade_samples.min(frame.len());
            let steps = n as i64 + 1;
            for (j, sample) in frame.iter_mut().take(n).enumerate() {
                let concealed = i64::from(loss.next_sample(history, &mut self.rng));
                let w = (j as i64 + 1) * ONE_Q15 / steps;
                *sample = saturate((concealed * (ONE_Q15 - w) + i64::from(*sample) * w) >> 15);
            }
            self.loss = None;
        }
        self.track_level(frame);
        self.remember(frame);
    }

    /// Fills `out` with concealment for a lost frame of `out.len()` samples.
    /// Consecutive calls continue the same loss.
    pub fn conceal(&mut self, out: &mut [i16]) {
        if out.is_empty() {
            return;
        }
        self.linearize();
        if self.loss.is_none() {
            self.loss = Some(self.start_loss());
        }
        let Some(loss) = self.loss.as_mut() else { return };
        let history = &self.history[HISTORY - self.history_len..];
        for sample in out.iter_mut() {
            *sample = loss.next_sample(history, &mut self.rng);
        }
    }

    /// Appends a frame to the history, keeping the last `HISTORY` samples.
    fn remember(&mut self, frame: &[i16]) {
        let n = frame.len();
        if n >= HISTORY {
            self.history.copy_from_slice(&frame[n - HISTORY..]);
            self.head = 0;
        } else {
            // Up to the ring's end, then the rest from its start.
            let first = n.min(HISTORY - self.head);
            self.history[self.head..self.head + first].copy_from_slice(&frame[..first]);
            self.history[..n - first].copy_from_slice(&frame[first..]);
            self.head = (self.head + n) % HISTORY;
        }
        self.history_len = self.history_len.saturating_add(n).min(HISTORY);
    }

    /// Puts the history in order, oldest first, as a loss reads it.
    fn linearize(&mut self) {
        if self.head != 0 {
            self.history.rotate_left(self.head);
            self.head = 0;
        }
    }

    fn samples_per_20ms(&self) -> u64 {
        u64::from(self.config.sample_rate / 50).max(1)
    }

    /// Updates the short-term level and the background floor with a frame.
    fn track_level(&mut self, frame: &[i16]) {
        let n = frame.len() as u64;
        let sum: u128 = frame.iter().map(|&s| (i64::from(s) * i64::from(s)) as u128).sum();
        let energy_q8 = ((sum << 8) / u128::from(n)) as u64;
        let per_20ms = self.samples_per_20ms();
        let level = match self.level_q8 {
            None => {
                self.floor_q8 = energy_q8;
                energy_q8
            }
            // One-pole smoothing, half way to the new energy per 20 ms: enough
            // to steady white noise, quick enough to fall back to the
            // background within a pause after loud speech.
            Some(level) => {
                let weight = i128::from(n);
                let total = weight + i128::from(per_20ms);
                let moved = (i128::from(energy_q8) - i128::from(level)) * weight / total;
                (i128::from(level) + moved) as u64
            }
        };
        self.level_q8 = Some(level);
        if level <= self.floor_q8 {
            self.floor_q8 = level;
        } else {
            // Rise by 1/128 plus one unit of mean square per 20 ms (≈ 1.7 dB/s;
            // the unit lets a floor of exact zero recover).
            let rise = (self.floor_q8 / 128 + 256).saturating_mul(n) / per_20ms;
            self.floor_q8 = self.floor_q8.saturating_add(rise).min(level);
        }
    }

    fn valid_history(&self) -> &[i16] {
        &self.history[HISTORY - self.history_len..]
    }

    /// The pitch period of the end of the history: the lag in 2.5–15 ms with
    /// the highest normalised autocorrelation. `None` if the history is too
    /// short or nothing correlates positively.
    fn pitch_period(&self) -> Option<usize> {
        let h = self.valid_history();
        let rate = self.config.sample_rate as usize;
        let min_lag = (rate / 400).max(1);
        let max_lag = (rate / 66).min(h.len() / 2);
        if max_lag < min_lag {
            return None;
        }
        let end = h.len();
        let window = &h[end - max_lag..];
        let square = |x: i16| i64::from(i32::from(x) * i32::from(x));
        // Energy of the lagged window, slid along with the lag.
        let mut energy: i64 = h[end - max_lag - min_lag..end - min_lag].iter().map(|&y| square(y)).sum();
        // Best (corr, energy of the lagged window) so far, compared as
        // corr²/energy without division: a² · e_b > b² · e_a.
        let mut best: Option<(usize, i128, i128)> = None;
        for lag in min_lag..=max_lag {
            if lag > min_lag {
                energy += square(h[end - max_lag - lag]) - square(h[end - lag]);
            }
            let lagged = &h[end - max_lag - lag..end - lag];
            let corr: i64 =
                window.iter().zip(lagged).map(|(&x, &y)| i64::from(i32::from(x) * i32::from(y))).sum();
            if corr <= 0 || energy <= 0 {
                continue;
            }
            let (corr, energy) = (i128::from(corr), i128::from(energy));
            if best.is_none_or(|(_, bc, be)| corr * corr * be > bc * bc * energy) {
                best = Some((lag, corr, energy));
            }
        }
        best.map(|(lag, _, _)| lag)
    }

    fn start_loss(&mut self) -> Loss {
        let len = self.history_len;
        let (template_len, blend) = match self.pitch_period() {
            Some(period) => {
                let blend = self.crossfade_samples.min(period);
                // Whole periods, at most 20 ms of them, leaving room for the blend.
                let span = (len - blend).min(self.samples_per_20ms() as usize).max(period);
                (span / period * period, blend)
            }
            // Too little history to find a period: repeat what there is.
            None => (len, 0),
        };
        // A fade longer than 2^30 samples (hours) never gets a step: no fade at all.
        let fade_step = match i64::try_from(self.fade_samples) {
            Ok(0) => 1 << 30,
            Ok(samples) => (1i64 << 30) / samples,
            Err(_) => 0,
        };
        // Uniform noise in [-a, a] has mean square a²/3.
        let noise_amplitude = (self.floor_q8.saturating_mul(3).isqrt() >> 4) as i64;
        Loss { template_len, blend, pos: 0, gain_q30: 1 << 30, fade_step, noise_amplitude }
    }
}

impl Loss {
    /// The next concealed sample, from the `history` it was started on.
    fn next_sample(&mut self, history: &[i16], rng: &mut u32) -> i16 {
        let repeated = if self.gain_q30 > 0 { self.template_sample(history) } else { 0 };
        let g = self.gain_q30 >> 15;
        let noise_gain = ONE_Q15 - ((g * g) >> 15);
        let noise = if self.noise_amplitude > 0 { (next_noise(rng) * self.noise_amplitude) >> 15 } else { 0 };
        self.pos += 1;
        if self.pos >= self.template_len {
            self.pos = 0;
        }
        self.gain_q30 = (self.gain_q30 - self.fade_step).max(0);
        saturate((repeated * g + noise * noise_gain) >> 15)
    }

    /// The repeated stretch at the current position.
    fn template_sample(&self, history: &[i16]) -> i64 {
        let (t, b, j) = (self.template_len, self.blend, self.pos);
        // `start_loss` chose `t + b <= history.len()`.
        let Some(start) = history.len().checked_sub(t).filter(|&start| t > 0 && start >= b) else {
            return 0;
        };
        let sample = i64::from(history[start + j]);
        if j + b < t {
            return sample;
        }
        // The last `b` samples slide into the `b` samples before the start,
        // whose continuation is the start itself.
        let k = j + b - t;
        let w = (k as i64 + 1) * ONE_Q15 / (b as i64 + 1);
        let before = i64::from(history[start - b + k]);
        (sample * (ONE_Q15 - w) + before * w) >> 15
    }
}

/// xorshift32 (Marsaglia), full period over non-zero states; a uniform
/// sample in [-32768, 32767].
fn next_noise(rng: &mut u32) -> i64 {
    let mut x = *rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *rng = x;
    i64::from(x >> 16) - 32_768
}

fn samples_in(d: Duration, sample_rate: u32) -> usize {
    let samples = d.as_nanos().saturating_mul(u128::from(sample_rate)) / 1_000_000_000;
    usize::try_from(samples).unwrap_or(usize::MAX)
}

fn saturate(x: i64) -> i16 {
    x.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    type Plc = LossConcealer<640>;

    proptest! {
        /// The ring holds, in order once linearized, the last samples of
        /// every frame played, whatever the frames' lengths.
        #[test]
        fn the_history_ring_keeps_the_last_samples_in_order(
            lengths in proptest::collection::vec(0usize..900, 1..12),
        ) {
            let mut plc = LossConcealer::<64>::new(ConcealerConfig::default());
            let mut played: Vec<i16> = Vec::new();
            for (i, &n) in lengths.iter().enumerate() {
                let frame: Vec<i16> = (0..n).map(|k| (i * 1000 + k) as i16).collect();
                let mut copy = frame.clone();
                plc.handle_frame(&mut copy);
                played.extend_from_slice(&frame);
            }
            plc.linearize();
            let kept = played.len().min(64);
            prop_assert_eq!(plc.history_len, kept);
            prop_assert_eq!(plc.valid_history(), &played[played.len() - kept..]);
        }
    }

    fn tone(freq: f64, amplitude: f64, n: usize) -> i16 {
        (amplitude * (n as f64 * freq / 8000.0 * core::f64::consts::TAU).sin()).round() as i16
    }

    /// Uniform white noise in [-amplitude, amplitude] from a 64-bit LCG
    /// (independent of the concealer's own generator).
    struct TestNoise(u64);

    impl TestNoise {
        fn next(&mut self, amplitude: f64) -> i16 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            (unit * amplitude).round() as i16
        }
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / x.len() as f64).sqrt()
    }

    fn energy(x: &[i16]) -> f64 {
        x.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>()
    }

    /// Feeds `signal` in frames of `frame` samples.
    fn feed(plc: &mut Plc, signal: &[i16], frame: usize) {
        for chunk in signal.chunks(frame) {
            plc.handle_frame(&mut chunk.to_vec());
        }
    }

    fn conceal(plc: &mut Plc, n: usize) -> Vec<i16> {
        let mut out = std::vec![0; n];
        plc.conceal(&mut out);
        out
    }

    #[test]
    fn a_periodic_signal_is_continued_and_faded() {
        let mut plc = Plc::new(ConcealerConfig::default());
        feed(&mut plc, &[0; 4000], 160);
        // 250 Hz: exactly 32 samples per period, so repetition is exact.
        let signal: Vec<i16> = (0..1600).map(|n| tone(250.0, 8000.0, n)).collect();
        feed(&mut plc, &signal, 160);
        let out = conceal(&mut plc, 160);
        // Ten 20 ms frames raised the floor from 0 by one unit of mean square
        // each: comfort noise of at most √30 ≈ 5.5, plus rounding.
        for (n, &y) in out.iter().enumerate() {
            let gain = 1.0 - n as f64 / 480.0;
            let expected = gain * f64::from(tone(250.0, 8000.0, 1600 + n));
            assert!((f64::from(y) - expected).abs() <= 8.0, "sample {n}: {y} vs {expected}");
        }
    }

    #[test]
    fn energy_decays_monotonically_over_the_fade() {
        let mut plc = Plc::new(ConcealerConfig::default());
        let mut noise = TestNoise(7);
        let background: Vec<i16> = (0..4000).map(|_| noise.next(170.0)).collect();
        feed(&mut plc, &background, 160);
        let signal: Vec<i16> = (0..1600).map(|n| tone(440.0, 10_000.0, n)).collect();
        feed(&mut plc, &signal, 160);
        // 10 ms blocks: six over the 60 ms fade, then comfort noise.
        let blocks: Vec<f64> = (0..12).map(|_| energy(&conceal(&mut plc, 80))).collect();
        for (i, pair) in blocks[..7].windows(2).enumerate() {
            assert!(pair[1] < pair[0], "block {} energy {} after {}", i + 1, pair[1], pair[0]);
        }
        assert!(blocks[0] > 0.5 * energy(&signal[..80]), "the first block is mostly repetition");
    }

    #[test]
    fn comfort_noise_tracks_the_background_through_speech() {
        let mut plc = Plc::new(ConcealerConfig::default());
        let mut noise = TestNoise(42);
        let mut signal = Vec::new();
        let mut noise_only = Vec::new();
        // 3 s: noise throughout, a loud tone on top for 200 ms of every 600 ms.
        for n in 0..24_000 {
            let bg = noise.next(1_200.0);
            noise_only.push(bg);
            let talking = n % 4_800 >= 3_200;
            signal.push(if talking { bg.saturating_add(tone(300.0, 12_000.0, n)) } else { bg });
        }
        feed(&mut plc, &signal, 160);
        let out = conceal(&mut plc, 2_400);
        let expected = rms(&noise_only);
        let measured = rms(&out[800..]);
        assert!((measured / expected - 1.0).abs() < 0.2, "comfort noise {measured} vs background {expected}");
        assert!((f64::from(plc.background_rms()) / expected - 1.0).abs() < 0.2);
    }

    #[test]
    fn background_follows_a_falling_level_at_once_and_a_rising_one_slowly() {
        let mut plc = Plc::new(ConcealerConfig::default());
        let mut noise = TestNoise(3);
        let loud: Vec<i16> = (0..8_000).map(|_| noise.next(3_400.0)).collect();
        let quiet: Vec<i16> = (0..8_000).map(|_| noise.next(340.0)).collect();
        feed(&mut plc, &loud, 160);
        feed(&mut plc, &quiet, 160);
        let ratio = f64::from(plc.background_rms()) / rms(&quiet);
        assert!((ratio - 1.0).abs() < 0.2, "after the drop: {ratio}");
        // +20 dB of energy at (1 + 1/128)^50 per second (1.69 dB/s) takes
        // about 12 s; after 4 s the floor is still well below the new level.
        let louder: Vec<i16> = (0..32_000).map(|_| noise.next(3_400.0)).collect();
        feed(&mut plc, &louder, 160);
        assert!(f64::from(plc.background_rms()) < 0.5 * rms(&louder));
        let louder: Vec<i16> = (0..96_000).map(|_| noise.next(3_400.0)).collect();
        feed(&mut plc, &louder, 160);
        let ratio = f64::from(plc.background_rms()) / rms(&louder);
        assert!((ratio - 1.0).abs() < 0.2, "after 16 s: {ratio}");
    }

    #[test]
    fn no_clicks_at_frame_boundaries_for_a_sine() {
        const A: f64 = 10_000.0;
        const F: f64 = 440.0;
        // The steepest step of the sine itself, plus what a crossfade of
        // 4 ms (32 samples) can add when bridging two values at most 2A apart,
        // plus comfort noise (floor ≤ 0.5 s of rises: amplitude ≤ √(3·25) < 9).
        let natural = 2.0 * A * (core::f64::consts::PI * F / 8000.0).sin();
        let bound = natural + 2.0 * A / 33.0 + 18.0;
        for frame in [160usize, 80, 137, 320] {
            let mut plc = Plc::new(ConcealerConfig::default());
            feed(&mut plc, &[0; 4000], frame);
            let mut out: Vec<i16> = Vec::new();
            let mut n = 0;
            // Real, lost, real, lost, real: the sine keeps its phase in real time.
            for (lost, frames) in [(false, 15), (true, 3), (false, 3), (true, 1), (false, 3)] {
                for _ in 0..frames {
                    let mut buf: Vec<i16> = (n..n + frame).map(|i| tone(F, A, i)).collect();
                    if lost {
                        plc.conceal(&mut buf);
                    } else {
                        plc.handle_frame(&mut buf);
                    }
                    out.extend_from_slice(&buf);
                    n += frame;
                }
            }
            let worst = out.windows(2).map(|w| (f64::from(w[1]) - f64::from(w[0])).abs()).fold(0.0, f64::max);
            assert!(worst <= bound, "frame {frame}: step {worst} > {bound}");
        }
    }

    #[test]
    fn resumed_audio_is_crossfaded_from_the_concealment() {
        let mut plc = Plc::new(ConcealerConfig::default());
        feed(&mut plc, &[0; 1600], 160);
        feed(&mut plc, &[1000; 320], 160);
        let _ = conceal(&mut plc, 800); // long past the fade: the floor is tiny
        let mut frame = [4000i16; 160];
        plc.handle_frame(&mut frame);
        // From ≈ 0 to 4000 over 32 samples, then untouched.
        assert!(frame[0] < 400, "{}", frame[0]);
        assert!(frame.windows(2).take(32).all(|w| w[1] >= w[0] - 20));
        assert!(frame[32..].iter().all(|&s| s == 4000));
        let mut next = [4000i16; 160];
        plc.handle_frame(&mut next);
        assert!(next.iter().all(|&s| s == 4000), "only the first frame is touched");
    }

    #[test]
    fn silence_in_silence_out() {
        let mut plc = Plc::new(ConcealerConfig::default());
        assert!(conceal(&mut plc, 160).iter().all(|&s| s == 0), "nothing heard yet");
        feed(&mut plc, &[0; 8000], 160);
        assert!(conceal(&mut plc, 4000).iter().all(|&s| s == 0));
        let mut frame = [0i16; 160];
        plc.handle_frame(&mut frame);
        assert!(frame.iter().all(|&s| s == 0));
        assert_eq!(plc.background_rms(), 0);
    }

    #[test]
    fn noise_is_deterministic_per_seed() {
        let run = |seed: u32| {
            let mut plc = Plc::new(ConcealerConfig { seed, ..ConcealerConfig::default() });
            let mut noise = TestNoise(1);
            let bg: Vec<i16> = (0..8000).map(|_| noise.next(500.0)).collect();
            feed(&mut plc, &bg, 160);
            conceal(&mut plc, 1600)
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5)[800..], run(6)[800..]);
    }

    #[test]
    fn nonsense_config_is_repaired() {
        let plc = Plc::new(ConcealerConfig { sample_rate: 0, seed: 0, ..ConcealerConfig::default() });
        assert_eq!(plc.config().sample_rate, 8000);
        assert_ne!(plc.config().seed, 0);
    }

    fn run_ops<const H: usize>(config: ConcealerConfig, ops: &[(bool, usize, i16, u8)]) {
        let mut plc: LossConcealer<H> = LossConcealer::new(config);
        for &(lost, len, amplitude, step) in ops {
            let mut buf: Vec<i16> = (0..len)
                .map(|i| {
                    if (i / usize::from(step.max(1))) % 2 == 0 {
                        amplitude
                    } else {
                        amplitude.saturating_neg()
                    }
                })
                .collect();
            if lost {
                plc.conceal(&mut buf);
                assert_eq!(plc.is_concealing(), len > 0 || plc.is_concealing());
            } else {
                plc.handle_frame(&mut buf);
                if len > 0 {
                    assert!(!plc.is_concealing());
                }
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_frame_sizes_never_panic(
            rate in prop_oneof![Just(0u32), Just(8000), Just(16_000), Just(48_000), 1u32..200],
            fade_ms in 0u64..200,
            crossfade_ms in prop_oneof![Just(0u64), 1u64..10, Just(u64::MAX / 1_000_000)],
            ops in proptest::collection::vec((any::<bool>(), 0usize..1_500, any::<i16>(), any::<u8>()), 0..40),
        ) {
            let config = ConcealerConfig {
                sample_rate: rate,
                fade: Duration::from_millis(fade_ms),
                crossfade: Duration::from_millis(crossfade_ms),
                seed: 1,
            };
            run_ops::<640>(config, &ops);
            run_ops::<7>(config, &ops);
            run_ops::<0>(config, &ops);
        }
    }
}
