"""MIDI clock: reading an external clock's tempo and phase, and the bytes the master sends.

An external clock sends 24 ticks per quarter note, each arriving with some jitter (a
USB interface or a busy sequencer easily adds a millisecond). Taking the tempo from the last
interval would make the loops wobble with that jitter, so :class:`ClockFollower` fits a
straight line, tick frame against tick index, over a window of the recent ticks (least
squares): its slope is the tick period and its value at the newest tick the phase. Over a
window of two bars at 100 BPM, uniform +/-1 ms jitter leaves a few thousandths of a BPM.

A real tempo change shows as residuals that keep growing with the same sign; two such ticks
in a row start the window afresh from them, so the follower settles within a few beats of
a jump instead of a whole window. Ticks that stop arriving leave the last fit in place: the
engine keeps that tempo and says the clock is lost.

A tick is hardly ever much early, but often late: a sender or an interface that missed its
cycles delivers several at once, at one frame or much closer together than the period.
Every tick counts, but one that arrives implausibly soon after the one before (within half
a period, or faster than any tempo) says the one before was late: it takes that one's place
as the newest point of the line instead of adding one, so the fit holds only the last tick
of a burst, the one nearest its true time. (Soon ticks that keep coming at a plausible
tempo are the clock more than doubling its tempo: they go to the jump test.) A gap of a
whole number of periods counts the ticks it should have held as missed (our own xrun loses
them); the late ticks of a burst that follow it are those very ticks, so they use up that
count instead of adding to it. A gap of no whole number of periods, or one after a tick
that was already off the line, is the clock slowing down: one tick. A fit whose slope is
no plausible tempo is not used.

All of it runs in the audio thread: the window is preallocated and the fit is one compiled
call per tick.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from rtcore.config import TEMPO_MAX_BPM, TEMPO_MIN_BPM

TICKS_PER_BEAT = 24
WINDOW_TICKS = 2 * 4 * TICKS_PER_BEAT  # two bars of 4/4
JUMP_MS = 3.0  # a residual beyond this (and beyond the jitter seen) may be a tempo change
JUMP_TICKS = 2  # that many in a row, of one sign, and it is one
LOST_TICKS = 6.0  # no tick for this many periods (and at least LOST_MIN_S): the clock is lost
LOST_MIN_S = 0.25
SOON = 0.5  # a tick within this many periods of the one before: the one before was late
GAP = 1.5  # a tick this many periods after the one before: ticks may have gone missing
FOLLOW_MIN_BPM = TEMPO_MIN_BPM / 2.0  # a fit outside these is no tempo: it is not used
FOLLOW_MAX_BPM = TEMPO_MAX_BPM * 2.0  # (and ticks closer than this tempo's period are late)

# MIDI system real-time and common messages the clock uses
CLOCK, START, CONTINUE, STOP, SONG_POSITION = 0xF8, 0xFA, 0xFB, 0xFC, 0xF2

FIT_AT, FIT_PERIOD, FIT_RMS = 0, 1, 2  # fields of ClockFollower.fit


@numba.njit(nogil=False, cache=True, boundscheck=False)
def fit_ticks(index, frames, n, head, out):  # type: ignore[no-untyped-def]
    """Least-squares line through the ``n`` newest (tick index, frame) points of the rings
    (the newest at ``head - 1``). ``out`` gets the line's frame at the newest tick, its slope
    (frames per tick) and the residuals' RMS. Coordinates are taken relative to the newest
    point, so frame numbers of hours keep their precision."""
    size = index.shape[0]
    last = (head - 1) % size
    x0 = index[last]
    y0 = frames[last]
    sx = 0.0
    sy = 0.0
    for j in range(n):
        i = (head - 1 - j) % size
        sx += index[i] - x0
        sy += frames[i] - y0
    mx = sx / n
    my = sy / n
    sxx = 0.0
    sxy = 0.0
    for j in range(n):
        i = (head - 1 - j) % size
        dx = index[i] - x0 - mx
        sxx += dx * dx
        sxy += dx * (frames[i] - y0 - my)
    slope = sxy / sxx if sxx > 0.0 else 0.0
    at = my - slope * mx  # the line at x = 0, the newest tick
    ss = 0.0
    for j in range(n):
        i = (head - 1 - j) % size
        r = frames[i] - y0 - (at + slope * (index[i] - x0))
        ss += r * r
    out[0] = y0 + at
    out[1] = slope
    out[2] = math.sqrt(ss / n)


class ClockFollower:
    """Tempo and phase of an external MIDI clock, from the frames its ticks arrived at.

    >>> f = ClockFollower(48000)
    >>> for i in range(48):
    ...     f.tick(1000 + i * 1250.0)   # 1250 frames a tick: 96 BPM at 48 kHz
    >>> round(f.tempo_bpm(), 6), f.index
    (96.0, 47)
    """

    def __init__(self, sample_rate: int, window: int = WINDOW_TICKS):
        self.sample_rate = sample_rate
        self.index_ring = np.zeros(window, np.float64)
        self.frame_ring = np.zeros(window, np.float64)
        self.fit = np.zeros(3, np.float64)
        self.trial = np.zeros(3, np.float64)  # a new fit, before it is trusted
        self.jump_frames = JUMP_MS * sample_rate / 1000.0
        # the plausible periods (frames per tick); ticks closer than min_period are late
        self.min_period = sample_rate * 60.0 / (FOLLOW_MAX_BPM * TICKS_PER_BEAT)
        self.max_period = sample_rate * 60.0 / (FOLLOW_MIN_BPM * TICKS_PER_BEAT)
        self.reset()

    def reset(self) -> None:
        """Forget every tick (a new source, or the clock was switched off)."""
        self.n = 0
        self.head = 0
        self.index = -1  # the index of the newest tick (ticks since the first one)
        self.last_frame = -1.0
        self.suspect = 0
        self.suspect_sign = 0
        self.restarts = 0
        self.ticks = 0
        self.period = 0.0  # frames per tick of the current fit; 0 before two ticks
        self.fit[:] = 0.0
        self.fit_index = 0  # the tick index the fit's FIT_AT belongs to
        self.owed = 0  # ticks the last gap counted as missed that may yet arrive, late
        self.fast = 0  # soon ticks in a row, each at a plausible tempo

    def tick(self, frame: float) -> None:
        """A clock tick arrived at ``frame``."""
        self.ticks += 1
        if self.index < 0:
            self.index = 0
            self._push(frame)
            return
        period = self.period
        gap = frame - self.last_frame
        if gap < self.min_period or (period > 0.0 and gap < SOON * period):
            # soon after the tick before: that one was late (a burst of late ticks), and
            # this one, nearer its time, takes its place as the line's newest point
            if self.owed > 0:  # one of the ticks the gap before the burst counted
                self.owed -= 1
                self._replace(frame)
                return
            self.fast = self.fast + 1 if gap >= self.min_period else 0
            if self.fast < JUMP_TICKS:
                self.index += 1
                self._replace(frame)
                return
            # soon again and again, each at a plausible tempo: the clock's tempo more than
            # doubled, and the jump test below is the judge
        else:
            self.fast = 0
        step = 1
        if period > 0.0 and gap > GAP * period:
            # ticks went missing (or the clock paused): keep counting in whole ticks. Unless
            # the gap (no pause) is no whole number of periods, or the tick before was off
            # the line already: then the clock slowed, and the period is no measure
            step = max(1, round(gap / period))
            if step > 1 and gap < LOST_TICKS * period and (self.suspect > 0 or abs(
                    gap - step * period) > max(self.jump_frames, 4.0 * self.fit[FIT_RMS])):
                step = 1
            # the ticks counted may yet come, late (with those a burst before still owes)
            self.owed += step - 1
        else:
            self.owed = 0  # on time again: the ticks a gap counted were lost after all
        self.index += step
        if self.n >= 2 and period > 0.0:
            residual = frame - self.frame_of(self.index)
            limit = max(self.jump_frames, 4.0 * self.fit[FIT_RMS])
            sign = 1 if residual > 0 else -1
            if abs(residual) > limit:
                self.suspect = self.suspect + 1 if sign == self.suspect_sign else 1
                self.suspect_sign = sign
                if self.suspect >= JUMP_TICKS:
                    # a new tempo: keep only the ticks that showed it
                    keep = self.suspect - 1
                    self.n = min(self.n, keep)
                    self.restarts += 1
                    self.suspect = 0
            else:
                self.suspect = 0
        self._push(frame)

    def _push(self, frame: float) -> None:
        size = self.index_ring.shape[0]
        self.index_ring[self.head] = self.index
        self.frame_ring[self.head] = frame
        self.head = (self.head + 1) % size
        if self.n < size:
            self.n += 1
        self._refit(frame)

    def _replace(self, frame: float) -> None:
        """The newest point becomes (``self.index``, ``frame``)."""
        last = (self.head - 1) % self.index_ring.shape[0]
        self.index_ring[last] = self.index
        self.frame_ring[last] = frame
        self._refit(frame)

    def _refit(self, frame: float) -> None:
        self.last_frame = frame
        if self.n >= 2:
            trial = self.trial
            fit_ticks(self.index_ring, self.frame_ring, self.n, self.head, trial)
            slope = float(trial[FIT_PERIOD])
            # a slope of no plausible tempo (NaN fails too) is not used: the last fit stays
            if self.min_period <= slope <= self.max_period:
                fit = self.fit
                fit[FIT_AT] = trial[FIT_AT]
                fit[FIT_PERIOD] = slope
                fit[FIT_RMS] = trial[FIT_RMS]
                self.fit_index = self.index
                self.period = slope
        else:
            self.fit[FIT_AT] = frame
            self.fit[FIT_RMS] = 0.0
            self.fit_index = self.index

    def frame_of(self, index: float) -> float:
        """Where the fitted line puts tick ``index`` (it may be in the past or future)."""
        return float(self.fit[FIT_AT]) + self.period * (index - self.fit_index)

    def tempo_bpm(self) -> float:
        """The fitted tempo; 0 before two ticks."""
        if self.period <= 0.0:
            return 0.0
        return self.sample_rate * 60.0 / (self.period * TICKS_PER_BEAT)

    def lost(self, frame: float) -> bool:
        """No tick for a while: by ``frame`` the clock should have ticked several times."""
        if self.index < 0:
            return True
        wait = max(LOST_TICKS * self.period, LOST_MIN_S * self.sample_rate)
        return frame - self.last_frame > wait


def song_position_bytes(sixteenths: int) -> tuple[int, int, int]:
    """The Song Position Pointer message for a position in sixteenth notes (14 bits)."""
    value = sixteenths & 0x3FFF
    return (SONG_POSITION, value & 0x7F, value >> 7)


def warm_up() -> None:
    """Compile (or load) the fit for its argument types now, not in the audio thread."""
    ring = np.arange(4, dtype=np.float64)
    fit_ticks(ring, ring * 10.0, 4, 0, np.zeros(3, np.float64))
