"""Musical time exactly as the render contract says: seconds(x) in closed form, frames
rounded half up, and the way back; bars and beats for the views."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from scipy.integrate import quad

from companion.errors import ProjectError
from companion.model import timemap
from companion.model.timemap import BarBeat, Meter, MeterPoint, TempoMap, TempoPoint

RATE = 48000


def test_the_docstring_examples_run() -> None:
    assert doctest.testmod(timemap).failed == 0


def test_constant_tempo() -> None:
    tm = TempoMap([TempoPoint(0.0, 120.0)], RATE)
    assert tm.seconds(0.25) == 0.5  # a quarter note at 120 bpm
    assert tm.frame(0.25) == 24000
    assert tm.seconds(-0.25) == -0.5  # before 0 the first tempo extends backwards
    assert tm.bpm(100.0) == 120.0


def test_a_ramp_integrates_in_closed_form() -> None:
    points = [TempoPoint(0.0, 90.0, True), TempoPoint(2.0, 150.0), TempoPoint(3.0, 70.0, True),
              TempoPoint(3.5, 70.0), TempoPoint(4.0, 200.0)]
    tm = TempoMap(points, RATE)

    def numeric(x: float) -> float:
        return quad(lambda w: 240.0 / tm.bpm(w), 0.0, x, points=[2.0, 3.0, 3.5, 4.0],
                    limit=200, epsabs=1e-13, epsrel=1e-13)[0]

    for x in (0.0, 0.1, 1.0, 1.999, 2.0, 2.5, 3.0, 3.25, 3.5, 3.9, 4.0, 7.3):
        assert tm.seconds(x) == pytest.approx(numeric(x), abs=1e-10), x
    # the spec's formula, inside the first ramp
    x = 1.3
    b = 90.0 + (150.0 - 90.0) * x / 2.0
    assert tm.seconds(x) == pytest.approx(240.0 * 2.0 / 60.0 * math.log(b / 90.0), abs=1e-12)
    # a ramp between equal tempos is the constant formula
    assert tm.seconds(3.5) - tm.seconds(3.0) == pytest.approx(240.0 * 0.5 / 70.0, abs=1e-12)
    assert tm.bpm(1.0) == pytest.approx(120.0)
    assert tm.bpm(2.5) == 150.0  # a step: no ramp from the 150 point


def test_frames_round_half_up_and_positions_come_back() -> None:
    tm = TempoMap([TempoPoint(0.0, 100.0, True), TempoPoint(1.0, 133.0)], 44100)
    for x in np.linspace(0.0, 3.0, 301):
        s = tm.seconds(float(x))
        assert tm.frame(float(x)) == math.floor(s * 44100 + 0.5)
        assert tm.position(s) == pytest.approx(float(x), abs=1e-12)
    assert list(tm.frames([0.0, 0.5, 1.0])) == [tm.frame(0.0), tm.frame(0.5), tm.frame(1.0)]
    # frame 0.5 exactly rounds up: 120 bpm at 1 Hz... use a rate where it happens
    half = TempoMap([TempoPoint(0.0, 240.0)], 2)  # 1 wn = 1 s = 2 frames
    assert half.frame(0.25) == 1  # 0.5 frame -> 1
    assert half.position_of_frame(2) == 1.0


@pytest.mark.parametrize(("points", "where"), [
    ([], "tempo"),
    ([TempoPoint(0.5, 120.0)], "tempo[0].at"),
    ([TempoPoint(0.0, 120.0), TempoPoint(1.0, 90.0), TempoPoint(1.0, 100.0)], "tempo[2].at"),
    ([TempoPoint(0.0, 120.0), TempoPoint(2.0, 90.0), TempoPoint(1.0, 100.0)], "tempo[2].at"),
    ([TempoPoint(0.0, 0.0)], "tempo[0].bpm"),
    ([TempoPoint(0.0, -60.0)], "tempo[0].bpm"),
    ([TempoPoint(0.0, math.nan)], "tempo[0]"),
    ([TempoPoint(0.0, 120.0), TempoPoint(math.inf, 90.0)], "tempo[1]"),
])
def test_broken_tempo_maps_are_refused(points: list[TempoPoint], where: str) -> None:
    with pytest.raises(ProjectError) as e:
        TempoMap(points, RATE)
    assert e.value.where == where


def test_bars_and_beats_across_meter_changes() -> None:
    meter = Meter([MeterPoint(0.0, 4, 4), MeterPoint(2.0, 7, 8), MeterPoint(3.75, 3, 4)])
    assert meter.bar_beat(0.0) == BarBeat(1, 1, 0.0)
    assert meter.bar_beat(1.375) == BarBeat(2, 2, 0.5)
    assert meter.bar_beat(2.0) == BarBeat(3, 1, 0.0)  # 7/8 from bar 3
    assert meter.bar_beat(2.875) == BarBeat(4, 1, 0.0)
    assert meter.bar_beat(3.75) == BarBeat(5, 1, 0.0)  # 3/4 from bar 5
    assert meter.bar_start(4) == 2.875
    assert meter.bar_start(6) == 4.5
    beats = meter.beats_between(2.625, 3.0)
    assert beats == [(2.625, False), (2.75, False), (2.875, True)]
    # a change inside a bar starts a new bar there
    odd = Meter([MeterPoint(0.0, 4, 4), MeterPoint(1.5, 4, 4)])
    assert odd.bar_beat(1.5) == BarBeat(3, 1, 0.0)


def test_frames_to_bars_and_beats_for_the_views() -> None:
    tm = TempoMap([TempoPoint(0.0, 120.0)], RATE)
    meter = Meter([MeterPoint(0.0, 3, 4)])
    frame = tm.frame(0.75 + 0.25 + 0.125)  # bar 2, beat 2, half of it
    assert meter.bar_beat(tm.position_of_frame(frame)) == BarBeat(2, 2, 0.5)


@pytest.mark.parametrize(("points", "where"), [
    ([], "meter"),
    ([MeterPoint(1.0, 4, 4)], "meter[0].at"),
    ([MeterPoint(0.0, 0, 4)], "meter[0].num"),
    ([MeterPoint(0.0, 4, 3)], "meter[0].den"),
    ([MeterPoint(0.0, 4, 4), MeterPoint(0.0, 3, 4)], "meter[1].at"),
])
def test_broken_meters_are_refused(points: list[MeterPoint], where: str) -> None:
    with pytest.raises(ProjectError) as e:
        Meter(points)
    assert e.value.where == where
