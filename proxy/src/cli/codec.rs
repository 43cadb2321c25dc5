//! `voxproxy codec encode|decode --law mu|a`: G.711 from standard input to
//! standard output.
//!
//! `encode` reads raw little-endian 16-bit PCM and writes one G.711 byte per
//! sample; `decode` reads G.711 bytes and writes little-endian 16-bit PCM.
//! Both stream in constant memory (fixed 64 KiB buffers), so they handle
//! inputs of any length, arriving in reads of any size. No sample rate is
//! involved: G.711 is one byte per sample at whatever rate the PCM has.
//!
//! Edge cases, decided here:
//! - An odd number of input bytes to `encode` means the stream ends in half a
//!   sample. Every whole sample is still encoded and written, then the
//!   command fails with one sentence on stderr, because silently dropping or
//!   padding the byte would hide a truncated or misaligned file.
//! - If the reader of standard output goes away (`voxproxy codec decode <
//!   x.ulaw | head -c 100`), the command stops quietly and exits with success,
//!   like other stream filters.
//!
//! The conversion itself is [`convert`], which takes any reader and writer
//! (the binary's doc examples do not run, so its example is the unit test
//! `convert_encodes_and_decodes_any_reader_and_writer`).

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use voxproxy_core::g711::{self, G711Error, Law};

/// Bytes read from standard input per step; all buffers are sized from it.
const READ_BYTES: usize = 64 * 1024;

/// Arguments of `voxproxy codec`.
#[derive(Debug, Args)]
pub struct CodecArgs {
    /// Which way to convert.
    #[arg(value_enum)]
    pub direction: Direction,
    /// The G.711 law of the encoded side (Twilio Media Streams use μ-law).
    #[arg(long, value_enum)]
    pub law: LawArg,
}

/// Which way `voxproxy codec` converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    /// Raw little-endian 16-bit PCM in, G.711 bytes out.
    Encode,
    /// G.711 bytes in, raw little-endian 16-bit PCM out.
    Decode,
}

/// The G.711 law, as spelled on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LawArg {
    /// μ-law (PCMU).
    Mu,
    /// A-law (PCMA).
    A,
}

impl From<LawArg> for Law {
    fn from(law: LawArg) -> Self {
        match law {
            LawArg::Mu => Law::Mu,
            LawArg::A => Law::A,
        }
    }
}

/// Why `voxproxy codec` stopped early.
#[derive(Debug)]
#[non_exhaustive]
pub enum CodecCliError {
    /// Reading the input failed.
    Read(io::Error),
    /// Writing the output failed (other than the reader going away, which is not an error).
    Write(io::Error),
    /// `encode` input ended in half a sample; everything before it was written.
    OddTrailingByte {
        /// Bytes read in total.
        bytes: u64,
    },
    /// The codec rejected a buffer; this is a bug in the command.
    Codec(G711Error),
}

impl fmt::Display for CodecCliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecCliError::Read(e) => write!(f, "could not read standard input: {e}"),
            CodecCliError::Write(e) => write!(f, "could not write standard output: {e}"),
            CodecCliError::OddTrailingByte { bytes } => write!(
                f,
                "standard input ended after {bytes} bytes, an odd number, so its last byte is half \
                 a 16-bit sample and was not encoded (input must be whole little-endian i16 samples)"
            ),
            CodecCliError::Codec(e) => write!(f, "internal error in the G.711 codec: {e}"),
        }
    }
}

impl std::error::Error for CodecCliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CodecCliError::Read(e) | CodecCliError::Write(e) => Some(e),
            CodecCliError::Codec(e) => Some(e),
            CodecCliError::OddTrailingByte { .. } => None,
        }
    }
}

impl From<G711Error> for CodecCliError {
    fn from(e: G711Error) -> Self {
        CodecCliError::Codec(e)
    }
}

/// Runs `voxproxy codec` on the process's standard input and output.
pub fn run(args: &CodecArgs) -> ExitCode {
    let stdin = io::stdin().lock();
    let stdout = io::stdout().lock();
    match convert(args.direction, args.law, stdin, stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Streams `input` to `output` through the G.711 encoder or decoder.
///
/// Returns `Ok` at the end of the input, and also as soon as the output's
/// reader has gone away (a broken pipe), since nobody wants the rest.
///
/// # Errors
///
/// [`CodecCliError::Read`] or [`CodecCliError::Write`] on I/O failures, and
/// [`CodecCliError::OddTrailingByte`] when `encode` input ends in half a sample.
pub fn convert<R: Read, W: Write>(
    direction: Direction,
    law: LawArg,
    input: R,
    mut output: W,
) -> Result<(), CodecCliError> {
    let law = Law::from(law);
    let finished = match direction {
        Direction::Encode => encode_stream(law, input, &mut output)?,
        Direction::Decode => decode_stream(law, input, &mut output)?,
    };
    if finished == Flow::ReaderGone {
        return Ok(());
    }
    match output.flush() {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CodecCliError::Write(e)),
        Ok(()) => Ok(()),
    }
}

/// How a stream ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// The input ended.
    EndOfInput,
    /// The output's reader went away.
    ReaderGone,
}

/// Reads once into `buf`, retrying interruptions; `Ok(0)` is end of input.
fn read_some<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<usize, CodecCliError> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            other => return other.map_err(CodecCliError::Read),
        }
    }
}

fn write_out<W: Write>(output: &mut W, bytes: &[u8]) -> Result<Flow, CodecCliError> {
    match output.write_all(bytes) {
        Ok(()) => Ok(Flow::EndOfInput),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(Flow::ReaderGone),
        Err(e) => Err(CodecCliError::Write(e)),
    }
}

fn encode_stream<R: Read, W: Write>(law: Law, mut input: R, output: &mut W) -> Result<Flow, CodecCliError> {
    // One spare byte in front holds the first half of a sample split across reads.
    let mut bytes = vec![0u8; READ_BYTES + 1];
    let mut pcm = vec![0i16; READ_BYTES / 2 + 1];
    let mut codes = vec![0u8; READ_BYTES / 2 + 1];
    let mut carried = 0;
    let mut total: u64 = 0;
    loop {
        let read = read_some(&mut input, &mut bytes[carried..])?;
        if read == 0 {
            break;
        }
        total = total.saturating_add(read as u64);
        let filled = carried + read;
        let samples = filled / 2;
        for (sample, pair) in pcm.iter_mut().zip(bytes[..2 * samples].chunks_exact(2)) {
            *sample = i16::from_le_bytes([pair[0], pair[1]]);
        }
        let count = g711::encode(law, &pcm[..samples], &mut codes)?;
        if write_out(output, &codes[..count])? == Flow::ReaderGone {
            return Ok(Flow::ReaderGone);
        }
        carried = filled % 2;
        if carried == 1 {
            bytes[0] = bytes[filled - 1];
        }
    }
    if carried == 1 {
        // Hand over what was written before reporting the stray byte.
        if let Err(e) = output.flush()
            && e.kind() != ErrorKind::BrokenPipe
        {
            return Err(CodecCliError::Write(e));
        }
        return Err(CodecCliError::OddTrailingByte { bytes: total });
    }
    Ok(Flow::EndOfInput)
}

fn decode_stream<R: Read, W: Write>(law: Law, mut input: R, output: &mut W) -> Result<Flow, CodecCliError> {
    let mut codes = vec![0u8; READ_BYTES];
    let mut pcm = vec![0i16; READ_BYTES];
    let mut bytes = vec![0u8; 2 * READ_BYTES];
    loop {
        let read = read_some(&mut input, &mut codes)?;
        if read == 0 {
            return Ok(Flow::EndOfInput);
        }
        let count = g711::decode(law, &codes[..read], &mut pcm)?;
        for (pair, sample) in bytes.chunks_exact_mut(2).zip(&pcm[..count]) {
            pair.copy_from_slice(&sample.to_le_bytes());
        }
        if write_out(output, &bytes[..2 * count])? == Flow::ReaderGone {
            return Ok(Flow::ReaderGone);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hands out its data in reads of the given sizes (cycled), with an
    /// `Interrupted` error before each one.
    struct Trickle<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        step: usize,
        interrupt_next: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.interrupt_next {
                self.interrupt_next = false;
                return Err(io::Error::from(ErrorKind::Interrupted));
            }
            self.interrupt_next = true;
            let want = self.sizes[self.step % self.sizes.len()].max(1);
            self.step += 1;
            let n = want.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Accepts `room` bytes, then reports a broken pipe.
    struct ClosingPipe {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for ClosingPipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from(ErrorKind::BrokenPipe));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn le_bytes(pcm: &[i16]) -> Vec<u8> {
        pcm.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    #[test]
    fn convert_encodes_and_decodes_any_reader_and_writer() {
        let pcm: Vec<u8> = [0i16, 1000, -1000].iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut mu = Vec::new();
        convert(Direction::Encode, LawArg::Mu, &pcm[..], &mut mu).unwrap();
        assert_eq!(mu, [0xFF, 0xCE, 0x4E]);

        let mut back = Vec::new();
        convert(Direction::Decode, LawArg::Mu, &mu[..], &mut back).unwrap();
        assert_eq!(back.len(), 6);
    }

    #[test]
    fn encodes_every_sample_value_across_buffer_boundaries() {
        let pcm: Vec<i16> = (i16::MIN..=i16::MAX).collect();
        for law in [LawArg::Mu, LawArg::A] {
            let mut out = Vec::new();
            convert(Direction::Encode, law, &le_bytes(&pcm)[..], &mut out).unwrap();
            let expected: Vec<u8> = pcm.iter().map(|&s| Law::from(law).encode(s)).collect();
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn odd_trailing_byte_is_an_error_after_writing_whole_samples() {
        let mut out = Vec::new();
        let err =
            convert(Direction::Encode, LawArg::Mu, &[0u8, 0, 0xE8, 0x03, 0x7F][..], &mut out).unwrap_err();
        assert!(matches!(err, CodecCliError::OddTrailingByte { bytes: 5 }), "{err:?}");
        assert_eq!(out, [g711::ulaw_encode(0), g711::ulaw_encode(1000)]);
        let text = err.to_string();
        assert!(text.contains("odd") && text.contains('5') && !text.contains('\n'), "{text}");
    }

    #[test]
    fn broken_pipe_stops_quietly() {
        let input = vec![0x55u8; 3 * READ_BYTES];
        let mut pipe = ClosingPipe { room: 1000, got: Vec::new() };
        assert!(convert(Direction::Decode, LawArg::A, &input[..], &mut pipe).is_ok());
        assert_eq!(pipe.got.len(), 1000);
        let mut pipe = ClosingPipe { room: 10, got: Vec::new() };
        assert!(convert(Direction::Encode, LawArg::A, &input[..], &mut pipe).is_ok());
        assert_eq!(pipe.got, [g711::alaw_encode(0x5555); 10]);
    }

    #[test]
    fn read_errors_are_reported() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let err = convert(Direction::Decode, LawArg::Mu, Failing, Vec::new()).unwrap_err();
        assert!(matches!(err, CodecCliError::Read(_)));
        assert!(err.to_string().contains("disk on fire"));
    }

    proptest! {
        #[test]
        fn short_and_interrupted_reads_do_not_change_the_output(
            pcm in proptest::collection::vec(any::<i16>(), 0..400),
            sizes in proptest::collection::vec(1usize..9, 1..6),
        ) {
            let bytes = le_bytes(&pcm);
            for law in [LawArg::Mu, LawArg::A] {
                let mut out = Vec::new();
                let input = Trickle { data: &bytes, sizes: sizes.clone(), step: 0, interrupt_next: true };
                convert(Direction::Encode, law, input, &mut out).unwrap();
                let expected: Vec<u8> = pcm.iter().map(|&s| Law::from(law).encode(s)).collect();
                prop_assert_eq!(&out, &expected);

                let mut back = Vec::new();
                let input = Trickle { data: &expected, sizes: sizes.clone(), step: 0, interrupt_next: false };
                convert(Direction::Decode, law, input, &mut back).unwrap();
                let decoded: Vec<i16> = expected.iter().map(|&c| Law::from(law).decode(c)).collect();
                prop_assert_eq!(back, le_bytes(&decoded));
            }
        }
    }
}
