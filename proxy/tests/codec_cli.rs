//! `voxproxy codec` as a user runs it: the built binary, real pipes.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::thread;

use voxproxy_core::g711;

fn voxproxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_voxproxy"))
}

/// Runs `voxproxy codec <args>` with `input` on stdin, feeding it from a
/// thread so a large input cannot deadlock against a full stdout pipe.
fn run_codec(args: &[&str], input: Vec<u8>) -> Output {
    let mut child = voxproxy()
        .arg("codec")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start voxproxy");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let feeder = thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("wait for voxproxy");
    feeder.join().expect("feeder thread").expect("write stdin");
    output
}

fn le_bytes(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().flat_map(|s| s.to_le_bytes()).collect()
}

#[test]
fn encode_matches_core_for_every_sample_value() {
    // 128 KiB of input: crosses the command's 64 KiB read buffer.
    let pcm: Vec<i16> = (i16::MIN..=i16::MAX).collect();
    for (law, encode) in [("mu", g711::ulaw_encode as fn(i16) -> u8), ("a", g711::alaw_encode)] {
        let out = run_codec(&["encode", "--law", law], le_bytes(&pcm));
        assert!(out.status.success(), "{law}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty());
        let expected: Vec<u8> = pcm.iter().map(|&s| encode(s)).collect();
        assert!(out.stdout == expected, "{law}-law encode differs from voxproxy_core::g711");
    }
}

#[test]
fn decode_matches_core_on_a_long_stream() {
    let codes: Vec<u8> = (0..300_001u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for (law, decode) in [("mu", g711::ulaw_decode as fn(u8) -> i16), ("a", g711::alaw_decode)] {
        let out = run_codec(&["decode", "--law", law], codes.clone());
        assert!(out.status.success(), "{law}: {}", String::from_utf8_lossy(&out.stderr));
        let expected: Vec<i16> = codes.iter().map(|&c| decode(c)).collect();
        assert!(out.stdout == le_bytes(&expected), "{law}-law decode differs from voxproxy_core::g711");
    }
}

#[test]
fn odd_trailing_byte_fails_with_one_sentence_after_the_whole_samples() {
    let out = run_codec(&["encode", "--law", "a"], vec![0x10, 0x00, 0x00, 0x80, 0x01]);
    assert!(!out.status.success());
    assert_eq!(out.stdout, [g711::alaw_encode(0x0010), g711::alaw_encode(i16::MIN)]);
    let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("odd") && stderr.contains("5 bytes"), "{stderr}");
}

#[test]
fn empty_input_gives_empty_output() {
    for direction in ["encode", "decode"] {
        let out = run_codec(&[direction, "--law", "mu"], Vec::new());
        assert!(out.status.success());
        assert!(out.stdout.is_empty() && out.stderr.is_empty());
    }
}

#[test]
fn bad_or_missing_arguments_fail() {
    for args in [&["encode", "--law", "u"][..], &["encode"], &["transcode", "--law", "mu"]] {
        let out = run_codec(args, Vec::new());
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(!out.stderr.is_empty(), "{args:?} should say why");
    }
}

#[test]
fn help_documents_every_flag_and_value() {
    let out = voxproxy().args(["codec", "--help"]).output().expect("run voxproxy");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf-8 help");
    for word in ["--law", "encode", "decode", "mu", "A-law", "little-endian"] {
        assert!(help.contains(word), "help lacks {word:?}:\n{help}");
    }
}

#[test]
fn closed_stdout_stops_the_command_quietly() {
    let mut child = voxproxy()
        .args(["codec", "decode", "--law", "mu"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start voxproxy");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut first = [0u8; 8];
    // Up to 4 MiB of input, but the command may stop taking it at any point.
    let feeder = thread::spawn(move || {
        let chunk = [0x80u8; 4096];
        for _ in 0..1024 {
            if stdin.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    stdout.read_exact(&mut first).expect("first samples");
    drop(stdout);
    let out = child.wait_with_output().expect("wait for voxproxy");
    feeder.join().expect("feeder thread");
    assert_eq!(first, le_bytes(&[g711::ulaw_decode(0x80); 4])[..]);
    assert!(out.status.success(), "status {:?}", out.status);
    assert!(out.stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}
