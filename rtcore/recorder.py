"""The session recorder: the engine's inputs and main mix, continuously, to WAV files.

Two sides meet in a ring buffer. The audio thread (the producer) copies each block into the
ring with a compiled function and nothing else; a writer thread (the consumer) takes the
audio out in batches, converts it to integer PCM and measures peaks in the same pass, then
hands the batch to its I/O thread, which writes it with the recorder's own small WAV writer
while the next batch is converted. The audio thread never waits for the disk: when the
ring is full the block is dropped and counted.

Engine-facing surface (everything else is the writer's business)::

    rec = Recorder(RecorderConfig.from_mapping(table), data_dir / "recordings",
                   sample_rate=48000, in_channels=2, out_channels=2)
    ring, cursors = rec.ring_array, rec.cursors        # hold these; they never change
    # audio thread, once per block (n frames of inputs (n, in) and main out (n, out)):
    push2(ring, cursors, inputs, main_out, n)
    # audio thread, for an xrun of n missed frames (the files keep the engine's timeline):
    push_silence(ring, cursors, n)
    # control side:
    rec.start(); rec.stop(); rec.status()

``push2`` and ``push_silence`` are safe to call at any time, recording or not: while the
recorder is stopped they return at once. They are compiled when the :class:`Recorder` is
built (for C-contiguous float32 blocks, the engine's kind), so the audio thread never waits
for the compiler. They allocate nothing, take no lock, do no I/O; they return ``True`` when
the block went into the ring. Each ring frame holds the channels ``[inputs..., main...]``.

Why the cursors need no atomics: the ring's read and write positions are monotonically
increasing frame counts in one small int64 array. The producer writes the write cursor and
its counters, the writer thread the read cursor; the state, which the producer only reads,
is set by the control side and (on a fault) the writer thread, under a lock they share.
Under CPython's GIL that is enough: ``push2`` is compiled with ``nogil=False``, so it runs entirely
while holding the GIL, and the writer reads and writes the cursors only while holding it
too. A reader of a cursor therefore sees either the value before a push or after it, never
half a push, and everything the push wrote to the ring is visible once its cursor is (taking
and releasing the GIL orders memory). The writer converts audio with the GIL released, but
only frames between the read cursor and the write cursor it last read, which the producer
never touches until the read cursor moves past them; it moves the read cursor after the
conversion has finished.

Files: ``<directory>/rec-YYYYMMDD-HHMMSS-0001.wav`` (one multichannel file, ``single``) or
``...-0001-ch01-in_1.wav`` (one mono file per channel, ``split``). The time is the start of
the session; a second session within the same second gets a letter (``...-HHMMSSb-...``),
and files are created exclusively, so nothing is ever overwritten. See ``docs/recorder.md``
for the crash-safety guarantee, rotation, the silence gate and the disk guard.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import math
import os
import shutil
import struct
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from rtcore.config import check_bool, settings_from_mapping
from rtcore.errors import ConfigError

if sys.byteorder != "little":  # pragma: no cover - every board we target is little-endian
    raise ImportError("rtcore.recorder writes PCM through native integer views: "
                      "it needs a little-endian machine")

Audio = NDArray[np.float32]

# slots of the cursors array; each has exactly one writer (see the module docstring)
WRITE = 0      # producer: frames ever pushed into the ring
READ = 1       # writer thread: frames released back to the producer
STATE = 2      # control side: OFF, RECORDING or DROPPING
OVERRUNS = 3   # producer: blocks dropped because the ring was full
DROPPED = 4    # producer: frames dropped (ring full, or DROPPING after a fault)
SILENCE = 5    # producer: frames of xrun silence pushed
BAD = 6        # producer: blocks refused because their shape did not match the ring
CURSOR_SLOTS = 8

OFF, RECORDING, DROPPING = 0, 1, 2  # values of cursors[STATE]

BITS = (16, 24, 32)
MODES = ("single", "split")
DEFAULT_POLL_S = 0.01  # how long the writer sleeps when the ring is empty
METER_WINDOW_S = 0.1  # the peaks in the status cover at least this much audio
# a RIFF file counts its size in 32 bits: a file is rotated before it would pass this
WAV_MAX_BYTES = 0xFFFFFFFF - 0x10000


def _writeback_starter():  # type: ignore[no-untyped-def]
    """Linux's sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE), or None.

    It asks the kernel to start writing a range of a file to the disk and returns at once.
    Called after every batch, it keeps the disk busy while the writer converts the next
    one, so the flush's fdatasync (and the last one, at stop) finds little left to do
    instead of a second's worth of dirty pages; on an SD card that also avoids one long
    stall a second."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _writeback_starter()
SYNC_FILE_RANGE_WRITE = 2  # from <fcntl.h>

_jit = numba.njit(nogil=False, cache=True, boundscheck=False, fastmath=False)
# the writer's kernels let go of the GIL: a long conversion must not delay the audio thread
_jit_free = numba.njit(nogil=True, cache=True, boundscheck=False, fastmath=False)


# ---------------------------------------------------------------------------- producer


@_jit
def push2(ring, cursors, a, b, n):  # type: ignore[no-untyped-def]
    """Copy ``n`` frames of ``a`` (frames, ca) and ``b`` (frames, cb) side by side into the
    ring (``ca + cb`` channels). Real-time safe. Returns ``True`` when the block went in;
    ``False`` when the recorder is off, the block was dropped (ring full, or the recorder
    stopped on a fault: counted) or refused (wrong shape: counted in ``BAD``)."""
    state = cursors[STATE]
    if state == OFF:
        return False
    cap = ring.shape[0]
    ca = a.shape[1]
    cb = b.shape[1]
    if ca + cb != ring.shape[1] or n < 0 or n > a.shape[0] or n > b.shape[0]:
        cursors[BAD] += 1
        return False
    w = cursors[WRITE]
    if state != RECORDING or n > cap - (w - cursors[READ]):
        cursors[DROPPED] += n
        if state == RECORDING:
            cursors[OVERRUNS] += 1
        return False
    j = w % cap
    for i in range(n):
        for c in range(ca):
            ring[j, c] = a[i, c]
        for c in range(cb):
            ring[j, ca + c] = b[i, c]
        j += 1
        if j == cap:
            j = 0
    cursors[WRITE] = w + n
    return True


@_jit
def push_silence(ring, cursors, n):  # type: ignore[no-untyped-def]
    """``n`` frames of zeros into the ring, for the frames an xrun lost, so the recording
    keeps the engine's timeline. Real-time safe; dropped and counted like a block when the
    ring has no room. Returns ``True`` when the silence went in."""
    state = cursors[STATE]
    if state == OFF or n <= 0:
        return False
    cap = ring.shape[0]
    w = cursors[WRITE]
    if state != RECORDING or n > cap - (w - cursors[READ]):
        cursors[DROPPED] += n
        if state == RECORDING:
            cursors[OVERRUNS] += 1
        return False
    nch = ring.shape[1]
    j = w % cap
    for _ in range(n):
        for c in range(nch):
            ring[j, c] = 0.0
        j += 1
        if j == cap:
            j = 0
    cursors[WRITE] = w + n
    cursors[SILENCE] += n
    return True


def warm_up(ring: Audio, cursors: NDArray[np.int64], in_channels: int,
            out_channels: int) -> None:
    """Compile (or load from the cache) the producer functions for C-contiguous float32
    blocks, outside the audio thread. Does not touch the ring: the state must be OFF."""
    assert cursors[STATE] == OFF
    a = np.zeros((1, in_channels), np.float32)
    b = np.zeros((1, out_channels), np.float32)
    push2(ring, cursors, a, b, 0)
    push_silence(ring, cursors, 0)


# ---------------------------------------------------------------------------- writer kernels


# the conversion works through the batch in tiles that stay in the first-level cache: each
# tile is quantized (vectorised, peaks folded in per lane), then laid out as the file wants
TILE_SAMPLES = 16384
LANE_SAMPLES = 64
_M24 = np.uint32(0xFFFFFF)
_S8, _S16, _S24 = np.uint32(8), np.uint32(16), np.uint32(24)


def lanes_for(channels: int) -> int:
    """How many peak lanes the conversion keeps: a multiple of ``channels``, so that lane
    ``i`` always holds channel ``i % channels``."""
    return channels * max(1, LANE_SAMPLES // channels)


def tile_frames(channels: int) -> int:
    """Frames per tile: about ``TILE_SAMPLES`` samples, a whole number of lane rows."""
    lanes = lanes_for(channels)
    return (lanes // channels) * max(1, TILE_SAMPLES // lanes)


@_jit_free
def _quantize(src, dst, acc, bits):  # type: ignore[no-untyped-def]
    """``dst[i]`` = ``src[i]`` as an integer of ``bits``: clipped to [-1, 1] (NaN as 0),
    times ``2**(bits-1)``, rounded to nearest (ties to even), at most ``2**(bits-1) - 1``.
    Every step is exact: the scale is a power of two, and 32-bit samples are worked in
    float64. ``acc[i % len(acc)]`` keeps the largest ``|src[i]|``. Written so that the
    compiler vectorises it: no branches it cannot turn into selects, no reductions."""
    cnt = src.shape[0]
    lanes = acc.shape[0]
    if bits == 32:
        scale = 2147483648.0
        hi = 2147483647.0
        for base in range(0, cnt, lanes):
            m = min(lanes, cnt - base)
            s = src[base:base + m]
            d = dst[base:base + m]
            for i in range(m):
                x = s[i]
                acc[i] = np.fmax(acc[i], np.abs(x))
                y = np.float64(x) * scale
                if y != y:
                    y = 0.0
                y = min(max(y, -scale), hi)
                d[i] = np.int32(np.rint(y))
    else:
        scale32 = np.float32(2.0 ** (bits - 1))
        hi32 = np.float32(2.0 ** (bits - 1) - 1.0)
        for base in range(0, cnt, lanes):
            m = min(lanes, cnt - base)
            s = src[base:base + m]
            d = dst[base:base + m]
            for i in range(m):
                x = s[i]
                acc[i] = np.fmax(acc[i], np.abs(x))
                y = x * scale32
                if y != y:
                    y = np.float32(0.0)
                y = min(max(y, -scale32), hi32)
                d[i] = np.int32(np.rint(y))


@_jit_free
def _pack24(src, first, stride, cnt, out, at):  # type: ignore[no-untyped-def]
    """Samples ``src[first + i * stride]`` (int32, 24-bit values) for ``i < cnt`` as packed
    little-endian 3-byte samples into the byte array ``out`` from byte ``at``. Four samples
    at a time go out as three 32-bit words once the output is word-aligned."""
    u = src.view(np.uint32)
    i = 0
    k = first
    while i < cnt and at % 4 != 0:
        v = u[k]
        out[at] = v & 0xFF
        out[at + 1] = (v >> _S8) & 0xFF
        out[at + 2] = (v >> _S16) & 0xFF
        at += 3
        k += stride
        i += 1
    room = ((out.shape[0] - at) // 4) * 4
    words = out[at:at + room].view(np.uint32)
    w = 0
    while i + 4 <= cnt:
        a = u[k] & _M24
        b = u[k + stride] & _M24
        c = u[k + 2 * stride] & _M24
        d = u[k + 3 * stride]
        words[w] = a | (b << _S24)
        words[w + 1] = (b >> _S8) | (c << _S16)
        words[w + 2] = (c >> _S16) | (d << _S8)
        w += 3
        k += 4 * stride
        i += 4
    at += 4 * w
    while i < cnt:
        v = u[k]
        out[at] = v & 0xFF
        out[at + 1] = (v >> _S8) & 0xFF
        out[at + 2] = (v >> _S16) & 0xFF
        at += 3
        k += stride
        i += 1


@_jit_free
def convert(ring, start, n, bits, planar, out, peaks, acc, tmp):  # type: ignore[no-untyped-def]
    """Frames ``[start, start + n)`` of the recording (``start`` counts from the ring's
    first frame ever; the ring wraps) as little-endian integer PCM of ``bits`` into the
    byte array ``out`` (2-D), each channel's largest ``|x|`` folded into ``peaks``.

    ``planar`` False: interleaved frames in ``out[0]``. True: channel ``c``'s samples in
    ``out[c]``. ``acc`` (float32, :func:`lanes_for` long) and ``tmp`` (int32, at least
    :func:`tile_frames` x channels long) are scratch.
    """
    cap = ring.shape[0]
    nch = ring.shape[1]
    flat = ring.reshape(cap * nch)
    tile = tmp.shape[0] // nch
    for i in range(acc.shape[0]):
        acc[i] = 0.0
    f = 0
    while f < n:
        j = (start + f) % cap
        m = min(n - f, cap - j, tile)
        cnt = m * nch
        src = flat[j * nch:j * nch + cnt]
        if not planar and bits == 16:
            _quantize(src, out[0].view(np.int16)[f * nch:f * nch + cnt], acc, bits)
        elif not planar and bits == 32:
            _quantize(src, out[0].view(np.int32)[f * nch:f * nch + cnt], acc, bits)
        else:
            t = tmp[:cnt]
            _quantize(src, t, acc, bits)
            if not planar:
                _pack24(t, 0, 1, cnt, out[0], f * nch * 3)
            elif bits == 24:
                for c in range(nch):
                    _pack24(t, c, nch, m, out[c], f * 3)
            else:
                # unsigned indices: the compiler then knows they are never negative and
                # drops the wrap-around test from every load and store
                un = np.uint64(nch)
                uf = np.uint64(f)
                for c in range(nch):
                    k = np.uint64(c)
                    if bits == 16:
                        row16 = out[c].view(np.int16)
                        for i in range(np.uint64(m)):
                            row16[uf + i] = t[k]
                            k += un
                    else:
                        row32 = out[c].view(np.int32)
                        for i in range(np.uint64(m)):
                            row32[uf + i] = t[k]
                            k += un
        f += m
    for i in range(acc.shape[0]):
        c = i % nch
        peaks[c] = max(peaks[c], acc[i])


@_jit_free
def peaks_only(ring, start, n, peaks):  # type: ignore[no-untyped-def]
    """Fold frames ``[start, start + n)`` into ``peaks`` without converting (gated audio)."""
    cap = ring.shape[0]
    nch = ring.shape[1]
    j = start % cap
    for _ in range(n):
        for c in range(nch):
            ax = abs(ring[j, c])
            if ax > peaks[c]:
                peaks[c] = ax
        j += 1
        if j == cap:
            j = 0


@_jit_free
def first_loud(ring, start, end, threshold):  # type: ignore[no-untyped-def]
    """The first frame in ``[start, end)`` where any channel reaches ``threshold``, or -1."""
    cap = ring.shape[0]
    nch = ring.shape[1]
    j = start % cap
    for f in range(start, end):
        for c in range(nch):
            if abs(ring[j, c]) >= threshold:
                return f
        j += 1
        if j == cap:
            j = 0
    return -1


@_jit_free
def gate_close(ring, start, end, threshold, hold, last_loud, out):  # type: ignore[no-untyped-def]
    """Walk ``[start, end)`` with an open gate: the frame where it closes (``hold`` quiet
    frames after the last loud one), or -1 if it stays open. ``out[0]`` gets the last loud
    frame seen (or ``last_loud``, the one before ``start``)."""
    cap = ring.shape[0]
    nch = ring.shape[1]
    j = start % cap
    ll = last_loud
    for f in range(start, end):
        loud = False
        for c in range(nch):
            if abs(ring[j, c]) >= threshold:
                loud = True
                break
        if loud:
            ll = f
        elif f >= ll + 1 + hold:
            out[0] = ll
            return f
        j += 1
        if j == cap:
            j = 0
    out[0] = ll
    return -1


# ---------------------------------------------------------------------------- WAV files

_PCM_GUID = bytes.fromhex("0100000000001000800000aa00389b71")  # KSDATAFORMAT_SUBTYPE_PCM
WAVE_FORMAT_PCM = 1
WAVE_FORMAT_EXTENSIBLE = 0xFFFE


def wav_header(channels: int, sample_rate: int, bits: int, data_bytes: int = 0) -> bytearray:
    """A RIFF/WAVE header for integer PCM, ending with the data chunk's header.

    Plain PCM (format tag 1) for mono and stereo 16-bit; WAVE_FORMAT_EXTENSIBLE otherwise,
    as the format's definition asks for more than two channels or more than 16 bits. The
    channel mask names front left/right (or centre) for one or two channels, and no speaker
    positions for more: a recorder's channels are sources, not speaker feeds.

    >>> len(wav_header(2, 48000, 16)), len(wav_header(2, 48000, 24))
    (44, 68)
    """
    block_align = channels * (bits // 8)
    rate_bytes = sample_rate * block_align
    if channels <= 2 and bits == 16:
        fmt = struct.pack("<HHIIHH", WAVE_FORMAT_PCM, channels, sample_rate, rate_bytes,
                          block_align, bits)
    else:
        mask = {1: 0x4, 2: 0x3}.get(channels, 0)
        fmt = struct.pack("<HHIIHHHHI", WAVE_FORMAT_EXTENSIBLE, channels, sample_rate,
                          rate_bytes, block_align, bits, 22, bits, mask) + _PCM_GUID
    head = bytearray()
    head += b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + data_bytes) + b"WAVE"
    head += b"fmt " + struct.pack("<I", len(fmt)) + fmt
    head += b"data" + struct.pack("<I", data_bytes)
    return head


class WavFile:
    """One WAV file being written: the data appended, the sizes in the header kept true.

    The file is created exclusively (an existing file is never touched). :meth:`flush`
    makes it a valid file holding everything written so far, durable on disk;
    :meth:`close` adds the pad byte the format wants after odd-sized data. OSError is the
    caller's to handle (:meth:`close_after_error` then keeps what was committed).
    """

    def __init__(self, path: Path, channels: int, sample_rate: int, bits: int):
        self.path = path
        self.block_align = channels * (bits // 8)
        self.header = wav_header(channels, sample_rate, bits)
        self.data_offset = len(self.header)
        self.data_bytes = 0  # bytes of audio in the file (whole frames unless a write failed)
        self.synced_bytes = 0
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            self._write_all(memoryview(self.header))
        except OSError:
            os.close(self.fd)
            raise

    def _write_all(self, data: memoryview) -> int:
        done = 0
        total = len(data)
        while done < total:
            done += os.write(self.fd, data[done:])
        return done

    def write(self, data: memoryview) -> None:
        """Append audio bytes. A write that fails part-way counts what reached the file."""
        done = 0
        total = len(data)
        at = self.data_offset + self.data_bytes
        try:
            while done < total:
                done += os.write(self.fd, data[done:])
        finally:
            self.data_bytes += done
        if _SYNC_FILE_RANGE is not None and done:
            # a hint: if the kernel refuses it, the flush's fdatasync still does the work
            _SYNC_FILE_RANGE(self.fd, at, done, SYNC_FILE_RANGE_WRITE)

    def _put_sizes(self, data_bytes: int, pad: int) -> None:
        head = self.header
        struct.pack_into("<I", head, 4, self.data_offset - 8 + data_bytes + pad)
        struct.pack_into("<I", head, self.data_offset - 4, data_bytes)
        os.pwrite(self.fd, head, 0)

    def flush(self) -> None:
        """Make the file valid and durable up to here: the audio reaches the disk first, then
        the header that counts it, so the header never counts audio the disk lacks."""
        if self.synced_bytes == self.data_bytes:
            return
        os.fdatasync(self.fd)
        self._put_sizes(self.data_bytes, 0)
        os.fdatasync(self.fd)
        self.synced_bytes = self.data_bytes

    def close(self) -> None:
        """Finish the file: pad byte, final sizes, durable, closed."""
        try:
            pad = self.data_bytes & 1
            if pad:
                try:  # a full disk may refuse even this byte: readers forgive a missing pad
                    self._write_all(memoryview(b"\0"))
                except OSError:
                    pad = 0
            self._put_sizes(self.data_bytes, pad)
            os.fdatasync(self.fd)
        finally:
            os.close(self.fd)
            self.fd = -1

    def close_after_error(self, frames: int) -> str | None:
        """After a failed write: cut the file to ``frames`` whole frames, make the header
        say so and close it. Returns a description of anything that failed on the way
        (the file is then as valid as its last flush), else None."""
        problem = None
        size = frames * self.block_align
        try:
            os.ftruncate(self.fd, self.data_offset + size)
            pad = 0
            if size & 1:
                try:  # a full disk may refuse even this byte: readers forgive a missing pad
                    os.pwrite(self.fd, b"\0", self.data_offset + size)
                    pad = 1
                except OSError:
                    pad = 0
            self.data_bytes = size
            self._put_sizes(size, pad)
            os.fdatasync(self.fd)
        except OSError as exc:
            problem = f"{self.path.name}: {_describe(exc)}"
        finally:
            os.close(self.fd)
            self.fd = -1
        return problem


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc)
    return f"{name} ({text})" if name else text


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class RecorderConfig:
    """How the session recorder records (the ``[recorder]`` table of the config file).

    >>> RecorderConfig(bits=16, mode="split").rotation_seconds
    300.0
    """

    autostart: bool = False  # start recording when the engine starts
    bits: int = 24
    mode: str = "single"  # or "split": one mono file per channel
    rotation_seconds: float = 300.0
    flush_seconds: float = 1.0
    ring_seconds: float = 5.0
    min_free_mb: float = 200.0
    gate: bool = False
    gate_threshold_dbfs: float = -60.0
    gate_hold_seconds: float = 2.0
    gate_preroll_seconds: float = 0.25

    def __post_init__(self) -> None:
        check_bool(self, "autostart")
        value = self.bits
        if isinstance(value, bool) or value not in BITS:
            raise ConfigError(f"bits must be one of 16, 24, 32, got {value!r}")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        _positive(self, "rotation_seconds", 86400.0)
        _positive(self, "flush_seconds", 60.0)
        _number(self, "ring_seconds", 1.0, 60.0)
        _number(self, "min_free_mb", 0.0, 1e9)
        check_bool(self, "gate")
        _number(self, "gate_threshold_dbfs", -140.0, 0.0)
        _number(self, "gate_hold_seconds", 0.0, 3600.0)
        _number(self, "gate_preroll_seconds", 0.0, 1.0)
        if self.gate_preroll_seconds > self.ring_seconds / 4:
            raise ConfigError(f"gate_preroll_seconds ({self.gate_preroll_seconds:g}) must be "
                              f"at most a quarter of ring_seconds ({self.ring_seconds:g})")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "recorder") -> RecorderConfig:
        """Build from a mapping (the config file's ``[recorder]`` table), naming unknown
        keys and bad values with ``where``."""
        return settings_from_mapping(cls, data, where)


def _real(cfg: RecorderConfig, name: str) -> float:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _number(cfg: RecorderConfig, name: str, lo: float, hi: float) -> None:
    value = _real(cfg, name)
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo:g} and {hi:g}, got {value:g}")


def _positive(cfg: RecorderConfig, name: str, hi: float) -> None:
    value = _real(cfg, name)
    if not 0.0 < value <= hi:
        raise ConfigError(f"{name} must be greater than 0 and at most {hi:g}, got {value:g}")


# ---------------------------------------------------------------------------- the recorder


@dataclass(slots=True)
class _Piece:
    """Part of a batch bound for one file (single) or one set of files (split)."""

    files: list[WavFile]
    names: list[str]
    frames: int
    close: bool  # the piece ends the file: rotation


class _Writes:
    """The writer's I/O thread: writes one batch's pieces to their files while the writer
    converts the next batch. One job at a time; :meth:`wait` before the next."""

    def __init__(self, timings: dict[str, float]):
        self._timings = timings
        self._job: list[tuple[WavFile, memoryview]] | None = None
        self._go = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self.error: OSError | None = None
        self.done = 0  # writes of the last job that completed
        self._thread = threading.Thread(target=self._run, name="ouro-recorder-io",
                                        daemon=True)
        self._thread.start()

    def submit(self, job: list[tuple[WavFile, memoryview]]) -> None:
        self._idle.clear()
        self._job = job
        self._go.set()

    def wait(self) -> None:
        self._idle.wait()

    def close(self) -> None:
        self.wait()
        self._job = None
        self._go.set()
        self._thread.join()

    def _run(self) -> None:
        clock = time.perf_counter
        while True:
            self._go.wait()
            self._go.clear()
            job = self._job
            if job is None:
                return
            t0 = clock()
            self.error = None
            self.done = 0
            try:
                for f, data in job:
                    f.write(data)
                    self.done += 1
            except OSError as exc:
                self.error = exc
            except Exception as exc:  # a bug: reported as a failed write, not lost
                self.error = OSError(errno.EIO, f"recorder I/O thread failed: {exc!r}")
            self._timings["write_s"] += clock() - t0
            self._idle.set()


def _db(x: float) -> float | None:
    return round(20.0 * math.log10(x), 1) if x > 0.0 else None


class Recorder:
    """Records ``in_channels + out_channels`` channels to WAV files under ``directory``.

    Build it outside the audio thread (it allocates the ring and compiles the kernels), hand
    :attr:`ring_array` and :attr:`cursors` to the audio thread for :func:`push2` and
    :func:`push_silence`, and call :meth:`start`, :meth:`stop` and :meth:`status` from the
    control side. Nothing here raises into the caller once built: faults stop the
    recording and are reported in the status.
    """

    def __init__(self, config: RecorderConfig, directory: str | os.PathLike[str],
                 sample_rate: int, in_channels: int, out_channels: int, *,
                 poll_s: float = DEFAULT_POLL_S):
        for name, value, lo, hi in (("sample_rate", sample_rate, 1000, 768000),
                                    ("in_channels", in_channels, 0, 256),
                                    ("out_channels", out_channels, 0, 256)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"recorder: {name} must be an integer between {lo} and "
                                  f"{hi}, got {value!r}")
        channels = in_channels + out_channels
        if channels == 0:
            raise ConfigError("recorder: nothing to record (no input and no output channels)")
        self.config = config
        self.directory = Path(directory)
        self.sample_rate = sample_rate
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = channels
        self.channel_names = ([f"in_{i + 1}" for i in range(in_channels)]
                              + [f"main_{i + 1}" for i in range(out_channels)])
        self.poll_s = poll_s
        self.ring_frames = max(1, math.ceil(config.ring_seconds * sample_rate))
        self.ring_array: Audio = np.empty((self.ring_frames, channels), np.float32)
        self.ring_array.fill(0.0)  # touched now: the audio thread must not fault pages in
        self.cursors: NDArray[np.int64] = np.zeros(CURSOR_SLOTS, np.int64)

        bits = config.bits
        self._bps = bits // 8
        self._planar = config.mode == "split"
        file_channels = 1 if self._planar else channels
        self._file_align = file_channels * self._bps
        # rotation cuts at an exact frame count; a file near the RIFF size limit is cut too
        self._rotate_frames = max(1, min(round(config.rotation_seconds * sample_rate),
                                         (WAV_MAX_BYTES - 80) // self._file_align))
        # one batch is what the writer converts at once: big enough to amortise the calls,
        # small enough to stay in cache-friendly sizes and well inside the ring
        self._batch_frames = int(min(self.ring_frames // 4,
                                     max(256, (1 << 22) // (channels * self._bps))))
        rows = channels if self._planar else 1
        width = self._batch_frames * (1 if self._planar else channels) * self._bps
        # two output buffers: the writer converts into one while its I/O thread writes the
        # other to the files
        self._outs = (np.zeros((rows, width), np.uint8), np.zeros((rows, width), np.uint8))
        self._views = tuple(memoryview(o).cast("B") for o in self._outs)  # type: ignore[arg-type]
        self._row_bytes = width
        self._peak_acc = np.zeros(channels, np.float32)
        self._lanes = np.zeros(lanes_for(channels), np.float32)
        self._tile = np.zeros(tile_frames(channels) * channels, np.int32)
        self._gate_out = np.zeros(1, np.int64)
        self._threshold = np.float32(10.0 ** (config.gate_threshold_dbfs / 20.0))
        self._hold_frames = round(config.gate_hold_seconds * sample_rate)
        self._preroll_frames = round(config.gate_preroll_seconds * sample_rate)
        self._meter_frames = max(1, round(METER_WINDOW_S * sample_rate))

        self._control = threading.Lock()  # start/stop from several control threads
        self._state = threading.Lock()  # cursors[STATE]: control side vs. a fault
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._reset_session()
        self._warm_up()

    # ------------------------------------------------------------------ set-up

    def _warm_up(self) -> None:
        warm_up(self.ring_array, self.cursors, self.in_channels, self.out_channels)
        peaks = np.zeros(self.channels, np.float32)
        convert(self.ring_array, 0, 1, self.config.bits, self._planar, self._outs[0], peaks,
                self._lanes, self._tile)
        peaks_only(self.ring_array, 0, 1, peaks)
        first_loud(self.ring_array, 0, 1, self._threshold)
        gate_close(self.ring_array, 0, 1, self._threshold, 0, 0, self._gate_out)

    def _reset_session(self) -> None:
        self._files: list[WavFile] = []
        self._names: list[str] = []
        self._last_names: list[str] = []
        self._prefix = ""
        self._file_index = 0
        self._file_frames = 0
        self._frames_written = 0
        self._discarded = 0
        self._session_start = 0
        self._pos = 0
        self._pending: list[_Piece] = []
        self._flip = 0
        self._io: _Writes | None = None
        self._gated_frames = 0
        self._gate_open = not self.config.gate
        self._closed_at = 0
        self._last_loud = 0
        self._meter_count = 0
        self._peaks: list[float] = [0.0] * self.channels
        self._max_peaks: list[float] = [0.0] * self.channels
        self._peak_acc[:] = 0.0
        self._reason: str | None = None
        self._running = False
        self._unflushed = False
        self._last_flush = time.monotonic()
        self._free_mb: float | None = None
        # wall seconds spent per stage, for ``ouro bench writer`` (the writes happen on the
        # I/O thread, at the same time as the conversion)
        self.timings = {"convert_s": 0.0, "write_s": 0.0, "flush_s": 0.0, "idle_s": 0.0}

    # ------------------------------------------------------------------ control side

    def start(self) -> bool:
        """Start a recording session (a new set of files). Returns whether it is recording;
        if not, the status says why. Does nothing while already recording."""
        with self._control:
            if self._running:
                return True
            self._join()
            cur = self.cursors
            with self._state:
                cur[STATE] = OFF  # the producer is idle from here: its slots may be reset
            self._reset_session()
            w = int(cur[WRITE])
            cur[READ] = w
            cur[OVERRUNS] = cur[DROPPED] = cur[SILENCE] = cur[BAD] = 0
            self._pos = w
            self._session_start = w
            self._closed_at = w
            self._last_loud = w
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._prefix = self._choose_prefix()
                low = self._disk_low()
            except OSError as exc:
                low = f"stopped: cannot use {self.directory}: {_describe(exc)}"
            if low is not None:
                self._reason = low
                with self._state:
                    cur[STATE] = DROPPING
                return False
            self._running = True
            self._wake.clear()
            with self._state:
                cur[STATE] = RECORDING
            self._thread = threading.Thread(target=self._run, name="ouro-recorder",
                                            daemon=True)
            self._thread.start()
            return True

    def stop(self, timeout: float = 30.0) -> None:
        """Stop recording: what is in the ring is written, the files are finished and the
        writer thread is joined. Safe to call at any time, any number of times."""
        with self._control:
            with self._state:  # under the GIL: no push is half done, and none starts after
                self.cursors[STATE] = OFF
            self._wake.set()
            self._join(timeout)
            if self._reason is None and self._prefix:
                self._reason = "stopped"

    def _join(self, timeout: float = 30.0) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if not thread.is_alive():
                self._thread = None

    def status(self) -> dict[str, Any]:
        """A snapshot for ``/ouro/status`` (plain JSON types). ``peaks`` are linear (1.0 is
        full scale; above it the sample was clipped) over the latest ~0.1 s of audio,
        ``peaks_dbfs`` the same in dBFS (null for digital silence), ``max_peaks`` linear
        since the session started."""
        cur = self.cursors
        rate = self.sample_rate
        gated = self._gated_frames
        if not self._gate_open and self._running:
            gated += max(0, self._pos - self._preroll_frames - self._closed_at)
        peaks = list(self._peaks)
        return {
            "running": self._running,
            "reason": self._reason,
            "directory": str(self.directory),
            "files": list(self._names),
            "last_files": list(self._last_names),
            "file_count": self._file_index,
            "channels": list(self.channel_names),
            "frames_written": self._frames_written,
            "seconds_written": round(self._frames_written / rate, 3),
            "overruns": int(cur[OVERRUNS]),
            "dropped_frames": int(cur[DROPPED]) + self._discarded,
            "silence_frames": int(cur[SILENCE]),
            "bad_blocks": int(cur[BAD]),
            "peaks": [round(p, 6) for p in peaks],
            "peaks_dbfs": [_db(p) for p in peaks],
            "max_peaks": [round(p, 6) for p in self._max_peaks],
            "gate": self.config.gate,
            "gated": self.config.gate and not self._gate_open,
            "gated_seconds": round(gated / rate, 3),
            "ring_fill": round((int(cur[WRITE]) - int(cur[READ])) / self.ring_frames, 4),
            "bits": self.config.bits,
            "mode": self.config.mode,
            "rotation_s": self.config.rotation_seconds,
            "sample_rate": rate,
            "free_mb": self._free_mb,
        }

    # ------------------------------------------------------------------ names and disk

    def _choose_prefix(self) -> str:
        """``rec-YYYYMMDD-HHMMSS``, with a letter after the time if files of an earlier
        session already start that way (two sessions in one second)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for letter in ["", *"bcdefghijklmnopqrstuvwxyz"]:
            prefix = f"rec-{stamp}{letter}"
            if not any(self.directory.glob(f"{prefix}-*")):
                return prefix
        return f"rec-{stamp}-{time.monotonic_ns()}"

    def _disk_low(self) -> str | None:
        free = shutil.disk_usage(self.directory).free / 1e6
        self._free_mb = round(free, 1)
        if free < self.config.min_free_mb:
            return f"stopped: disk space below {self.config.min_free_mb:g} MB"
        return None

    # ------------------------------------------------------------------ the writer thread

    def _run(self) -> None:
        self._io = _Writes(self.timings)
        try:
            self._loop()
        except Exception as exc:  # a bug must still leave valid files and a reason
            self._fault(f"stopped: writer failed: {exc!r}")
        finally:
            self._io.close()

    def _loop(self) -> None:
        cur = self.cursors
        batch = self._batch_frames
        while True:
            stopping = cur[STATE] == OFF
            caught_up = False
            while not caught_up:
                avail = int(cur[WRITE]) - self._pos
                if avail <= 0:
                    break
                n = min(avail, batch)
                caught_up = n < batch
                if not self._consume(n):
                    return
            # nothing more to convert for now: let the last writes land, flush if it is time
            if not self._settle() or (self._due() and not self._flush()):
                return
            if stopping and int(cur[WRITE]) == self._pos:
                break
            t0 = time.perf_counter()
            self._wake.wait(self.poll_s)
            self.timings["idle_s"] += time.perf_counter() - t0
        self._finish()

    def _due(self) -> bool:
        return self._unflushed and time.monotonic() - self._last_flush >= \
            self.config.flush_seconds

    def _consume(self, n: int) -> bool:
        """Frames ``[pos, pos + n)``: through the gate, converted, on their way to the
        files (the last batch may still be in flight when this returns)."""
        a = self._pos
        end = a + n
        ok = self._gate(a, end) if self.config.gate else self._write_span(a, end)
        if not ok:  # stopped on a fault, which has emptied the ring
            return False
        self._pos = end
        # converted frames are in the output buffers: the ring may have them back
        if self._gate_open:
            self.cursors[READ] = end
        else:  # keep the pre-roll in the ring, in case the signal comes back
            self.cursors[READ] = max(int(self.cursors[READ]), self._closed_at,
                                     end - self._preroll_frames)
        self._meter(n)
        return True

    def _gate(self, a: int, end: int) -> bool:
        ring = self.ring_array
        thr = self._threshold
        while a < end:
            if self._gate_open:
                close = gate_close(ring, a, end, thr, self._hold_frames, self._last_loud,
                                   self._gate_out)
                self._last_loud = int(self._gate_out[0])
                stop = end if close < 0 else close
                if not self._write_span(a, stop):
                    return False
                if close < 0:
                    return True
                # closed: this stretch of signal is one file
                if not self._settle() or not self._close_files():
                    return False
                self._gate_open = False
                self._closed_at = close
                a = close
            else:
                loud = first_loud(ring, a, end, thr)
                if loud < 0:
                    peaks_only(ring, a, end - a, self._peak_acc)
                    return True
                begin = max(loud - self._preroll_frames, self._closed_at,
                            int(self.cursors[READ]))
                self._gated_frames += begin - self._closed_at
                peaks_only(ring, a, loud - a, self._peak_acc)
                self._gate_open = True
                self._last_loud = loud
                if not self._write_span(begin, loud):
                    return False
                a = loud
        return True

    def _write_span(self, a: int, end: int) -> bool:
        """Convert frames ``[a, end)`` batch by batch; each batch is converted while the
        I/O thread writes the one before it."""
        ring = self.ring_array
        timings = self.timings
        clock = time.perf_counter
        while a < end:
            m = min(end - a, self._batch_frames)
            t0 = clock()
            convert(ring, a, m, self.config.bits, self._planar, self._outs[self._flip],
                    self._peak_acc, self._lanes, self._tile)
            timings["convert_s"] += clock() - t0
            if not self._settle() or (self._due() and not self._flush()):
                return False
            if not self._submit(m):
                return False
            a += m
        return True

    def _submit(self, m: int) -> bool:
        """Hand the converted batch (``m`` frames) to the I/O thread, cut into pieces at
        the rotation points; opens the files the pieces need. Nothing is in flight."""
        bps = self._bps
        align = self._file_align
        row_bytes = self._row_bytes
        view = self._views[self._flip]
        files, names, frames_in = self._files, self._names, self._file_frames
        job: list[tuple[WavFile, memoryview]] = []
        pieces: list[_Piece] = []
        off = 0
        while off < m:
            if not files:
                opened = self._open_set()
                if isinstance(opened, str):
                    self._fault(opened, [f for p in pieces for f in p.files])
                    return False
                files, names = opened
                frames_in = 0
            k = min(m - off, self._rotate_frames - frames_in)
            if self._planar:
                for c, f in enumerate(files):
                    base = c * row_bytes
                    job.append((f, view[base + off * bps:base + (off + k) * bps]))
            else:
                job.append((files[0], view[off * align:(off + k) * align]))
            frames_in += k
            close = frames_in >= self._rotate_frames
            pieces.append(_Piece(files, names, k, close))
            if close:
                files, names = [], []
            off += k
        assert self._io is not None
        self._pending = pieces
        self._io.submit(job)
        self._flip ^= 1
        return True

    def _settle(self) -> bool:
        """Wait for the writes in flight and count them in: frames written, rotations.
        A failed write stops the recording with what was written before it."""
        if not self._pending:
            return True
        io = self._io
        assert io is not None
        io.wait()
        pieces, self._pending = self._pending, []
        done = 0  # writes of the job accounted for
        for i, piece in enumerate(pieces):
            if io.error is not None and done + len(piece.files) > io.done:
                rest = [f for p in pieces[i:] for f in p.files if f not in self._files]
                self._fault(f"stopped: write error: {_describe(io.error)}", rest)
                return False
            done += len(piece.files)
            if piece.files is not self._files:  # the first piece of a new file
                self._files, self._names, self._file_frames = piece.files, piece.names, 0
            self._file_frames += piece.frames
            self._frames_written += piece.frames
            self._unflushed = True
            if piece.close and not self._close_files():
                return False
        return True

    def _open_set(self) -> tuple[list[WavFile], list[str]] | str:
        """The next file (single) or files (split), or why not."""
        self._file_index += 1
        stem = f"{self._prefix}-{self._file_index:04d}"
        if self._planar:
            names = [f"{stem}-ch{c + 1:02d}-{name}.wav"
                     for c, name in enumerate(self.channel_names)]
            file_channels = 1
        else:
            names = [f"{stem}.wav"]
            file_channels = self.channels
        files: list[WavFile] = []
        try:
            low = self._disk_low()
            if low is not None:
                return low
            for name in names:
                files.append(WavFile(self.directory / name, file_channels,
                                     self.sample_rate, self.config.bits))
        except OSError as exc:
            for f in files:
                f.close_after_error(0)
            return f"stopped: cannot create a file: {_describe(exc)}"
        return files, names

    def _flush(self) -> bool:
        """The files valid and durable up to here; first the disk guard. Nothing may be in
        flight."""
        t0 = time.perf_counter()
        self._last_flush = time.monotonic()
        self._unflushed = False
        try:
            low = self._disk_low()
            if low is not None:
                self._fault(low)
                return False
            for f in self._files:
                f.flush()
        except OSError as exc:
            self._fault(f"stopped: write error: {_describe(exc)}")
            return False
        self.timings["flush_s"] += time.perf_counter() - t0
        return True

    def _close_files(self) -> bool:
        """Finish the current file(s). Nothing may be in flight."""
        t0 = time.perf_counter()
        files, self._files = self._files, []
        if files:
            self._last_names = self._names
        self._names = []
        try:
            for i, f in enumerate(files):
                try:
                    f.close()
                except OSError:
                    self._files = files[i + 1:]  # left for _fault to close
                    raise
        except OSError as exc:
            self._fault(f"stopped: write error: {_describe(exc)}")
            return False
        self._last_flush = time.monotonic()
        self.timings["flush_s"] += time.perf_counter() - t0
        return True

    def _finish(self) -> None:
        """The normal end of a session (stop() was called and the ring is drained)."""
        if not self._settle():
            return
        if not self._gate_open:
            self._gated_frames += max(0, self._pos - self._closed_at)
            self._closed_at = self._pos
        self._close_files()
        if self._meter_count:
            self._publish_peaks()
        self._running = False

    def _fault(self, reason: str, others: list[WavFile] | None = None) -> None:
        """Stop on a fault: keep what was committed, drop (and count) the rest.

        The current files keep the frames counted in ``frames_written``; ``others``
        (opened for writes that never completed) are removed."""
        cur = self.cursors
        with self._state:
            if cur[STATE] == RECORDING:
                cur[STATE] = DROPPING  # from here the producer counts instead of writing
        if self._io is not None:
            self._io.wait()  # a write still in flight is not counted: it is cut off below
        others = list(others or [])
        others += [f for p in self._pending for f in p.files
                   if f not in self._files and f not in others]
        if self._reason is None:
            self._reason = reason
        for f in self._files:
            if f.fd >= 0:
                problem = f.close_after_error(self._file_frames)
                if problem is not None:  # that file is as valid as its last flush
                    self._reason += f"; then {problem}"
        for f in others:
            if f.fd >= 0:
                f.close_after_error(0)
            with contextlib.suppress(OSError):
                f.path.unlink()
        if self._files:
            self._last_names = self._names
        self._files = []
        self._names = []
        self._pending = []
        if not self._gate_open:
            self._gated_frames += max(0, self._pos - self._closed_at)
            self._closed_at = self._pos
        # every frame that entered the ring this session was written, gated or is lost
        w = int(cur[WRITE])
        self._discarded = w - self._session_start - self._frames_written - self._gated_frames
        self._pos = w
        cur[READ] = w
        if self._meter_count:
            self._publish_peaks()
        self._running = False

    # ------------------------------------------------------------------ meters

    def _meter(self, n: int) -> None:
        self._meter_count += n
        if self._meter_count >= self._meter_frames:
            self._publish_peaks()

    def _publish_peaks(self) -> None:
        acc = self._peak_acc.tolist()
        self._peaks = acc
        self._max_peaks = [max(a, b) for a, b in zip(self._max_peaks, acc, strict=True)]
        self._peak_acc[:] = 0.0
        self._meter_count = 0
