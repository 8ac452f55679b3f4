"""Recorded audio: fixed-size chunks from a pool, takes, and consolidation.

A take is recorded into chunks handed out by a :class:`ChunkPool` that the non-real-time
side keeps stocked, so the audio thread never allocates. While a take is unconsolidated it
plays from its chunks through its ``sync_offset``; the I/O side later rewrites it into one
buffer rotated so that index 0 is column beat 1 (:func:`consolidate`), and the engine swaps
that in at a block start. Both read paths return the same samples.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from numpy.typing import NDArray

Audio = NDArray[np.float32]


class Take:
    """One recording of one cell. Preallocated shells are handed to the audio thread.

    ``chunks[i]`` holds frames ``[i * chunk_frames, (i + 1) * chunk_frames)`` of the
    recording in the order it was recorded; buffer index 0 was recorded at column position
    ``sync_offset``. ``data``, once set, is the consolidated loop: ``data[p]`` is what plays
    at column position ``p``.
    """

    __slots__ = (
        "beats", "captured", "channels", "chunk_frames", "chunks", "crc", "data",
        "length", "nchunks", "preroll", "preroll_frames", "serial", "sync_offset",
    )

    def __init__(self, channels: int, chunk_frames: int, max_chunks: int, preroll_frames: int):
        self.channels = channels
        self.chunk_frames = chunk_frames
        self.chunks: list[Audio | None] = [None] * max_chunks
        self.preroll: Audio = np.zeros((max(preroll_frames, 1), channels), np.float32)
        self.preroll_frames = 0
        self.reset(0)

    def reset(self, serial: int) -> None:
        self.serial = serial
        self.nchunks = 0
        self.length = 0  # frames; 0 while a first recording's length is unknown
        self.captured = 0
        self.beats = 0
        self.sync_offset = 0
        self.data: Audio | None = None
        self.crc = -1  # CRC-32 of ``data``'s bytes, set off the audio thread; -1 unknown

    def chunk_list(self) -> list[Audio]:
        """The chunks in use (non-real-time callers only: builds a list)."""
        return [c for c in self.chunks[: self.nchunks] if c is not None]

    def read_scaled(self, position: int, gain: float | Audio, out: Audio) -> None:
        """``out[i] = B[(position + i - sync_offset) mod length] * gain`` for all of ``out``.

        ``position`` is the column position of ``out[0]``; ``gain`` is a scalar or a column
        of per-frame gains shaped ``(frames, 1)``. Real-time safe: views and ufuncs only.
        """
        n = out.shape[0]
        length = self.length
        data = self.data
        done = 0
        # a consolidated buffer is indexed by column position, the chunks by buffer index
        j = position if data is not None else (position - self.sync_offset) % length
        cf = self.chunk_frames
        scalar = isinstance(gain, float)
        while done < n:
            if data is not None:
                m = min(n - done, length - j)
                src = data[j : j + m]
            else:
                ci, off = divmod(j, cf)
                m = min(n - done, cf - off, length - j)
                chunk = self.chunks[ci]
                assert chunk is not None
                src = chunk[off : off + m]
            if scalar:
                np.multiply(src, gain, out=out[done : done + m])
            else:
                np.multiply(src, gain[done : done + m], out=out[done : done + m])  # type: ignore[index]
            done += m
            j += m
            if j >= length:
                j = 0


def consolidate(take: Take) -> Audio:
    """The take as one buffer whose index 0 is column beat 1: ``C[p] = B[(p - o) mod L]``.

    Each chunk is copied once, straight to its rotated place. A chunk missing from a take
    (the pool ran dry in its latency tail) is silence there, as is a take cut short."""
    length = take.length
    cf = take.chunk_frames
    o = take.sync_offset % length
    out = np.zeros((length, take.channels), np.float32)
    for i in range(take.nchunks):
        chunk = take.chunks[i]
        start = i * cf
        if chunk is None or start >= length:
            continue
        n = min(cf, length - start)
        dst = (start + o) % length
        k = min(n, length - dst)
        out[dst:dst + k] = chunk[:k]
        if k < n:
            out[:n - k] = chunk[k:n]
    return out


class ChunkPool:
    """Free chunks and take shells for the audio thread, stocked by the non-real-time side.

    The audio thread only pops (``deque.popleft`` is atomic); the stocking side only
    appends. When the pool is empty the audio thread gets ``None`` and must cope.

    The pool keeps the recording budget: the audio held at once (the frames of every chunk
    it ever handed out or holds, plus the consolidated loops, ``held_frames``, kept up to
    date by the stocking side) stays within ``budget_frames``. Once the budget is used up
    ``exhausted`` is set and the pool is only refilled by chunks given back.
    """

    def __init__(self, channels: int, chunk_frames: int, max_chunks: int,
                 preroll_frames: int, reserve_chunks: int, reserve_takes: int = 8,
                 budget_frames: int = 1 << 62):
        self.channels = channels
        self.chunk_frames = chunk_frames
        self.max_chunks = max_chunks
        self.preroll_frames = preroll_frames
        self.reserve_chunks = reserve_chunks
        self.reserve_takes = reserve_takes
        self.budget_frames = budget_frames
        self.allocated = 0  # chunks in existence (free here, or in takes)
        self.held_frames = 0  # consolidated audio held by takes
        self.exhausted = False
        self.chunks: deque[Audio] = deque()
        self.takes: deque[Take] = deque()
        self.stock()

    def used_frames(self) -> int:
        return self.allocated * self.chunk_frames + self.held_frames

    def stock(self) -> int:
        """Top the pool up to its reserve, within the budget; returns how many chunks were
        added. Not real-time."""
        added = 0
        cf = self.chunk_frames
        while len(self.chunks) < self.reserve_chunks:
            if self.used_frames() + cf > self.budget_frames:
                break
            chunk = np.zeros((cf, self.channels), np.float32)
            chunk.fill(0.0)  # touched here: zeroed memory is only mapped until written
            self.chunks.append(chunk)
            self.allocated += 1
            added += 1
        self.exhausted = self.used_frames() + cf > self.budget_frames
        while len(self.takes) < self.reserve_takes:
            self.takes.append(Take(self.channels, self.chunk_frames, self.max_chunks,
                                   self.preroll_frames))
        return added

    def give_back(self, chunk: Audio) -> None:
        """A chunk no take needs any more: free for the next recording, or dropped (and
        its memory with it) when the pool is full."""
        if len(self.chunks) < self.reserve_chunks:
            self.chunks.append(chunk)
        else:
            self.allocated -= 1

    def take_chunk(self) -> Audio | None:
        try:
            return self.chunks.popleft()
        except IndexError:
            return None

    def take_shell(self) -> Take | None:
        try:
            return self.takes.popleft()
        except IndexError:
            return None
