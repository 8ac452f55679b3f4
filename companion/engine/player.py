"""The player's audio side: a transport (play, stop, locate, loop range), a metronome and
meters around a render plan, in the shape :class:`rtcore.host.JackHost` drives.

:class:`Player` is what the JACK host calls from its process callback. Everything the
other threads want of it arrives as a command in a bounded queue that the audio thread
drains at a block start: a new plan, a locate, a loop range, the metronome. A plan is
compiled on another thread and handed over by reference, so the audio side never waits for
a compile. What the audio side tells the others (playhead, peaks) it writes into arrays made
beforehand, which :meth:`Player.snapshot` reads.

Real-time rules of :meth:`Player.process`: no I/O, no locks, no logging, no new arrays of
audio size (the plan renders into buffers made at construction); work bounded by the block.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

MAX_COMMANDS = 256  # per block at most this many are drained; the rest wait a block
CLICK_S = 0.012
CLICK_HZ = (1760.0, 1320.0)  # the first beat of a bar, the others
CLICK_LEVEL = (0.5, 0.3)


class Renderable(Protocol):
    """A compiled plan, as the player uses it: ``render`` writes the frames
    ``[start_frame, start_frame + n)`` of the arrangement into ``out`` (2, n); a start that
    does not follow the previous call is a locate."""

    def render(self, start_frame: int, out: NDArray[np.float32]) -> None: ...


def meters_for(plan: Any, track_ids: Sequence[str]) -> tuple[
        list[str], list[NDArray[np.float32]], NDArray[np.float32]]:
    """The per-track meters of a new plan (off the audio thread): its stems for the root
    tracks ``track_ids`` turned on, and the peak array the audio side fills."""
    ids = [t for t in track_ids if t in plan.track_ids]
    plan.enable_stems(ids)
    return ids, [plan.stems[t] for t in ids], np.zeros((len(ids), 2), np.float32)


class Player:
    """The transport around a plan. ``frame`` counts the host's frames (for JACK's frame
    clock), ``playhead`` is the arrangement's frame."""

    channels = 2

    def __init__(self, sample_rate: int, block_size: int):
        self.sample_rate = int(sample_rate)
        self.block_size = int(block_size)
        self.frame = 0
        self.latency_frames = 0
        self.playhead = 0
        self.playing = False
        self.loop_start = -1  # no loop while negative
        self.loop_end = -1
        self.metronome = False
        self.plan: Renderable | None = None
        self.plans_swapped = 0
        self.xruns = 0
        self.missed_frames = 0
        self.commands: deque[tuple[Any, ...]] = deque()
        self.retired: deque[Any] = deque()  # replaced plans, for collect_retired()
        self.dropped_commands = 0
        self._buf = np.zeros((2, self.block_size), np.float32)
        # the metronome: beat frames and accents made off the audio thread
        self._beats = np.zeros(0, np.int64)
        self._accents = np.zeros(0, np.bool_)
        n = max(1, int(CLICK_S * self.sample_rate))
        t = np.arange(n) / self.sample_rate
        env = np.exp(-t / (CLICK_S / 5.0)).astype(np.float32)
        self._clicks = [(level * env * np.sin(2 * math.pi * hz * t)).astype(np.float32)
                        for hz, level in zip(CLICK_HZ, CLICK_LEVEL, strict=True)]
        # what the audio side reports: peaks since the last snapshot, per channel
        self.peaks = np.zeros(2, np.float32)
        self._peak_block = np.zeros(2, np.float32)
        # per-track meters: the plan's stems (root tracks' outputs), made with the plan
        self._meter_ids: list[str] = []
        self._stems: list[NDArray[np.float32]] = []
        self.track_peaks = np.zeros((0, 2), np.float32)
        self._scratch = np.zeros((2, self.block_size), np.float32)

    # --------------------------------------------------------------- control side

    def submit(self, *command: Any) -> bool:
        """Queue a command for the next block start; False (counted) when the queue is full.
        Commands: ``("plan", plan)`` or ``("plan", plan, meters)`` with
        :func:`meters_for`'s result, ``("play",)``, ``("stop",)``, ``("locate", frame)``,
        ``("loop", start_frame, end_frame)`` (``-1, -1`` clears it), ``("metronome", on)``,
        ``("beats", frames, accents)``."""
        if len(self.commands) >= MAX_COMMANDS:
            self.dropped_commands += 1
            return False
        self.commands.append(command)  # deque.append is atomic: no lock shared with audio
        return True

    def set_beats(self, beats: Sequence[tuple[int, bool]]) -> None:
        """The metronome's beats as ``(frame, is_bar_start)``, sorted (made from the tempo map
        and meter off the audio thread)."""
        frames = np.array([b[0] for b in beats], np.int64)
        accents = np.array([b[1] for b in beats], np.bool_)
        self.submit("beats", frames, accents)

    def collect_retired(self) -> int:
        """Free the replaced plans that nothing else holds any more (control side: a plan's
        arrays must not be freed on the audio thread). A plan the newest still refers to
        (its glide starts from it) waits for a later call. Returns how many were freed."""
        freed = 0
        progress = True
        while progress:  # a plan freed can free the one it chained to: go again
            progress = False
            for _ in range(len(self.retired)):
                plan = self.retired.popleft()
                # held only by `plan` and getrefcount's own argument: nobody else has it
                if sys.getrefcount(plan) > 2:
                    self.retired.append(plan)
                else:
                    freed += 1
                    progress = True
                del plan
        return freed

    def snapshot(self) -> dict[str, Any]:
        """Playhead, state and the peaks since the last snapshot (then cleared). Any thread."""
        peaks = [float(self.peaks[0]), float(self.peaks[1])]
        self.peaks[:] = 0.0
        held = self.track_peaks  # one plan's arrays: ids and rows stay together
        tracks = {tid: [float(held[i, 0]), float(held[i, 1])]
                  for i, tid in enumerate(self._meter_ids[:held.shape[0]])}
        held[:] = 0.0
        return {"playing": self.playing, "playhead_frame": self.playhead,
                "tracks": tracks,
                "loop": ([self.loop_start, self.loop_end] if self.loop_start >= 0 else None),
                "metronome": self.metronome, "peaks": peaks, "xruns": self.xruns,
                "plans_swapped": self.plans_swapped}

    # --------------------------------------------------------------- audio side

    def _drain(self) -> None:
        commands = self.commands
        for _ in range(MAX_COMMANDS):
            if not commands:
                return
            cmd = commands.popleft()
            kind = cmd[0]
            if kind == "plan":
                if self.plan is not None:  # freed by the control side, never here
                    self.retired.append(self.plan)
                self.plan = cmd[1]
                self.plans_swapped += 1
                if len(cmd) > 2:
                    self._meter_ids, self._stems, self.track_peaks = cmd[2]
            elif kind == "play":
                self.playing = True
            elif kind == "stop":
                self.playing = False
            elif kind == "locate":
                self.playhead = max(0, int(cmd[1]))
            elif kind == "loop":
                start, end = int(cmd[1]), int(cmd[2])
                if 0 <= start < end:
                    self.loop_start, self.loop_end = start, end
                else:
                    self.loop_start = self.loop_end = -1
            elif kind == "metronome":
                self.metronome = bool(cmd[1])
            elif kind == "beats":
                self._beats, self._accents = cmd[1], cmd[2]

    def process(self, inputs: NDArray[np.float32], main_out: NDArray[np.float32],
                click_out: NDArray[np.float32], midi_in: object = None,
                midi_out: object = None) -> None:
        """One block (real time): ``main_out`` (frames, 2) and ``click_out`` (frames,) are
        written over entirely. The inputs and MIDI are not used by the player."""
        if self.commands:
            self._drain()
        n = main_out.shape[0]
        self.frame += n
        click_out.fill(0.0)
        if not self.playing or self.plan is None:
            main_out.fill(0.0)
            return
        buf = self._buf
        done = 0
        while done < n:
            pos = self.playhead
            seg = n - done
            if self.loop_start >= 0 and pos < self.loop_end:
                seg = min(seg, self.loop_end - pos)
            out = buf[:, done:done + seg]
            self.plan.render(pos, out)
            if self._stems:
                self._meter(seg)
            if self.metronome:
                self._click(pos, seg, out, click_out[done:done + seg])
            self.playhead = pos + seg
            if self.loop_start >= 0 and self.playhead == self.loop_end:
                self.playhead = self.loop_start
            done += seg
        np.copyto(main_out.T, buf[:, :n])
        magnitude = self._scratch[:, :n]  # made beforehand: no new array per block
        np.abs(buf[:, :n], out=magnitude)
        np.max(magnitude, axis=1, out=self._peak_block)
        np.maximum(self.peaks, self._peak_block, out=self.peaks)

    def _meter(self, seg: int) -> None:
        """Each stem's peak over the ``seg`` frames just rendered, kept as a running max."""
        scratch = self._scratch[:, :seg]
        block = self._peak_block
        peaks = self.track_peaks
        for i, stem in enumerate(self._stems):
            np.abs(stem[:, :seg], out=scratch)
            np.max(scratch, axis=1, out=block)
            np.maximum(peaks[i], block, out=peaks[i])

    def _click(self, pos: int, seg: int, out: NDArray[np.float32],
               click_out: NDArray[np.float32]) -> None:
        """Adds the metronome's clicks that sound in ``[pos, pos + seg)``, including the
        tails of clicks that began just before."""
        beats = self._beats
        if beats.shape[0] == 0:
            return
        click_len = self._clicks[0].shape[0]
        i = int(np.searchsorted(beats, pos - click_len + 1))
        end = pos + seg
        while i < beats.shape[0] and beats[i] < end:
            b = int(beats[i])
            click = self._clicks[0 if self._accents[i] else 1]
            lo = max(b, pos)
            hi = min(b + click_len, end)
            if hi > lo:
                part = click[lo - b:hi - b]
                click_out[lo - pos:hi - pos] += part
                out[0, lo - pos:hi - pos] += part
                out[1, lo - pos:hi - pos] += part
            i += 1

    def skip(self, missed_frames: int) -> None:
        """An xrun: the transport moves on through the missed frames, as a clock would."""
        if missed_frames <= 0:
            return
        self.xruns += 1
        self.missed_frames += missed_frames
        self.frame += missed_frames
        if not self.playing:
            return
        head = self.playhead + missed_frames
        if self.loop_start >= 0 and self.playhead < self.loop_end <= head:
            span = self.loop_end - self.loop_start
            head = self.loop_start + (head - self.loop_end) % span
        self.playhead = head
