"""Compiled inner loops of the engine (numba), for the work done on every block.

In the audio callback every numpy call costs a few microseconds of interpreter and ufunc
set-up, and after the CPU has idled between two JACK cycles that cost grows several times.
Summing 25 cells as 25 numpy calls (or one call per column and a reduction) therefore cost
more than the arithmetic itself. The functions here do that work in one call on the
engine's preallocated buffers: no allocation, no Python objects, the GIL released.

The summation order is part of the engine's exactness (``docs/engine.md``): every cell's
contribution ``sample * gain`` is rounded to float32 once, then added to the mix in a fixed
order (column by column, row by row), whichever path it came by. Nothing here uses fast
math, so the compiler may not reorder or fuse those operations.

Each function is compiled on first use with the engine's argument types (the engine calls
it once when it is built) and cached on disk next to this module, so the audio thread never
waits for the compiler.
"""

from __future__ import annotations

import numba
import numpy as np

SILENT, FROM_STACK, FROM_ROWS = 0, 1, 2  # how a row of a column reaches the mix

_jit = numba.njit(nogil=False, cache=True, boundscheck=False, fastmath=False)


@_jit
def mix_rows(stacks, mode, gains, rpos, rows, m, mix, off):  # type: ignore[no-untyped-def]
    """``mix[off:off+m]`` = the sum over columns ``c`` and rows ``r`` (in that order) of
    each row's contribution:

    - ``mode[c, r] == FROM_STACK``: ``stacks[c][r, (rpos[c] + i) % L] * gains[c, r]``, where
      ``L`` is the stack's length;
    - ``mode[c, r] == FROM_ROWS``: ``rows[c, r, i]`` (already scaled by the caller);
    - ``SILENT``: nothing.
    """
    nch = mix.shape[1]
    for i in range(m):
        for ch in range(nch):
            mix[off + i, ch] = 0.0
    for c in range(mode.shape[0]):
        stack = stacks[c]
        length = stack.shape[1]
        for r in range(mode.shape[1]):
            kind = mode[c, r]
            if kind == FROM_STACK:
                g = gains[c, r]
                a = rpos[c]
                for i in range(m):
                    for ch in range(nch):
                        mix[off + i, ch] += stack[r, a, ch] * g
                    a += 1
                    if a == length:
                        a = 0
            elif kind == FROM_ROWS:
                for i in range(m):
                    for ch in range(nch):
                        mix[off + i, ch] += rows[c, r, i, ch]


def empty_stack(rows: int, channels: int) -> np.ndarray:
    """The stand-in for a column without a stack: the same array type, never read."""
    return np.zeros((rows, 1, channels), np.float32)


# a smoothed gain as the block kernels see it: one row of a float64 array, kept up to date
# by the engine's ramp object whenever its target changes
RAMP_END, RAMP_START, RAMP_FROM, RAMP_STEP, RAMP_TARGET = 0, 1, 2, 3, 4
RAMP_FIELDS = 5


@_jit
def _gain(ramp, frame, i):  # type: ignore[no-untyped-def]
    """The gain applied to sample ``i`` of a block starting at ``frame``: the ramp's value
    one frame later, in float32, or its target once the ramp is over."""
    if frame + i < ramp[RAMP_END]:
        t = np.float32(i + 1) + np.float32(frame - ramp[RAMP_START])
        return t * np.float32(ramp[RAMP_STEP]) + np.float32(ramp[RAMP_FROM])
    return np.float32(ramp[RAMP_TARGET])


@_jit
def begin_block(inputs, n, ring, ring_at, click, peaks, fall):  # type: ignore[no-untyped-def]
    """The block's input into the ring (its length is a power of two) at ``ring_at``; the
    click output cleared; ``peaks`` (one per input channel) the input meter: each falls by
    the factor ``exp(fall)`` per frame (``fall`` <= 0) and rises at once to the block's
    largest magnitude."""
    mask = ring.shape[0] - 1
    nch = inputs.shape[1]
    keep = np.exp(fall * n)
    for ch in range(nch):
        peaks[ch] *= keep
    for i in range(n):
        j = (ring_at + i) & mask
        for ch in range(nch):
            x = inputs[i, ch]
            ring[j, ch] = x
            a = abs(x)
            if a > peaks[ch]:
                peaks[ch] = a
        click[i] = 0.0


@_jit
def end_block(mix, inputs, out, click, frame, n, ramps, monitor):  # type: ignore[no-untyped-def]
    """``out = mix * master (+ inputs * monitor)`` and ``click *= click gain`` for the block
    of ``n`` frames starting at ``frame``; ``ramps`` rows are (master, monitor, click).
    ``monitor`` False skips the input (the monitor gain is 0 and not ramping)."""
    master = ramps[0]
    mon = ramps[1]
    ck = ramps[2]
    nch = mix.shape[1]
    for i in range(n):
        g = _gain(master, frame, i)
        for ch in range(nch):
            out[i, ch] = mix[i, ch] * g
        if monitor:
            gm = _gain(mon, frame, i)
            for ch in range(nch):
                out[i, ch] += inputs[i, ch] * gm
        click[i] = click[i] * _gain(ck, frame, i)


# ---------------------------------------------------------------------------- varispeed
# Following an external clock with loops playing, the engine runs a block of ``m`` frames
# for the host's ``n`` and the host's audio is read or written at fractional positions of
# the engine's (see Engine._varispeed). The interpolation is a four-point cubic Hermite
# (Catmull-Rom) curve: it passes through every sample, so a position on a whole frame reads
# that frame exactly.


@_jit
def _hermite(y0, y1, y2, y3, t):  # type: ignore[no-untyped-def]
    """The curve through ``y1`` (t = 0) and ``y2`` (t = 1), with slopes from the
    neighbours."""
    a = 0.5 * (y3 - y0) + 1.5 * (y1 - y2)
    b = y0 - 2.5 * y1 + 2.0 * y2 - 0.5 * y3
    c = 0.5 * (y2 - y0)
    return ((a * t + b) * t + c) * t + y1


@_jit
def resample(src, first, step, dst, n):  # type: ignore[no-untyped-def]
    """``dst[i]`` = ``src`` at the position ``first + i * step`` for ``i < n``; ``src`` and
    ``dst`` are (frames, channels). Positions are kept within ``[1, len(src) - 3]``, where
    all four points exist."""
    hi = src.shape[0] - 3.0
    nch = src.shape[1]
    for i in range(n):
        p = min(max(first + i * step, 1.0), hi)
        k = int(p)  # p >= 1: truncation is the floor
        t = p - k
        for ch in range(nch):
            dst[i, ch] = _hermite(src[k - 1, ch], src[k, ch], src[k + 1, ch],
                                  src[k + 2, ch], t)


@_jit
def resample_mono(src, first, step, dst, n):  # type: ignore[no-untyped-def]
    """:func:`resample` for one channel (1-D arrays)."""
    hi = src.shape[0] - 3.0
    for i in range(n):
        p = min(max(first + i * step, 1.0), hi)
        k = int(p)  # p >= 1: truncation is the floor
        t = p - k
        dst[i] = _hermite(src[k - 1], src[k], src[k + 1], src[k + 2], t)


@_jit
def keep_tail(hist, h, block, n):  # type: ignore[no-untyped-def]
    """``hist[:h]`` becomes the last ``h`` frames of ``hist[:h]`` followed by
    ``block[:n]`` (1-D or 2-D)."""
    if n >= h:
        for j in range(h):
            hist[j] = block[n - h + j]
    else:
        for j in range(h - n):
            hist[j] = hist[j + n]
        for j in range(n):
            hist[h - n + j] = block[j]
