#!/usr/bin/env python3
"""Fits voxproxy's VAD model on the TUNING set and writes core/src/vad/model.rs.

    python3 vad-eval/dataset.py --set tune
    python3 vad-eval/train.py

Features come from the Rust feature extractor itself (the `vad_features`
example of voxproxy-core), so training sees exactly what the shipped code
computes. The model is a one-hidden-layer ReLU network over the features of
one 10 ms block, trained with logistic loss on the 10 ms labels. Each mode's
threshold and hangover are then chosen on the same tuning set at the 20 ms
frame level, to maximise the mean F-beta over all conditions, with beta
falling from mode 0 (recall matters most) to mode 3 (precision matters most).

The test set is never read here.
"""

import argparse
import os
import subprocess
import sys
import wave

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from metrics import scores  # noqa: E402

HIDDEN = 16
SMOOTHER_HIDDEN = 8
#: F-beta each mode maximises, mode 0 first.
MODE_BETA = [1.6, 1.25, 1.0, 0.75]
HANGOVERS = list(range(0, 21))


def features_for(wav_path, example):
    with wave.open(wav_path) as w:
        raw = w.readframes(w.getnframes())
    out = subprocess.run([example], input=raw, stdout=subprocess.PIPE, check=True).stdout
    return np.frombuffer(out, dtype="<f4")


def load(setname, example):
    d = os.path.join(HERE, "out", setname)
    conds = [c for c in sorted(os.listdir(os.path.join(d, "pcm"))) if c.endswith(".wav")]
    l10 = np.load(os.path.join(d, "labels10.npy"))
    l20 = np.load(os.path.join(d, "labels20.npy"))
    feats = {}
    for c in conds:
        raw = features_for(os.path.join(d, "pcm", c), example)
        feats[c[:-4]] = raw
    return feats, l10, l20


def train_mlp(x, y, hidden, epochs, seed, lr=3e-3, batch=2048, l2=1e-4):
    rng = np.random.default_rng(seed)
    n, f = x.shape
    w1 = rng.standard_normal((f, hidden)) * np.sqrt(2 / f)
    b1 = np.zeros(hidden)
    w2 = rng.standard_normal(hidden) * np.sqrt(1 / hidden)
    b2 = np.zeros(1)
    params = [w1, b1, w2, b2]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t = 0
    for epoch in range(epochs):
        order = rng.permutation(n)
        for s in range(0, n, batch):
            idx = order[s:s + batch]
            xb, yb = x[idx], y[idx]
            h = xb @ w1 + b1
            a = np.maximum(h, 0)
            z = a @ w2 + b2[0]
            p = 1 / (1 + np.exp(-z))
            dz = (p - yb) / len(idx)
            gw2 = a.T @ dz + l2 * w2
            gb2 = np.array([dz.sum()])
            da = np.outer(dz, w2) * (h > 0)
            gw1 = xb.T @ da + l2 * w1
            gb1 = da.sum(axis=0)
            t += 1
            for i, g in enumerate([gw1, gb1, gw2, gb2]):
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                params[i] -= lr * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-8)
        lr *= 0.85
    return params


def mlp_score(params, x):
    w1, b1, w2, b2 = params
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2[0]


SCORE_FLOOR = -10.0
SCORE_HISTORY = 40
#: Stage-one features the smoother also sees (snr_total, level, noise_level, snr_total_slow).
SMOOTHER_FEATURES = [6, 7, 8, 13]


def smoother_inputs(spot, feats):
    """Mirror of `Decider::score` in core/src/vad.rs: recent stage-one scores and slow features."""
    s = np.clip(spot, SCORE_FLOOR, -SCORE_FLOOR)
    n = len(s)

    def ago(k):
        return np.concatenate([np.full(k, SCORE_FLOOR), s[:n - k]]) if k else s

    def max_over(a, b):
        m = np.full(n, SCORE_FLOOR)
        for k in range(a, b + 1):
            m = np.maximum(m, ago(k))
        return m

    cols = [s, ago(1), ago(2), ago(3), max_over(4, 8), max_over(9, 20), max_over(21, SCORE_HISTORY - 1)]
    return np.concatenate([np.stack(cols, axis=1), feats[:, SMOOTHER_FEATURES]], axis=1)


def fit_stage(inputs, l10, split, hidden, epochs, seed):
    x = np.concatenate([v[:split] for v in inputs.values()]).astype(np.float64)
    y = np.concatenate([l10[:split] for _ in inputs]).astype(np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    params = train_mlp((x - mean) / std, y, hidden, epochs, seed)
    scores_ = {c: mlp_score(params, (v - mean) / std) for c, v in inputs.items()}
    return (mean, std, params), scores_


def decide(score, threshold, hangover):
    """Block decisions with hangover, then 20 ms frames = OR of their two blocks."""
    above = score > threshold
    out = above.copy()
    idx = np.flatnonzero(above)
    for k in range(1, hangover + 1):
        j = idx + k
        out[j[j < len(out)]] = True
    n = len(out) // 2
    return out[:2 * n].reshape(n, 2).any(axis=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--example", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "examples",
        "vad_features"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=HIDDEN, help="hidden units of the spotter")
    ap.add_argument("--smoother-hidden", type=int, default=SMOOTHER_HIDDEN)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--validate", action="store_true",
                    help="fit on the first 75%% of each tuning condition, report on the rest")
    ap.add_argument("--verbose", action="store_true", help="scores per condition")
    ap.add_argument("--write", default=os.path.join(ROOT, "core", "src", "vad", "model.rs"))
    args = ap.parse_args()

    sys.path.insert(0, os.path.join(ROOT, "core"))
    names = feature_names()
    nf = len(names)
    feats, l10, l20 = load("tune", args.example)
    conds = list(feats)
    blocks = len(l10)
    data = {c: feats[c].reshape(-1, nf + 1)[:blocks, :nf] for c in conds}

    split = int(blocks * 0.75) // 2 * 2 if args.validate else blocks
    spotter, spot = fit_stage(data, l10, split, args.hidden, args.epochs, args.seed)
    smooth_in = {c: smoother_inputs(spot[c], data[c]) for c in conds}
    smoother, score = fit_stage(smooth_in, l10, split, args.smoother_hidden, args.epochs,
                                args.seed + 1)

    # Thresholds and hangovers: fitted on the fit part, reported on the held-out part.
    fit = slice(0, split // 2)
    held = slice(split // 2, blocks // 2) if args.validate else fit
    grid = np.round(np.arange(-4, 4.01, 0.25), 2)
    lab = l20.astype(bool)
    # counts[t, h, c] = (tp, fp, fn, tn) on the fit part for threshold t, hangover h, condition c.
    counts = np.zeros((len(grid), len(HANGOVERS), len(conds), 4))
    for ci, c in enumerate(conds):
        for ti, thr in enumerate(grid):
            above = score[c] > thr
            out = above.copy()
            for hi, hang in enumerate(HANGOVERS):
                if hang:
                    out[hang:] |= above[:-hang]
                pred = out[:len(out) // 2 * 2].reshape(-1, 2).any(axis=1)[fit]
                lf = lab[fit]
                counts[ti, hi, ci] = [np.sum(pred & lf), np.sum(pred & ~lf), np.sum(~pred & lf),
                                      np.sum(~pred & ~lf)]
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / np.maximum(tp + fn, 1)
    thresholds, hangovers = [], []
    for mode, beta in enumerate(MODE_BETA):
        fb = ((1 + beta ** 2) * precision * recall
              / np.maximum(beta ** 2 * precision + recall, 1e-12)).mean(axis=2)
        ti, hi = np.unravel_index(np.argmax(fb), fb.shape)
        thr, hang = float(grid[ti]), HANGOVERS[hi]
        thresholds.append(thr)
        hangovers.append(hang)
        rep = [scores(decide(score[c], thr, hang)[held], lab[held]) for c in conds]
        print(f"mode {mode}: threshold {thr:+.2f}, hangover {hang} blocks, F{beta} {fb[ti, hi]:.3f}; "
              f"{'held-out' if args.validate else 'tuning'} mean F1 {np.mean([r[2] for r in rep]):.3f} "
              f"MCC {np.mean([r[3] for r in rep]):.3f}")
        if args.verbose:
            for c, r in zip(conds, rep):
                print(f"   {c:10s} P {r[0]:.3f} R {r[1]:.3f} F1 {r[2]:.3f} MCC {r[3]:.3f}")
    if args.validate:
        return
    write_model(args.write, names, spotter, smoother, thresholds, hangovers)


def feature_names():
    src = open(os.path.join(ROOT, "core", "src", "vad.rs")).read()
    body = src[src.index("pub const FEATURE_NAMES"):]
    body = body[body.index("= [") + 3:body.index("];")]
    return [s.strip().strip('"') for s in body.split(",") if s.strip()]


def write_model(path, names, spotter, smoother, thresholds, hangovers):
    def lit(x):
        # The shortest decimal that reads back as the same f32.
        return np.format_float_positional(np.float32(x), unique=True, trim="0")

    def arr(v):
        return "[" + ", ".join(lit(x) for x in v) + "]"

    def mlp(name, doc, model, row_names):
        mean, std, (w1, b1, w2, b2) = model
        nin, hidden = w1.shape
        rows = "\n".join(f"        {arr(w1[i])}, // {row_names[i]}" for i in range(nin))
        return f"""/// {doc}
#[rustfmt::skip]
pub(super) const {name}: Mlp<{nin}, {hidden}> = Mlp {{
    mean: {arr(mean)},
    inv_std: {arr(1 / std)},
    w1: [
{rows}
    ],
    b1: {arr(b1)},
    w2: {arr(w2)},
    b2: {lit(b2[0])},
}};
"""

    smoother_names = (["spot", "spot_1", "spot_2", "spot_3", "spot_max_4_8", "spot_max_9_20",
                       f"spot_max_21_{SCORE_HISTORY - 1}"] + [names[i] for i in SMOOTHER_FEATURES])
    text = f"""//! Model weights, written by `vad-eval/train.py` from the tuning set; do not
//! edit by hand.

use super::Mlp;

{mlp("SPOTTER", "Stage one: speech score of one 10 ms block from its features.", spotter, names)}
{mlp("SMOOTHER", "Stage two: final score from recent stage-one scores and slow features.", smoother,
     smoother_names)}
/// Final score above which a block is speech, per mode (0 first).
pub(super) const THRESHOLD: [f32; 4] = {arr(thresholds)};
/// Blocks a speech decision is held after the score drops, per mode.
pub(super) const HANGOVER_BLOCKS: [u16; 4] = [{", ".join(str(h) for h in hangovers)}];
"""
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
