//! `vad_frames`: arbitrary audio through [`Vad`] in 10 ms, 20 ms and wrong
//! frame lengths, and the decisions through a [`TalkspurtDetector`].
//!
//! Input layout: byte 0 picks the mode (any value; 4..=255 must be
//! rejected) and byte 1 the talkspurt config (some invalid, which must be
//! rejected); byte 2 is a pattern of frame lengths, two bits per frame
//! (0 and 2: 20 ms, 1: 10 ms, 3: a wrong length); the rest is little-endian
//! i16 samples.
//!
//! Checked on every frame: a wrong length is an error that leaves the
//! detector exactly as it was; a 20 ms frame decides what its two 10 ms
//! halves decide together; the score is never NaN; speech starts and ends
//! strictly alternate, with times inside the stream and an end never before
//! its start; the stream's end closes any talkspurt.

use core::time::Duration;
use std::vec::Vec;

use voxproxy_core::time::Instant;
use voxproxy_core::vad::{
    FRAME_10MS, FRAME_20MS, TalkspurtConfig, TalkspurtDetector, TalkspurtEvent, Vad, VadConfig, VadError,
    VadMode,
};

/// Bound on the frames of one input (a minute of 20 ms frames).
const MAX_FRAMES: usize = 3_000;

/// Fuzz entry: see the [module docs](self).
pub fn vad_frames(data: &[u8]) {
    let [mode_byte, config_byte, pattern, audio @ ..] = data else {
        return;
    };
    let mode = match VadMode::try_from(*mode_byte) {
        Ok(mode) => mode,
        Err(e) => {
            assert!(*mode_byte > 3, "mode {mode_byte} rejected");
            assert_eq!(e, VadError::Mode { value: *mode_byte });
            VadMode::try_from(mode_byte & 3).expect("0..=3 is a mode")
        }
    };
    let config = TalkspurtConfig {
        onset_frames: config_byte & 0x07,
        onset_window: (config_byte >> 3) & 0x07,
        hangover_frames: u16::from(config_byte >> 6),
    };
    let valid = config.onset_window >= 1
        && config.onset_frames >= 1
        && config.onset_frames <= config.onset_window
        && config.hangover_frames >= 1;
    let start = Instant::from_millis(1_000);
    let mut spurts = match TalkspurtDetector::new(config, start) {
        Ok(spurts) => {
            assert!(valid, "invalid {config:?} accepted");
            spurts
        }
        Err(_) => {
            assert!(!valid, "valid {config:?} rejected");
            TalkspurtDetector::new(TalkspurtConfig::default(), start).expect("default is valid")
        }
    };

    let samples: Vec<i16> = audio.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    let mut vad = Vad::new(VadConfig { mode });
    let mut now = start;
    let mut checker = Alternation::default();
    let mut rest = samples.as_slice();
    for k in 0..MAX_FRAMES {
        let len = match (pattern >> (2 * (k % 4))) & 3 {
            1 => FRAME_10MS,
            3 => wrong_length(k, rest.len()),
            _ => FRAME_20MS,
        };
        let Some(frame) = rest.get(..len) else {
            break;
        };
        if len != FRAME_10MS && len != FRAME_20MS {
            let before = vad.clone();
            assert_eq!(vad.classify(frame), Err(VadError::FrameLength { len }));
            assert_same_state(&before, &vad);
            rest = &rest[len..];
            continue;
        }
        let speech = if len == FRAME_20MS {
            let mut halves = vad.clone();
            let first = halves.classify(&frame[..FRAME_10MS]).expect("10 ms frame");
            let second = halves.classify(&frame[FRAME_10MS..]).expect("10 ms frame");
            let whole = vad.classify(frame).expect("20 ms frame");
            assert_eq!(whole, first || second, "20 ms decision differs from its halves");
            assert_same_state(&halves, &vad);
            whole
        } else {
            vad.classify(frame).expect("10 ms frame")
        };
        assert!(!vad.score().is_nan(), "NaN score");
        spurts.handle_frame(now, speech);
        while let Some(event) = spurts.poll_event() {
            checker.check(event, start, now);
        }
        assert_eq!(spurts.in_talkspurt(), checker.open.is_some());
        now += Duration::from_millis(if len == FRAME_10MS { 10 } else { 20 });
        rest = &rest[len..];
    }
    spurts.handle_end_of_stream(now);
    while let Some(event) = spurts.poll_event() {
        checker.check(event, start, now);
    }
    assert!(checker.open.is_none(), "talkspurt left open at the end of the stream");
    assert!(!spurts.in_talkspurt());
}

/// A frame length that is neither 10 nor 20 ms, varied with the frame index.
fn wrong_length(k: usize, available: usize) -> usize {
    match k % 5 {
        0 => 0,
        1 => FRAME_10MS - 1,
        2 => FRAME_10MS + 1,
        3 => FRAME_20MS + 1,
        _ => available.clamp(FRAME_20MS + 2, 2 * FRAME_20MS),
    }
}

/// Two detectors are in the same state if they decide the same on the same
/// next frame with bit-identical scores and features.
fn assert_same_state(a: &Vad, b: &Vad) {
    let probe: Vec<i16> = (0..FRAME_20MS).map(|i| ((i * 977) % 4001) as i16 - 2000).collect();
    let (mut a, mut b) = (a.clone(), b.clone());
    assert_eq!(a.classify(&probe), b.classify(&probe));
    assert_eq!(a.score().to_bits(), b.score().to_bits());
    assert!(a.features().iter().zip(b.features()).all(|(x, y)| x.to_bits() == y.to_bits()));
}

/// Checks that starts and ends alternate and that their times make sense.
#[derive(Default)]
struct Alternation {
    /// Start time of the open talkspurt.
    open: Option<Instant>,
    /// End time of the last talkspurt.
    last_end: Option<Instant>,
}

impl Alternation {
    fn check(&mut self, event: TalkspurtEvent, start: Instant, now: Instant) {
        match event {
            TalkspurtEvent::SpeechStart { at } => {
                assert!(self.open.is_none(), "two starts in a row");
                assert!(at >= start && at <= now, "start {at:?} outside the stream");
                assert!(self.last_end.is_none_or(|end| at >= end), "start before the previous end");
                self.open = Some(at);
            }
            TalkspurtEvent::SpeechEnd { at } => {
                let began = self.open.take().expect("end without a start");
                assert!(at >= began && at <= now, "end {at:?} before its start {began:?} or after now");
                self.last_end = Some(at);
            }
        }
    }
}
