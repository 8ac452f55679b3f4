"""Band-limited varispeed: a source read at ``s`` source frames per output frame.

Every output sample is a windowed-sinc interpolation of the source around its own source
position ``pos = o + s * i`` (computed from the absolute clip frame ``i``, never
accumulated), so any block split gives the same samples bit for bit. The kernel's cutoff is
``CUTOFF * min(1, 1/s)`` of the source's Nyquist frequency: when the source is played
faster, content that would fold back above the output's Nyquist frequency is removed first.

The kernel (sinc times a Kaiser window, :data:`ZERO_CROSSINGS` zero crossings each side)
is tabulated once with :data:`TABLE_STEPS` steps per zero crossing and read with linear
interpolation; the weights of each output sample are normalized to sum to one, so a
constant stays constant.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

ZERO_CROSSINGS = 24
KAISER_BETA = 8.6  # about -90 dB side lobes
CUTOFF = 0.9  # of min(1, 1/s) times Nyquist: the Kaiser transition band ends near Nyquist
TABLE_STEPS = 2048


def _table() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    # one zero crossing of zeros past each end: a tap's distance may reach half + 1 frames
    reach = ZERO_CROSSINGS + 2
    u = np.arange(-reach * TABLE_STEPS, reach * TABLE_STEPS + 2,
                  dtype=np.float64) / TABLE_STEPS
    inside = np.clip(1.0 - (u / ZERO_CROSSINGS) ** 2, 0.0, None)
    k = np.sinc(u) * np.i0(KAISER_BETA * np.sqrt(inside)) / np.i0(KAISER_BETA)
    k[np.abs(u) >= ZERO_CROSSINGS] = 0.0
    return k, np.append(np.diff(k), 0.0)


_KERNEL, _KERNEL_DIFF = _table()
_CENTRE = (ZERO_CROSSINGS + 2) * TABLE_STEPS
_CELLS = 1 << 16  # samples x taps per step: bounds the work arrays whatever the speed

# fills ``out`` (channels, n) with source frames [start, start + n)
Reader = Callable[[int, NDArray[np.float32]], None]


class Varispeed:
    """Interpolates one source at speed ``speed`` (``!= 1``) into blocks of at most
    ``max_block`` frames; all buffers are made here, once."""

    def __init__(self, speed: float, channels: int, max_block: int):
        self.speed = float(speed)
        self.channels = int(channels)
        self.max_block = int(max_block)
        self.cutoff = CUTOFF * min(1.0, 1.0 / self.speed)
        # half the kernel's width in source frames
        self.half = math.ceil(ZERO_CROSSINGS / self.cutoff)
        self.taps = 2 * self.half
        width = math.ceil(self.max_block * self.speed) + 2 * self.half + 4
        self._window = np.zeros((self.channels, width), np.float32)
        m = self.max_block
        self._ramp = np.arange(m, dtype=np.float64)
        self._pos = np.zeros(m, np.float64)
        self._frac = np.zeros(m, np.float64)
        self._base = np.zeros(m, np.int64)
        self._acc = np.zeros((self.channels, m), np.float64)
        self._wsum = np.zeros(m, np.float64)
        self.rows = max(1, min(m, _CELLS // self.taps))
        shape = (self.rows, self.taps)
        # per tap: its distance from the sample's integer part, and its index offset; full
        # rows, because numpy buffers (allocates) a ufunc whose operand is broadcast
        self._dist = np.tile(self.half - 1 - np.arange(self.taps, dtype=np.float64),
                             (self.rows, 1))
        self._tap = np.tile(np.arange(self.taps, dtype=np.int64), (self.rows, 1))
        self._u = np.zeros(shape, np.float64)
        self._w = np.zeros(shape, np.float64)
        self._f = np.zeros(shape, np.float64)
        self._i = np.zeros(shape, np.int64)
        self._g = np.zeros(shape, np.float32)
        self._g64 = np.zeros(shape, np.float64)

    def render(self, read: Reader, offset_frames: float, first: int,
               out: NDArray[np.float32]) -> None:
        """``out[:, k]`` = the source at position ``offset_frames + speed * (first + k)``."""
        n = out.shape[1]
        if n == 0:
            return
        pos = self._pos[:n]
        # integer clip frames, then one multiply and one add per sample: no accumulation
        np.add(self._ramp[:n], float(first), out=pos)
        pos *= self.speed
        pos += offset_frames
        base = self._base[:n]
        frac = self._frac[:n]
        np.floor(pos, out=frac)
        np.copyto(base, frac, casting="unsafe")
        np.subtract(pos, frac, out=frac)  # 0 <= frac < 1
        w0 = int(base[0]) - self.half + 1
        wlen = int(base[-1]) + self.half + 1 - w0
        window = self._window[:, :wlen]
        read(w0, window)
        base -= w0 + self.half - 1  # now the window index of each sample's first tap
        scale = self.cutoff * TABLE_STEPS
        # every sample on its own (row of taps): the chunking never changes a result
        for a in range(0, n, self.rows):
            b = min(n, a + self.rows)
            r = b - a
            u, w, f, idx, g, g64 = (self._u[:r], self._w[:r], self._f[:r], self._i[:r],
                                    self._g[:r], self._g64[:r])
            # distance d = frac + half - 1 - k, in table steps
            np.copyto(u, frac[a:b, None])
            u += self._dist[:r]
            u *= scale
            u += _CENTRE
            np.floor(u, out=f)
            np.copyto(idx, f, casting="unsafe")
            u -= f  # between two table steps
            # mode="clip": the indices are in range by construction, and the default
            # ("raise") would buffer the output, a new array per call
            np.take(_KERNEL_DIFF, idx, out=w, mode="clip")
            w *= u
            np.take(_KERNEL, idx, out=f, mode="clip")
            w += f
            np.sum(w, axis=1, out=self._wsum[a:b])
            np.copyto(idx, base[a:b, None])
            idx += self._tap[:r]
            for c in range(self.channels):
                np.take(window[c], idx, out=g, mode="clip")
                np.copyto(g64, g)  # a mixed-type multiply would be buffered
                g64 *= w
                np.sum(g64, axis=1, out=self._acc[c, a:b])
        wsum = self._wsum[:n]
        for c in range(self.channels):
            acc = self._acc[c, :n]
            acc /= wsum
            np.copyto(out[c], acc, casting="same_kind")
