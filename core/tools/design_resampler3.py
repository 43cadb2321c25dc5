#!/usr/bin/env python3
"""Designs the factor-3 FIR behind voxproxy_core::resample3 (8 kHz <-> 24 kHz).

Usage: python3 core/tools/design_resampler3.py [--taps-per-phase L]

Needs only numpy. Prints the integer coefficient table to paste into
core/src/resample3.rs, and the measured response of the *quantized* table.

The filter runs at 24 kHz: a symmetric (linear-phase) FIR of N = 3L taps,
L odd so that N is odd and the group delay (N-1)/2 is a whole number of
24 kHz samples. As a polyphase filter it splits into three phases of L taps
(h[p], h[p+3], ...), one per output sample of the upsampler, and the
downsampler computes only every third output.

Specification (the same band edges as the 8 <-> 16 kHz half-band):
passband 0-3.4 kHz with at most 0.1 dB ripple, stopband 4.6-12 kHz at least
60 dB down. Design: weighted minimax (Lawson's iteratively reweighted least
squares on a dense grid), the stopband weighted 10x the passband, under two
linear constraints: each of the three phases sums to exactly 1/3. That puts
the DC gain at exactly 1 and the response at exactly 0 at 8 kHz (where the
upsampler's image of DC would fall), so a constant comes out of both
directions as a constant, with no 8 kHz ripple.

Quantization: taps are integers in units of 1/(3 * 2^14) = 1/49152, so that
each phase sums to exactly 2^14 (the upsampler's outputs are a phase's dot
product shifted right by 14) and the whole filter to exactly 49152 (the
downsampler divides by it). After rounding, the centre tap (alone in its
phase's symmetric pair structure) absorbs the middle phase's rounding error
and the outer phases are nudged one unit at a time, symmetrically, on the
taps whose rounding was closest to a tie.
"""

import argparse
import math

import numpy as np

FS = 24000.0
PASS_EDGE = 3400.0
STOP_EDGE = 4600.0
STOP_WEIGHT = 10.0
UNIT = 3 * 2**14


def phase_rows(n):
    """Rows of the constraint 'phase p sums to 1/3' over the half-filter a_0..a_c."""
    c = (n - 1) // 2
    rows = np.zeros((3, c + 1))
    for j in range(n):
        rows[j % 3, abs(j - c)] += 1
    return rows


def design(taps_per_phase, grid_points=4000, iterations=300):
    n = 3 * taps_per_phase
    c = (n - 1) // 2
    fp = np.linspace(0, PASS_EDGE, grid_points // 3)
    fs = np.linspace(STOP_EDGE, FS / 2, grid_points)
    f = np.concatenate([fp, fs])
    want = np.concatenate([np.ones_like(fp), np.zeros_like(fs)])
    weight = np.concatenate([np.ones_like(fp), STOP_WEIGHT * np.ones_like(fs)])
    w = 2 * math.pi * f / FS
    # H(w) = a_0 + 2 sum_m a_m cos(m w)
    basis = np.hstack([np.ones((len(w), 1)), 2 * np.cos(np.outer(w, np.arange(1, c + 1)))])
    rows = phase_rows(n)[:2]  # phase 2 mirrors phase 0
    rhs = np.array([1 / 3, 1 / 3])
    lawson = np.ones_like(w) / len(w)
    a = None
    for _ in range(iterations):
        lw = lawson * weight**2
        gram = basis.T @ (basis * lw[:, None])
        kkt = np.block([[gram, rows.T], [rows, np.zeros((2, 2))]])
        sol = np.linalg.lstsq(kkt, np.concatenate([basis.T @ (lw * want), rhs]), rcond=None)[0]
        a = sol[: c + 1]
        err = weight * np.abs(basis @ a - want)
        lawson = lawson * err
        lawson /= lawson.sum()
    return np.concatenate([a[:0:-1], a])  # h[0..n-1]


def quantize(h):
    n = len(h)
    c = (n - 1) // 2
    q = np.round(h * UNIT).astype(np.int64)
    residue = h * UNIT - q
    # Middle phase (that of the centre): fix with the centre tap alone.
    mid = c % 3
    q[c] += UNIT // 3 - int(q[mid::3].sum())
    # Outer phases: every pair (c - m, c + m) with m not a multiple of 3 has
    # one tap in each outer phase, so nudging a pair moves both sums by one.
    outer = (c + 1) % 3
    short = UNIT // 3 - int(q[outer::3].sum())
    ms = [m for m in range(1, c + 1) if m % 3 != 0]
    ms.sort(key=lambda m: -residue[c + m] if short > 0 else residue[c + m])
    for m in ms[: abs(short)]:
        step = 1 if short > 0 else -1
        q[c + m] += step
        q[c - m] += step
    for p in range(3):
        assert q[p::3].sum() == UNIT // 3, (p, q[p::3].sum())
    assert (q == q[::-1]).all()
    return q


def response(q, freqs):
    n = np.arange(len(q))
    w = 2 * math.pi * np.asarray(freqs) / FS
    return np.abs(np.exp(-1j * np.outer(w, n)) @ (q / UNIT))


def report(q):
    fp = np.linspace(0, PASS_EDGE, 3401)
    fs = np.linspace(STOP_EDGE, FS / 2, 7401)
    hp = 20 * np.log10(response(q, fp))
    hs = 20 * np.log10(np.maximum(response(q, fs), 1e-300))
    n = len(q)
    delay = (n - 1) // 2
    print(f"// L = {n // 3}: {n} taps, group delay {delay} samples at 24 kHz = {delay / 24:.4f} ms")
    print(f"// passband 0-{PASS_EDGE:.0f} Hz: {hp.min():+.4f} .. {hp.max():+.4f} dB "
          f"(ripple {hp.max() - hp.min():.4f} dB)")
    print(f"// stopband {STOP_EDGE:.0f}-{FS / 2:.0f} Hz: attenuation {-hs.max():.2f} dB")
    print(f"// sum |q| = {int(np.abs(q).sum())}, per phase "
          f"{[int(np.abs(q[p::3]).sum()) for p in range(3)]}, max |q| = {int(np.abs(q).max())}")
    return hp.max() - hp.min(), -hs.max()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps-per-phase", type=int, default=None,
                        help="L (odd); default: the smallest odd L whose quantized table meets "
                             "the spec with 1 dB of stopband to spare")
    args = parser.parse_args()
    ls = [args.taps_per_phase] if args.taps_per_phase else range(11, 61, 2)
    for taps in ls:
        assert taps % 2 == 1, "L must be odd for a whole-sample group delay"
        q = quantize(design(taps))
        ripple, atten = report(q)
        if args.taps_per_phase or (ripple <= 0.1 and atten >= 61.0):
            break
    half = q[: (len(q) + 1) // 2]
    print(f"const HALF_TAPS: [i32; {len(half)}] = [")
    print("    " + ", ".join(str(int(v)) for v in half) + ",")
    print("];")


if __name__ == "__main__":
    main()
