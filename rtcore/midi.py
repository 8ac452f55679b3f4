"""Preallocated MIDI event buffers for the audio thread.

The engine's MIDI input and output are :class:`MidiBuffer` objects: fixed-capacity arrays of
(frame offset, up to 3 bytes) that the host binding fills from and drains to JACK's MIDI
ports, and that ``ouro offline`` fills from a script's ``midi`` events.
"""

from __future__ import annotations

import math

import numpy as np
from mido.messages.specs import SPEC_BY_STATUS

MAX_MESSAGE_BYTES = 3


def _message_lengths() -> tuple[int, ...]:
    """For every first byte, how many bytes its message has; 0 where none can start
    (data bytes, undefined status bytes) or where it does not fit a short event (SysEx)."""
    lengths = [0] * 256
    for status, spec in SPEC_BY_STATUS.items():
        length = spec["length"]
        if not math.isinf(length) and length <= MAX_MESSAGE_BYTES:
            lengths[status] = int(length)
    return tuple(lengths)


# mido's table of message lengths, as the audio thread reads it: a tuple indexed by byte
MESSAGE_LENGTH = _message_lengths()


class MidiBuffer:
    """Up to ``capacity`` short MIDI messages, each at a frame offset within the block."""

    __slots__ = ("count", "data", "dropped", "frames", "sizes")

    def __init__(self, capacity: int = 256):
        self.frames = np.zeros(capacity, np.int64)
        self.data = np.zeros((capacity, MAX_MESSAGE_BYTES), np.uint8)
        self.sizes = np.zeros(capacity, np.int8)
        self.count = 0
        self.dropped = 0

    def clear(self) -> None:
        self.count = 0

    def add(self, frame: int, message: bytes | list[int] | tuple[int, ...]) -> bool:
        """Append one message (at most 3 bytes); False (and counted) when full or too long."""
        n = len(message)
        if self.count >= self.frames.shape[0] or not 0 < n <= MAX_MESSAGE_BYTES:
            self.dropped += 1
            return False
        i = self.count
        self.frames[i] = frame
        for j in range(n):
            self.data[i, j] = message[j]
        self.sizes[i] = n
        self.count = i + 1
        return True

    def take_window(self, src: MidiBuffer, lo: int, hi: int) -> None:
        """Become ``src``'s events at frames in ``[lo, hi)`` (and before ``lo`` when ``lo``
        is 0), with their frames made relative to ``lo``. Real-time safe."""
        self.count = 0
        for i in range(src.count):
            f = int(src.frames[i])
            if (f >= lo or lo == 0) and f < hi:
                self._copy(src, i, f - lo)

    def append_from(self, src: MidiBuffer, offset: int) -> None:
        """Append all of ``src``'s events with ``offset`` added to their frames."""
        for i in range(src.count):
            self._copy(src, i, int(src.frames[i]) + offset)

    def _copy(self, src: MidiBuffer, i: int, frame: int) -> None:
        j = self.count
        if j >= self.frames.shape[0]:
            self.dropped += 1
            return
        self.frames[j] = frame
        self.data[j] = src.data[i]
        self.sizes[j] = src.sizes[i]
        self.count = j + 1

    def events(self) -> list[tuple[int, list[int]]]:
        """(frame, bytes) pairs, for non-real-time readers."""
        return [(int(self.frames[i]), [int(b) for b in self.data[i, : self.sizes[i]]])
                for i in range(self.count)]
