#!/usr/bin/env python3
"""Builds the labelled VAD evaluation sets under vad-eval/out/.

    python3 vad-eval/dataset.py            # both sets: tune and test
    python3 vad-eval/dataset.py --set test

For each set (`tune` for fitting our model and thresholds, `test` held out
for RESULTS.md) it writes to out/<set>/:

- clean.wav and <noise>_<snr>.wav for noise in white, pink, brown, babble
  and SNR in 0, 5, 10, 20 dB (the tuning set also has -5 and 15 dB, and a
  second babble, babble4, of four other talkers): 8000 Hz
  mono μ-law WAV (format 7), G.711 encoded with the G.191 reference
  algorithm;
- pcm/<condition>.wav: the same audio decoded back to PCM16 (G.191 expand),
  i.e. exactly the samples both VADs are fed;
- labels10.npy, labels20.npy: one uint8 speech label per 10 ms / 20 ms
  frame, the same for every condition;
- meta.json: utterances (voice, speed, pitch, text, position), levels, seeds.

Speech: espeak-ng, several voices, speeds and pitches, resampled to 8 kHz by
sox; utterances separated by pauses of digital silence.

Labels come from the clean speech only: a frame is speech when its mean
square is at most LABEL_REL_DB below the reference level of the utterance
it belongs to (the 95th percentile of that utterance's 10 ms frame energies).
Frames outside any utterance are never speech.

SNR: mean power of the clean speech over its speech-labelled 20 ms frames,
over the mean power of the noise across the whole file.

Levels are dBFS as 10*log10(mean square) with full scale = 1.0 (so a
full-scale sine is -3 dBFS).
"""

import argparse
import concurrent.futures
import json
import os
import random
import subprocess
import sys
import tempfile
import wave

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import texts  # noqa: E402

RATE = 8000
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")

#: How far below an utterance's reference level a frame may be and still be speech.
LABEL_REL_DB = 35.0
#: Reference (95th percentile 10 ms frame) level of an utterance, and its spread.
REF_LEVEL_DBFS = -22.0
REF_LEVEL_SPREAD_DB = 5.0
NOISES = ["white", "pink", "brown", "babble"]
#: The tuning set adds a sparser babble of four other talkers, which sounds
#: more like individual voices, so the model is not fitted to one babble.
TUNE_NOISES = NOISES + ["babble4"]
#: SNRs reported on (the test set).
SNRS = [0, 5, 10, 20]
#: The tuning set spans a wider range, so the model does not learn only the reported points.
TUNE_SNRS = [-5, 0, 5, 10, 15, 20]

TARGET_VOICES = [
    "en-us", "en-gb", "en-gb-scotland", "en-029", "en-us+f3", "en-gb+f2",
    "en-us+m3", "en-gb-x-rp+f4", "en-us-nyc", "en+m5",
]
BABBLE_VOICES = [
    "en-gb-x-gbclan", "en-us+f5", "en-gb-x-gbcwmd", "en+f1", "en-us+m7",
    "en-gb-x-rp+m2",
]
BABBLE4_VOICES = ["en-gb+m1", "en-us+f4", "en-029+m6", "en-gb-scotland+f5"]

SETS = {
    # name: (seed, utterance count)
    "tune": (101, 70),
    "test": (202, 70),
}


# --------------------------------------------------------------------------
# G.711 μ-law as in ITU-T G.191 (STL g711.c): 14-bit magnitude via one's
# complement for negatives, bias 33, segments by bit length. Python's audioop
# rounds differently, so it is deliberately not used.

def ulaw_encode(pcm):
    x = pcm.astype(np.int32)
    absno = np.where(x < 0, (~x) >> 2, x >> 2) + 33
    absno = np.minimum(absno, 0x1FFF)
    segno = np.ones_like(absno)
    i = absno >> 6
    while np.any(i):
        segno += (i != 0)
        i >>= 1
    high = 8 - segno
    low = 0xF - ((absno >> segno) & 0xF)
    out = (high << 4) | low
    out = np.where(x >= 0, out | 0x80, out)
    return out.astype(np.uint8)


def ulaw_decode(codes):
    u = codes.astype(np.int32)
    sign = np.where(u < 0x80, -1, 1)
    mant = (~u) & 0xFF
    exponent = (mant >> 4) & 7
    segment = exponent + 1
    mant &= 0xF
    step = 4 << segment
    return (sign * ((0x80 << exponent) + step * mant + step // 2 - 4 * 33)).astype(np.int16)


# --------------------------------------------------------------------------
# WAV writers (the readers under test must accept both).

def write_pcm16_wav(path, pcm):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.astype("<i2").tobytes())


def write_ulaw_wav(path, codes):
    """μ-law WAV as most tools write it: fmt (18 bytes, cbSize 0), fact, data."""
    data = codes.astype(np.uint8).tobytes()
    fmt = (
        (7).to_bytes(2, "little") + (1).to_bytes(2, "little")
        + RATE.to_bytes(4, "little") + RATE.to_bytes(4, "little")
        + (1).to_bytes(2, "little") + (8).to_bytes(2, "little")
        + (0).to_bytes(2, "little")
    )
    fact = len(data).to_bytes(4, "little")
    body = (b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt
            + b"fact" + len(fact).to_bytes(4, "little") + fact
            + b"data" + len(data).to_bytes(4, "little") + data)
    if len(data) % 2:
        body += b"\0"
    with open(path, "wb") as f:
        f.write(b"RIFF" + len(body).to_bytes(4, "little") + body)


def read_ulaw_wav(path):
    """The μ-law codes of a file written by write_ulaw_wav."""
    raw = open(path, "rb").read()
    pos = 12
    while pos + 8 <= len(raw):
        cid, size = raw[pos:pos + 4], int.from_bytes(raw[pos + 4:pos + 8], "little")
        if cid == b"data":
            return np.frombuffer(raw[pos + 8:pos + 8 + size], dtype=np.uint8)
        pos += 8 + size + (size & 1)
    raise ValueError(f"{path}: no data chunk")


# --------------------------------------------------------------------------
# Speech synthesis.

def synth(text, voice, speed, pitch, tmpdir, tag):
    """espeak-ng → float32 at 8 kHz (sox `rate -v`, float output: no dither)."""
    src = os.path.join(tmpdir, f"{tag}.wav")
    dst = os.path.join(tmpdir, f"{tag}.f32")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", src, text],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["sox", src, "-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r",
                    str(RATE), dst, "gain", "-6", "rate", "-v"], check=True)
    return np.fromfile(dst, dtype="<f4").astype(np.float64)


def frame_ms(x, n):
    """Mean square of each whole n-sample frame."""
    k = len(x) // n
    return np.mean(x[:k * n].reshape(k, n) ** 2, axis=1)


def build_set(name, seed, count):
    rng = random.Random(f"{name}-{seed}-layout")
    nrng = np.random.default_rng(seed)
    outdir = os.path.join(OUT, name)
    os.makedirs(os.path.join(outdir, "pcm"), exist_ok=True)
    lines = texts.utterances(name, seed, count)
    jobs = []
    for i, text in enumerate(lines):
        jobs.append(dict(
            text=text,
            voice=rng.choice(TARGET_VOICES),
            speed=rng.randint(130, 185),
            pitch=rng.randint(30, 70),
            level_db=REF_LEVEL_DBFS + rng.uniform(-REF_LEVEL_SPREAD_DB, REF_LEVEL_SPREAD_DB),
            pause_s=rng.uniform(0.8, 4.0),
        ))
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(2) as pool:
        waves = list(pool.map(
            lambda ij: synth(ij[1]["text"], ij[1]["voice"], ij[1]["speed"], ij[1]["pitch"], tmp,
                             f"u{ij[0]}"),
            enumerate(jobs)))

        # Place the utterances, each scaled to its reference level.
        lead = RATE  # one second of silence first, so noise trackers see noise first
        total = lead + sum(len(w) + int(j["pause_s"] * RATE) for w, j in zip(waves, jobs))
        total -= total % 160
        clean = np.zeros(total)
        thr = np.full(total, np.inf)
        pos = lead
        for w, j in zip(waves, jobs):
            e = frame_ms(w, 80)
            ref = np.percentile(e[e > 0], 95)
            gain = np.sqrt(10 ** (j["level_db"] / 10) / ref)
            w = w * gain
            end = min(pos + len(w), total)
            clean[pos:end] = w[:end - pos]
            thr[pos:end] = 10 ** ((j["level_db"] - LABEL_REL_DB) / 10)
            j["start_s"] = pos / RATE
            j["end_s"] = end / RATE
            pos = end + int(j["pause_s"] * RATE)

        labels = {}
        for n in (80, 160):
            k = total // n
            tmin = thr[:k * n].reshape(k, n).min(axis=1)
            labels[n] = (frame_ms(clean, n) > tmin).astype(np.uint8)
        np.save(os.path.join(outdir, "labels10.npy"), labels[80])
        np.save(os.path.join(outdir, "labels20.npy"), labels[160])
        speech_power = np.mean(clean[:len(labels[160]) * 160].reshape(-1, 160)[labels[160] == 1] ** 2)

        noises = make_noises(name, seed, total, nrng, tmp, pool)

    conditions = {"clean": clean}
    for kind in TUNE_NOISES if name == "tune" else NOISES:
        noise = noises[kind]
        noise = noise / np.sqrt(np.mean(noise ** 2))
        for snr in TUNE_SNRS if name == "tune" else SNRS:
            conditions[f"{kind}_{snr}"] = clean + noise * np.sqrt(speech_power / 10 ** (snr / 10))
    for cond, x in conditions.items():
        pcm = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
        codes = ulaw_encode(pcm)
        write_ulaw_wav(os.path.join(outdir, f"{cond}.wav"), codes)
        write_pcm16_wav(os.path.join(outdir, "pcm", f"{cond}.wav"), ulaw_decode(codes))

    meta = dict(
        set=name, seed=seed, rate=RATE, samples=int(total), label_rel_db=LABEL_REL_DB,
        speech_power_dbfs=float(10 * np.log10(speech_power)),
        speech_fraction_20ms=float(labels[160].mean()),
        conditions=list(conditions), utterances=jobs,
    )
    with open(os.path.join(outdir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{name}: {total / RATE / 60:.1f} min per condition, "
          f"{labels[160].mean() * 100:.0f}% speech frames, {len(conditions)} conditions")


def shaped_noise(nrng, n, exponent):
    """Gaussian noise with power spectrum ∝ 1/f**exponent above 20 Hz, flat below."""
    spec = np.fft.rfft(nrng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    spec *= np.maximum(f, 20.0) ** (-exponent / 2)
    spec[0] = 0
    return np.fft.irfft(spec, n)


def make_noises(name, seed, n, nrng, tmp, pool):
    noises = {
        "white": nrng.standard_normal(n),
        "pink": shaped_noise(nrng, n, 1.0),
        "brown": shaped_noise(nrng, n, 2.0),
    }
    # Babble: every talker reads its own text continuously; each is scaled to
    # the same power and starts at a random point of its (looped) recording.
    noises["babble"] = babble(name, seed, n, nrng, tmp, pool, BABBLE_VOICES, "")
    if name == "tune":
        noises["babble4"] = babble(name, seed, n, nrng, tmp, pool, BABBLE4_VOICES, "4")
    return noises


def babble(name, seed, n, nrng, tmp, pool, voices, tag):
    seconds = n / RATE
    talkers = list(pool.map(
        lambda iv: synth(texts.babble_text(name, seed, f"{tag}{iv[0]}", int(seconds / 2.5) + 4),
                         iv[1], 150 + 8 * iv[0], 40 + 5 * iv[0], tmp, f"b{tag}{iv[0]}"),
        enumerate(voices)))
    mix = np.zeros(n)
    for t in talkers:
        t = np.resize(t, n)
        t = np.roll(t, int(nrng.integers(0, n)))
        mix += t / np.sqrt(np.mean(t ** 2))
    return mix


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", choices=["tune", "test", "all"], default="all")
    args = ap.parse_args()
    for name, (seed, count) in SETS.items():
        if args.set in (name, "all"):
            build_set(name, seed, count)


if __name__ == "__main__":
    main()
