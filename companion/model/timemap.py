"""Musical time: the one place that turns whole notes into seconds and frames and back.

Positions are floats in whole notes (wn; a quarter note is 0.25 wn) and tempo counts quarter
notes per minute, as ``spec/companion.md`` says. A tempo map is a list of points, each either
constant up to the next point or ramping linearly (in musical position) to it; ramps are
integrated in closed form, so no position is ever accumulated block by block.

>>> tm = TempoMap([TempoPoint(0.0, 120.0)], 48000)
>>> tm.seconds(1.0), tm.frame(1.0)
(2.0, 96000)
>>> tm.position(2.0)
1.0
>>> Meter([MeterPoint(0.0, 3, 4)]).bar_beat(1.0)
BarBeat(bar=2, beat=2, fraction=0.0)
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from companion.errors import ProjectError


@dataclass(frozen=True)
class TempoPoint:
    at: float
    bpm: float
    ramp: bool = False


@dataclass(frozen=True)
class MeterPoint:
    at: float
    num: int
    den: int


class BarBeat(NamedTuple):
    bar: int  # 1-based
    beat: int  # 1-based, in the meter's own unit (1/den)
    fraction: float  # 0 <= fraction < 1 of that beat


def tempo_points(raw: Iterable[dict[str, Any]]) -> list[TempoPoint]:
    """Interchange dicts (``{"at", "bpm", "ramp"}``) to points; the map checks them."""
    return [TempoPoint(float(p["at"]), float(p["bpm"]), bool(p.get("ramp", False)))
            for p in raw]


class TempoMap:
    """Whole notes to seconds and frames and back, for one tempo map and sample rate."""

    def __init__(self, points: Sequence[TempoPoint], sample_rate: int):
        check_tempo(points)
        if sample_rate <= 0:
            raise ProjectError("sample_rate", f"must be positive, got {sample_rate}")
        self.points = tuple(points)
        self.sample_rate = int(sample_rate)
        self._at = [p.at for p in self.points]
        # seconds at the start of every segment, each segment integrated in closed form
        starts = [0.0]
        for i in range(len(self.points) - 1):
            starts.append(starts[-1] + self._segment_seconds(i, self.points[i + 1].at))
        self._start_s = starts

    # --- tempo -------------------------------------------------------------------------
    def _segment_end_bpm(self, i: int) -> float:
        p = self.points[i]
        if p.ramp and i + 1 < len(self.points):
            return self.points[i + 1].bpm
        return p.bpm

    def bpm(self, x: float) -> float:
        """The tempo at position ``x`` (quarter notes per minute)."""
        i = self._segment(x)
        p = self.points[i]
        b1 = self._segment_end_bpm(i)
        if b1 == p.bpm:
            return p.bpm
        x1 = self.points[i + 1].at
        return p.bpm + (b1 - p.bpm) * (x - p.at) / (x1 - p.at)

    def _segment(self, x: float) -> int:
        return max(0, bisect.bisect_right(self._at, x) - 1)

    def _segment_seconds(self, i: int, x: float) -> float:
        """Seconds from segment ``i``'s start to ``x`` (which may lie before it only for the
        first segment: negative positions extend the first tempo backwards)."""
        p = self.points[i]
        b1 = self._segment_end_bpm(i)
        dx = x - p.at
        if b1 == p.bpm or dx <= 0:
            return 240.0 * dx / p.bpm
        x1 = self.points[i + 1].at
        b = p.bpm + (b1 - p.bpm) * dx / (x1 - p.at)
        return 240.0 * (x1 - p.at) / (b1 - p.bpm) * math.log(b / p.bpm)

    # --- whole notes -> seconds -> frames ----------------------------------------------
    def seconds(self, x: float) -> float:
        """``seconds(x)``: the integral of ``240 / bpm(w)`` from 0 to ``x``."""
        i = self._segment(x)
        return self._start_s[i] + self._segment_seconds(i, x)

    def frame(self, x: float) -> int:
        """The frame where something at ``x`` starts: ``floor(seconds(x) * rate + 0.5)``."""
        return math.floor(self.seconds(x) * self.sample_rate + 0.5)

    def frames(self, xs: NDArray[np.float64] | Sequence[float]) -> NDArray[np.int64]:
        """:meth:`frame` of many positions at once."""
        return np.array([self.frame(float(x)) for x in np.asarray(xs, dtype=np.float64)],
                        dtype=np.int64)

    # --- seconds and frames -> whole notes ---------------------------------------------
    def position(self, seconds: float) -> float:
        """The position (wn) reached after ``seconds``: the inverse of :meth:`seconds`."""
        i = max(0, bisect.bisect_right(self._start_s, seconds) - 1)
        p = self.points[i]
        s = seconds - self._start_s[i]
        b1 = self._segment_end_bpm(i)
        if b1 == p.bpm or s <= 0:
            return p.at + s * p.bpm / 240.0
        x1 = self.points[i + 1].at
        k = (b1 - p.bpm) / (240.0 * (x1 - p.at))
        b = p.bpm * math.exp(k * s)
        return p.at + (b - p.bpm) * (x1 - p.at) / (b1 - p.bpm)

    def position_of_frame(self, frame: int | float) -> float:
        """The position (wn) at the start of ``frame``."""
        return self.position(float(frame) / self.sample_rate)


def check_tempo(points: Sequence[TempoPoint], where: str = "tempo") -> None:
    """The contract's rules for a tempo map; a broken one raises :class:`ProjectError`."""
    if not points:
        raise ProjectError(where, "needs at least one point (at 0)")
    for i, p in enumerate(points):
        here = f"{where}[{i}]"
        if not (math.isfinite(p.at) and math.isfinite(p.bpm)):
            raise ProjectError(here, f"at and bpm must be finite numbers, got {p.at}, {p.bpm}")
        if not 1.0 <= p.bpm <= 1000.0:
            raise ProjectError(f"{here}.bpm", f"must be between 1 and 1000, got {p.bpm:g}")
        if i == 0 and p.at != 0:
            raise ProjectError(f"{here}.at", f"the first tempo point must be at 0, got {p.at:g}")
        if i > 0 and p.at <= points[i - 1].at:
            raise ProjectError(f"{here}.at", f"tempo points must be in order with no two at "
                               f"one position: {p.at:g} after {points[i - 1].at:g}")


class Meter:
    """Bars and beats for the views and the metronome (it changes nothing rendered). A meter
    change takes effect at its position; bars count from there."""

    def __init__(self, points: Sequence[MeterPoint]):
        check_meter(points)
        self.points = tuple(points)
        # the bar number (0-based) at each change; a change inside a bar starts a new bar
        bars = [0]
        for i in range(1, len(self.points)):
            prev = self.points[i - 1]
            span = (self.points[i].at - prev.at) / (prev.num / prev.den)
            bars.append(bars[-1] + math.ceil(span - 1e-9))
        self._bar0 = bars

    def _index(self, x: float) -> int:
        return max(0, bisect.bisect_right([p.at for p in self.points], x) - 1)

    def bar_beat(self, x: float) -> BarBeat:
        """The bar and beat at position ``x`` (both 1-based)."""
        i = self._index(x)
        p = self.points[i]
        bar_len = p.num / p.den
        rel = max(0.0, x - p.at)
        in_bar = math.floor(rel / bar_len + 1e-12)
        within = rel - in_bar * bar_len
        beats = within * p.den
        beat = math.floor(beats + 1e-9)
        return BarBeat(self._bar0[i] + in_bar + 1, min(beat, p.num - 1) + 1,
                       max(0.0, beats - beat))

    def bar_start(self, bar: int) -> float:
        """The position (wn) where 1-based ``bar`` starts."""
        n = bar - 1
        i = max(0, bisect.bisect_right(self._bar0, n) - 1)
        p = self.points[i]
        return p.at + (n - self._bar0[i]) * p.num / p.den

    def beats_between(self, start: float, end: float) -> list[tuple[float, bool]]:
        """Every beat position in ``[start, end)``, each with whether it starts a bar (the
        metronome's accent and the ruler's ticks)."""
        out: list[tuple[float, bool]] = []
        bar = max(1, self.bar_beat(max(0.0, start)).bar)
        while True:
            b0 = self.bar_start(bar)
            i = self._index(b0)
            p = self.points[i]
            if b0 >= end:
                return out
            for k in range(p.num):
                x = b0 + k / p.den
                nxt = self.points[i + 1].at if i + 1 < len(self.points) else math.inf
                if x >= nxt or x >= end:
                    break
                if x >= start:
                    out.append((x, k == 0))
            bar += 1


def check_meter(points: Sequence[MeterPoint], where: str = "meter") -> None:
    if not points:
        raise ProjectError(where, "needs at least one point (at 0)")
    for i, p in enumerate(points):
        here = f"{where}[{i}]"
        if not math.isfinite(p.at):
            raise ProjectError(f"{here}.at", f"must be a finite number, got {p.at}")
        if i == 0 and p.at != 0:
            raise ProjectError(f"{here}.at", f"the first meter point must be at 0, got {p.at:g}")
        if i > 0 and p.at <= points[i - 1].at:
            raise ProjectError(f"{here}.at", f"meter points must be in order: {p.at:g} after "
                               f"{points[i - 1].at:g}")
        if not 1 <= p.num <= 64:
            raise ProjectError(f"{here}.num", f"must be 1 to 64, got {p.num}")
        if p.den not in (1, 2, 4, 8, 16, 32, 64):
            raise ProjectError(f"{here}.den", f"must be a power of two up to 64, got {p.den}")


def meter_points(raw: Iterable[dict[str, Any]]) -> list[MeterPoint]:
    return [MeterPoint(float(p["at"]), int(p["num"]), int(p["den"])) for p in raw]
