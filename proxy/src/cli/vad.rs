//! `voxproxy vad`: runs the voice activity detector over a WAV file.
//!
//! The file must be 8000 Hz mono, PCM16 or G.711 μ-law (plain or
//! `WAVE_FORMAT_EXTENSIBLE`). It is cut into 20 ms frames (a final partial
//! frame is not classified) and each frame goes through
//! [`voxproxy_core::vad::Vad`]. The output, on stdout, one item per line:
//!
//! - by default, speech segments as `start_ms end_ms` (end exclusive), from
//!   [`voxproxy_core::vad::TalkspurtDetector`] with its default onset and
//!   hangover;
//! - with `--frames`, the raw decision of every 20 ms frame, `1` for speech
//!   and `0` for none.
//!
//! A `data` chunk shorter than its header claims is used as far as it goes,
//! with a warning on stderr. Any error is one sentence on stderr and exit
//! code 1.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use voxproxy_core::time::Instant;
use voxproxy_core::vad::{
    FRAME_20MS, SAMPLE_RATE_HZ, TalkspurtConfig, TalkspurtDetector, TalkspurtEvent, Vad, VadConfig, VadMode,
};

use voxproxy_adapters::wav;

/// Largest file read (512 MiB: over 9 hours of PCM16, 18 of μ-law, at 8 kHz).
const MAX_FILE_BYTES: u64 = 512 << 20;
const FRAME_MS: u64 = 20;

/// Arguments of `voxproxy vad`.
#[derive(Debug, Args)]
pub struct VadArgs {
    /// Aggressiveness, 0 (keeps the most speech) to 3 (rejects the most noise).
    #[arg(long, default_value_t = VadMode::default().level(), value_parser = clap::value_parser!(u8).range(0..=3))]
    pub mode: u8,
    /// Print one 0/1 speech decision per 20 ms frame instead of speech segments.
    #[arg(long)]
    pub frames: bool,
    /// 8000 Hz mono WAV file, PCM16 or μ-law.
    pub file: PathBuf,
}

/// Runs `voxproxy vad`.
pub fn run(args: &VadArgs) -> ExitCode {
    match classify_file(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("voxproxy vad: {message}");
            ExitCode::FAILURE
        }
    }
}

fn classify_file(args: &VadArgs) -> Result<(), String> {
    let name = args.file.display();
    let bytes = read_bounded(&args.file).map_err(|e| format!("cannot read {name}: {e}"))?;
    let parsed = wav::parse(&bytes).map_err(|e| format!("{name} cannot be read: {e}"))?;
    let format = parsed.format;
    if format.sample_rate != SAMPLE_RATE_HZ || format.channels != 1 || format.encoding().is_none() {
        return Err(format!("{name} is {format}; voxproxy vad needs 8000 Hz mono PCM16 or μ-law"));
    }
    if parsed.truncated {
        eprintln!(
            "voxproxy vad: warning: the data chunk of {name} is cut short; using the {} bytes present",
            parsed.data.len()
        );
    }
    let samples = parsed.decode().map_err(|e| format!("{name}: {e}"))?;

    let mode = VadMode::try_from(args.mode).map_err(|e| e.to_string())?;
    let mut vad = Vad::new(VadConfig { mode });
    let mut spurts =
        TalkspurtDetector::new(TalkspurtConfig::default(), Instant::ZERO).map_err(|e| e.to_string())?;
    let mut out = BufWriter::new(io::stdout().lock());
    let write_err = |e: io::Error| format!("cannot write the output: {e}");
    let mut frames = 0u64;
    for frame in samples.chunks_exact(FRAME_20MS) {
        let speech = vad.classify(frame).map_err(|e| e.to_string())?;
        let now = Instant::ZERO + Duration::from_millis(frames * FRAME_MS);
        frames += 1;
        if args.frames {
            writeln!(out, "{}", u8::from(speech)).map_err(write_err)?;
            continue;
        }
        spurts.handle_frame(now, speech);
        write_events(&mut out, &mut spurts).map_err(write_err)?;
    }
    if !args.frames {
        spurts.handle_end_of_stream(Instant::ZERO + Duration::from_millis(frames * FRAME_MS));
        write_events(&mut out, &mut spurts).map_err(write_err)?;
    }
    out.flush().map_err(write_err)
}

/// Prints each completed segment as `start_ms end_ms`.
fn write_events(out: &mut impl Write, spurts: &mut TalkspurtDetector) -> io::Result<()> {
    while let Some(event) = spurts.poll_event() {
        match event {
            TalkspurtEvent::SpeechStart { at } => write!(out, "{}", at.as_micros() / 1000)?,
            TalkspurtEvent::SpeechEnd { at } => writeln!(out, " {}", at.as_micros() / 1000)?,
        }
    }
    Ok(())
}

fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::other(format!("it is larger than {} MiB", MAX_FILE_BYTES >> 20)));
    }
    Ok(bytes)
}
