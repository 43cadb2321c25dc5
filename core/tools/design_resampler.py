#!/usr/bin/env python3
"""Designs the half-band FIR behind voxproxy_core::resample (8 kHz <-> 16 kHz).

Usage: python3 core/tools/design_resampler.py [--taps-per-side K]

Needs only numpy. Prints the Q15 coefficient table to paste into
core/src/resample.rs, and the measured response of the *quantized* table.

The filter runs at 16 kHz. A half-band filter of length 4K-1 has a centre tap
of exactly 1/2, zeros at every even offset from the centre, and K free
coefficients c_1..c_K at offsets +-1, +-3, ..., +-(2K-1):

    H(w) = 1/2 + 2 * sum_k c_k cos((2k-1) w)

It satisfies H(w) + H(pi - w) = 1, so its passband error mirrors its stopband
error around fs/4 = 4 kHz: a 0-3.4 kHz passband goes with a stopband from
4.6 kHz, and 60 dB of stopband attenuation means at most 0.0087 dB of
passband deviation. So only the stopband is designed: the c_k minimise the
largest |H| over 4.6-8 kHz (minimax, by Lawson's iteratively reweighted least
squares on a dense grid), under the constraint sum(c_k) = 1/4, which puts
H(0) at exactly 1 and H(pi) at exactly 0.

Quantization: c_k are rounded to Q15, then nudged so that sum(c_k) is still
exactly 1/4 (8192 in Q15). That makes the DC gain exactly 1 in both directions, so a
constant input never produces an 8 kHz ripple in the upsampler's output.
"""

import argparse
import math

import numpy as np

FS = 16000.0
PASS_EDGE = 3400.0
STOP_EDGE = 4600.0
Q = 15


def design(k, grid_points=2000, iterations=1500):
    w = np.linspace(2 * math.pi * STOP_EDGE / FS, math.pi, grid_points)
    odd = 2 * np.arange(1, k + 1) - 1
    a = 2 * np.cos(np.outer(w, odd))
    # Eliminate c_K = 1/4 - sum(c_1..c_(K-1)) so that H(0) = 1 and H(pi) = 0 exactly.
    reduced = a[:, :-1] - a[:, -1:]
    target = -0.5 - a[:, -1] / 4
    weights = np.ones_like(w) / len(w)
    free = None
    for _ in range(iterations):
        sw = np.sqrt(weights)
        free, *_ = np.linalg.lstsq(reduced * sw[:, None], target * sw, rcond=None)
        err = np.abs(reduced @ free - target)
        weights = weights * err
        weights /= weights.sum()
    return np.append(free, 0.25 - free.sum())


def quantize(c):
    q = np.round(c * 2**Q).astype(np.int64)
    # Make sum(q) exactly 2^Q / 4 by moving the coefficients whose rounding
    # was closest to a tie, one unit each.
    short = (2**Q) // 4 - int(q.sum())
    residue = c * 2**Q - q
    order = np.argsort(-residue if short > 0 else residue)
    for i in order[: abs(short)]:
        q[i] += 1 if short > 0 else -1
    assert q.sum() == (2**Q) // 4
    return q


def response(q, freqs):
    odd = 2 * np.arange(1, len(q) + 1) - 1
    c = q / 2**Q
    w = 2 * math.pi * np.asarray(freqs) / FS
    return 0.5 + 2 * np.cos(np.outer(w, odd)) @ c


def report(q):
    fp = np.linspace(0, PASS_EDGE, 3401)
    fs = np.linspace(STOP_EDGE, FS / 2, 3401)
    hp = 20 * np.log10(np.maximum(np.abs(response(q, fp)), 1e-300))
    hs = 20 * np.log10(np.maximum(np.abs(response(q, fs)), 1e-300))
    k = len(q)
    taps = 4 * k - 1
    delay = 2 * k - 1
    print(f"// K = {k}: {taps} taps ({2 * k + 1} non-zero), group delay {delay} samples at 16 kHz "
          f"= {delay / 16:.4f} ms")
    print(f"// passband 0-{PASS_EDGE:.0f} Hz: {hp.min():+.4f} .. {hp.max():+.4f} dB "
          f"(ripple {hp.max() - hp.min():.4f} dB)")
    print(f"// stopband {STOP_EDGE:.0f}-{FS / 2:.0f} Hz: attenuation {-hs.max():.2f} dB")
    print(f"// sum |q| = {int(np.abs(q).sum())}")
    return hp.max() - hp.min(), -hs.max()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps-per-side", type=int, default=None,
                        help="K (free coefficients); default: the smallest K whose quantized "
                             "table meets 60 dB with 1 dB to spare")
    args = parser.parse_args()
    ks = [args.taps_per_side] if args.taps_per_side else range(6, 30)
    for k in ks:
        q = quantize(design(k))
        ripple, atten = report(q)
        if args.taps_per_side or (ripple <= 0.1 and atten >= 61.0):
            break
    print("const HALF_BAND_Q15: [i32; TAPS_PER_SIDE] = [")
    print("    " + ", ".join(str(int(v)) for v in q) + ",")
    print("];")


if __name__ == "__main__":
    main()
