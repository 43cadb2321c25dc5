//! `voxproxy vad` end to end: the real binary on WAV files written here.

use std::path::PathBuf;
use std::process::{Command, Output};

use voxproxy_core::g711::ulaw_encode;

const RATE: u32 = 8_000;

struct Format {
    tag: u16,
    channels: u16,
    rate: u32,
    bits: u16,
    extensible: bool,
}

const PCM16: Format = Format { tag: 1, channels: 1, rate: RATE, bits: 16, extensible: false };
const MULAW: Format = Format { tag: 7, channels: 1, rate: RATE, bits: 8, extensible: false };

fn wav(format: &Format, data: &[u8]) -> Vec<u8> {
    let align = format.channels * format.bits / 8;
    let mut fmt = Vec::new();
    let tag = if format.extensible { 0xFFFE } else { format.tag };
    fmt.extend_from_slice(&tag.to_le_bytes());
    fmt.extend_from_slice(&format.channels.to_le_bytes());
    fmt.extend_from_slice(&format.rate.to_le_bytes());
    fmt.extend_from_slice(&(format.rate * u32::from(align)).to_le_bytes());
    fmt.extend_from_slice(&align.to_le_bytes());
    fmt.extend_from_slice(&format.bits.to_le_bytes());
    if format.extensible {
        fmt.extend_from_slice(&22u16.to_le_bytes());
        fmt.extend_from_slice(&format.bits.to_le_bytes());
        fmt.extend_from_slice(&4u32.to_le_bytes());
        fmt.extend_from_slice(&format.tag.to_le_bytes());
        fmt.extend_from_slice(&[0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71]);
    }
    let mut body = b"WAVE".to_vec();
    for (id, chunk) in [(b"fmt ", &fmt[..]), (b"data", data)] {
        body.extend_from_slice(id);
        body.extend_from_slice(&u32::try_from(chunk.len()).unwrap().to_le_bytes());
        body.extend_from_slice(chunk);
        if chunk.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut file = b"RIFF".to_vec();
    file.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
    file.extend_from_slice(&body);
    file
}

fn pcm16(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn mulaw(samples: &[i16]) -> Vec<u8> {
    samples.iter().map(|&s| ulaw_encode(s)).collect()
}

/// 1 s of silence, 1 s of a 140 Hz buzz (a sawtooth: all harmonics, like a
/// voiced vowel) peaking at about -20 dBFS and rising and falling four times
/// like syllables (a steady buzz is not speech), 1 s of silence.
fn silence_buzz_silence() -> Vec<i16> {
    let n = RATE as usize;
    let mut x = vec![0i16; n];
    x.extend((0..n).map(|i| {
        let t = i as f32 / RATE as f32;
        let phase = (140.0 * t).fract();
        let syllables = 0.6 - 0.4 * (2.0 * std::f32::consts::PI * 4.0 * t).cos();
        (5_000.0 * syllables * (2.0 * phase - 1.0)) as i16
    }));
    x.extend(vec![0i16; n]);
    x
}

fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("voxproxy-vad-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn vad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_voxproxy")).arg("vad").args(args).output().unwrap()
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone()).unwrap().lines().map(str::to_owned).collect()
}

fn segments(out: &Output) -> Vec<(u64, u64)> {
    stdout_lines(out)
        .iter()
        .map(|l| {
            let mut it = l.split(' ').map(|v| v.parse::<u64>().unwrap());
            let seg = (it.next().unwrap(), it.next().unwrap());
            assert!(it.next().is_none(), "line {l:?}");
            seg
        })
        .collect()
}

#[test]
fn silence_has_no_segments_and_all_zero_frames() {
    let path = write_temp("silence.wav", &wav(&PCM16, &pcm16(&vec![0; 2 * RATE as usize])));
    let out = vad(&[path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
    let out = vad(&["--frames", path.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(stdout_lines(&out), vec!["0"; 100]);
}

#[test]
fn buzz_is_one_segment_in_every_encoding() {
    let audio = silence_buzz_silence();
    let files = [
        ("buzz_pcm16.wav", wav(&PCM16, &pcm16(&audio))),
        ("buzz_mulaw.wav", wav(&MULAW, &mulaw(&audio))),
        ("buzz_ext_pcm16.wav", wav(&Format { extensible: true, ..PCM16 }, &pcm16(&audio))),
        ("buzz_ext_mulaw.wav", wav(&Format { extensible: true, ..MULAW }, &mulaw(&audio))),
    ];
    for (name, bytes) in files {
        let path = write_temp(name, &bytes);
        for mode in ["0", "3"] {
            let out = vad(&["--mode", mode, path.to_str().unwrap()]);
            assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
            let segs = segments(&out);
            assert_eq!(segs.len(), 1, "{name} mode {mode}: {segs:?}");
            let (start, end) = segs[0];
            // Speech is 1000..2000 ms; allow the onset and hangover their due.
            assert!((960..=1_100).contains(&start), "{name} mode {mode}: start {start}");
            assert!((1_980..=2_400).contains(&end), "{name} mode {mode}: end {end}");
        }
        let out = vad(&["--frames", path.to_str().unwrap()]);
        let frames = stdout_lines(&out);
        assert_eq!(frames.len(), 150, "{name}");
        assert!(frames.iter().all(|l| l == "0" || l == "1"));
        assert!(frames[..50].iter().all(|l| l == "0"), "{name}: speech in the leading silence");
        let voiced = frames[52..100].iter().filter(|l| *l == "1").count();
        assert!(voiced >= 45, "{name}: only {voiced} of 48 buzz frames");
        assert!(frames[110..].iter().all(|l| l == "0"), "{name}: speech in the trailing silence");
    }
}

#[test]
fn wrong_format_is_one_sentence_and_a_failure() {
    let stereo = Format { tag: 1, channels: 2, rate: 44_100, bits: 16, extensible: false };
    let path = write_temp("stereo.wav", &wav(&stereo, &pcm16(&[0; 400])));
    let out = vad(&[path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("is 44100 Hz stereo PCM16; voxproxy vad needs 8000 Hz mono PCM16 or μ-law"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let alaw = Format { tag: 6, channels: 1, rate: RATE, bits: 8, extensible: false };
    let path = write_temp("alaw.wav", &wav(&alaw, &[0xD5; 160]));
    let out = vad(&[path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("8000 Hz mono A-law"));
}

#[test]
fn unreadable_inputs_fail_cleanly() {
    let path = write_temp("not_a_wav.wav", b"ID3\x03 definitely an mp3");
    let out = vad(&[path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("not a WAV file"));

    let missing = std::env::temp_dir().join("voxproxy-vad-cli-no-such-file.wav");
    let out = vad(&[missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("cannot read"));

    let out = vad(&["--mode", "4", missing.to_str().unwrap()]);
    assert!(!out.status.success());
}

#[test]
fn truncated_data_is_used_with_a_warning() {
    let mut bytes = wav(&PCM16, &pcm16(&vec![0; 800]));
    bytes.truncate(bytes.len() - 640); // 320 samples = two 20 ms frames gone
    let path = write_temp("truncated.wav", &bytes);
    let out = vad(&["--frames", path.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(stdout_lines(&out).len(), 3);
    assert!(String::from_utf8(out.stderr).unwrap().contains("cut short"));
}
