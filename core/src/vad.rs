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
//! // One second of a 150 Hz buzz with harmonics, rising and falling four
//! // times like syllables, between two seconds of silence.
//! let mut events = Vec::new();
//! for i in 0..250u64 {
//!     let mut frame = [0i16; 160];
//!     if (100..150).contains(&i) {
//!         // Syllables of 250 ms: 12.5 frames, at 0.2 to 1 of the peak.
//!         let syllable = (i - 100) as f32 / 12.5 * core::f32::consts::TAU;
//!         let envelope = 0.6 - 0.4 * syllable.cos();
//!         for (n, s) in frame.iter_mut().enumerate() {
//!             let phase = n as f32 / 160.0 * 3.0; // 20 ms holds exactly three periods
//!             let saw = 2.0 * (phase - (phase as u32) as f32) - 1.0;
//!             *s = (saw * envelope * 3000.0) as i16;
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
//! speech from noise of the same level and spectrum.
//!
//! Per block, [`FEATURES`] numbers (see [`FEATURE_NAMES`]) describe the
//! block: SNR per band and overall, absolute levels and the level's running
//! average over about 3 s, periodicity and the stability of the pitch lag, a
//! little SNR history, and the spectral shape of both the block and the noise
//! floor. Two small networks turn them into
//! a decision: a *spotter* scores the block alone, and a *smoother* looks at
//! the spotter's last 400 ms of scores (which lets it learn how long speech
//! lingers under each kind of noise) and the slow level features. The weights
//! live in `vad/model.rs`, fitted by `vad-eval/train.py` on a synthetic
//! tuning set of telephone speech in noise; the smoother's score is compared
//! against a per-mode threshold, followed by a per-mode hangover.
//! `vad-eval/RESULTS.md` compares it with WebRTC's VAD on a held-out set.
//!
//! Two gates come before the model and overrule it (see `Gate`): within
//! the last 300 ms the level (averaged over 50 ms) must have reached
//! −50 dBFS and must have swung by at least 1 dB. Below the floor are
//! idle-channel noise, faint hum and μ-law's smallest codes, where SNR
//! against a near-silent noise floor says nothing; without a swing the
//! source is steady, like mains hum and buzz at any level, which is as
//! periodic as a vowel. A steady sound that starts after silence can still
//! be called speech for its first 350 ms.
//!
//! The noise estimates need the first second or so of a stream to settle;
//! speech right at the start is judged against whatever was heard so far.
//!
//! Everything is `f32` arithmetic without `libm` (logarithms are a bit-level
//! approximation): about 9,750 instructions per 20 ms frame on x86-64 with
//! SSE2 (callgrind; about 7,900 built for x86-64-v3, AVX2),
//! half of the proxy's user-space instructions per bridged frame, since
//! every call runs two (the caller's and the backend's).

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
    /// Mode 2, the default: the best F1 on the tuning set (see `vad-eval/`).
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
// Lags and ring positions are kept in bytes (smaller detectors, two per call).
const _: () = assert!(PITCH_MAX_LAG <= u8::MAX as usize);
const _: () = assert!(GATE_BLOCKS <= u8::MAX as usize);
const _: () = assert!(FLOOR_WINDOWS <= u8::MAX as usize);

/// Number of features the model sees per block.
pub const FEATURES: usize = 30;

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
    "shape_0_250",
    "shape_250_500",
    "shape_500_1k",
    "shape_1k_2k",
    "shape_2k_3k",
    "shape_3k_4k",
    "noise_shape_0_250",
    "noise_shape_250_500",
    "noise_shape_500_1k",
    "noise_shape_1k_2k",
    "noise_shape_2k_3k",
    "noise_shape_3k_4k",
    "level_average_snr",
    "level_above_average",
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
    gate: Gate,
    level_average: f32,
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
            gate: Gate::default(),
            level_average: 0.0,
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
    /// mode's threshold means speech, before hangover, unless the level
    /// gates of the [module docs](self) say the block cannot be speech).
    #[must_use]
    pub fn score(&self) -> f32 {
        self.score
    }

    /// The features of the last 10 ms block, named by [`FEATURE_NAMES`].
    ///
    /// For diagnostics and for retraining the model (`vad-eval/train.py`
    /// reads them through the `vad_features` example of this crate).
    #[must_use]
    pub fn features(&self) -> &[f32; FEATURES] {
        &self.features
    }

    fn process_block(&mut self, block: &[i16]) -> bool {
        let mut x = [0.0f32; BLOCK];
        for (dst, &s) in x.iter_mut().zip(block) {
            *dst = f32::from(s);
        }
        let total = energy(&x);
        let mut low = [0.0f32; LOWBAND];
        let bands = self.bank.analyse(&x, &mut low);
        let new_period = self.blocks % 2 == 1;
        self.pitch.push(&low);
        if new_period {
            self.pitch.analyse();
        }
        self.blocks = self.blocks.wrapping_add(1);

        // Indices into `f` follow FEATURE_NAMES.
        let mut f = [0.0f32; FEATURES];
        let mut band_levels = [0.0f32; BANDS];
        let mut band_noise = [0.0f32; BANDS];
        for b in 0..BANDS {
            let power = bands[b] / BAND_SAMPLES[b] as f32;
            let (level, noise) = self.floors[b].update(power);
            f[b] = clamp(level - noise, -4.0, 16.0);
            band_levels[b] = level;
            band_noise[b] = noise;
        }
        let (level, noise) = self.floors[BANDS].update(total / BLOCK as f32);
        let audible = self.gate.update(total / BLOCK as f32);
        // The level's running average over about three seconds: how far the
        // background sits above its floor (babble more than hiss), and
        // whether this block stands out from the recent past.
        self.level_average = if self.blocks == 1 {
            level
        } else {
            LEVEL_AVERAGING * self.level_average + (1.0 - LEVEL_AVERAGING) * level
        };
        f[28] = clamp(self.level_average - noise, -4.0, 16.0);
        f[29] = clamp(level - self.level_average, -10.0, 10.0);
        for b in 0..BANDS {
            f[16 + b] = clamp(band_levels[b] - level, -12.0, 3.0);
            f[22 + b] = clamp(band_noise[b] - noise, -12.0, 3.0);
        }
        let snr = clamp(level - noise, -4.0, 16.0);
        f[6] = snr;
        f[7] = clamp(level - FULL_SCALE_LOG2, -30.0, 0.0);
        f[8] = clamp(noise - FULL_SCALE_LOG2, -30.0, 0.0);
        f[9] = self.pitch.current;
        f[10] = self.pitch.previous;
        self.context.update(snr, new_period, &self.pitch, &mut f);
        self.features = f;

        let m = usize::from(self.mode.level());
        self.score = self.decider.score(&f);
        if !audible {
            // Too faint or too steady to be speech, whatever the model says.
            self.hangover = 0;
            false
        } else if self.score > model::THRESHOLD[m] {
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

/// The larger of two numbers that are never NaN here: a plain compare,
/// cheaper than `f32::max`, which must also handle NaN.
#[inline]
fn max(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// The smaller of two numbers that are never NaN here (see [`max`]).
#[inline]
fn min(a: f32, b: f32) -> f32 {
    if a < b { a } else { b }
}

/// `x` limited to `lo..=hi`, for numbers that are never NaN here (see [`max`]).
#[inline]
fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    min(max(x, lo), hi)
}

/// Blocks the [`Gate`] looks back over (300 ms: a syllable and a half).
const GATE_BLOCKS: usize = 30;
/// Blocks whose power the [`Gate`] averages into one level (50 ms). A
/// multiple of it must be [`GATE_BLOCKS`], so one ring index serves both.
const GATE_AVERAGE_BLOCKS: usize = 5;
const _: () = assert!(GATE_BLOCKS.is_multiple_of(GATE_AVERAGE_BLOCKS));
/// dB per log2 unit of power.
const DB_PER_LOG2: f32 = 3.010_3;
/// The quietest speech: within the gate's window the smoothed level must
/// have reached this, in dB relative to a full-scale square wave. Telephone
/// speech peaks around −26 dBFS and a quiet line's 10 to 15 dB lower; below
/// the floor are idle-channel noise, faint hum and μ-law's smallest codes
/// (its lowest segment, ±0..±120, averages −53 dBFS). On the VAD evaluation's
/// tuning set with every talker 15 dB quieter (the quietest peaking near
/// −49 dBFS) the floor costs 0.003 of mean F1; at the talkers' own levels, nothing.
const SPEECH_FLOOR_DBFS: f32 = -50.0;
/// The least swing of the smoothed level within the gate's window, in dB.
/// Speech rises and falls with every syllable by far more; hum and buzz of a
/// steady source stay within a few tenths of a dB. Stationary noise swings
/// more (white noise's smoothed 10 ms power by about ±0.3 dB), so this does
/// not catch all of it: the model handles noise it has been trained on. On
/// the tuning set this gate costs at most 0.0013 of mean F1 (3 dB would cost 0.03).
const SPEECH_SWING_DB: f32 = 1.0;

/// Per-block weight of the past in the running average of the level (τ ≈ 3 s).
const LEVEL_AVERAGING: f32 = 0.997;

/// log2 of the mean square of a full-scale square wave in i16 units (2^15 squared).
const FULL_SCALE_LOG2: f32 = 30.0;

/// log2(x) for x > 0 to within 0.01, from the float's exponent and a
/// quadratic on its mantissa (core has no `log2` without `std`).
#[must_use]
fn log2(x: f32) -> f32 {
    // The smallest power we ever see is a block of digital silence plus the
    // floor below; anything lower (or NaN-free zero) clamps there.
    let x = max(x, 1e-3);
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
        self.top.split::<{ BLOCK / 2 }, { BLOCK / 2 + ODD_HISTORY }>(x, &mut l0, &mut h0);
        // 0–2 kHz → 0–1 kHz (kept for the pitch search) and 1–2 kHz.
        let mut l1h = [0.0f32; BLOCK / 4];
        self.low.split::<{ BLOCK / 4 }, { BLOCK / 4 + ODD_HISTORY }>(&l0, lowband, &mut l1h);
        // 2–4 kHz arrives spectrally inverted: its low half is 3–4 kHz.
        let mut h1l = [0.0f32; BLOCK / 4];
        let mut h1h = [0.0f32; BLOCK / 4];
        self.high.split::<{ BLOCK / 4 }, { BLOCK / 4 + ODD_HISTORY }>(&h0, &mut h1l, &mut h1h);
        let mut l2l = [0.0f32; BLOCK / 8];
        let mut l2h = [0.0f32; BLOCK / 8];
        self.low_low.split::<{ BLOCK / 8 }, { BLOCK / 8 + ODD_HISTORY }>(lowband, &mut l2l, &mut l2h);
        let mut l3l = [0.0f32; BLOCK / 16];
        let mut l3h = [0.0f32; BLOCK / 16];
        self.bottom.split::<{ BLOCK / 16 }, { BLOCK / 16 + ODD_HISTORY }>(&l2l, &mut l3l, &mut l3h);
        [energy(&l3l), energy(&l3h), energy(&l2h), energy(&l1h), energy(&h1h), energy(&h1l)]
    }
}

/// Sum of squares, in four independent lanes so it vectorizes.
fn energy(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 4];
    let mut chunks = x.chunks_exact(4);
    for c in &mut chunks {
        for k in 0..4 {
            lanes[k] += c[k] * c[k];
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail
}

/// One decimating half-band split (11 taps, Kaiser-windowed sinc): low and
/// complementary high band, each at half the input rate.
///
/// The input is split into its even and odd samples first: the centre tap
/// then only ever meets even samples and the other taps odd ones, so each
/// output is a few multiply-adds over contiguous arrays, which vectorize.
/// Only the history the taps reach is kept: the last [`EVEN_HISTORY`] even
/// and [`ODD_HISTORY`] odd samples.
#[derive(Clone, Copy, Debug, Default)]
struct HalfBand {
    even: [f32; EVEN_HISTORY],
    odd: [f32; ODD_HISTORY],
}

/// Odd-offset taps of the half-band low-pass (centre tap 0.5, even offsets zero).
const HALF_BAND_TAPS: [f32; 3] = [0.303_5, -0.066_4, 0.012_9];
/// Past even samples the centre tap reaches: it lags the newest by two.
const EVEN_HISTORY: usize = 2;
/// Past odd samples the side taps reach: the filter's history, in odd samples.
const ODD_HISTORY: usize = SPLIT_HISTORY / 2;

impl HalfBand {
    /// Splits the first `2 * N` samples of `input` into `N` low and `N` high
    /// ones. `M` is `N + ODD_HISTORY` (checked at compile time): the length
    /// of the scratch arrays, which a generic length cannot yet be computed
    /// into. Fixed lengths let every loop run without bounds checks and
    /// vectorize, at about a third of the instructions of slices.
    fn split<const N: usize, const M: usize>(
        &mut self,
        input: &[f32],
        low: &mut [f32; N],
        high: &mut [f32; N],
    ) {
        const { assert!(M == N + ODD_HISTORY) };
        let pairs = &input.as_chunks::<2>().0[..N];
        let mut even = [0.0f32; M];
        let mut odd = [0.0f32; M];
        even[..EVEN_HISTORY].copy_from_slice(&self.even);
        odd[..ODD_HISTORY].copy_from_slice(&self.odd);
        for (i, pair) in pairs.iter().enumerate() {
            even[EVEN_HISTORY + i] = pair[0];
            odd[ODD_HISTORY + i] = pair[1];
        }
        for i in 0..N {
            // The same sums in the same order as ever: outputs are bit-exact.
            let centre = 0.5 * even[i];
            let side = HALF_BAND_TAPS[0] * (odd[i + 2] + odd[i + 3])
                + HALF_BAND_TAPS[1] * (odd[i + 1] + odd[i + 4])
                + HALF_BAND_TAPS[2] * (odd[i] + odd[i + 5]);
            low[i] = centre + side;
            high[i] = centre - side;
        }
        self.even.copy_from_slice(&even[N..N + EVEN_HISTORY]);
        self.odd.copy_from_slice(&odd[N..N + ODD_HISTORY]);
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
    /// Minimum of `window_mins`, kept so each block compares once.
    finished_min: f32,
    /// Below [`FLOOR_WINDOWS`]; a byte, as the fields beside it, so the
    /// floor packs into 48 bytes (every call holds 14 of them).
    next_window: u8,
    blocks_in_window: u8,
    started: bool,
}

impl Default for NoiseFloor {
    fn default() -> Self {
        NoiseFloor {
            smoothed: 0.0,
            current_min: f32::MAX,
            window_mins: [f32::MAX; FLOOR_WINDOWS],
            finished_min: f32::MAX,
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
        self.current_min = min(self.current_min, smoothed);
        self.blocks_in_window += 1;
        let floor = min(self.current_min, self.finished_min);
        if self.blocks_in_window >= FLOOR_WINDOW_BLOCKS {
            self.window_mins[usize::from(self.next_window)] = self.current_min;
            self.next_window = (self.next_window + 1) % FLOOR_WINDOWS as u8;
            self.current_min = f32::MAX;
            self.blocks_in_window = 0;
            self.finished_min = self.window_mins.iter().fold(f32::MAX, |a, &b| min(a, b));
        }
        (log2(power), floor)
    }
}

/// What the model is never asked about: audio whose level, over the last
/// [`GATE_BLOCKS`], never reached [`SPEECH_FLOOR_DBFS`] or swung by less
/// than [`SPEECH_SWING_DB`] is not speech. The model judges by SNR against
/// tracked noise floors and by periodicity, which a faint or steady signal
/// can score high on: a hum is as periodic as a vowel, and faint noise after
/// digital silence has a large SNR.
///
/// The level is the mean power of the last [`GATE_AVERAGE_BLOCKS`] blocks
/// (50 ms): whole periods of 60 Hz and whole half-periods of 50 Hz, so
/// mains hum and all its harmonics give the same level in every window,
/// where a single 10 ms block of a 60 Hz buzz would swing by several dB.
#[derive(Clone, Copy, Debug)]
struct Gate {
    /// Mean powers of the last blocks, a ring.
    powers: [f32; GATE_AVERAGE_BLOCKS],
    /// log2 of the averaged power, for the last blocks, a ring.
    levels: [f32; GATE_BLOCKS],
    /// Below [`GATE_BLOCKS`]: a byte keeps the gate at 144 bytes.
    next: u8,
    started: bool,
}

impl Default for Gate {
    fn default() -> Self {
        Gate { powers: [0.0; GATE_AVERAGE_BLOCKS], levels: [0.0; GATE_BLOCKS], next: 0, started: false }
    }
}

impl Gate {
    /// The log2 floor of the window's loudest level.
    const FLOOR: f32 = FULL_SCALE_LOG2 + SPEECH_FLOOR_DBFS / DB_PER_LOG2;
    /// The least swing, in log2 units.
    const SWING: f32 = SPEECH_SWING_DB / DB_PER_LOG2;

    /// Takes one block's mean power; returns whether the window could hold speech.
    fn update(&mut self, power: f32) -> bool {
        if !self.started {
            // A stream that starts steady is steady from its first block.
            self.powers = [power; GATE_AVERAGE_BLOCKS];
            self.levels = [log2(power); GATE_BLOCKS];
            self.started = true;
        }
        let next = usize::from(self.next);
        self.powers[next % GATE_AVERAGE_BLOCKS] = power;
        let level = log2(self.powers.iter().sum::<f32>() / GATE_AVERAGE_BLOCKS as f32);
        self.levels[next] = level;
        self.next = if next + 1 == GATE_BLOCKS { 0 } else { self.next + 1 };
        let (mut lo, mut hi) = (level, level);
        for &l in &self.levels {
            lo = min(lo, l);
            hi = max(hi, l);
        }
        hi >= Self::FLOOR && hi - lo >= Self::SWING
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
    /// The best lag of the last analysis (0: none); at most
    /// [`PITCH_MAX_LAG`], so a byte.
    lag: u8,
    previous_lag: u8,
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
        // The window must stay contiguous for the correlation, so the
        // history moves down by one block. In block-sized pieces that do
        // not overlap: each is a fixed-size copy the compiler inlines,
        // where one overlapping `copy_within` was a `memmove` call per
        // block of every call (0.5 % of the proxy at 1,000 calls).
        let mut from = LOWBAND;
        while from < PITCH_BUFFER {
            let len = LOWBAND.min(PITCH_BUFFER - from);
            let (done, rest) = self.buffer.split_at_mut(from);
            done[from - LOWBAND..][..len].copy_from_slice(&rest[..len]);
            from += LOWBAND;
        }
        let tail = &mut self.buffer[PITCH_BUFFER - LOWBAND..];
        let mut prev = self.last_input;
        for (dst, &v) in tail.iter_mut().zip(lowband) {
            *dst = v - prev;
            prev = v;
        }
        self.last_input = prev;
    }

    fn analyse(&mut self) {
        const LAGS: usize = PITCH_MAX_LAG - PITCH_MIN_LAG + 1;
        let window = &self.buffer[PITCH_MAX_LAG..];
        let e0 = energy(window);
        self.previous = self.current;
        self.previous_lag = self.lag;
        self.current = 0.0;
        self.lag = 0;
        if e0 <= 0.0 {
            return;
        }
        // All lags at once: correlation[j] is for lag PITCH_MAX_LAG - j. The
        // inner loop runs over contiguous lags and vectorizes.
        let mut correlation = [0.0f32; LAGS];
        for (n, &x) in window.iter().enumerate() {
            for (r, &y) in correlation.iter_mut().zip(&self.buffer[n..n + LAGS]) {
                *r += x * y;
            }
        }
        let first = &self.buffer[PITCH_MAX_LAG - PITCH_MIN_LAG..][..PITCH_WINDOW];
        let mut lagged_energy = energy(first);
        // Best so far as a fraction, so no division is needed per lag.
        let (mut best_num, mut best_den) = (0.0f32, 1.0f32);
        for lag in PITCH_MIN_LAG..=PITCH_MAX_LAG {
            let start = PITCH_MAX_LAG - lag;
            if lag > PITCH_MIN_LAG {
                // The lagged window moved one sample earlier.
                let entering = self.buffer[start];
                let leaving = self.buffer[start + PITCH_WINDOW];
                lagged_energy = max(lagged_energy + entering * entering - leaving * leaving, 0.0);
            }
            let r = correlation[start];
            let num = r * r;
            let den = e0 * lagged_energy;
            if r > 0.0 && den > 0.0 && num * best_den > best_num * den {
                best_num = num;
                best_den = den;
                self.lag = lag as u8;
            }
        }
        self.current = min(best_num / best_den, 1.0);
    }
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
        self.snr_peak = max(self.snr_peak - 0.1, snr);
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
            out += max(*h, 0.0) * w;
        }
        out
    }
}

/// Stage-one scores remembered (400 ms).
const SCORE_HISTORY: usize = 40;
/// Score standing for "nothing heard yet" and the clamp on scores.
const SCORE_FLOOR: f32 = -10.0;

/// The two-stage decision: a per-block speech spotter, then a smoother over
/// its recent scores (the last four, then maxima over older stretches, so it
/// can learn how long speech lingers under each kind of noise) and the slow
/// level features.
#[derive(Clone, Copy, Debug)]
struct Decider {
    /// Stage-one scores, a ring: the newest at `newest`, older ones before
    /// it (wrapping). A ring rather than a shift per block: the shift was a
    /// `memmove` call on every block of every call.
    history: [f32; SCORE_HISTORY],
    newest: u8,
}

const _: () = assert!(SCORE_HISTORY <= u8::MAX as usize);

impl Default for Decider {
    fn default() -> Self {
        Decider { history: [SCORE_FLOOR; SCORE_HISTORY], newest: 0 }
    }
}

impl Decider {
    /// Returns the final score of a block with features `f`.
    fn score(&mut self, f: &[f32; FEATURES]) -> f32 {
        let spot = clamp(model::SPOTTER.score(f), SCORE_FLOOR, -SCORE_FLOOR);
        let newest = (usize::from(self.newest) + 1) % SCORE_HISTORY;
        self.newest = newest as u8;
        self.history[newest] = spot;
        let h = &self.history;
        // ago(k): the score k blocks before this one.
        let ago = |k: usize| h[(newest + SCORE_HISTORY - k) % SCORE_HISTORY];
        let max_over = |from: usize, to: usize| (from..=to).fold(SCORE_FLOOR, |a, k| max(a, ago(k)));
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

#[cfg(test)]
mod tests {
    use std::string::{String, ToString};
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    const RATE: f32 = 8_000.0;

    /// Deterministic uniform noise in -1..1.
    struct Noise(u32);

    impl Noise {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            (self.0 as f32 / u32::MAX as f32) * 2.0 - 1.0
        }
    }

    fn sine(freq: f32, amplitude: f32, n: usize) -> Vec<f32> {
        (0..n).map(|i| amplitude * (2.0 * core::f32::consts::PI * freq * i as f32 / RATE).sin()).collect()
    }

    /// A sawtooth: every harmonic of `f0`, like a buzzing glottis.
    fn buzz(f0: f32, amplitude: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let phase = (f0 * i as f32 / RATE).fract();
                amplitude * (2.0 * phase - 1.0)
            })
            .collect()
    }

    fn pcm(x: &[f32]) -> Vec<i16> {
        x.iter().map(|v| v.round().clamp(-32_768.0, 32_767.0) as i16).collect()
    }

    fn decisions(mode: VadMode, audio: &[i16]) -> Vec<bool> {
        let mut vad = Vad::new(VadConfig { mode });
        audio.chunks_exact(FRAME_20MS).map(|f| vad.classify(f).unwrap()).collect()
    }

    fn fraction(d: &[bool]) -> f32 {
        d.iter().filter(|&&s| s).count() as f32 / d.len() as f32
    }

    #[test]
    fn wrong_frame_lengths_are_errors() {
        let mut vad = Vad::new(VadConfig::default());
        for len in [0, 1, 79, 81, 159, 161, 240, 320] {
            let frame = std::vec![0i16; len];
            assert_eq!(vad.classify(&frame), Err(VadError::FrameLength { len }));
        }
        assert_eq!(vad.classify(&[0; 80]), Ok(false));
        assert_eq!(vad.classify(&[0; 160]), Ok(false));
    }

    #[test]
    fn modes_convert_both_ways() {
        for (level, mode) in VadMode::ALL.iter().enumerate() {
            let level = u8::try_from(level).unwrap();
            assert_eq!(mode.level(), level);
            assert_eq!(VadMode::try_from(level), Ok(*mode));
        }
        assert_eq!(VadMode::try_from(4), Err(VadError::Mode { value: 4 }));
        assert!(VadError::Mode { value: 9 }.to_string().contains('9'));
        assert!(VadError::FrameLength { len: 123 }.to_string().contains("123"));
    }

    #[test]
    fn digital_silence_is_never_speech() {
        let audio = std::vec![0i16; 8_000 * 5];
        for mode in VadMode::ALL {
            assert!(decisions(mode, &audio).iter().all(|&s| !s), "{mode:?}");
        }
    }

    /// `x` rising and falling by 14 dB four times a second, as syllables do.
    fn syllables(x: &[f32]) -> Vec<f32> {
        x.iter()
            .enumerate()
            .map(|(i, v)| v * (0.6 - 0.4 * (2.0 * core::f32::consts::PI * 4.0 * i as f32 / RATE).cos()))
            .collect()
    }

    #[test]
    fn buzz_after_silence_is_speech_and_silence_after_it_is_not() {
        // 1 s silence, 1 s of syllables of buzz peaking at about -20 dBFS, 1 s silence.
        let mut x = std::vec![0.0f32; 8_000];
        x.extend(syllables(&buzz(140.0, 5_000.0, 8_000)));
        x.extend(std::vec![0.0f32; 8_000]);
        for mode in VadMode::ALL {
            let d = decisions(mode, &pcm(&x));
            assert!(d[..50].iter().all(|&s| !s), "{mode:?}: silence before");
            assert!(fraction(&d[52..100]) > 0.9, "{mode:?}: buzz {}", fraction(&d[52..100]));
            assert!(d[110..].iter().all(|&s| !s), "{mode:?}: silence after");
        }
    }

    #[test]
    fn a_steady_buzz_is_speech_only_until_it_proves_steady() {
        // The same buzz without syllables: it could be a voice for as long
        // as the gate's window still holds the silence before it, not after.
        let mut x = std::vec![0.0f32; 8_000];
        x.extend(buzz(140.0, 5_000.0, 8_000));
        // The window, plus the blocks it takes the averaged level to settle.
        let window_frames = (GATE_BLOCKS + GATE_AVERAGE_BLOCKS) / 2;
        for mode in VadMode::ALL {
            let d = decisions(mode, &pcm(&x));
            assert!(d[50..50 + window_frames].iter().any(|&s| s), "{mode:?}: onset");
            assert!(d[50 + window_frames + 1..].iter().all(|&s| !s), "{mode:?}: {d:?}");
        }
        // A buzz at speech level from the first sample on is never speech.
        assert_never_speech("steady buzz from the start", &pcm(&buzz(140.0, 5_000.0, 8_000 * 3)));
    }

    #[test]
    fn stationary_noise_alone_is_rarely_speech() {
        for amplitude in [300.0f32, 3_000.0] {
            let mut noise = Noise(0x2545_f491);
            let x: Vec<f32> = (0..8_000 * 6).map(|_| amplitude * noise.next()).collect();
            for mode in [VadMode::Aggressive, VadMode::VeryAggressive] {
                let d = decisions(mode, &pcm(&x));
                // After two seconds to learn the noise floor.
                assert!(fraction(&d[100..]) < 0.05, "{mode:?} at {amplitude}: {}", fraction(&d[100..]));
            }
        }
    }

    #[test]
    fn buzz_in_noise_is_found() {
        // Noise throughout; a buzz 10 dB above it from 3 s to 4 s.
        let mut noise = Noise(0x1357_9bdf);
        let noise_rms = 1_000.0 / 3f32.sqrt();
        let buzz_rms = noise_rms * 10f32.powf(10.0 / 20.0);
        let b = syllables(&buzz(120.0, buzz_rms * 3f32.sqrt(), 8_000));
        let x: Vec<f32> = (0..8_000 * 5)
            .map(|i| 1_000.0 * noise.next() + if (24_000..32_000).contains(&i) { b[i - 24_000] } else { 0.0 })
            .collect();
        let d = decisions(VadMode::default(), &pcm(&x));
        assert!(fraction(&d[152..200]) > 0.8, "buzz: {}", fraction(&d[152..200]));
        assert!(fraction(&d[100..150]) < 0.1, "noise before: {}", fraction(&d[100..150]));
        assert!(fraction(&d[215..]) < 0.1, "noise after: {}", fraction(&d[215..]));
    }

    #[test]
    fn modes_are_ordered_from_permissive_to_aggressive() {
        // The score does not depend on the mode, so rising thresholds and
        // falling hangovers make each mode flag a subset of the previous one's frames.
        assert!(model::THRESHOLD.windows(2).all(|w| w[0] <= w[1]), "{:?}", model::THRESHOLD);
        assert!(model::HANGOVER_BLOCKS.windows(2).all(|w| w[0] >= w[1]), "{:?}", model::HANGOVER_BLOCKS);
        let mut noise = Noise(7);
        let x: Vec<f32> = (0..8_000 * 4)
            .map(|i| {
                800.0 * noise.next()
                    + if (i / 4_000) % 2 == 1 { 1_500.0 * ((i as f32 * 0.11).sin()) } else { 0.0 }
            })
            .collect();
        let audio = pcm(&x);
        let all: Vec<Vec<bool>> = VadMode::ALL.iter().map(|&m| decisions(m, &audio)).collect();
        for w in all.windows(2) {
            assert!(w[0].iter().zip(&w[1]).all(|(&permissive, &aggressive)| permissive || !aggressive));
        }
    }

    /// Every mode's speech decisions, scores and features over 12 s of
    /// voiced bursts, pauses and noise, folded into one FNV-1a hash of
    /// their bits. Integer-built audio and IEEE arithmetic only, so the
    /// value is the same on every machine.
    fn decisions_fingerprint() -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let mut fold = |bits: u32| {
            for byte in bits.to_le_bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for mode in VadMode::ALL {
            let mut vad = Vad::new(VadConfig { mode });
            let mut noise = Noise(0x2545_f491);
            let (mut y1, mut y2) = (0.0f32, 0.0f32);
            let mut frame = [0i16; FRAME_20MS];
            for n in 0..600usize {
                for (i, sample) in frame.iter_mut().enumerate() {
                    let t = n * FRAME_20MS + i;
                    // 300 ms voiced at 125-160 Hz, 200 ms of noise only;
                    // louder and quieter stretches every 4 s.
                    let period = 50 + (t / 4_000) % 15;
                    let voiced = t % 4_000 < 2_400 && t.is_multiple_of(period);
                    let y = if voiced { 1.0 } else { 0.0 } + 1.8 * y1 - 0.9 * y2;
                    (y2, y1) = (y1, y);
                    let gain = [300.0, 60.0, 900.0][(t / 32_000) % 3];
                    *sample = (gain * y + 50.0 * noise.next()).clamp(-32_768.0, 32_767.0) as i16;
                }
                fold(u32::from(vad.classify(&frame).unwrap()));
                fold(vad.score().to_bits());
                vad.features().iter().for_each(|f| fold(f.to_bits()));
            }
        }
        hash
    }

    #[test]
    fn decisions_are_unchanged() {
        // Restructuring for speed must not move a single bit of what the
        // model sees or says. A deliberate change to the features or the
        // model changes this value: print it and update it with the model.
        let fingerprint = decisions_fingerprint();
        assert_eq!(fingerprint, 0xa54f_a3bc_c757_26f0, "fingerprint {fingerprint:#x}");
    }

    #[test]
    fn pitch_history_moves_down_one_block_exactly() {
        // The piecewise move must leave what one overlapping move did.
        let mut pitch = Periodicity::default();
        let mut reference = [0.0f32; PITCH_BUFFER];
        let (mut last, mut state) = (0.0f32, 1u32);
        for _ in 0..10 {
            let mut low = [0.0f32; LOWBAND];
            for v in &mut low {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *v = (state >> 8) as f32 / 65_536.0 - 128.0;
            }
            pitch.push(&low);
            reference.copy_within(LOWBAND.., 0);
            for (dst, &v) in reference[PITCH_BUFFER - LOWBAND..].iter_mut().zip(&low) {
                *dst = v - last;
                last = v;
            }
            assert_eq!(pitch.buffer, reference);
        }
    }

    #[test]
    fn log2_is_accurate() {
        let mut x = 1e-2f32;
        while x < 1e12 {
            assert!((log2(x) - x.log2()).abs() < 0.01, "{x}");
            x *= 1.37;
        }
        assert!((log2(0.0) - 1e-3f32.log2()).abs() < 0.01);
    }

    #[test]
    fn filter_bank_puts_tones_in_their_bands() {
        // (tone, band index): 0–250, 250–500, 500–1k, 1–2k, 2–3k, 3–4k Hz.
        for (freq, band) in [(125.0, 0), (375.0, 1), (750.0, 2), (1_500.0, 3), (2_500.0, 4), (3_500.0, 5)] {
            let x = sine(freq, 10_000.0, BLOCK * 10);
            let mut bank = FilterBank::default();
            let mut low = [0.0f32; LOWBAND];
            let mut energies = [0.0f32; BANDS];
            for block in x.chunks_exact(BLOCK) {
                energies = bank.analyse(block.try_into().unwrap(), &mut low);
            }
            let loudest = (0..BANDS).max_by(|&a, &b| energies[a].total_cmp(&energies[b])).unwrap();
            assert_eq!(loudest, band, "{freq} Hz: {energies:?}");
            // Other bands are at least 6 dB down, except the neighbours across a transition band.
            for (b, &e) in energies.iter().enumerate() {
                if b.abs_diff(band) > 1 {
                    assert!(e < energies[band] / 4.0, "{freq} Hz leaks into band {b}: {energies:?}");
                }
            }
        }
    }

    fn periodicity_of(x: &[f32]) -> f32 {
        let mut bank = FilterBank::default();
        let mut pitch = Periodicity::default();
        let mut low = [0.0f32; LOWBAND];
        let mut values = Vec::new();
        for (i, block) in x.chunks_exact(BLOCK).enumerate() {
            bank.analyse(block.try_into().unwrap(), &mut low);
            pitch.push(&low);
            if i % 2 == 1 {
                pitch.analyse();
                values.push(pitch.current);
            }
        }
        // Skip the first 100 ms while the buffer fills.
        let tail = &values[5..];
        tail.iter().sum::<f32>() / tail.len() as f32
    }

    #[test]
    fn periodicity_separates_voice_from_noise() {
        for f0 in [80.0, 125.0, 210.0, 350.0] {
            let p = periodicity_of(&buzz(f0, 5_000.0, 8_000));
            assert!(p > 0.8, "buzz at {f0} Hz: {p}");
        }
        let mut noise = Noise(99);
        let white: Vec<f32> = (0..8_000).map(|_| 5_000.0 * noise.next()).collect();
        assert!(periodicity_of(&white) < 0.4, "white: {}", periodicity_of(&white));
        // Brown noise: integrated white noise, with a leak so it stays bounded.
        let mut level = 0.0f32;
        let brown: Vec<f32> = (0..8_000)
            .map(|_| {
                level = 0.995 * level + 300.0 * noise.next();
                level
            })
            .collect();
        assert!(periodicity_of(&brown) < 0.5, "brown: {}", periodicity_of(&brown));
    }

    #[test]
    fn noise_floor_follows_the_minimum_and_forgets_it_after_its_window() {
        let mut floor = NoiseFloor::default();
        let quiet = 1_000.0f32;
        let loud = 1_000_000.0f32;
        let mut last = (0.0, 0.0);
        for _ in 0..100 {
            last = floor.update(quiet);
        }
        assert!((last.1 - quiet.log2()).abs() < 0.05);
        // Loud for less than the window: the floor stays at the quiet level.
        for _ in 0..100 {
            last = floor.update(loud);
        }
        assert!((last.0 - loud.log2()).abs() < 0.05);
        assert!((last.1 - quiet.log2()).abs() < 0.05, "{last:?}");
        // Loud for longer than the 160-block window: the floor moves up.
        for _ in 0..(usize::from(FLOOR_WINDOW_BLOCKS) * FLOOR_WINDOWS) {
            last = floor.update(loud);
        }
        assert!((last.1 - loud.log2()).abs() < 0.05, "{last:?}");
        // A drop is followed as fast as the smoothing allows: the loud power
        // decays by 0.7 per block, to 1e6 * 0.7^30 ≈ 23 after 30 blocks.
        for _ in 0..30 {
            last = floor.update(quiet);
        }
        assert!((last.1 - quiet.log2()).abs() < 0.1, "{last:?}");
    }

    proptest! {
        #[test]
        fn twenty_ms_frame_decides_as_its_halves(
            frames in proptest::collection::vec(proptest::collection::vec(any::<i16>(), FRAME_20MS), 1..12),
            mode in 0u8..4,
        ) {
            let mode = VadMode::try_from(mode).unwrap();
            let mut whole = Vad::new(VadConfig { mode });
            let mut halves = Vad::new(VadConfig { mode });
            for frame in &frames {
                let a = halves.classify(&frame[..FRAME_10MS]).unwrap();
                let b = halves.classify(&frame[FRAME_10MS..]).unwrap();
                prop_assert_eq!(whole.classify(frame).unwrap(), a || b);
                prop_assert_eq!(whole.score().to_bits(), halves.score().to_bits());
                prop_assert!(whole.score().is_finite());
                prop_assert!(whole.features().iter().all(|f| f.is_finite()));
            }
        }
    }

    // ----- Quiet lines: hum, buzz, faint noise and tiny codes are not speech -----

    /// `x` scaled so that its RMS is `dbfs` (0 dBFS = a full-scale square wave).
    fn at_dbfs(x: &[f32], dbfs: f32) -> Vec<f32> {
        let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
        let gain = 32_768.0 * 10f32.powf(dbfs / 20.0) / rms;
        x.iter().map(|v| v * gain).collect()
    }

    /// Through a μ-law line and back, as the bridge hands audio to the VAD.
    fn line(x: &[f32]) -> Vec<i16> {
        pcm(x).iter().map(|&s| crate::g711::ulaw_decode(crate::g711::ulaw_encode(s))).collect()
    }

    /// Mains hum: `f0` and its harmonics up to 4 kHz with amplitudes falling
    /// as 1/k^`slope` (slope 1 is a sawtooth's spectrum, 2 a softer hum).
    fn mains(f0: f32, slope: i32, n: usize) -> Vec<f32> {
        let harmonics = (4_000.0 / f0) as i32;
        (0..n)
            .map(|i| {
                let t = i as f32 / RATE;
                (1..harmonics)
                    .map(|k| (2.0 * core::f32::consts::PI * f0 * k as f32 * t).sin() / (k as f32).powi(slope))
                    .sum()
            })
            .collect()
    }

    /// Frames (in any mode) called speech, as (mode, frame index) for messages.
    fn speech_frames(audio: &[i16]) -> Vec<(u8, usize)> {
        let mut found = Vec::new();
        for mode in VadMode::ALL {
            for (i, s) in decisions(mode, audio).into_iter().enumerate() {
                if s {
                    found.push((mode.level(), i));
                }
            }
        }
        found
    }

    fn assert_never_speech(what: &str, audio: &[i16]) {
        let found = speech_frames(audio);
        assert!(
            found.is_empty(),
            "{what}: {} speech frames, first {:?}",
            found.len(),
            &found[..found.len().min(5)]
        );
    }

    #[test]
    fn mains_hum_and_buzz_below_speech_are_never_speech() {
        let seconds = 4 * 8_000;
        for f0 in [50.0, 60.0] {
            for (shape, x) in [
                ("sawtooth", buzz(f0, 1.0, seconds)),
                ("1/k", mains(f0, 1, seconds)),
                ("1/k²", mains(f0, 2, seconds)),
            ] {
                for dbfs in [-60.0, -50.0, -45.0, -40.0, -30.0] {
                    assert_never_speech(
                        &std::format!("{f0} Hz {shape} at {dbfs} dBFS"),
                        &line(&at_dbfs(&x, dbfs)),
                    );
                }
            }
        }
    }

    #[test]
    fn faint_white_noise_is_never_speech() {
        let mut noise = Noise(0xdead_beef);
        let x: Vec<f32> = (0..8_000 * 4).map(|_| noise.next()).collect();
        for dbfs in [-70.0, -60.0, -55.0] {
            assert_never_speech(&std::format!("white noise at {dbfs} dBFS"), &line(&at_dbfs(&x, dbfs)));
        }
    }

    #[test]
    fn patterns_of_tiny_mulaw_codes_are_never_speech() {
        // μ-law's quietest segment: codes 0x70..=0x7F and 0xF0..=0xFF decode to ±0..±120.
        let tiny = |k: u32| if k & 16 == 0 { 0x70 | (k & 15) as u8 } else { 0xF0 | (k & 15) as u8 };
        let decode =
            |codes: Vec<u8>| -> Vec<i16> { codes.into_iter().map(crate::g711::ulaw_decode).collect() };
        let n = 8_000 * 4;
        let mut noise = Noise(0x0bad_cafe);
        let random = decode((0..n).map(|_| tiny((noise.next() * 1e6) as i32 as u32)).collect());
        let ramp = decode((0..n as u32).map(tiny).collect());
        // Bursts of random tiny codes, 200 ms on, 300 ms off, after digital silence.
        let bursts = decode(
            (0..n)
                .map(|i| {
                    if i >= 8_000 && i % 4_000 < 1_600 {
                        tiny((noise.next() * 1e6) as i32 as u32)
                    } else {
                        0xFF
                    }
                })
                .collect(),
        );
        for (what, audio) in [("random", random), ("ramp", ramp), ("bursts", bursts)] {
            assert_never_speech(&std::format!("tiny codes, {what}"), &audio);
        }
    }

    /// The repository's recorded caller (μ-law, 8 kHz), decoded. It speaks
    /// from 0.3 s to 1.6 s, 1.8 s to 2.9 s and 3.2 s to 4.1 s.
    fn caller() -> Vec<i16> {
        let wav: &[u8] = include_bytes!("../../examples/caller.wav");
        let data = wav.windows(4).position(|w| w == b"data").expect("caller.wav has a data chunk");
        wav[data + 8..].iter().map(|&c| crate::g711::ulaw_decode(c)).collect()
    }

    /// Fraction of the caller's spoken 20 ms frames called speech, in the worst mode.
    fn worst_recall(audio: &[i16]) -> f32 {
        let spoken = |i: usize| [(15, 80), (90, 145), (160, 205)].iter().any(|&(a, b)| (a..b).contains(&i));
        VadMode::ALL
            .iter()
            .map(|&mode| {
                let d = decisions(mode, audio);
                let hits = d.iter().enumerate().filter(|&(i, &s)| s && spoken(i)).count();
                hits as f32 / (0..d.len()).filter(|&i| spoken(i)).count() as f32
            })
            .fold(1.0, f32::min)
    }

    #[test]
    fn real_speech_is_found_alone_quiet_and_over_hum() {
        let speech: Vec<f32> = caller().iter().map(|&s| f32::from(s)).collect();
        let hum = at_dbfs(&mains(50.0, 1, speech.len()), -45.0);
        let over_hum: Vec<f32> = speech.iter().zip(&hum).map(|(s, h)| s + h).collect();
        let quiet: Vec<f32> = speech.iter().map(|s| s * 10f32.powf(-15.0 / 20.0)).collect();
        for (what, x) in
            [("as recorded", speech), ("over 50 Hz hum at -45 dBFS", over_hum), ("15 dB quieter", quiet)]
        {
            // Before the gates: 0.68, 0.85 (the hum itself counted as speech) and 0.68.
            let recall = worst_recall(&line(&x));
            assert!(recall > 0.6, "{what}: only {recall} of the spoken frames found");
        }
    }

    /// FNV-1a over a stream of words.
    fn fnv(hash: &mut u64, word: u32) {
        for byte in word.to_le_bytes() {
            *hash = (*hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The recorded caller alone, over white and brown noise at three
    /// levels, over hum, 15 dB quieter, and noise alone: what the VAD
    /// meets on a line.
    fn recorded_corpus() -> Vec<(String, Vec<i16>)> {
        let speech: Vec<f32> = caller().iter().map(|&s| f32::from(s)).collect();
        let n = speech.len();
        let mut noise = Noise(0x5eed_0001);
        let white: Vec<f32> = (0..n).map(|_| noise.next()).collect();
        let mut level = 0.0f32;
        let brown: Vec<f32> = (0..n)
            .map(|_| {
                level = 0.995 * level + noise.next();
                level
            })
            .collect();
        let hum = at_dbfs(&mains(50.0, 1, n), -45.0);
        let mix = |a: &[f32], b: &[f32]| -> Vec<f32> { a.iter().zip(b).map(|(x, y)| x + y).collect() };
        let mut corpus = std::vec![("as recorded".to_string(), line(&speech))];
        for dbfs in [-55.0, -45.0, -35.0] {
            corpus.push((std::format!("white {dbfs}"), line(&mix(&speech, &at_dbfs(&white, dbfs)))));
            corpus.push((std::format!("brown {dbfs}"), line(&mix(&speech, &at_dbfs(&brown, dbfs)))));
        }
        corpus.push(("hum".to_string(), line(&mix(&speech, &hum))));
        let quiet: Vec<f32> = speech.iter().map(|s| s * 10f32.powf(-15.0 / 20.0)).collect();
        corpus.push(("quiet".to_string(), line(&quiet)));
        corpus.push(("white alone".to_string(), line(&at_dbfs(&white, -40.0))));
        corpus
    }

    #[test]
    fn decisions_and_scores_on_recorded_speech_are_pinned() {
        // Fingerprints of every decision and every score (bit for bit), in
        // every mode, on the corpus above, taken before the VAD's cost was
        // cut (issue 13): a faster VAD must decide exactly as the old one.
        // A deliberate change of the model or features changes them; then
        // say why in the commit and update both.
        let (mut decided, mut scored, mut speech_frames) =
            (0xcbf2_9ce4_8422_2325u64, 0xcbf2_9ce4_8422_2325u64, 0);
        for (_, audio) in recorded_corpus() {
            for mode in VadMode::ALL {
                let mut vad = Vad::new(VadConfig { mode });
                for frame in audio.chunks_exact(FRAME_20MS) {
                    let speech = vad.classify(frame).unwrap();
                    speech_frames += usize::from(speech);
                    fnv(&mut decided, u32::from(speech));
                    fnv(&mut scored, vad.score().to_bits());
                }
            }
        }
        let now = std::format!("decisions {decided:#x}, scores {scored:#x}, {speech_frames} speech frames");
        assert_eq!(decided, 0x0172_0657_460b_dcc5, "decisions changed: {now}");
        assert_eq!(speech_frames, 23_342, "decisions changed: {now}");
        assert_eq!(scored, 0x3cfe_14db_f454_af6d, "scores changed: {now}");
    }

    // ----- TalkspurtDetector -----

    fn at(frame: u64) -> Instant {
        Instant::from_millis(20 * frame)
    }

    fn config(onset_frames: u8, onset_window: u8, hangover_frames: u16) -> TalkspurtConfig {
        TalkspurtConfig { onset_frames, onset_window, hangover_frames }
    }

    /// Feeds frames at 20 ms spacing ('S' speech, '.' not); returns the events with their frame index.
    fn run(config: TalkspurtConfig, pattern: &str) -> Vec<(u64, TalkspurtEvent)> {
        let mut d = TalkspurtDetector::new(config, Instant::ZERO).unwrap();
        let mut events = Vec::new();
        for (i, c) in pattern.chars().enumerate() {
            let i = i as u64;
            d.handle_frame(at(i), c == 'S');
            while let Some(e) = d.poll_event() {
                events.push((i, e));
            }
        }
        events
    }

    use TalkspurtEvent::{SpeechEnd, SpeechStart};

    #[test]
    fn onset_needs_enough_speech_in_the_window() {
        // Never three speech frames within five.
        assert!(run(config(3, 5, 4), "S...S...S.S...S....").is_empty());
        // Frames 4, 6 and 7 are three within five: confirmed at 7, begun at 4.
        assert_eq!(run(config(3, 5, 4), "....S.SS"), [(7, SpeechStart { at: at(4) })]);
    }

    #[test]
    fn start_is_the_first_speech_frame_in_the_window() {
        // Window 5 at frame 5 holds frames 1..=5; speech at 1, 3, 5 → start at 1.
        assert_eq!(run(config(3, 5, 2), ".S.S.S"), [(5, SpeechStart { at: at(1) })]);
        // With onset 1 the start is the frame itself.
        assert_eq!(run(config(1, 1, 2), "..S"), [(2, SpeechStart { at: at(2) })]);
    }

    #[test]
    fn hangover_bridges_short_pauses_and_ends_at_the_first_silent_frame() {
        let events = run(config(1, 1, 3), "SS..SS...S");
        assert_eq!(
            events,
            [(0, SpeechStart { at: at(0) }), (8, SpeechEnd { at: at(6) }), (9, SpeechStart { at: at(9) })]
        );
    }

    #[test]
    fn end_of_stream_closes_a_talkspurt() {
        let mut d = TalkspurtDetector::new(config(1, 1, 5), Instant::ZERO).unwrap();
        d.handle_frame(at(0), true);
        assert_eq!(d.poll_event(), Some(SpeechStart { at: at(0) }));
        d.handle_frame(at(1), true);
        d.handle_end_of_stream(at(2));
        assert_eq!(d.poll_event(), Some(SpeechEnd { at: at(2) }));
        assert_eq!(d.poll_event(), None);
        assert!(!d.in_talkspurt());

        // Ending inside the hangover: speech stopped where the silence began.
        let mut d = TalkspurtDetector::new(config(1, 1, 5), Instant::ZERO).unwrap();
        for (i, s) in [true, false, false].into_iter().enumerate() {
            d.handle_frame(at(i as u64), s);
            let _ = d.poll_event();
        }
        d.handle_end_of_stream(at(3));
        assert_eq!(d.poll_event(), Some(SpeechEnd { at: at(1) }));

        // Outside a talkspurt there is nothing to end.
        d.handle_end_of_stream(at(4));
        assert_eq!(d.poll_event(), None);
    }

    #[test]
    fn undrained_start_and_end_cancel_out() {
        let mut d = TalkspurtDetector::new(config(1, 1, 1), Instant::ZERO).unwrap();
        d.handle_frame(at(0), true);
        d.handle_frame(at(1), false);
        assert_eq!(d.poll_event(), None);
        d.handle_frame(at(2), true);
        assert_eq!(d.poll_event(), Some(SpeechStart { at: at(2) }));
    }

    #[test]
    fn time_never_goes_backwards() {
        let mut d = TalkspurtDetector::new(config(1, 1, 1), at(10)).unwrap();
        d.handle_frame(at(3), true);
        assert_eq!(d.poll_event(), Some(SpeechStart { at: at(10) }));
        d.handle_frame(at(12), true);
        d.handle_frame(at(11), false);
        assert_eq!(d.poll_event(), Some(SpeechEnd { at: at(12) }));
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let new = |c| TalkspurtDetector::new(c, Instant::ZERO).map(|_| ());
        assert_eq!(new(config(1, 0, 1)), Err(VadError::OnsetWindow { window: 0 }));
        assert_eq!(new(config(1, 33, 1)), Err(VadError::OnsetWindow { window: 33 }));
        assert_eq!(new(config(0, 3, 1)), Err(VadError::OnsetFrames { frames: 0, window: 3 }));
        assert_eq!(new(config(4, 3, 1)), Err(VadError::OnsetFrames { frames: 4, window: 3 }));
        assert_eq!(new(config(2, 3, 0)), Err(VadError::HangoverFrames));
        assert_eq!(new(config(32, 32, 1)), Ok(()));
        assert_eq!(new(TalkspurtConfig::default()), Ok(()));
    }

    /// A plain re-statement of the rules over a whole sequence, for comparison.
    fn reference(c: TalkspurtConfig, speech: &[bool]) -> Vec<(u64, TalkspurtEvent)> {
        let mut events = Vec::new();
        let mut open = false;
        let mut onset_from = 0usize; // frames before this one cannot count towards an onset
        let mut silent = 0u16;
        let mut silence_start = 0usize;
        for (i, &s) in speech.iter().enumerate() {
            if open {
                if s {
                    silent = 0;
                } else {
                    if silent == 0 {
                        silence_start = i;
                    }
                    silent += 1;
                    if silent >= c.hangover_frames {
                        open = false;
                        onset_from = i + 1;
                        events.push((i as u64, SpeechEnd { at: at(silence_start as u64) }));
                    }
                }
                continue;
            }
            let lo = (i + 1).saturating_sub(usize::from(c.onset_window)).max(onset_from);
            let window: Vec<usize> = (lo..=i).filter(|&k| speech[k]).collect();
            if window.len() >= usize::from(c.onset_frames) {
                open = true;
                silent = 0;
                events.push((i as u64, SpeechStart { at: at(window[0] as u64) }));
            }
        }
        events
    }

    proptest! {
        #[test]
        fn matches_the_reference(
            speech in proptest::collection::vec(any::<bool>(), 0..300),
            window in 1u8..=32,
            onset in 1u8..=32,
            hangover in 1u16..20,
        ) {
            let c = config(onset.min(window), window, hangover);
            let pattern: String = speech.iter().map(|&s| if s { 'S' } else { '.' }).collect();
            prop_assert_eq!(run(c, &pattern), reference(c, &speech));
        }
    }
}
