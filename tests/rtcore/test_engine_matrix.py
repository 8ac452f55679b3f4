"""The matrix: recordings, sync offsets, playback, solo, stop/clear/undo, volumes, monitor,
click and latency compensation (shared/spec/engine.md, "The matrix" and "Output")."""

from __future__ import annotations

import numpy as np
import pytest

from tests.rtcore.conftest import (
    Rig,
    add_loop,
    assert_same,
    beat_frame,
    beats_length,
    levels,
    loop_play,
    ramp,
)

SPB = 24000  # 48 kHz, 120 BPM


def F(k: int) -> int:
    """Frame of beat k at 48 kHz, 120 BPM."""
    return SPB * k


# ---------------------------------------------------------------------------- the appendix

# chords as distinct powers of two: every sum of them names its parts
A, Bb, B, C = 1, 2, 4, 8
Dm, Ebm, Em, Fm = 16, 32, 64, 128
G, G2, G3, G4 = 256, 512, 1024, 2048
JUNK = 4096  # played while nothing records: must never be heard


def test_appendix_full_recording_example() -> None:
    """shared/seeds/004, "Appendix: Full recording example", beat by beat."""
    total = F(34)
    played = {1: A, 2: Bb, 3: B, 4: C, 7: Dm, 8: Ebm, 9: Em, 10: Fm,
              28: G, 29: G2, 30: G3, 31: G4}
    x = levels(total, [(F(k), F(k + 1), played.get(k, JUNK)) for k in range(34)])
    rig = Rig(total, x)

    # "I press the record button. Let's call the first beat after the press beat 1."
    rig.run_to(5000)
    rig.submit("record", 0, 0)
    rig.run_to(F(4) + 4000)  # playing C, press record again
    rig.submit("record", 0, 0)
    rig.run_to(F(5))
    assert rig.cell(0, 0)["state"] == "recording"
    rig.run_to(F(5) + 1)
    row0 = rig.cell(0, 0)
    assert (row0["state"], row0["beats"], row0["length_frames"], row0["sync_offset_frames"]) \
        == ("playing", 4, F(4), 0)
    assert rig.column(0)["beats"] == 4

    # "when playback is in beat 2 I start recording again": column beat 2 is global beat 6
    rig.run_to(F(6) + 6000)
    assert rig.column(0)["position"] == F(1) + 6000
    rig.submit("record", 0, 1)
    rig.run_to(F(7))
    assert rig.cell(0, 1)["state"] == "empty"
    rig.run_to(F(7) + 1)  # "Actual recording only starts at beat 3"
    row1 = rig.cell(0, 1)
    assert row1["state"] == "recording"
    assert (row1["beats"], row1["length_frames"], row1["sync_offset_frames"]) \
        == (4, F(4), F(2))
    # "I don't need to press the record button to stop because the track length is set"
    rig.run_to(F(11))
    assert rig.cell(0, 1)["state"] == "recording"
    rig.run_to(F(11) + 1)
    row1 = rig.cell(0, 1)
    assert (row1["state"], row1["beats"], row1["length_frames"], row1["sync_offset_frames"]) \
        == ("playing", 4, F(4), F(2))

    # "After a while I stop playback for both tracks."
    rig.run_to(F(14) + 4000)
    rig.submit("stop", 0, 0)
    rig.submit("stop", 0, 1)
    rig.run_to(F(15) + 1)
    assert rig.column(0)["running"] is False
    assert rig.column(0)["position"] == 0

    # Scenario 1: "I start Row 2 playback. It should start with the Em chord"
    rig.run_to(F(16) + 5000)
    rig.submit("play", 0, 1)
    # Scenario 2: "If I start playback of Row 1 while Fm is playing, it will start on beat 3
    # and I should hear B and Dm."
    rig.run_to(F(18) + 5000)
    rig.submit("play", 0, 0)
    rig.run_to(F(21) + 5000)
    rig.submit("stop", 0, 0)
    rig.submit("stop", 0, 1)
    # Scenario 3: "Both stopped, both start together": A + Em
    rig.run_to(F(23) + 5000)
    rig.submit("play", 0, 0)
    rig.submit("play", 0, 1)
    rig.run_to(F(25) + 5000)
    rig.submit("stop", 0, 0)
    rig.submit("stop", 0, 1)
    # "Say I stop both tracks again and start recording Row 3 ... This G chord is recorded
    # in beat 1 ... But it will stop after 4 beats"
    rig.run_to(F(27) + 5000)
    rig.submit("record", 0, 2)
    rig.run_to(F(28) + 1)
    row2 = rig.cell(0, 2)
    assert (row2["state"], row2["sync_offset_frames"]) == ("recording", 0)
    assert rig.column(0)["position"] == 1
    rig.run_to(F(32))
    assert rig.cell(0, 2)["state"] == "recording"
    rig.run_to(F(32) + 1)
    row2 = rig.cell(0, 2)
    assert (row2["state"], row2["beats"], row2["length_frames"], row2["sync_offset_frames"]) \
        == ("playing", 4, F(4), 0)
    rig.run_to(total)

    heard = {
        5: A, 6: Bb, 7: B, 8: C, 9: A, 10: Bb,  # row 2 recording
        11: B + Dm, 12: C + Ebm, 13: A + Em, 14: Bb + Fm,
        17: Em, 18: Fm,  # scenario 1
        19: B + Dm, 20: C + Ebm, 21: A + Em,  # scenario 2
        24: A + Em, 25: Bb + Fm,  # scenario 3
        32: G, 33: G2,  # row 3
    }
    expected = levels(total, [(F(k), F(k + 1), v) for k, v in heard.items()])
    for k in range(34):
        got = rig.main[F(k) : F(k + 1)]
        want = expected[F(k) : F(k + 1)]
        assert np.array_equal(got, want), (
            f"beat {k}: heard {np.unique(got)} instead of {np.unique(want)}")
    assert_same(rig.main, expected)


# ---------------------------------------------------------------------------- first recording


@pytest.mark.parametrize(("sr", "bpm"), [(48000, 120), (48000, 130), (44100, 130)])
@pytest.mark.parametrize("beats", [1, 2, 3, 5])
def test_first_recording_sets_column_beats(sr: int, bpm: int, beats: int) -> None:
    start, end = beat_frame(2, sr, bpm), beat_frame(2 + beats, sr, bpm)
    length = beats_length(beats, sr, bpm)
    total = end + 2 * length + 10
    x = ramp(total)
    rig = Rig(total, x, sample_rate=sr, tempo_bpm=bpm, columns=3, rows=2)
    rig.run_to(beat_frame(1, sr, bpm) + 7)
    rig.submit("record", 2, 1)
    rig.run_to(start + 1)
    assert rig.cell(2, 1)["state"] == "recording"
    assert rig.cell(2, 1)["next_state"] == "recording"
    assert rig.column(2)["running"] is True
    assert rig.column(2)["beats"] == 0
    rig.run_to(end - 300)
    rig.submit("record", 2, 1)
    rig.run_to(end - 100)
    assert rig.cell(2, 1)["next_state"] == "playing"
    rig.run_to(end)
    assert rig.cell(2, 1)["state"] == "recording"
    rig.run_to(end + 1)
    cell = rig.cell(2, 1)
    assert cell["state"] == "playing"
    assert (cell["beats"], cell["length_frames"], cell["sync_offset_frames"]) \
        == (beats, length, 0)
    col = rig.column(2)
    assert (col["beats"], col["length_frames"], col["position"], col["running"]) \
        == (beats, length, 1, True)
    rig.run_to(total)
    # seamless: from the end boundary on, the loop (input from the start boundary) repeats
    assert not rig.main[:end].any()
    assert_same(rig.main[end:], x[start : start + length][np.arange(total - end) % length])
    # other columns are untouched
    assert rig.column(0)["beats"] == 0 and rig.column(1)["beats"] == 0


# ---------------------------------------------------------------------------- sync offsets


def _split_input(total: int, windows: dict[int, tuple[int, int]]) -> np.ndarray:
    """Ramp values, on channel c only during window c (so each row can be told apart)."""
    x = np.zeros((total, 2), np.float32)
    r = ramp(total)[:, 0]
    for c, (a, b) in windows.items():
        x[a:b, c] = r[a:b]
    return x


@pytest.mark.parametrize(("sr", "bpm"), [(48000, 120), (44100, 130), (48000, 140)])
def test_overdub_keeps_sync_offset_and_plays_by_formula(sr: int, bpm: int) -> None:
    """A later recording starts at the column position p, records exactly L frames, turns
    playing by itself and plays B[(position - p) mod L]."""
    f = [beat_frame(k, sr, bpm) for k in range(40)]
    length = beats_length(3, sr, bpm)
    col_start = f[4]  # first recording: beats 1..4
    o2_start = f[9]  # overdub pressed during beat 8
    total = f[30]
    x = _split_input(total, {0: (f[1], f[4] + 1), 1: (o2_start, o2_start + length + 1)})
    rig = Rig(total, x, sample_rate=sr, tempo_bpm=bpm)
    rig.run_to(f[0] + 100)
    rig.submit("record", 1, 0)
    rig.run_to(f[3] + 100)
    rig.submit("record", 1, 0)
    rig.run_to(f[8] + 100)
    rig.submit("record", 1, 3)
    rig.run_to(o2_start + 1)
    p = (o2_start - col_start) % length
    assert p != 0
    cell = rig.cell(1, 3)
    assert (cell["state"], cell["sync_offset_frames"], cell["length_frames"], cell["beats"]) \
        == ("recording", p, length, 3)
    rig.run_to(o2_start + length)
    assert rig.cell(1, 3)["state"] == "recording"
    rig.run_to(o2_start + length + 1)
    assert rig.cell(1, 3)["state"] == "playing"
    rig.run_to(total)

    b0 = x[f[1] : f[1] + length]
    b1 = x[o2_start : o2_start + length]
    expected = np.zeros_like(rig.main)
    add_loop(expected, b0, 0, [(col_start, total, col_start)])
    add_loop(expected, b1, p, [(o2_start + length, total, col_start)])
    assert_same(rig.main, expected)
    # spelled out: the overdub's buffer index 0 sounds at column position p
    t = o2_start + length  # column position p again
    assert rig.main[t, 1] == b1[0, 1]


def test_later_recording_in_a_stopped_column_starts_at_position_zero() -> None:
    total = F(20)
    x = _split_input(total, {0: (F(1), F(3)), 1: (F(8), F(10))})
    rig = Rig(total, x)
    rig.run_to(100)
    rig.submit("record", 0, 0)
    rig.run_to(F(2) + 100)
    rig.submit("record", 0, 0)  # 2 beats, plays from beat 3
    rig.run_to(F(4) + 5000)
    rig.submit("stop", 0, 0)  # stops at beat 5
    rig.run_to(F(6) + 100)
    assert rig.column(0) == {"beats": 2, "length_frames": F(2), "position": 0,
                             "running": False}
    rig.run_to(F(7) + 100)
    rig.submit("record", 0, 4)  # starts at beat 8 at position 0
    rig.run_to(F(8) + 1)
    assert rig.cell(0, 4)["sync_offset_frames"] == 0
    assert rig.column(0)["position"] == 1
    rig.run_to(total)
    expected = np.zeros_like(rig.main)
    add_loop(expected, x[F(1) : F(3)], 0, [(F(3), F(5), F(3))])
    add_loop(expected, x[F(8) : F(10)], 0, [(F(10), total, F(8))])
    assert_same(rig.main, expected)


def test_column_position_and_running() -> None:
    """A column not running holds position 0; it starts at 0 on the boundary where its
    first cell starts; positions count modulo the length."""
    total = F(20)
    x = ramp(total)
    rig = Rig(total, x, block_size=100)
    assert rig.column(0) == {"beats": 0, "length_frames": 0, "position": 0, "running": False}
    rig.run_to(100)
    rig.submit("record", 0, 0)
    rig.run_to(F(3) + 100)
    rig.submit("record", 0, 0)  # beats 1..4: 3 beats
    rig.run_to(F(4) + 1234)
    assert rig.column(0)["position"] == 1234
    rig.run_to(F(4) + F(3) + 50)
    assert rig.column(0)["position"] == 50
    rig.submit("stop", 0, 0)
    rig.run_to(F(8))
    assert rig.column(0)["position"] == F(1)
    rig.run_to(F(8) + 10)
    assert (rig.column(0)["position"], rig.column(0)["running"]) == (0, False)
    rig.run_to(F(9) + 7)
    assert rig.column(0)["position"] == 0
    rig.submit("play", 0, 0)
    rig.run_to(F(10) + 300)  # started at beat 10
    assert (rig.column(0)["position"], rig.column(0)["running"]) == (300, True)
    rig.run_to(total)
    loop = x[F(1) : F(4)]
    expected = np.zeros_like(rig.main)
    add_loop(expected, loop, 0, [(F(4), F(8), F(4)), (F(10), total, F(10))])
    assert_same(rig.main, expected)


# ---------------------------------------------------------------------------- solo


def _three_loops(total: int, **cfg) -> tuple[Rig, dict]:
    """Loops: (0,0) beats 1-3 (2 beats), (0,1) overdub from beat 4 (offset 1 beat),
    (1,0) beats 2-5 (3 beats). Channels split: (0,*) on channel 0, (1,0) on channel 1."""
    x = np.zeros((total, 2), np.float32)
    r = ramp(total)[:, 0]
    x[F(1) : F(3), 0] = r[F(1) : F(3)]
    x[F(4) : F(6), 0] = -r[F(4) : F(6)]  # the overdub: negative values
    x[F(2) : F(5), 1] = r[F(2) : F(5)]
    rig = Rig(total, x, **cfg)
    rig.run_to(100)
    rig.submit("record", 0, 0)
    rig.run_to(F(1) + 100)
    rig.submit("record", 1, 0)
    rig.run_to(F(2) + 100)
    rig.submit("record", 0, 0)
    rig.run_to(F(3) + 100)
    rig.submit("record", 0, 1)
    rig.run_to(F(4) + 100)
    rig.submit("record", 1, 0)
    loops = {
        (0, 0): (x[F(1) : F(3)], 0, F(3)),  # buffer, offset, column start
        (0, 1): (x[F(4) : F(6)], F(1), F(3)),
        (1, 0): (x[F(2) : F(5)], 0, F(5)),
    }
    return rig, loops


def test_solo_silences_every_other_cell_which_keeps_advancing() -> None:
    total = F(20)
    rig, loops = _three_loops(total)
    rig.run_to(F(9) + 100)
    rig.submit("solo", 0, 1)
    rig.run_to(F(10) + 1)
    assert rig.cell(0, 1)["state"] == "solo"
    assert rig.cell(0, 0)["state"] == "playing"
    rig.run_to(F(13) + 100)
    rig.submit("play", 0, 1)  # back to normal at beat 14
    rig.run_to(F(14) + 1)
    assert rig.cell(0, 1)["state"] == "playing"
    rig.run_to(total)
    expected = np.zeros_like(rig.main)
    for (c, r), (buf, off, cs) in loops.items():
        start = {(0, 0): F(3), (0, 1): F(6), (1, 0): F(5)}[(c, r)]
        if (c, r) == (0, 1):
            spans = [(start, total, cs)]
        else:
            spans = [(start, F(10), cs), (F(14), total, cs)]
        add_loop(expected, buf, off, spans)
    assert_same(rig.main, expected)


def test_solo_of_another_cell_replaces_the_solo() -> None:
    total = F(16)
    rig, loops = _three_loops(total)
    rig.run_to(F(8) + 100)
    rig.submit("solo", 0, 0)
    rig.run_to(F(10) + 100)
    rig.submit("solo", 1, 0)
    rig.run_to(total)
    assert rig.cell(0, 0)["state"] == "playing"
    assert rig.cell(1, 0)["state"] == "solo"
    expected = np.zeros_like(rig.main)
    b00, o00, c0 = loops[(0, 0)]
    b01, o01, _ = loops[(0, 1)]
    b10, o10, c1 = loops[(1, 0)]
    add_loop(expected, b00, o00, [(F(3), F(11), c0)])
    add_loop(expected, b01, o01, [(F(6), F(9), c0)])
    add_loop(expected, b10, o10, [(F(5), F(9), c1), (F(11), total, c1)])
    assert_same(rig.main, expected)


def test_when_the_solo_cell_stops_the_others_are_heard_again() -> None:
    total = F(16)
    rig, loops = _three_loops(total)
    rig.run_to(F(8) + 100)
    rig.submit("solo", 1, 0)  # beat 9
    rig.run_to(F(10) + 100)
    rig.submit("stop", 1, 0)  # beat 11
    rig.run_to(F(11) + 1)
    assert rig.cell(1, 0)["state"] == "idle"
    assert rig.column(1)["running"] is False
    rig.run_to(total)
    expected = np.zeros_like(rig.main)
    b00, o00, c0 = loops[(0, 0)]
    b01, o01, _ = loops[(0, 1)]
    b10, o10, c1 = loops[(1, 0)]
    add_loop(expected, b00, o00, [(F(3), F(9), c0), (F(11), total, c0)])
    add_loop(expected, b01, o01, [(F(6), F(9), c0), (F(11), total, c0)])
    add_loop(expected, b10, o10, [(F(5), F(11), c1)])
    assert_same(rig.main, expected)


# ---------------------------------------------------------------------------- stop = cancel


def test_stop_cancels_a_first_recording() -> None:
    total = F(14)
    x = ramp(total)
    rig = Rig(total, x)
    rig.run_to(100)
    rig.submit("record", 3, 2)
    rig.run_to(F(2) + 100)
    rig.submit("stop", 3, 2)
    rig.run_to(F(3) + 1)
    cell = rig.cell(3, 2)
    assert (cell["state"], cell["beats"], cell["length_frames"]) == ("empty", 0, 0)
    assert rig.column(3) == {"beats": 0, "length_frames": 0, "position": 0, "running": False}
    # the column is free for a new first recording of another length
    rig.run_to(F(5) + 100)
    rig.submit("record", 3, 2)
    rig.run_to(F(7) + 100)
    rig.submit("record", 3, 2)
    rig.run_to(total)
    assert rig.cell(3, 2)["beats"] == 2
    assert rig.column(3)["beats"] == 2
    expected = np.zeros_like(rig.main)
    add_loop(expected, x[F(6) : F(8)], 0, [(F(8), total, F(8))])
    assert_same(rig.main, expected)


def test_stop_cancels_a_rerecording_and_keeps_the_old_loop() -> None:
    total = F(20)
    x = ramp(total)
    rig = Rig(total, x)
    rig.run_to(100)
    rig.submit("record", 0, 0)
    rig.run_to(F(2) + 100)
    rig.submit("record", 0, 0)  # beats 1..3, plays from beat 3
    rig.run_to(F(4) + 100)
    before = rig.cell(0, 0)
    rig.submit("record", 0, 0)  # re-record from beat 5
    rig.run_to(F(5) + 1)
    assert rig.cell(0, 0)["state"] == "recording"
    rig.run_to(F(5) + 5000)
    rig.submit("stop", 0, 0)  # cancels at beat 6
    rig.run_to(F(6) + 1)
    after = rig.cell(0, 0)
    assert after["state"] == "idle"  # docs/engine.md: a cancelled re-recording leaves it idle
    for key in ("beats", "length_frames", "sync_offset_frames", "volume"):
        assert after[key] == before[key], key
    assert after["undo"] == before["undo"]
    if after["state"] == "idle":
        rig.run_to(F(8) + 100)
        assert not rig.main[F(5) : F(8)].any()
        rig.submit("play", 0, 0)
    rig.run_to(total)
    loop = x[F(1) : F(3)]
    tail = rig.main[F(10) :]
    # the old loop again, in the column's phase
    col_start = F(9) if after["state"] == "idle" else F(3)
    assert_same(tail, loop_play(np.arange(F(10), total), col_start, loop, 0))


def test_stop_cancels_an_overdub_in_a_running_column() -> None:
    total = F(16)
    x = ramp(total)
    rig = Rig(total, x)
    rig.run_to(100)
    rig.submit("record", 0, 0)
    rig.run_to(F(3) + 100)
    rig.submit("record", 0, 0)  # beats 1..4
    rig.run_to(F(5) + 100)
    rig.submit("record", 0, 1)  # from beat 6
    rig.run_to(F(7) + 100)
    rig.submit("stop", 0, 1)  # cancelled at beat 8
    rig.run_to(total)
    assert rig.cell(0, 1)["state"] == "empty"
    assert rig.cell(0, 1)["beats"] == 0
    assert rig.column(0)["beats"] == 3
    expected = np.zeros_like(rig.main)
    add_loop(expected, x[F(1) : F(4)], 0, [(F(4), total, F(4))])
    assert_same(rig.main, expected)


# ---------------------------------------------------------------------------- clear


def test_clear_empties_the_cell_and_the_last_clear_resets_the_column() -> None:
    total = F(26)
    x = ramp(total)
    rig = Rig(total, x)
    rig.run_to(100)
    rig.submit("record", 0, 0)
    rig.run_to(F(2) + 100)
    rig.submit("record", 0, 0)  # beats 1..3, column from beat 3
    rig.run_to(F(3) + 100)
    rig.submit("record", 0, 1)  # beats 4..6, offset 1 beat
    rig.run_to(F(7) + 100)
    rig.submit("clear", 0, 0)  # at beat 8
    rig.run_to(F(8) + 1)
    assert rig.cell(0, 0)["state"] == "empty"
    assert rig.cell(0, 0)["beats"] == 0
    assert rig.column(0)["beats"] == 2
    rig.run_to(F(9) + 100)
    rig.submit("clear", 0, 1)  # at beat 10: the column's last loop
    rig.run_to(F(10) + 1)
    assert rig.column(0) == {"beats": 0, "length_frames": 0, "position": 0, "running": False}
    assert rig.cell(0, 1)["state"] == "empty"
    # a new first recording, of 3 beats, in row 1
    rig.run_to(F(11) + 100)
    rig.submit("record", 0, 1)
    rig.run_to(F(14) + 100)
    rig.submit("record", 0, 1)
    rig.run_to(total)
    assert rig.column(0)["beats"] == 3
    assert rig.cell(0, 1)["sync_offset_frames"] == 0
    expected = np.zeros_like(rig.main)
    add_loop(expected, x[F(1) : F(3)], 0, [(F(3), F(8), F(3))])
    add_loop(expected, x[F(4) : F(6)], F(1), [(F(6), F(10), F(3))])
    add_loop(expected, x[F(12) : F(15)], 0, [(F(15), total, F(15))])
    assert_same(rig.main, expected)


def test_clear_of_an_idle_loop_in_a_stopped_column() -> None:
    total = F(8)
    rig = Rig(total, ramp(total))
    rig.run_to(100)
    rig.submit("record", 4, 4)
    rig.run_to(F(1) + 100)
    rig.submit("record", 4, 4)
    rig.run_to(F(2) + 100)
    rig.submit("stop", 4, 4)
    rig.run_to(F(3) + 100)
    rig.submit("clear", 4, 4)
    rig.run_to(total)
    assert rig.cell(4, 4)["state"] == "empty"
    assert rig.column(4)["beats"] == 0
    assert not rig.main[F(3) :].any()


# ---------------------------------------------------------------------------- undo / redo


def test_undo_redo_step_through_recordings_and_undo_brings_back_a_cleared_loop() -> None:
    total = F(40)
    x = ramp(total)
    rig = Rig(total, x)
    rig.run_to(100)
    rig.submit("record", 2, 0)
    rig.run_to(F(2) + 100)
    rig.submit("record", 2, 0)  # take 1: beats 1..3; column from beat 3
    rig.run_to(F(5) + 100)
    rig.submit("record", 2, 0)  # take 2: beats 6..8, at column position 1 beat
    rig.run_to(F(6) + 1)
    assert rig.cell(2, 0)["sync_offset_frames"] == F(1)
    rig.run_to(F(8) + 100)
    rig.submit("record", 2, 0)  # take 3: beats 9..11, at column position 0
    rig.run_to(F(11) + 1)
    assert rig.cell(2, 0)["undo"] == 3
    assert rig.cell(2, 0)["sync_offset_frames"] == 0
    t1, t2, t3 = x[F(1) : F(3)], x[F(6) : F(8)], x[F(9) : F(11)]

    rig.run_to(F(12) + 100)
    rig.submit("undo", 2, 0)  # beat 13: take 2
    rig.run_to(F(14) + 100)
    rig.submit("undo", 2, 0)  # beat 15: take 1
    rig.run_to(F(16) + 100)
    rig.submit("redo", 2, 0)  # beat 17: take 2
    rig.run_to(F(18) + 100)
    rig.submit("clear", 2, 0)  # beat 19: empty, column reset
    rig.run_to(F(19) + 1)
    assert rig.cell(2, 0)["state"] == "empty"
    assert rig.column(2)["beats"] == 0
    rig.run_to(F(20) + 100)
    rig.submit("undo", 2, 0)  # beat 21: take 2 is back
    rig.run_to(F(21) + 1)
    back = rig.cell(2, 0)
    assert back["state"] in ("idle", "playing")
    assert (back["beats"], back["length_frames"]) == (2, F(2))
    assert rig.column(2)["beats"] == 2
    if back["state"] == "idle":
        rig.run_to(F(22) + 100)
        rig.submit("play", 2, 0)  # beat 23
        restart = F(23)
    else:
        restart = F(21)
    rig.run_to(F(26) + 100)
    rig.submit("redo", 2, 0)  # beat 27: the clear again
    rig.run_to(total)
    assert rig.cell(2, 0)["state"] == "empty"
    assert rig.column(2)["beats"] == 0

    expected = np.zeros_like(rig.main)
    cs = F(3)
    add_loop(expected, t1, 0, [(F(3), F(6), cs), (F(15), F(17), cs)])
    add_loop(expected, t2, F(1), [(F(8), F(9), cs), (F(13), F(15), cs), (F(17), F(19), cs)])
    add_loop(expected, t3, 0, [(F(11), F(13), cs)])
    add_loop(expected, t2, F(1), [(restart, F(27), restart)])
    assert_same(rig.main, expected)


def test_undo_of_a_cells_only_recording_empties_it_and_redo_restores_it() -> None:
    total = F(12)
    x = ramp(total)
    rig = Rig(total, x)
    rig.run_to(100)
    rig.submit("record", 1, 1)
    rig.run_to(F(1) + 100)
    rig.submit("record", 1, 1)  # beat 1..2
    rig.run_to(F(3) + 100)
    rig.submit("undo", 1, 1)  # beat 4
    rig.run_to(F(4) + 1)
    assert rig.cell(1, 1)["state"] == "empty"
    assert rig.cell(1, 1)["redo"] == 1
    rig.run_to(F(5) + 100)
    rig.submit("redo", 1, 1)  # beat 6
    rig.run_to(F(6) + 1)
    assert rig.cell(1, 1)["beats"] == 1
    assert rig.cell(1, 1)["state"] in ("idle", "playing")


# ---------------------------------------------------------------------------- volumes


def _one_loop(total: int, **cfg) -> tuple[Rig, np.ndarray]:
    """(0,0) records beats 1..3 of a ramp; plays from beat 3 (column start F(3))."""
    x = ramp(total)
    rig = Rig(total, x, **cfg)
    rig.run_to(100)
    rig.submit("record", 0, 0)
    rig.run_to(F(2) + 100)
    rig.submit("record", 0, 0)
    return rig, x[F(1) : F(3)]


@pytest.mark.parametrize(("vol", "master"), [(0.5, 1.0), (1.0, 0.25), (0.75, 0.5),
                                             (4.0, 1.0), (0.0, 1.0), (0.3, 0.7)])
def test_cell_and_master_volume_scale_exactly(vol: float, master: float) -> None:
    total = F(8)
    rig, loop = _one_loop(total)
    rig.submit("volume", 0, 0, vol)
    rig.submit("master_volume", master)
    rig.run_to(total)
    assert rig.cell(0, 0)["volume"] == vol
    assert rig.status()["master_volume"] == master
    frames = np.arange(F(3), total)
    want = loop_play(frames, F(3), loop, 0, vol) * np.float32(master)
    assert_same(rig.main[F(3) :], want)


def test_volume_applies_at_once_not_on_the_beat() -> None:
    total = F(6)
    rig, loop = _one_loop(total)
    rig.run_to(F(4) + 1000)  # mid-beat: the next block starts here
    rig.submit("volume", 0, 0, 0.5)
    rig.run_to(F(4) + 7000)
    rig.submit("master_volume", 0.25)
    rig.run_to(total)
    frames = np.arange(F(3), total)
    want = loop_play(frames, F(3), loop, 0)
    want[F(4) + 1000 - F(3) :] *= np.float32(0.5)
    want[F(4) + 7000 - F(3) :] *= np.float32(0.25)
    assert_same(rig.main[F(3) :], want)


def test_volume_of_an_idle_cell_is_used_when_it_plays() -> None:
    total = F(10)
    rig, loop = _one_loop(total)
    rig.run_to(F(3) + 100)
    rig.submit("stop", 0, 0)  # at beat 4
    rig.run_to(F(5) + 100)
    rig.submit("volume", 0, 0, 0.25)
    rig.run_to(F(6) + 100)
    rig.submit("play", 0, 0)  # at beat 7
    rig.run_to(total)
    assert not rig.main[F(4) : F(7)].any()
    frames = np.arange(F(7), total)
    assert_same(rig.main[F(7) :], loop_play(frames, F(7), loop, 0, 0.25))


def test_volume_smoothing_ramps_over_the_smoothing_time() -> None:
    """With smoothing on, a volume change is a ramp of smoothing_ms, not a step."""
    total = F(6)
    x = np.ones((total, 2), np.float32)  # a constant loop makes the gain visible
    rig = Rig(total, x, smoothing_ms=10.0)
    rig.run_to(100)
    rig.submit("record", 0, 0)
    rig.run_to(F(2) + 100)
    rig.submit("record", 0, 0)  # plays from beat 3
    rig.run_to(F(4) + 1000)
    rig.submit("volume", 0, 0, 0.5)
    rig.run_to(total)
    n = 480  # 10 ms at 48 kHz
    b = F(4) + 1000
    seg = rig.main[b : b + n + 10, 0].astype(np.float64)
    assert np.all(rig.main[F(3) : b] == 1.0)
    assert np.all(np.diff(seg) <= 0), "the ramp goes down monotonically"
    assert 0.5 < seg[0] < 1.0 and 0.5 < seg[n // 2] < 1.0
    assert np.all(rig.main[b + n :] == np.float32(0.5))


# ---------------------------------------------------------------------------- monitor


def test_monitor_input_adds_the_input_times_its_gain() -> None:
    total = F(6)
    x = ramp(total)
    rig = Rig(total, x, monitor_input=True, monitor_gain=0.5)
    rig.run_to(100)
    rig.submit("record", 0, 0)
    rig.run_to(F(1) + 100)
    rig.submit("record", 0, 0)  # beat 1..2
    rig.run_to(F(3) + 1000)
    rig.submit("monitor", 1, 0.25)
    rig.run_to(F(4) + 1000)
    rig.submit("monitor", 0)
    rig.run_to(total)
    assert rig.status()["monitor"]["on"] is False
    expected = x * np.float32(0.5)
    expected[F(3) + 1000 :] = x[F(3) + 1000 :] * np.float32(0.25)
    expected[F(4) + 1000 :] = 0
    add_loop(expected, x[F(1) : F(2)], 0, [(F(2), total, F(2))])
    assert_same(rig.main, expected)


def test_monitor_off_by_default_and_switched_on() -> None:
    total = 10000
    x = ramp(total)
    rig = Rig(total, x)
    rig.run_to(5000)
    assert not rig.main.any()
    rig.submit_mapping({"cmd": "monitor", "value": 1})
    rig.run_to(total)
    assert_same(rig.main[5000:], x[5000:])
    assert rig.status()["monitor"] == {"on": True, "gain": 1.0}


# ---------------------------------------------------------------------------- click


def _click_ref(rig: Rig, total: int, bpb: int, volume: float, beats) -> np.ndarray:
    accent, normal = rig.eng.click_tones
    sr, bpm = rig.config.sample_rate, rig.config.tempo_bpm
    out = np.zeros(total, np.float32)
    for k in beats:
        f = beat_frame(k, sr, bpm)
        tone = accent if k % bpb == 0 else normal
        m = min(tone.shape[0], total - f, beat_frame(k + 1, sr, bpm) - f)
        out[f : f + m] = tone[:m]
    return out * np.float32(volume)


@pytest.mark.parametrize("bpb", [4, 3, 7])
@pytest.mark.parametrize("volume", [0.5, 1.0])
def test_click_on_every_beat_accented_on_beat_one_of_the_bar(bpb: int, volume: float) -> None:
    sr, bpm = 44100, 130
    beats = 16
    total = beat_frame(beats, sr, bpm)
    rig = Rig(total, ramp(total), sample_rate=sr, tempo_bpm=bpm, click=True,
              click_volume=volume, beats_per_bar=bpb)
    rig.run_to(total)
    accent, normal = rig.eng.click_tones
    assert not np.array_equal(accent, normal), "the accent must sound different"
    assert_same(rig.click, _click_ref(rig, total, bpb, volume, range(beats)), "click")
    assert not rig.main.any(), "click goes to its own output only"


def test_no_click_when_click_is_off() -> None:
    total = F(5)
    rig = Rig(total)  # click off by default
    rig.run_to(total)
    assert not rig.click.any()


def test_click_switched_on_and_off_and_its_volume() -> None:
    total = F(10)
    rig = Rig(total, click=False, click_volume=1.0)
    rig.run_to(F(1) + 5000)
    rig.submit("click", 1)  # tones from beat 2 on
    rig.run_to(F(4) + 5000)
    rig.submit("click_volume", 0.25)  # beats 5.. at a quarter
    rig.run_to(F(6) + 5000)  # the tone of beat 6 is over by now (30 ms)
    rig.submit("click", 0)
    rig.run_to(total)
    assert rig.status()["click"] == {"on": False, "volume": 0.25}
    want = _click_ref(rig, total, 4, 1.0, range(2, 5))
    want += _click_ref(rig, total, 4, 0.25, range(5, 7))
    assert_same(rig.click, want, "click")


# ---------------------------------------------------------------------------- latency


@pytest.mark.parametrize("latency", [0, 1, 300, 4000])
def test_latency_shifts_the_recorded_audio(latency: int) -> None:
    total = F(6) + latency
    x = ramp(total)
    rig = Rig(total, x, latency_frames=latency)
    rig.run_to(100)
    rig.submit("record", 0, 0)
    rig.run_to(F(1) + 100)
    rig.submit("record", 0, 0)
    rig.run_to(total)
    # recording "starts" at beat 1, but the audio of beat 1 arrives latency frames later
    loop = x[F(1) + latency : F(2) + latency]
    assert_same(rig.main[F(2) :], loop_play(np.arange(F(2), total), F(2), loop, 0))


@pytest.mark.parametrize(("latency", "block"), [(256, 128), (300, 100), (1024, 1000)])
def test_latency_compensated_overdub_of_the_loops_own_output_lines_up(
        latency: int, block: int) -> None:
    """Route main out back into the input with a round trip of ``latency`` frames and overdub
    the loop onto itself: the overdub plays exactly in phase (main = 2 x the loop)."""
    sr, bpm = 48000, 130
    f = [beat_frame(k, sr, bpm) for k in range(30)]
    total = f[29]
    ext = np.zeros((total, 2), np.float32)
    ext[f[1] + latency : f[3] + latency] = ramp(total)[f[1] : f[3]]
    rig = Rig(total, ext.copy(), sample_rate=sr, tempo_bpm=bpm, block_size=block,
              latency_frames=latency)
    mid = [(f[k] + f[k + 1]) // 2 for k in range(29)]
    events = {mid[0]: ("record", 0, 0), mid[2]: ("record", 0, 0), mid[6]: ("record", 0, 1)}
    while rig.frame < total:
        b = rig.frame
        n = min(block, total - b)
        for at, cmd in events.items():
            if b <= at < b + n:
                rig.submit(*cmd)
        # what comes back from the speakers/cable: main out, latency frames later
        src = np.arange(b, b + n) - latency
        ok = src >= 0
        rig.inputs[b : b + n][ok] = ext[b : b + n][ok] + rig.main[src[ok]]
        rig.block(n)
    length = beats_length(2, sr, bpm)
    o = (f[7] - f[3]) % length
    assert rig.cell(0, 1)["sync_offset_frames"] == o
    loop = ramp(total)[f[1] : f[1] + length]
    done = f[7] + length
    want = loop_play(np.arange(done, total), f[3], loop, 0) * np.float32(2)
    assert_same(rig.main[done:], want, "overdub in phase with its source")


# ---------------------------------------------------------------------------- documented choices


def test_undo_during_a_recording_cancels_it() -> None:
    """docs/engine.md: undo while recording cancels the recording."""
    total = F(12)
    rig, loop = _one_loop(total)
    rig.run_to(F(4) + 100)
    rig.submit("record", 0, 0)  # re-record from beat 5
    rig.run_to(F(5) + 100)
    rig.submit("undo", 0, 0)  # cancelled at beat 6
    rig.run_to(F(6) + 1)
    cell = rig.cell(0, 0)
    assert (cell["state"], cell["beats"], cell["undo"]) == ("idle", 2, 1)
    rig.run_to(F(7) + 100)
    rig.submit("play", 0, 0)  # beat 8
    rig.run_to(total)
    assert not rig.main[F(5) : F(8)].any()
    assert_same(rig.main[F(8) :], loop_play(np.arange(F(8), total), F(8), loop, 0))


def test_record_on_another_row_ends_the_columns_first_recording() -> None:
    """docs/engine.md: record in another cell during the column's first recording ends that
    one there (the column gets its length) and starts this one at position 0."""
    total = F(14)
    x = ramp(total)
    rig = Rig(total, x)
    rig.run_to(100)
    rig.submit("record", 0, 0)  # beat 1
    rig.run_to(F(2) + 100)
    rig.submit("record", 0, 1)  # beat 3: (0,0) ends with 2 beats, (0,1) starts
    rig.run_to(F(3) + 1)
    assert rig.cell(0, 0)["state"] == "playing"
    assert rig.column(0)["beats"] == 2
    one = rig.cell(0, 1)
    assert (one["state"], one["sync_offset_frames"], one["length_frames"]) \
        == ("recording", 0, F(2))
    rig.run_to(total)
    expected = np.zeros_like(rig.main)
    add_loop(expected, x[F(1) : F(3)], 0, [(F(3), total, F(3))])
    add_loop(expected, x[F(3) : F(5)], 0, [(F(5), total, F(3))])
    assert_same(rig.main, expected)


def test_declick_fades_a_stopping_and_a_starting_cell() -> None:
    """declick_ms=5 at 48 kHz: a 240-frame fade out at the stop boundary and a fade in at the
    play boundary; a recording turning into playback does not fade."""
    total = F(10)
    x = np.ones((total, 2), np.float32)
    rig = Rig(total, x, declick_ms=5.0)
    rig.run_to(100)
    rig.submit("record", 0, 0)
    rig.run_to(F(2) + 100)
    rig.submit("record", 0, 0)  # plays from beat 3
    rig.run_to(F(4) + 100)
    rig.submit("stop", 0, 0)  # beat 5
    rig.run_to(F(6) + 100)
    rig.submit("play", 0, 0)  # beat 7
    rig.run_to(total)
    out = rig.main[:, 0].astype(np.float64)
    d = 240
    assert out[F(3)] > 0.99, "no fade in where the recording turns into playback"
    fade_out = out[F(5) : F(5) + d]
    assert out[F(5) - 1] > 0.99 and np.all(np.diff(fade_out) < 0) and fade_out[0] < 1.0
    assert not out[F(5) + d : F(7)].any()
    fade_in = out[F(7) : F(7) + d]
    assert np.all(np.diff(fade_in) > 0) and fade_in[0] > 0.0
    assert np.all(out[F(7) + d : F(7) + 2 * d] > 0.99)


@pytest.mark.parametrize(("how", "state"), [("record", "playing"), ("play", "playing"),
                                            ("solo", "solo")])
def test_record_play_or_solo_end_a_first_recording(how: str, state: str) -> None:
    total = F(10)
    x = ramp(total)
    rig = Rig(total, x)
    rig.run_to(100)
    rig.submit("record", 1, 1)
    rig.run_to(F(3) + 100)
    rig.submit(how, 1, 1)  # beat 4: 3 beats
    rig.run_to(total)
    cell = rig.cell(1, 1)
    assert (cell["state"], cell["beats"], cell["length_frames"]) == (state, 3, F(3))
    assert_same(rig.main[F(4) :], loop_play(np.arange(F(4), total), F(4), x[F(1) : F(4)], 0))
