#!/usr/bin/env python3
"""Scores voxproxy's VAD and WebRTC's VAD on the held-out TEST set; writes RESULTS.md.

    python3 vad-eval/dataset.py --set test
    cargo build --release -p voxproxy
    python3 vad-eval/evaluate.py [--voxproxy target/release/voxproxy]

Both detectors see the same samples: the μ-law WAV of each condition. Ours
reads it through the shipped path (`voxproxy vad --mode M --frames FILE`,
which decodes with voxproxy_core::g711); WebRTC (`webrtcvad`) gets the same
codes expanded to PCM16 by the G.191 decoder in dataset.py. Both run on
20 ms frames in all four modes and are scored per frame against labels20.
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import webrtcvad

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from dataset import NOISES, SNRS, read_ulaw_wav, ulaw_decode, ulaw_encode, write_ulaw_wav  # noqa: E402
from metrics import scores  # noqa: E402

MODES = [0, 1, 2, 3]
DEFAULT_MODE = 2
#: Level sweep: these conditions, scaled by these gains before μ-law encoding.
LEVEL_CONDITIONS = ["clean", "white_10", "pink_5", "babble_10"]
LEVEL_GAINS_DB = [-15, -8, 0, 6]


def run_webrtc(pcm, frames, modes=MODES):
    raw = pcm.astype("<i2").tobytes()
    out = {}
    for mode in modes:
        vad = webrtcvad.Vad(mode)
        out[mode] = np.array([vad.is_speech(raw[i * 320:(i + 1) * 320], 8000) for i in range(frames)])
    return out


def run_ours(binary, path, frames, modes=MODES):
    out = {}
    for mode in modes:
        res = subprocess.run([binary, "vad", "--mode", str(mode), "--frames", path],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if res.returncode != 0:
            raise SystemExit(f"voxproxy vad failed on {path}: {res.stderr.strip()}")
        decisions = np.array([line == "1" for line in res.stdout.split()])
        if len(decisions) != frames:
            raise SystemExit(f"{path}: voxproxy gave {len(decisions)} frames, expected {frames}")
        out[mode] = decisions
    return out


def evaluate_condition(binary, setdir, cond, labels):
    path = os.path.join(setdir, f"{cond}.wav")
    pcm = ulaw_decode(read_ulaw_wav(path))
    frames = len(labels)
    results = {}
    for name, decisions in (("voxproxy", run_ours(binary, path, frames)),
                            ("webrtc", run_webrtc(pcm, frames))):
        for mode, d in decisions.items():
            results[(name, mode)] = scores(d, labels)
    return cond, results


def level_sweep(binary, setdir, cond, labels, tmpdir):
    """(gain, voxproxy scores, WebRTC scores) in the default mode, for each gain."""
    pcm = ulaw_decode(read_ulaw_wav(os.path.join(setdir, f"{cond}.wav"))).astype(np.float64)
    rows = []
    for gain in LEVEL_GAINS_DB:
        scaled = np.clip(np.round(pcm * 10 ** (gain / 20)), -32768, 32767).astype(np.int16)
        codes = ulaw_encode(scaled)
        path = os.path.join(tmpdir, f"{cond}_{gain}.wav")
        write_ulaw_wav(path, codes)
        ours = run_ours(binary, path, len(labels), [DEFAULT_MODE])[DEFAULT_MODE]
        theirs = run_webrtc(ulaw_decode(codes), len(labels), [DEFAULT_MODE])[DEFAULT_MODE]
        rows.append((gain, scores(ours, labels), scores(theirs, labels)))
    return cond, rows


def noise_of(cond):
    return cond.split("_")[0]


#: Lines with no speech on them: (name, μ-law codes). Ten seconds each, from the first sample.
QUIET_SECONDS = 10


def quiet_lines():
    n = QUIET_SECONDS * 8000
    t = np.arange(n) / 8000
    rng = np.random.default_rng(303)

    def at_dbfs(x, dbfs):
        return np.round(x * 32768 * 10 ** (dbfs / 20) / np.sqrt(np.mean(x * x))).astype(np.int16)

    def mains(f0):
        # f0 and its harmonics up to 4 kHz at 1/k: a ground loop's sawtooth-like buzz.
        return sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, int(4000 / f0)))

    # μ-law's quietest segment: codes 0x70..0x7F and 0xF0..0xFF (±0..±120).
    tiny = rng.integers(0, 32, n)
    tiny = np.where(tiny < 16, 0x70 | tiny, 0xF0 | (tiny - 16)).astype(np.uint8)
    return [
        ("50 Hz buzz, -45 dBFS", ulaw_encode(at_dbfs(mains(50), -45))),
        ("50 Hz buzz, -50 dBFS", ulaw_encode(at_dbfs(mains(50), -50))),
        ("60 Hz buzz, -45 dBFS", ulaw_encode(at_dbfs(mains(60), -45))),
        ("60 Hz buzz, -50 dBFS", ulaw_encode(at_dbfs(mains(60), -50))),
        ("white noise, -60 dBFS", ulaw_encode(at_dbfs(rng.standard_normal(n), -60))),
        ("random tiny μ-law codes", tiny),
    ]


def quiet_line_rates(binary, tmpdir):
    """(name, {(vad, mode): fraction of frames called speech}) for each quiet line."""
    rows = []
    for i, (name, codes) in enumerate(quiet_lines()):
        path = os.path.join(tmpdir, f"quiet{i}.wav")
        write_ulaw_wav(path, codes)
        frames = len(codes) // 160
        rates = {}
        for vad, decisions in (("voxproxy", run_ours(binary, path, frames)),
                               ("webrtc", run_webrtc(ulaw_decode(codes), frames))):
            for mode, d in decisions.items():
                rates[(vad, mode)] = float(np.mean(d))
        rows.append((name, rates))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", default="test")
    ap.add_argument("--voxproxy", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "voxproxy"))
    ap.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"))
    args = ap.parse_args()

    setdir = os.path.join(HERE, "out", args.set)
    meta = json.load(open(os.path.join(setdir, "meta.json")))
    labels = np.load(os.path.join(setdir, "labels20.npy")).astype(bool)
    conds = ["clean"] + [f"{n}_{s}" for n in NOISES for s in SNRS]
    with concurrent.futures.ThreadPoolExecutor(2) as pool, tempfile.TemporaryDirectory() as tmp:
        results = dict(pool.map(lambda c: evaluate_condition(args.voxproxy, setdir, c, labels), conds))
        levels = dict(pool.map(lambda c: level_sweep(args.voxproxy, setdir, c, labels, tmp),
                               LEVEL_CONDITIONS))
        quiet = quiet_line_rates(args.voxproxy, tmp)

    write_report(args.output, args.set, meta, labels, conds, results, levels, quiet)
    print(summary_table(conds, results))
    print(f"wrote {args.output}")


def mean_over(conds, results, vad, mode, idx):
    return float(np.mean([results[c][(vad, mode)][idx] for c in conds]))


def summary_table(conds, results):
    groups = ["clean"] + NOISES
    lines = [
        "| noise (mean over SNRs) | voxproxy F1 | WebRTC F1 | voxproxy MCC | WebRTC MCC |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for g in groups + ["all conditions"]:
        cs = conds if g == "all conditions" else [c for c in conds if noise_of(c) == g]
        row = [g]
        for idx in (2, 3):
            for vad in ("voxproxy", "webrtc"):
                row.append(f"{mean_over(cs, results, vad, DEFAULT_MODE, idx):.3f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_report(path, setname, meta, labels, conds, results, levels, quiet):
    minutes = meta["samples"] / meta["rate"] / 60
    out = []
    out.append("# VAD evaluation: voxproxy vs WebRTC\n")
    out.append(
        f"Generated by `vad-eval/evaluate.py` on {datetime.date.today().isoformat()} from the "
        f"**held-out `{setname}` set** (seed {meta['seed']}): {minutes:.1f} minutes of audio per "
        f"condition, {len(meta['utterances'])} utterances of synthetic espeak-ng speech, "
        f"{labels.mean() * 100:.0f}% of the {len(labels)} 20 ms frames labelled speech. "
        "voxproxy's model, thresholds and hangovers were fitted on the separate `tune` set "
        "(different sentences, noise seed and levels), never on this one. See README.md for how "
        "the set is built and what the numbers do and do not say.\n")
    out.append("Scores are per 20 ms frame against labels from the clean speech. F1 is the harmonic "
               "mean of precision and recall for speech; MCC (Matthews correlation, −1…1, 0 = chance) "
               "also rewards getting non-speech right and is the fairer single number when a "
               "detector says \"speech\" everywhere (F1 of always-speech here: "
               f"{2 * labels.mean() / (1 + labels.mean()):.3f}, MCC 0).\n")
    out.append(f"## Summary, mode {DEFAULT_MODE} (voxproxy's default) for both\n")
    out.append(summary_table(conds, results) + "\n")
    out.append("## Mean over all conditions, per mode\n")
    out.append("| mode | voxproxy P | voxproxy R | voxproxy F1 | voxproxy MCC | WebRTC P | WebRTC R | "
               "WebRTC F1 | WebRTC MCC |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode in MODES:
        row = [str(mode)]
        for vad in ("voxproxy", "webrtc"):
            row += [f"{mean_over(conds, results, vad, mode, i):.3f}" for i in range(4)]
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    losses = [(c, m) for c in conds for m in MODES
              if any(results[c][("voxproxy", m)][i] < results[c][("webrtc", m)][i] for i in (2, 3))]
    out.append("## Where WebRTC scores higher\n")
    if not losses:
        out.append("Nowhere: voxproxy's F1 and MCC are at least WebRTC's in every condition and mode.\n")
    else:
        out.append(f"In {len(losses)} of {len(conds) * len(MODES)} condition × mode cells WebRTC has the "
                   "higher F1 or MCC:\n")
        for c, m in losses:
            o, w = results[c][("voxproxy", m)], results[c][("webrtc", m)]
            note = (" WebRTC calls almost every frame speech here (recall ≥ 0.99, MCC near 0), which earns "
                    "the F1 of a constant \"speech\" answer without detecting anything."
                    if w[1] >= 0.99 and w[3] < 0.15 else "")
            out.append(f"- `{c}`, mode {m}: voxproxy F1 {o[2]:.3f} / MCC {o[3]:.3f}, WebRTC F1 {w[2]:.3f} / "
                       f"MCC {w[3]:.3f}.{note}")
        out.append("")
    out.append("## Talker level\n")
    out.append(f"The same audio scaled before μ-law encoding (0 dB = as generated, speech peaks around "
               f"−22 dBFS; −15 dB is a quiet line), mode {DEFAULT_MODE} for both.\n")
    out.append("| condition | gain dB | voxproxy F1 | voxproxy MCC | WebRTC F1 | WebRTC MCC |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for c, rows in levels.items():
        for gain, o, w in rows:
            out.append(f"| {c} | {gain:+d} | {o[2]:.3f} | {o[3]:.3f} | {w[2]:.3f} | {w[3]:.3f} |")
    out.append("")
    out.append("## Quiet lines\n")
    out.append(f"Lines with no speech at all, {QUIET_SECONDS} s each from the first sample, μ-law: the "
               "percentage of 20 ms frames each detector calls speech, modes 0 / 1 / 2 / 3. Anything "
               "above 0 is a false alarm (a barge-in, if it lasts three frames).\n")
    out.append("| line | voxproxy % | WebRTC % |")
    out.append("| --- | ---: | ---: |")
    for name, rates in quiet:
        cells = [" / ".join(f"{100 * rates[(vad, m)]:.0f}" for m in MODES) for vad in ("voxproxy", "webrtc")]
        out.append(f"| {name} | {cells[0]} | {cells[1]} |")
    out.append("")
    out.append("## Per condition and mode\n")
    out.append("P = precision, R = recall. Conditions are `<noise>_<SNR dB>`.\n")
    out.append("| condition | mode | voxproxy P | R | F1 | MCC | WebRTC P | R | F1 | MCC |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c in conds:
        for mode in MODES:
            row = [c, str(mode)]
            for vad in ("voxproxy", "webrtc"):
                row += [f"{v:.3f}" for v in results[c][(vad, mode)]]
            out.append("| " + " | ".join(row) + " |")
    out.append("")
    with open(path, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
