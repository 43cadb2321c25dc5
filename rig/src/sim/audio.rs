//! The audio the simulated callers speak, as 8 kHz μ-law bytes that the
//! calls loop over: a WAV file, or a built-in speech-like test signal.
//!
//! ```
//! use voxproxy_rig::sim::audio::{TEST_SIGNAL_SAMPLES, test_signal};
//!
//! let signal = test_signal();
//! assert_eq!(signal.len(), TEST_SIGNAL_SAMPLES);
//! // The second half is a pause: μ-law silence.
//! assert!(signal[TEST_SIGNAL_SAMPLES / 2..].iter().all(|&code| code == 0xff));
//! ```

use std::fs::File;
use std::io::Read;
use std::path::Path;

use voxproxy_core::g711::{Law, ulaw_encode};
use voxproxy_core::resample::Downsampler;

use super::SimError;
use voxproxy_adapters::wav::{self, Encoding};

/// Largest WAV file read (64 MiB: over an hour of 16 kHz PCM16).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Length of the built-in test signal: 1.6 s of "speech", 1.6 s of pause.
pub const TEST_SIGNAL_SAMPLES: usize = 25_600;

/// The built-in caller: talkspurts of syllable-like bursts of a voiced
/// sound (a 110–140 Hz fundamental with harmonics falling off at 6 dB per
/// octave up to 3.4 kHz, about −12 dBFS at its loudest) separated by pauses
/// of digital silence, so a VAD sees speech starting and stopping.
#[must_use]
pub fn test_signal() -> Vec<u8> {
    const RATE: f64 = 8_000.0;
    const SPEECH: usize = TEST_SIGNAL_SAMPLES / 2;
    const SYLLABLE: f64 = 0.2; // seconds: five syllables per second
    let mut phase = 0.0f64;
    (0..TEST_SIGNAL_SAMPLES)
        .map(|n| {
            if n >= SPEECH {
                return Law::Mu.silence();
            }
            let t = n as f64 / RATE;
            // The pitch glides within each syllable, as intonation does.
            let within = (t / SYLLABLE).fract();
            let f0 = 110.0 + 30.0 * (std::f64::consts::PI * within).sin();
            phase += f0 / RATE;
            let mut voiced = 0.0;
            let mut k = 1.0;
            while k * f0 < 3_400.0 {
                voiced += (2.0 * std::f64::consts::PI * k * phase).sin() / k;
                k += 1.0;
            }
            // Syllable envelope: a raised sine with a short gap between syllables.
            let envelope =
                if within < 0.85 { (std::f64::consts::PI * within / 0.85).sin().powi(2) } else { 0.0 };
            let sample = 0.25 * 32_767.0 * envelope * voiced / 2.0;
            ulaw_encode(sample.clamp(-32_768.0, 32_767.0) as i16)
        })
        .collect()
}

/// Reads a mono WAV file, 8 kHz (PCM16 or μ-law) or 16 kHz (PCM16 or μ-law,
/// resampled to 8 kHz), as μ-law at 8 kHz.
///
/// # Errors
/// [`SimError::Audio`] saying what is wrong with the file.
pub fn load_wav(path: &Path) -> Result<Vec<u8>, SimError> {
    let fail = |reason: String| SimError::Audio { path: path.to_owned(), reason };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!("it is larger than {} MiB", MAX_FILE_BYTES >> 20)));
    }
    let parsed = wav::parse(&bytes).map_err(|e| fail(e.to_string()))?;
    let format = parsed.format;
    let rate_ok = format.sample_rate == 8_000 || format.sample_rate == 16_000;
    if !rate_ok || format.channels != 1 || format.encoding().is_none() {
        return Err(fail(format!(
            "it is {format}; the simulator needs 8000 or 16000 Hz mono PCM16 or μ-law"
        )));
    }
    let mulaw = if format.sample_rate == 8_000 && format.encoding() == Some(Encoding::MuLaw) {
        parsed.data.to_vec()
    } else {
        let mut samples = parsed.decode().map_err(|e| fail(e.to_string()))?;
        if format.sample_rate == 16_000 {
            let mut down = Downsampler::new();
            let mut narrow = vec![0i16; down.output_len(samples.len())];
            let n = down.downsample(&samples, &mut narrow).map_err(|e| fail(e.to_string()))?;
            narrow.truncate(n);
            samples = narrow;
        }
        samples.iter().map(|&s| ulaw_encode(s)).collect()
    };
    if mulaw.len() < 160 {
        return Err(fail("it holds less than 20 ms of audio".into()));
    }
    Ok(mulaw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxproxy_core::vad::{Vad, VadConfig};

    fn wav_file(rate: u32, samples: &[i16]) -> Vec<u8> {
        let data_len = (samples.len() * 2) as u32;
        let mut f = Vec::new();
        f.extend_from_slice(b"RIFF");
        f.extend_from_slice(&(36 + data_len).to_le_bytes());
        f.extend_from_slice(b"WAVEfmt ");
        f.extend_from_slice(&16u32.to_le_bytes());
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&rate.to_le_bytes());
        f.extend_from_slice(&(rate * 2).to_le_bytes());
        f.extend_from_slice(&2u16.to_le_bytes());
        f.extend_from_slice(&16u16.to_le_bytes());
        f.extend_from_slice(b"data");
        f.extend_from_slice(&data_len.to_le_bytes());
        for s in samples {
            f.extend_from_slice(&s.to_le_bytes());
        }
        f
    }

    #[test]
    fn test_signal_has_talkspurts_and_pauses_a_vad_can_tell_apart() {
        let signal = test_signal();
        assert_eq!(signal.len(), TEST_SIGNAL_SAMPLES);
        let mut vad = Vad::new(VadConfig::default());
        let decide = |vad: &mut Vad, frames: &[u8]| -> usize {
            frames
                .chunks_exact(160)
                .filter(|f| {
                    let pcm: Vec<i16> = f.iter().map(|&c| voxproxy_core::g711::ulaw_decode(c)).collect();
                    vad.classify(&pcm).unwrap()
                })
                .count()
        };
        let half = TEST_SIGNAL_SAMPLES / 2;
        let speech = decide(&mut vad, &signal[..half]);
        let pause = decide(&mut vad, &signal[half..]);
        // 80 frames each: most of the talkspurt is speech, the pause (after
        // the VAD's hangover) is not.
        assert!(speech >= 40, "{speech} of 80 speech frames");
        assert!(pause <= 20, "{pause} of 80 pause frames");
    }

    #[test]
    fn wav_files_at_8_and_16_khz_load_and_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tone: Vec<i16> = (0..1600).map(|i| ((f64::from(i) * 0.2).sin() * 8000.0) as i16).collect();
        let narrow = dir.path().join("8k.wav");
        std::fs::write(&narrow, wav_file(8_000, &tone)).unwrap();
        let loaded = load_wav(&narrow).unwrap();
        assert_eq!(loaded.len(), 1600);
        assert_eq!(loaded[10], ulaw_encode(tone[10]));

        let wide = dir.path().join("16k.wav");
        std::fs::write(&wide, wav_file(16_000, &tone)).unwrap();
        assert_eq!(load_wav(&wide).unwrap().len(), 800);

        let other = dir.path().join("44k.wav");
        std::fs::write(&other, wav_file(44_100, &tone)).unwrap();
        let err = load_wav(&other).unwrap_err().to_string();
        assert!(err.contains("44100 Hz") && err.contains("8000 or 16000"), "{err}");

        let short = dir.path().join("short.wav");
        std::fs::write(&short, wav_file(8_000, &tone[..100])).unwrap();
        assert!(load_wav(&short).is_err());
        assert!(load_wav(&dir.path().join("absent.wav")).is_err());
    }
}
