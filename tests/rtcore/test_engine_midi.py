"""MIDI in the engine, offline: clock out at exact frames, following an external clock,
transport, the input map, malformed input, count-in (rtcore.engine, rtcore.sync)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mido
import numpy as np
import pytest

from rtcore.bench_midi import bench_varispeed
from rtcore.sync import ClockFollower, song_position_bytes
from tests.rtcore.conftest import ev, ramp, run_script, script

SR = 48000
TICK_120 = 1000  # frames per clock tick at 120 BPM, 48 kHz


def clock_out(result: Any, kind: int) -> list[int]:
    return [m["frame"] for m in result.midi_out if m["bytes"] == [kind]]


def midi(frame: int, *data: int) -> dict[str, Any]:
    return {"frame": frame, "midi": list(data)}


def test_clock_ticks_land_on_their_exact_frames_through_tempo_changes() -> None:
    # 120 BPM for 2 beats, then 90 BPM (24 ticks a beat): every tick at its frame. The
    # tempo is given in the block after beat 1 began, so it applies at beat 2
    doc = script(4 * 24000 + 2 * 32000, [ev(24000 + 200, "tempo", 90.0)], clock_out=True,
                 block_size=128)
    res = run_script(doc, ramp(doc["duration_frames"]))
    ticks = clock_out(res, 0xF8)
    want = [t * TICK_120 for t in range(48)]  # beats 0 and 1 at 120
    want += [48000 + round(t * 32000 / 24) for t in range(0, 24 * 4)]
    want = [f for f in want if f < doc["duration_frames"]]
    assert ticks == want


def test_start_when_the_first_loop_starts_and_stop_when_everything_stops() -> None:
    # each command is given in the block after a beat began: it waits for the next beat
    doc = script(10 * 24000, [ev(200, "record", 0, 0), ev(2 * 24000 + 200, "record", 0, 0),
                              ev(5 * 24000 + 200, "stop", 0, 0)], clock_out=True)
    res = run_script(doc, ramp(doc["duration_frames"]))
    assert clock_out(res, 0xFA) == [24000]  # the recording starts on beat 1
    assert clock_out(res, 0xFC) == [6 * 24000]
    # Start goes out before the clock of the same frame
    at = [m["bytes"] for m in res.midi_out if m["frame"] == 24000]
    assert at == [[0xFA], [0xF8]]


def test_after_an_xrun_song_position_and_continue_tell_where_the_song_is() -> None:
    # Start at frame 0; the xrun misses frames 30208..35207 (from a block boundary)
    doc = script(8 * 24000, [ev(10, "record", 0, 0), {"frame": 30000, "xrun": 5000}],
                 clock_out=True, block_size=256)
    res = run_script(doc, ramp(doc["duration_frames"]))
    assert clock_out(res, 0xFA) == [0]
    ticks = clock_out(res, 0xF8)
    assert not [t for t in ticks if 30208 <= t < 35208]  # the gap's ticks are lost
    assert ticks == [t * TICK_120 for t in range(8 * 24) if not 30208 <= t * TICK_120 < 35208]
    spp = [m for m in res.midi_out if m["bytes"][0] == 0xF2]
    assert len(spp) == 1
    frame = spp[0]["frame"]
    # the first sixteenth (6 ticks = 6000 frames) after the gap
    assert frame == 36000
    sixteenths = frame // 6000
    assert spp[0]["bytes"] == list(mido.Message("songpos", pos=sixteenths).bytes())
    after = [m["bytes"] for m in res.midi_out if m["frame"] == frame]
    assert after == [spp[0]["bytes"], [0xFB], [0xF8]]


def test_song_position_bytes_match_mido() -> None:
    for pos in (0, 1, 127, 128, 5000, 16383):
        assert list(song_position_bytes(pos)) == mido.Message("songpos", pos=pos).bytes()


def jittered_clock(bpm: float, start: int, ticks: int, jitter_frames: float,
                   seed: int = 7) -> list[tuple[int, float]]:
    rng = np.random.default_rng(seed)
    per = SR * 60.0 / bpm / 24
    out = []
    for i in range(ticks):
        true = start + i * per
        out.append((round(true + rng.uniform(-jitter_frames, jitter_frames)), true))
    return out


def test_the_follower_rejects_jitter() -> None:
    fol = ClockFollower(SR)
    for frame, _ in jittered_clock(100.0, 1000, 192, 48.0):
        fol.tick(frame)
    assert abs(fol.tempo_bpm() - 100.0) < 0.05
    assert fol.restarts == 0


def test_following_a_jittered_clock_puts_the_beats_on_its_beats() -> None:
    clock = jittered_clock(100.0, 5000, 24 * 16, 48.0)  # 16 beats, +/-1 ms
    events = [midi(0, 0xFA)] + [midi(f, 0xF8) for f, _ in clock]
    doc = script(clock[-1][0] + 2000, events, sync="midi", click=True, block_size=64)
    res = run_script(doc, np.zeros((doc["duration_frames"], 2), np.float32))
    st = res.status
    assert st["sync"] == "midi"
    assert abs(st["tempo"] - 100.0) < 0.05
    assert st["midi"]["clock_in"]["state"] == "following"
    # the click marks the engine's beats: after two bars each is within 1 ms of the clock's
    onsets = np.flatnonzero((res.click[1:] != 0) & (res.click[:-1] == 0)) + 1
    true_beats = [true for _, true in clock[::24]]
    late = [min(abs(o - t) for o in onsets) for t in true_beats[8:]]
    assert max(late) < SR / 1000, late


def clock_with_tempo(tempo_at_beat: Callable[[float], float], start: int, ticks: int,
                     jitter_frames: float, seed: int = 7) -> list[tuple[int, float]]:
    """As :func:`jittered_clock`, the tempo a function of the beat (ticks since the first
    over 24)."""
    rng = np.random.default_rng(seed)
    out = []
    true = float(start)
    for i in range(ticks):
        out.append((round(true + rng.uniform(-jitter_frames, jitter_frames)), true))
        true += SR * 60.0 / tempo_at_beat(i / 24) / 24
    return out


def deliver_late(sent: list[int], first: int, late: int, spread: int) -> list[int]:
    """Ticks ``first`` .. ``first + late - 1`` delivered late, as an interface or a sender
    that missed its cycles does: all at the frame of the next tick (``spread`` 0) or
    ``spread`` frames apart just before it."""
    out = list(sent)
    on_time = sent[first + late]
    for j in range(late):
        out[first + j] = on_time - spread * (late - j)
    return out


def follow_clock(sent: list[int]) -> Any:
    """Run the engine (no loops, click on) following a clock that starts at frame 0 and
    sends its ticks at ``sent`` (an exception in the engine's block propagates)."""
    events = [midi(0, 0xFA)] + [midi(f, 0xF8) for f in sent]
    doc = script(sent[-1] + 2000, events, sync="midi", click=True, block_size=256)
    res = run_script(doc, np.zeros((doc["duration_frames"], 2), np.float32))
    assert res.command_errors == []
    return res


def beats_off_ms(res: Any, true_beats: list[float]) -> list[float]:
    """For every engine beat (click onset) from the first of ``true_beats`` on, the distance
    to the nearest of them (ms), and for every true beat the distance to the nearest onset:
    a beat missing, doubled or out of phase shows."""
    onsets = np.flatnonzero((res.click[1:] != 0) & (res.click[:-1] == 0)) + 1
    onsets = onsets[onsets > true_beats[0] - SR / 100]
    inside = onsets[onsets < true_beats[-1] + SR / 100]
    off = [min(abs(o - t) for t in true_beats) for o in inside]
    off += [min(abs(o - t) for o in onsets) for t in true_beats]
    return [x * 1000.0 / SR for x in off]


@pytest.mark.parametrize(("first", "late", "spread"),
                         [(24 * 8 + 5, 2, 0), (24 * 8 + 5, 5, 0), (24 * 8 + 5, 5, 40),
                          (0, 5, 0)])
def test_a_burst_of_late_ticks_moves_neither_the_tempo_nor_the_beats(
        first: int, late: int, spread: int) -> None:
    """Clock ticks that a sender or an interface delivers late, together with the next one
    (or much closer together than the period), are each one tick: the follower keeps the
    clock's tempo and the engine its beats. (They went to 200 BPM after 2 late ticks and to
    500 after 5: ticks at one frame made the fitted period small, every later tick then
    counted as several, which confirmed it; at the start, a flat fit divided by zero.)"""
    clock = jittered_clock(100.0, 5000, 24 * 16, 48.0)  # 16 beats, +/-1 ms
    sent = deliver_late([f for f, _ in clock], first, late, spread)
    res = follow_clock(sent)
    st = res.status
    clock_in = st["midi"]["clock_in"]
    assert clock_in["state"] == "following", clock_in
    assert abs(clock_in["tempo"] - 100.0) < 0.05, clock_in
    assert abs(st["tempo"] - 100.0) < 0.05
    assert clock_in["tempo_restarts"] == 0  # no tempo change seen either
    assert res.engine.follower.index == len(sent) - 1  # every tick counted, once
    # after two bars every beat is within 1 ms of the clock's, the burst's included
    off = beats_off_ms(res, [true for _, true in clock[::24]][8:])
    assert max(off) < 1.0, off


def test_a_burst_of_late_ticks_while_the_clock_speeds_up() -> None:
    # 100 BPM for 4 beats, up to 106 BPM over 8 beats, then steady; five ticks come late in
    # the middle of the ramp. The line through two bars lags a ramp (some 20 ms here), and the
    # burst leaves four points out of it: the beats move by a fraction of that, and not at
    # all once the burst has left the window. After the ramp the engine is on the clock
    def tempo_at(beat: float) -> float:
        return 100.0 + 6.0 * min(max(beat - 4.0, 0.0), 8.0) / 8.0

    clock = clock_with_tempo(tempo_at, 5000, 24 * 26, 48.0)
    sent = [f for f, _ in clock]
    runs = [follow_clock(sent), follow_clock(deliver_late(sent, 24 * 8 + 5, 5, 0))]
    onsets = [np.flatnonzero((r.click[1:] != 0) & (r.click[:-1] == 0)) + 1 for r in runs]
    assert len(onsets[0]) == len(onsets[1])
    moved = np.abs(onsets[1] - onsets[0]) * 1000.0 / SR
    assert moved.max() < 2.0, moved
    true_beats = [true for _, true in clock[::24]]
    assert not moved[onsets[1] > true_beats[17]].any(), moved  # two bars after the burst
    res = runs[1]
    st = res.status
    clock_in = st["midi"]["clock_in"]
    assert clock_in["state"] == "following", clock_in
    assert abs(clock_in["tempo"] - 106.0) < 0.05, clock_in
    assert abs(st["tempo"] - 106.0) < 0.05
    assert res.engine.follower.index == len(sent) - 1
    off = beats_off_ms(res, true_beats[20:])  # two bars after the ramp
    assert max(off) < 1.0, off


@pytest.mark.parametrize(("faster", "slower"), [(140.0, 90.0), (140.0, 60.0), (128.0, 73.6)])
def test_the_follower_follows_a_clock_that_slows_by_more_than_a_third(
        faster: float, slower: float) -> None:
    """From 140 to 90 BPM a tick comes 1.56 periods after the one before: a tempo change,
    not a gap with a lost tick in it (counting each tick as two locked onto 180 BPM), since
    it is no whole number of periods. From 128 to 73.6 BPM the second slow tick comes 1.81
    periods after the first, near enough two once the first, off the line, has widened the
    jitter allowed: but after a tick off the line the period is no measure of a gap."""
    fol = ClockFollower(SR)
    fast = jittered_clock(faster, 1000, 192, 48.0)
    slow = jittered_clock(slower, round(fast[-1][1] + SR * 60.0 / slower / 24), 192, 48.0,
                          seed=8)
    for frame, _ in fast + slow:
        fol.tick(frame)
    assert abs(fol.tempo_bpm() - slower) < 0.05
    assert fol.index == 383
    assert fol.restarts >= 1


def test_the_follower_counts_late_bursts_back_to_back() -> None:
    # ticks 100..104 come at tick 105's time, but 105 itself comes late, with 106..110 at
    # tick 111's: the second burst's late ticks include the one the first still owed
    fol = ClockFollower(SR)
    sent = [f for f, _ in jittered_clock(100.0, 1000, 192, 48.0)]
    sent = deliver_late(deliver_late(sent, 100, 5, 0), 105, 6, 0)
    for frame in sent:
        fol.tick(frame)
    assert fol.index == 191
    assert abs(fol.tempo_bpm() - 100.0) < 0.05
    assert fol.restarts == 0


def test_the_follower_still_counts_lost_ticks() -> None:
    # ticks lost (our own xrun): the gap is a whole number of periods, the ticks in it count
    fol = ClockFollower(SR)
    clock = jittered_clock(100.0, 1000, 192, 48.0)
    for i, (frame, _) in enumerate(clock):
        if not 100 <= i < 104:
            fol.tick(frame)
    assert fol.index == 191
    assert abs(fol.tempo_bpm() - 100.0) < 0.05
    assert fol.restarts == 0


def test_external_stop_pauses_the_loops_and_start_brings_them_back() -> None:
    per = 1000  # 120 BPM
    ticks = [midi(i * per, 0xF8) for i in range(24 * 14)]
    stop_at, start_at = 8 * 24000 + 10, 11 * 24000
    events = [midi(0, 0xFA), *ticks[:1]]
    events += [ev(100, "record", 0, 0), ev(2 * 24000 - 300, "record", 0, 0)]
    rest = [t for t in ticks[1:]]
    events += [t for t in rest if t["frame"] < stop_at]
    events += [midi(stop_at, 0xFC), midi(start_at - 1, 0xFA)]
    events += [t for t in rest if t["frame"] >= stop_at]
    events.sort(key=lambda e: e["frame"])
    doc = script(14 * 24000, events, sync="midi")
    res = run_script(doc, ramp(doc["duration_frames"]))
    out = res.main[:, 0]
    assert np.all(out[stop_at + 10 : start_at] == 0)  # paused
    assert res.status["cells"][0][0]["state"] == "playing"  # and back
    # recorded on beats 0..2, so its first pass is beats 2..4; after Start it begins again
    assert res.status["cells"][0][0]["beats"] == 2
    # the same samples again, within a frame: following the clock, the engine plays at a
    # rate within a hair of 1 and a fraction of a frame from the clock (the input is a ramp,
    # so a sample's value is the frame it was recorded at)
    loop = res.main[start_at : start_at + 2 * 24000, 0]
    first = res.main[2 * 24000 : 4 * 24000, 0]
    inner = slice(64, -64)  # the edges are each pass's start and end
    assert np.abs(loop[inner] - first[inner]).max() <= 1.0


def test_mapped_notes_and_controllers_drive_commands() -> None:
    # the default map: notes 36.. record column 0.., controller 7 is the master volume
    doc = script(6 * 24000, [midi(10, 0x90, 36, 100), midi(2 * 24000 + 10, 0x99, 36, 90),
                             midi(5 * 24000, 0xB3, 7, 127 // 2)])
    res = run_script(doc, ramp(doc["duration_frames"]))
    st = res.status
    assert st["cells"][0][0]["beats"] == 2
    assert st["cells"][0][0]["state"] == "playing"
    assert st["master_volume"] == pytest.approx(63 / 127)
    assert st["midi"]["in"]["mapped"] == 3


def test_malformed_midi_is_counted_and_ignored() -> None:
    doc = script(2 * 24000, [midi(5, 0x90, 36), midi(6, 0xF2, 1), midi(7, 0x90, 200, 1),
                             midi(8, 0xF4), midi(9, 0xB0, 80, 127)])
    res = run_script(doc, ramp(doc["duration_frames"]))
    st = res.status
    assert st["midi"]["in"]["malformed"] == 4
    assert st["cells"][0][0]["state"] == "recording"  # the good one still works


def test_count_in_plays_a_bar_of_click_before_the_recording() -> None:
    doc = script(8 * 24000, [ev(200, "record", 0, 0), ev(5 * 24000 + 200, "record", 0, 0)],
                 count_in=True, beats_per_bar=3)
    res = run_script(doc, ramp(doc["duration_frames"]))
    onsets = list(np.flatnonzero((res.click[1:] != 0) & (res.click[:-1] == 0)))  # tone: 0 first
    assert onsets == [24000, 48000, 72000]  # click off, but the count-in clicks
    accent, normal = (float(res.click[f + 40]) for f in (24000, 48000))
    assert abs(accent) != abs(normal)  # beat 1 of the count-in bar is accented
    assert res.status["cells"][0][0]["beats"] == 2  # recorded from beat 4 to beat 6


@pytest.mark.parametrize("block_size", [64, 256])
def test_loops_follow_a_faster_clock_by_varispeed_without_artefacts(block_size: int) -> None:
    # a 440 Hz sine loop recorded at 100 BPM; the clock then runs at 100.5 BPM: the loop
    # plays 0.5 % fast to stay on its beats, resampled, not by dropping frames (which put
    # the artefacts above the tone itself: +0.6 dB)
    report = bench_varispeed(block_size)
    assert report["loop"] == {"state": "playing", "beats": 4}
    assert report["varispeed_end"] == pytest.approx(1.005, abs=2e-4)
    assert report["spurious_db_following"] < -50.0
    assert report["spurious_db_steady"] < -100.0
