"""MIDI in the engine, offline: clock out at exact frames, following an external clock,
transport, the input map, malformed input, count-in (rtcore.engine, rtcore.sync)."""

from __future__ import annotations

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
