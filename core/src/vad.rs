//! Voice activity detection for 8 kHz telephone speech, and talkspurts.
//!
//! Two pieces, used one after the other:
//!
//! - [`Vad`] classifies each 10 ms (80 samples) or 20 ms (160 samples) frame
//!   of 8 kHz PCM as speech or not. Call [`Vad::classify`] for every frame, in
//!   order, with no gaps (it tracks the background noise across frames); a
//!   frame of any other length is an error and leaves the state untouched.
//! - [`TalkspurtDetector`] turns those per-frame decisions into
//!   [`TalkspurtEvent::SpeechStart`] / [`TalkspurtEvent::SpeechEnd`] with an
//!   onset rule (N speech frames in a window of W) and a hangover (M non-speech
//!   frames end a talkspurt). Feed it with
//!   [`TalkspurtDetector::handle_frame`], then drain
//!   [`TalkspurtDetector::poll_event`] until it returns `None`.
//!
//! ```
//! use core::time::Duration;
//! use voxproxy_core::time::Instant;
//! use voxproxy_core::vad::{
//!     TalkspurtConfig, TalkspurtDetector, TalkspurtEvent, Vad, VadConfig, VadMode,
//! };
//!
//! let mut vad = Vad::new(VadConfig { mode: VadMode::Aggressive });
//! let mut spurts = TalkspurtDetector::new(TalkspurtConfig::default(), Instant::ZERO).unwrap();
//! // One second of a 150 Hz buzz with harmonics between two seconds of silence.
//! let mut events = Vec::new();
//! for i in 0..250u64 {
//!     let mut frame = [0i16; 160];
//!     if (100..150).contains(&i) {
//!         for (n, s) in frame.iter_mut().enumerate() {
//!             let t = (i * 160 + n as u64) % 160; // 20 ms holds exactly three periods
//!             let phase = t as f32 / 160.0 * 3.0;
//!             let saw = 2.0 * (phase - (phase as u32) as f32) - 1.0;
//!             *s = (saw * 3000.0) as i16;
//!         }
//!     }
//!     let now = Instant::ZERO + Duration::from_millis(20 * i);
//!     let speech = vad.classify(&frame).unwrap();
//!     spurts.handle_frame(now, speech);
//!     while let Some(event) = spurts.poll_event() {
//!         events.push(event);
//!     }
//! }
//! assert!(matches!(events[0], TalkspurtEvent::SpeechStart { at } if at >= Instant::from_millis(1_960)));
//! assert!(matches!(events[1], TalkspurtEvent::SpeechEnd { at } if at >= Instant::from_millis(3_000)));
//! assert_eq!(events.len(), 2);
//! ```
//!
//! ## How [`Vad`] decides
//!
//! Every 10 ms block is split by a tree of half-band filters into six bands
//! (0–250, 250–500, 500–1000, 1000–2000, 2000–3000, 3000–4000 Hz). Each band's
//! noise floor is tracked by minimum statistics (the minimum of the smoothed
//! band power over the last 1.6 s), which follows stationary noise without
//! needing to know where speech is. The 0–1 kHz band, already decimated to
//! 2 kHz by the tree, is searched every 20 ms for periodicity (normalized
//! autocorrelation over pitch lags of 2.5–16 ms), which separates voiced
//! speech from noise of the same level and spectrum. Band SNRs, levels,
//! periodicity and a little temporal context feed a small neural network
//! (weights in `vad/model.rs`, trained on synthetic telephone speech by
//! `vad-eval/train.py`); its score is compared against a per-mode threshold
//! and followed by a per-mode hangover.
//!
//! Everything is `f32` arithmetic without `libm` (logarithms are a bit-level
//! approximation) and costs well under a microsecond per 20 ms frame.

use core::fmt;

use crate::time::Instant;

mod model;

/// The only sample rate [`Vad`] supports.
pub const SAMPLE_RATE_HZ: u32 = 8_000;
/// Samples in a 10 ms frame at 8 kHz.
pub const FRAME_10MS: usize = 80;
/// Samples in a 20 ms frame at 8 kHz.
pub const FRAME_20MS: usize = 160;

/// Errors of the VAD subsystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VadError {
    /// A frame handed to [`Vad::classify`] was neither 80 nor 160 samples long.
    FrameLength {
        /// The length that was passed.
        len: usize,
    },
    /// An aggressiveness mode outside 0..=3.
    Mode {
        /// The value that was passed.
        value: u8,
    },
    /// [`TalkspurtConfig::onset_window`] was 0 or larger than
    /// [`TalkspurtConfig::MAX_ONSET_WINDOW`].
    OnsetWindow {
        /// The window that was configured.
        window: u8,
    },
    /// [`TalkspurtConfig::onset_frames`] was 0 or larger than the onset window.
    OnsetFrames {
        /// The frame count that was configured.
        frames: u8,
        /// The onset window it must fit in.
        window: u8,
    },
    /// [`TalkspurtConfig::hangover_frames`] was 0.
    HangoverFrames,
}

impl fmt::Display for VadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VadError::FrameLength { len } => write!(
                f,
                "VAD frame has {len} samples; it must be {FRAME_10MS} (10 ms) or {FRAME_20MS} (20 ms) at 8 kHz"
            ),
            VadError::Mode { value } => {
                write!(f, "VAD mode {value} does not exist; use 0 (permissive) to 3 (aggressive)")
            }
            VadError::OnsetWindow { window } => write!(
                f,
                "talkspurt onset window of {window} frames is out of range 1..={}",
                TalkspurtConfig::MAX_ONSET_WINDOW
            ),
            VadError::OnsetFrames { frames, window } => write!(
                f,
                "talkspurt onset needs {frames} speech frames but the window holds only {window} (use 1..={window})"
            ),
            VadError::HangoverFrames => {
                write!(f, "talkspurt hangover must be at least 1 frame")
            }
        }
    }
}

impl core::error::Error for VadError {}

/// How eager [`Vad`] is to call a frame speech, as in WebRTC's VAD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum VadMode {
    /// Mode 0: misses the least speech; lets the most noise through.
    Quality,
    /// Mode 1.
    LowBitrate,
    /// Mode 2: the best balance on the evaluation set (`vad-eval/RESULTS.md`).
    #[default]
    Aggressive,
    /// Mode 3: rejects the most noise; clips the most weak speech.
    VeryAggressive,
}

impl VadMode {
    /// All modes, from the most permissive to the most aggressive.
    pub const ALL: [VadMode; 4] =
        [VadMode::Quality, VadMode::LowBitrate, VadMode::Aggressive, VadMode::VeryAggressive];

    /// The mode's number, 0 (permissive) to 3 (aggressive).
    #[must_use]
    pub const fn level(self) -> u8 {
        match self {
            VadMode::Quality => 0,
            VadMode::LowBitrate => 1,
            VadMode::Aggressive => 2,
            VadMode::VeryAggressive => 3,
        }
    }
}

impl TryFrom<u8> for VadMode {
    type Error = VadError;

    fn try_from(value: u8) -> Result<Self, VadError> {
        match value {
            0 => Ok(VadMode::Quality),
            1 => Ok(VadMode::LowBitrate),
            2 => Ok(VadMode::Aggressive),
            3 => Ok(VadMode::VeryAggressive),
            _ => Err(VadError::Mode { value }),
        }
    }
}

/// Settings of one [`Vad`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VadConfig {
    /// Aggressiveness.
    pub mode: VadMode,
}

/// Samples per analysis block (10 ms); a 20 ms frame is two blocks.
const BLOCK: usize = FRAME_10MS;
/// Half the taps of the half-band filters, minus the centre: the history each needs.
const SPLIT_HISTORY: usize = 10;
/// Sub-bands of the filter-bank tree.
const BANDS: usize = 6;
/// Samples each band produces per block (0–250 Hz first).
const BAND_SAMPLES: [usize; BANDS] = [5, 5, 10, 20, 20, 20];
/// Samples of the 0–1 kHz band (at 2 kHz) per block.
const LOWBAND: usize = 20;
/// Periodicity window (20 ms at 2 kHz) and the pitch lags searched (2.5–16 ms).
const PITCH_WINDOW: usize = 40;
const PITCH_MIN_LAG: usize = 5;
const PITCH_MAX_LAG: usize = 32;
const PITCH_BUFFER: usize = PITCH_WINDOW + PITCH_MAX_LAG;

/// Number of features the model sees per block.
pub const FEATURES: usize = 16;

/// What each entry of [`Vad::features`] means (for diagnostics and retraining).
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "snr_0_250",
    "snr_250_500",
    "snr_500_1k",
    "snr_1k_2k",
    "snr_2k_3k",
    "snr_3k_4k",
    "snr_total",
    "level",
    "noise_level",
    "periodicity",
    "periodicity_prev",
    "snr_total_prev1",
    "snr_total_prev2",
    "snr_total_slow",
    "snr_total_peak",
    "lag_stability",
];

/// One voice activity detector: 8 kHz, 10 or 20 ms frames. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Vad {
    mode: VadMode,
    bank: FilterBank,
    floors: [NoiseFloor; BANDS + 1],
    pitch: Periodicity,
    context: Context,
    decider: Decider,
    features: [f32; FEATURES],
    score: f32,
    hangover: u16,
    blocks: u64,
}

impl Vad {
    /// A detector that has heard nothing yet.
    #[must_use]
    pub fn new(config: VadConfig) -> Self {
        Vad {
            mode: config.mode,
            bank: FilterBank::default(),
            floors: [NoiseFloor::default(); BANDS + 1],
            pitch: Periodicity::default(),
            context: Context::default(),
            decider: Decider::default(),
            features: [0.0; FEATURES],
            score: f32::NEG_INFINITY,
            hangover: 0,
            blocks: 0,
        }
    }

    /// The aggressiveness this detector runs with.
    #[must_use]
    pub fn mode(&self) -> VadMode {
        self.mode
    }

    /// Changes the aggressiveness from the next frame on; the noise estimates are kept.
    pub fn set_mode(&mut self, mode: VadMode) {
        self.mode = mode;
    }

    /// Classifies the next frame of the stream: `true` for speech.
    ///
    /// `frame` is 80 samples (10 ms) or 160 samples (20 ms) of 8 kHz PCM. A
    /// 20 ms frame is speech when either of its 10 ms halves is, so both frame
    /// sizes give the same decisions on the same audio.
    ///
    /// # Errors
    ///
    /// [`VadError::FrameLength`] for any other length; the detector's state is
    /// then unchanged.
    pub fn classify(&mut self, frame: &[i16]) -> Result<bool, VadError> {
        if frame.len() != FRAME_10MS && frame.len() != FRAME_20MS {
            return Err(VadError::FrameLength { len: frame.len() });
        }
        let mut speech = false;
        for block in frame.chunks_exact(BLOCK) {
            speech |= self.process_block(block);
        }
        Ok(speech)
    }

    /// The model's speech score for the last 10 ms block (a logit: above the
    /// mode's threshold means speech, before hangover).
    #[must_use]
    pub fn score(&self) -> f32 {
        self.score
    }

    /// The features of the last 10 ms block, named by [`FEATURE_NAMES`].
    ///
    /// For diagnostics and for retraining the model (`vad-eval/train.py`
    /// reads them through the `vad_features` example of the `voxproxy` crate).
    #[must_use]
    pub fn features(&self) -> &[f32; FEATURES] {
        &self.features
    }

    fn process_block(&mut self, block: &[i16]) -> bool {
        let mut x = [0.0f32; BLOCK];
        let mut total = 0.0f32;
        for (dst, &s) in x.iter_mut().zip(block) {
            let v = f32::from(s);
            *dst = v;
            total += v * v;
        }
        let mut low = [0.0f32; LOWBAND];
        let bands = self.bank.analyse(&x, &mut low);
        let new_period = self.blocks % 2 == 1;
        self.pitch.push(&low);
        if new_period {
            self.pitch.analyse();
        }
        self.blocks = self.blocks.wrapping_add(1);

        let mut f = [0.0f32; FEATURES];
        for b in 0..BANDS {
            let power = bands[b] / BAND_SAMPLES[b] as f32;
            let (level, noise) = self.floors[b].update(power);
            f[b] = (level - noise).clamp(-4.0, 16.0);
        }
        let (level, noise) = self.floors[BANDS].update(total / BLOCK as f32);
        let snr = (level - noise).clamp(-4.0, 16.0);
        f[6] = snr;
        f[7] = (level - FULL_SCALE_LOG2).clamp(-30.0, 0.0);
        f[8] = (noise - FULL_SCALE_LOG2).clamp(-30.0, 0.0);
        f[9] = self.pitch.current;
        f[10] = self.pitch.previous;
        self.context.update(snr, new_period, &self.pitch, &mut f);
        self.features = f;

        let m = usize::from(self.mode.level());
        self.score = self.decider.score(&f);
        if self.score > model::THRESHOLD[m] {
            self.hangover = model::HANGOVER_BLOCKS[m];
            true
        } else if self.hangover > 0 {
            self.hangover -= 1;
            true
        } else {
            false
        }
    }
}

/// log2 of the mean square of a full-scale square wave in i16 units (2^15 squared).
const FULL_SCALE_LOG2: f32 = 30.0;

/// log2(x) for x > 0 to within 0.01, from the float's exponent and a
/// quadratic on its mantissa (core has no `log2` without `std`).
#[must_use]
fn log2(x: f32) -> f32 {
    // The smallest power we ever see is a block of digital silence plus the
    // floor below; anything lower (or NaN-free zero) clamps there.
    let x = x.max(1e-3);
    let bits = x.to_bits();
    let exponent = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    exponent as f32 + (-0.344_845 * m + 2.024_658) * m - 1.674_877
}

/// Tree of half-band splits: 8 kHz → 6 bands, plus the 0–1 kHz band at 2 kHz.
#[derive(Clone, Debug, Default)]
struct FilterBank {
    top: HalfBand,
    low: HalfBand,
    high: HalfBand,
    low_low: HalfBand,
    bottom: HalfBand,
}

impl FilterBank {
    /// Splits one block; returns the six band energies (sum of squares) and
    /// writes the 0–1 kHz band at 2 kHz into `lowband`.
    fn analyse(&mut self, x: &[f32; BLOCK], lowband: &mut [f32; LOWBAND]) -> [f32; BANDS] {
        let mut l0 = [0.0f32; BLOCK / 2];
        let mut h0 = [0.0f32; BLOCK / 2];
        self.top.split(x, &mut l0, &mut h0);
        // 0–2 kHz → 0–1 kHz (kept for the pitch search) and 1–2 kHz.
        let mut l1h = [0.0f32; BLOCK / 4];
        self.low.split(&l0, lowband, &mut l1h);
        // 2–4 kHz arrives spectrally inverted: its low half is 3–4 kHz.
        let mut h1l = [0.0f32; BLOCK / 4];
        let mut h1h = [0.0f32; BLOCK / 4];
        self.high.split(&h0, &mut h1l, &mut h1h);
        let mut l2l = [0.0f32; BLOCK / 8];
        let mut l2h = [0.0f32; BLOCK / 8];
        self.low_low.split(lowband, &mut l2l, &mut l2h);
        let mut l3l = [0.0f32; BLOCK / 16];
        let mut l3h = [0.0f32; BLOCK / 16];
        self.bottom.split(&l2l, &mut l3l, &mut l3h);
        [energy(&l3l), energy(&l3h), energy(&l2h), energy(&l1h), energy(&h1h), energy(&h1l)]
    }
}

fn energy(x: &[f32]) -> f32 {
    x.iter().map(|v| v * v).sum()
}

/// One decimating half-band split (11 taps, Kaiser-windowed sinc): low and
/// complementary high band, each at half the input rate.
#[derive(Clone, Copy, Debug, Default)]
struct HalfBand {
    history: [f32; SPLIT_HISTORY],
}

/// Odd-offset taps of the half-band low-pass (centre tap 0.5, even offsets zero).
const HALF_BAND_TAPS: [f32; 3] = [0.303_5, -0.066_4, 0.012_9];

impl HalfBand {
    /// `input.len()` must be `2 * low.len() == 2 * high.len()`, at most `BLOCK`.
    fn split(&mut self, input: &[f32], low: &mut [f32], high: &mut [f32]) {
        let mut ext = [0.0f32; SPLIT_HISTORY + BLOCK];
        let n = input.len().min(BLOCK);
        ext[..SPLIT_HISTORY].copy_from_slice(&self.history);
        ext[SPLIT_HISTORY..SPLIT_HISTORY + n].copy_from_slice(&input[..n]);
        for (i, (lo, hi)) in low.iter_mut().zip(high.iter_mut()).enumerate() {
            // Output at input time 2i+1; the centre tap sits 5 samples back,
            // in ext at 2i + 6.
            let c = 2 * i + 6;
            let centre = 0.5 * ext[c];
            let odd = HALF_BAND_TAPS[0] * (ext[c - 1] + ext[c + 1])
                + HALF_BAND_TAPS[1] * (ext[c - 3] + ext[c + 3])
                + HALF_BAND_TAPS[2] * (ext[c - 5] + ext[c + 5]);
            *lo = centre + odd;
            *hi = centre - odd;
        }
        self.history.copy_from_slice(&ext[n..n + SPLIT_HISTORY]);
    }
}

/// Sub-windows of the minimum-statistics search and their length in blocks:
/// the noise floor is the minimum over the last 8 × 20 blocks = 1.6 s.
const FLOOR_WINDOWS: usize = 8;
const FLOOR_WINDOW_BLOCKS: u8 = 20;
/// Smoothing of the power before the minimum is taken (per 10 ms block).
const FLOOR_SMOOTHING: f32 = 0.7;

/// Noise floor of one band by minimum statistics, in log2 units.
#[derive(Clone, Copy, Debug)]
struct NoiseFloor {
    smoothed: f32,
    current_min: f32,
    window_mins: [f32; FLOOR_WINDOWS],
    next_window: usize,
    blocks_in_window: u8,
    started: bool,
}

impl Default for NoiseFloor {
    fn default() -> Self {
        NoiseFloor {
            smoothed: 0.0,
            current_min: f32::MAX,
            window_mins: [f32::MAX; FLOOR_WINDOWS],
            next_window: 0,
            blocks_in_window: 0,
            started: false,
        }
    }
}

impl NoiseFloor {
    /// Takes one block's mean power; returns (log2 power, log2 noise floor).
    fn update(&mut self, power: f32) -> (f32, f32) {
        self.smoothed = if self.started {
            FLOOR_SMOOTHING * self.smoothed + (1.0 - FLOOR_SMOOTHING) * power
        } else {
            self.started = true;
            power
        };
        let smoothed = log2(self.smoothed);
        self.current_min = self.current_min.min(smoothed);
        self.blocks_in_window += 1;
        let mut floor = self.current_min;
        for &m in &self.window_mins {
            floor = floor.min(m);
        }
        if self.blocks_in_window >= FLOOR_WINDOW_BLOCKS {
            self.window_mins[self.next_window] = self.current_min;
            self.next_window = (self.next_window + 1) % FLOOR_WINDOWS;
            self.current_min = f32::MAX;
            self.blocks_in_window = 0;
        }
        (log2(power), floor)
    }
}

/// Periodicity of the 0–1 kHz band: the largest normalized autocorrelation
/// over pitch lags, on the first difference (which whitens low-frequency
/// noise such as brown noise, whose raw autocorrelation is high at every lag).
#[derive(Clone, Copy, Debug)]
struct Periodicity {
    buffer: [f32; PITCH_BUFFER],
    last_input: f32,
    current: f32,
    previous: f32,
    lag: usize,
    previous_lag: usize,
}

impl Default for Periodicity {
    fn default() -> Self {
        Periodicity {
            buffer: [0.0; PITCH_BUFFER],
            last_input: 0.0,
            current: 0.0,
            previous: 0.0,
            lag: 0,
            previous_lag: 0,
        }
    }
}

impl Periodicity {
    fn push(&mut self, lowband: &[f32; LOWBAND]) {
        self.buffer.copy_within(LOWBAND.., 0);
        let tail = &mut self.buffer[PITCH_BUFFER - LOWBAND..];
        let mut prev = self.last_input;
        for (dst, &v) in tail.iter_mut().zip(lowband) {
            *dst = v - prev;
            prev = v;
        }
        self.last_input = prev;
    }

    fn analyse(&mut self) {
        let window = &self.buffer[PITCH_MAX_LAG..];
        let e0 = dot(window, window);
        self.previous = self.current;
        self.previous_lag = self.lag;
        self.current = 0.0;
        self.lag = 0;
        if e0 <= 0.0 {
            return;
        }
        let first = &self.buffer[PITCH_MAX_LAG - PITCH_MIN_LAG..][..PITCH_WINDOW];
        let mut lagged_energy = dot(first, first);
        for lag in PITCH_MIN_LAG..=PITCH_MAX_LAG {
            let start = PITCH_MAX_LAG - lag;
            if lag > PITCH_MIN_LAG {
                // The lagged window moved one sample earlier.
                let entering = self.buffer[start];
                let leaving = self.buffer[start + PITCH_WINDOW];
                lagged_energy = (lagged_energy + entering * entering - leaving * leaving).max(0.0);
            }
            let r = dot(window, &self.buffer[start..start + PITCH_WINDOW]);
            if r > 0.0 && lagged_energy > 0.0 {
                let rho2 = r * r / (e0 * lagged_energy);
                if rho2 > self.current {
                    self.current = rho2.min(1.0);
                    self.lag = lag;
                }
            }
        }
    }
}

/// Dot product in eight independent lanes, so the compiler can vectorize it
/// (a single running sum pins float additions into one order).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        sum += x * y;
    }
    sum
}

/// Temporal context: recent and smoothed total SNR, pitch-lag stability.
#[derive(Clone, Copy, Debug, Default)]
struct Context {
    snr_prev1: f32,
    snr_prev2: f32,
    snr_slow: f32,
    snr_peak: f32,
    lag_stability: f32,
}

impl Context {
    fn update(&mut self, snr: f32, new_period: bool, pitch: &Periodicity, f: &mut [f32; FEATURES]) {
        f[11] = self.snr_prev1;
        f[12] = self.snr_prev2;
        self.snr_slow = 0.9 * self.snr_slow + 0.1 * snr;
        self.snr_peak = (self.snr_peak - 0.1).max(snr);
        f[13] = self.snr_slow;
        f[14] = self.snr_peak;
        if new_period {
            let close =
                pitch.lag != 0 && pitch.previous_lag != 0 && pitch.lag.abs_diff(pitch.previous_lag) <= 2;
            self.lag_stability = 0.5 * self.lag_stability + if close { 0.5 } else { 0.0 };
        }
        f[15] = self.lag_stability;
        self.snr_prev2 = self.snr_prev1;
        self.snr_prev1 = snr;
    }
}

/// One small network: standardize the inputs, one hidden ReLU layer, a
/// linear output (a logit). The weights live in `vad/model.rs`.
#[derive(Debug)]
struct Mlp<const IN: usize, const HIDDEN: usize> {
    mean: [f32; IN],
    inv_std: [f32; IN],
    /// Row per input, column per hidden unit.
    w1: [[f32; HIDDEN]; IN],
    b1: [f32; HIDDEN],
    w2: [f32; HIDDEN],
    b2: f32,
}

impl<const IN: usize, const HIDDEN: usize> Mlp<IN, HIDDEN> {
    fn score(&self, input: &[f32; IN]) -> f32 {
        let mut hidden = self.b1;
        for ((row, &v), (&mean, &inv_std)) in
            self.w1.iter().zip(input).zip(self.mean.iter().zip(&self.inv_std))
        {
            let x = (v - mean) * inv_std;
            for (h, w) in hidden.iter_mut().zip(row) {
                *h += w * x;
            }
        }
        let mut out = self.b2;
        for (h, w) in hidden.iter().zip(&self.w2) {
            out += h.max(0.0) * w;
        }
        out
    }
}

/// Stage-one scores remembered (400 ms).
const SCORE_HISTORY: usize = 40;
/// Score standing for "nothing heard yet" and the clamp on scores.
const SCORE_FLOOR: f32 = -10.0;

/// The two-stage decision: a per-block speech spotter, then a smoother over
/// its recent scores.
#[derive(Clone, Copy, Debug)]
struct Decider {
    /// Stage-one scores, newest at `(next + SCORE_HISTORY - 1) % SCORE_HISTORY`.
    history: [f32; SCORE_HISTORY],
    next: usize,
}

impl Default for Decider {
    fn default() -> Self {
        Decider { history: [SCORE_FLOOR; SCORE_HISTORY], next: 0 }
    }
}

impl Decider {
    /// Returns the final score of a block with features `f`.
    fn score(&mut self, f: &[f32; FEATURES]) -> f32 {
        let spot = model::SPOTTER.score(f).clamp(SCORE_FLOOR, -SCORE_FLOOR);
        self.history[self.next] = spot;
        self.next = (self.next + 1) % SCORE_HISTORY;
        // ago(k): the score k blocks before this one.
        let ago = |k: usize| self.history[(self.next + SCORE_HISTORY - 1 - k) % SCORE_HISTORY];
        let max_over = |from: usize, to: usize| (from..=to).map(ago).fold(SCORE_FLOOR, f32::max);
        let input = [
            spot,
            ago(1),
            ago(2),
            ago(3),
            max_over(4, 8),
            max_over(9, 20),
            max_over(21, SCORE_HISTORY - 1),
            f[6],
            f[7],
            f[8],
            f[13],
        ];
        model::SMOOTHER.score(&input)
    }
}

/// Settings of one [`TalkspurtDetector`]. Counts are in frames of whatever
/// size the caller classifies (10 or 20 ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TalkspurtConfig {
    /// Speech frames needed within the onset window to start a talkspurt
    /// (1..=`onset_window`). More rejects clicks and short noise bursts.
    pub onset_frames: u8,
    /// The last this many frames are looked at for the onset
    /// (1..=[`TalkspurtConfig::MAX_ONSET_WINDOW`]).
    pub onset_window: u8,
    /// Non-speech frames in a row that end a talkspurt (at least 1). More
    /// bridges the pauses between words.
    pub hangover_frames: u16,
}

impl TalkspurtConfig {
    /// The largest onset window.
    pub const MAX_ONSET_WINDOW: u8 = 32;

    fn validate(&self) -> Result<(), VadError> {
        let window = self.onset_window;
        if window == 0 || window > Self::MAX_ONSET_WINDOW {
            return Err(VadError::OnsetWindow { window });
        }
        if self.onset_frames == 0 || self.onset_frames > window {
            return Err(VadError::OnsetFrames { frames: self.onset_frames, window });
        }
        if self.hangover_frames == 0 {
            return Err(VadError::HangoverFrames);
        }
        Ok(())
    }
}

impl Default for TalkspurtConfig {
    /// For 20 ms frames: 3 speech frames within 100 ms start a talkspurt,
    /// 300 ms without speech end it.
    fn default() -> Self {
        TalkspurtConfig { onset_frames: 3, onset_window: 5, hangover_frames: 15 }
    }
}

/// A change of talkspurt state, drained with [`TalkspurtDetector::poll_event`].
///
/// Starts and ends strictly alternate, beginning with a start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TalkspurtEvent {
    /// Speech began; `at` is the time of the first speech frame of the onset
    /// (not the later frame that confirmed it).
    SpeechStart {
        /// Time of the first speech frame.
        at: Instant,
    },
    /// Speech ended; `at` is the time of the first non-speech frame of the
    /// hangover, i.e. the end of the last speech frame (or the end of the
    /// stream, see [`TalkspurtDetector::handle_end_of_stream`]).
    SpeechEnd {
        /// Time speech stopped.
        at: Instant,
    },
}

/// Turns per-frame speech decisions into talkspurts. See the [module docs](self).
///
/// It has no timers: time advances only with frames, so there is no
/// `poll_timeout`. Frame times must not go backwards; a time earlier than the
/// previous one is taken as equal to it.
#[derive(Clone, Debug)]
pub struct TalkspurtDetector {
    config: TalkspurtConfig,
    /// Bit k set: the frame k frames ago was speech (bit 0 is the newest).
    recent: u32,
    /// Time of each of the last 32 frames, indexed by frame count modulo 32.
    times: [Instant; 32],
    frames: u64,
    last: Instant,
    in_talkspurt: bool,
    silent_run: u16,
    silence_start: Instant,
    pending: Option<TalkspurtEvent>,
}

impl TalkspurtDetector {
    /// A detector for a stream that starts at `now`, outside any talkspurt.
    ///
    /// # Errors
    ///
    /// [`VadError::OnsetWindow`], [`VadError::OnsetFrames`] or
    /// [`VadError::HangoverFrames`] when `config` is out of range.
    pub fn new(config: TalkspurtConfig, now: Instant) -> Result<Self, VadError> {
        config.validate()?;
        Ok(TalkspurtDetector {
            config,
            recent: 0,
            times: [now; 32],
            frames: 0,
            last: now,
            in_talkspurt: false,
            silent_run: 0,
            silence_start: now,
            pending: None,
        })
    }

    /// The settings this detector runs with.
    #[must_use]
    pub fn config(&self) -> &TalkspurtConfig {
        &self.config
    }

    /// Whether the stream is inside a talkspurt (including its hangover).
    #[must_use]
    pub fn in_talkspurt(&self) -> bool {
        self.in_talkspurt
    }

    /// The frame starting at `now` was classified as speech or not.
    pub fn handle_frame(&mut self, now: Instant, is_speech: bool) {
        let now = now.max(self.last);
        self.last = now;
        self.times[(self.frames % 32) as usize] = now;
        self.frames = self.frames.wrapping_add(1);
        self.recent = (self.recent << 1) | u32::from(is_speech);

        if self.in_talkspurt {
            if is_speech {
                self.silent_run = 0;
            } else {
                if self.silent_run == 0 {
                    self.silence_start = now;
                }
                self.silent_run = self.silent_run.saturating_add(1);
                if self.silent_run >= self.config.hangover_frames {
                    self.end(self.silence_start);
                }
            }
            return;
        }
        let window = u32::from(self.config.onset_window);
        let mask = if window >= 32 { u32::MAX } else { (1u32 << window) - 1 };
        let in_window = self.recent & mask;
        if in_window.count_ones() >= u32::from(self.config.onset_frames) {
            // The oldest speech frame in the window is where speech began.
            let age = u64::from(31 - in_window.leading_zeros());
            let index = self.frames.wrapping_sub(1).wrapping_sub(age) % 32;
            let at = self.times[index as usize];
            self.in_talkspurt = true;
            self.silent_run = 0;
            self.push(TalkspurtEvent::SpeechStart { at });
        }
    }

    /// The stream ended at `now` (the end of its last frame): an open
    /// talkspurt ends, at the start of its hangover if it was in one.
    pub fn handle_end_of_stream(&mut self, now: Instant) {
        let now = now.max(self.last);
        self.last = now;
        if self.in_talkspurt {
            let at = if self.silent_run > 0 { self.silence_start } else { now };
            self.end(at);
        }
    }

    /// The next event; call until `None` after every `handle_*`.
    ///
    /// Events left undrained are coalesced rather than queued: a start
    /// followed by its end before either was polled yields neither, so the
    /// stream of events always alternates.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<TalkspurtEvent> {
        self.pending.take()
    }

    fn end(&mut self, at: Instant) {
        self.in_talkspurt = false;
        self.silent_run = 0;
        // Speech frames from before the end must not count towards the next onset.
        self.recent = 0;
        self.push(TalkspurtEvent::SpeechEnd { at });
    }

    fn push(&mut self, event: TalkspurtEvent) {
        // An undrained event is the opposite transition; together they cancel.
        self.pending = match self.pending {
            Some(_) => None,
            None => Some(event),
        };
    }
}
