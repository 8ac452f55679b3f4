"""Time: the beat grid, when quantized commands take effect, and block-size independence.

Spec (shared/spec/engine.md, "Time"): beat k starts at round(k * spb); a command delivered
before the block starting at frame b takes effect at the first boundary f >= b; within one
block the last command for a cell wins; a block is split at each beat boundary inside it.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.rtcore.conftest import (
    Rig,
    assert_same,
    beat_frame,
    beats_length,
    ramp,
)

# (sample_rate, tempo): integer and non-integer frames per beat
GRIDS = [
    (48000, 120),  # 24000
    (48000, 130),  # 22153.846...
    (44100, 130),  # 20353.846...
    (44100, 120),  # 22050
    (48000, 140),  # 20571.428...
    (44100, 97),  # 27278.350...
    (8000, 133),  # 3609.022...
]


def click_reference(rig: Rig, total: int, beats: int, bpb: int, volume: float) -> np.ndarray:
    """The spec's click out: a tone at every beat boundary, the accented one on beat 1 of the
    bar (beat 0 is the first beat of the first bar), each cut short by the next one."""
    accent, normal = rig.eng.click_tones
    out = np.zeros(total, np.float32)
    sr, bpm = rig.config.sample_rate, rig.config.tempo_bpm
    for k in range(beats + 1):
        f = beat_frame(k, sr, bpm)
        if f >= total:
            break
        nxt = min(beat_frame(k + 1, sr, bpm), total)
        tone = accent if k % bpb == 0 else normal
        m = min(tone.shape[0], nxt - f)
        out[f : f + m] = tone[:m]
    return out * np.float32(volume)


# ---------------------------------------------------------------------------- the grid


@pytest.mark.parametrize(("sr", "bpm"), GRIDS)
def test_click_marks_every_beat_at_round_k_spb(sr: int, bpm: int) -> None:
    beats = 24
    total = beat_frame(beats, sr, bpm) + 100
    rig = Rig(total, sample_rate=sr, tempo_bpm=bpm, click=True, click_volume=1.0,
              block_size=1000)
    rig.run_to(total)
    assert_same(rig.click, click_reference(rig, total, beats, 4, 1.0), "click")
    assert not rig.main.any(), "the click must not leak into main out"


@pytest.mark.parametrize(("sr", "bpm"), [(48000, 130), (44100, 130), (8000, 97)])
def test_status_follows_the_grid_for_many_beats(sr: int, bpm: int) -> None:
    """After every block, the status names the last boundary passed and the next one."""
    rig_total = beat_frame(1500, sr, bpm)
    cfg_block = 8192
    from rtcore.config import EngineConfig
    from rtcore.engine import Engine

    eng = Engine(EngineConfig(sample_rate=sr, tempo_bpm=bpm, block_size=cfg_block,
                              channels=1, declick_ms=0, smoothing_ms=0))
    x = np.zeros((cfg_block, 1), np.float32)
    out = np.zeros_like(x)
    click = np.zeros(cfg_block, np.float32)
    k = -1  # last beat passed
    while eng.frame < rig_total:
        eng.process(x, out, click)
        while beat_frame(k + 1, sr, bpm) < eng.frame:
            k += 1
        st = eng.status()
        assert st["beat"] == k, f"at frame {eng.frame}"
        assert st["next_beat_frame"] == beat_frame(k + 1, sr, bpm), f"at frame {eng.frame}"
        assert st["beat_in_bar"] == k % 4


@pytest.mark.parametrize(("sr", "bpm", "k"), [(48000, 130, 173), (44100, 130, 301),
                                              (8000, 97, 1001)])
def test_recording_starts_exactly_on_a_far_beat(sr: int, bpm: int, k: int) -> None:
    """A record pressed during beat k-1 starts at round(k * spb), even far from frame 0."""
    start = beat_frame(k, sr, bpm)
    end = beat_frame(k + 2, sr, bpm)
    length = beats_length(2, sr, bpm)
    total = end + length + 10
    rig = Rig(total, ramp(total, 1), sample_rate=sr, tempo_bpm=bpm, channels=1,
              block_size=4096)
    rig.run_to(beat_frame(k - 1, sr, bpm) + 5)
    rig.submit("record", 0, 0)
    rig.run_to(beat_frame(k + 1, sr, bpm) + 5)
    rig.submit("record", 0, 0)
    rig.run_to(total)
    assert rig.cell(0, 0)["length_frames"] == length
    # the loop plays from the end boundary: buffer index j is input frame start + j
    expected = ramp(total, 1)[start : start + length]
    assert_same(rig.main[end : end + length], expected, "loop")
    assert not rig.main[:end].any()


# ---------------------------------------------------------------------------- quantization


@pytest.mark.parametrize(("sr", "bpm"), [(48000, 120), (48000, 130), (44100, 130)])
@pytest.mark.parametrize(
    ("block_start_rel", "starts_at_beat"),
    [
        (0, 3),  # the block starts exactly on the boundary: applies at it
        (-1, 3),  # one frame before the boundary
        (-127, 3),  # the boundary is the block's last frame
        (-5000, 3),  # a while before
        (1, 4),  # one frame late: the next boundary
        (127, 4),
    ],
)
def test_command_takes_effect_at_first_boundary_at_or_after_block_start(
        sr: int, bpm: int, block_start_rel: int, starts_at_beat: int) -> None:
    b = beat_frame(3, sr, bpm) + block_start_rel
    start = beat_frame(starts_at_beat, sr, bpm)
    end = beat_frame(starts_at_beat + 2, sr, bpm)
    length = beats_length(2, sr, bpm)
    total = end + length + 200
    x = ramp(total)
    rig = Rig(total, x, sample_rate=sr, tempo_bpm=bpm, block_size=128)
    rig.run_to(b)  # the next block starts at b
    rig.submit("record", 0, 0)
    rig.block()
    if starts_at_beat == 3 and block_start_rel > -128:
        # the boundary is inside (or at the start of) the block just processed
        assert rig.cell(0, 0)["state"] == "recording"
    rig.run_to(beat_frame(starts_at_beat + 1, sr, bpm) + 500)
    assert rig.cell(0, 0)["state"] == "recording"
    rig.submit("record", 0, 0)
    rig.run_to(total)
    assert rig.cell(0, 0)["beats"] == 2
    assert_same(rig.main[end : end + length], x[start : start + length], "loop")
    assert not rig.main[:end].any()


def test_command_before_the_first_block_applies_at_frame_zero() -> None:
    total = 3 * 24000 + 1000
    x = ramp(total)
    rig = Rig(total, x)
    rig.submit("record", 0, 0)
    rig.block()
    assert rig.cell(0, 0)["state"] == "recording"
    rig.run_to(30000)
    rig.submit("record", 0, 0)
    rig.run_to(total)
    assert rig.cell(0, 0)["length_frames"] == 48000
    assert_same(rig.main[48000:total], x[0 : total - 48000], "loop")


def test_script_event_exactly_on_a_boundary_applies_at_it() -> None:
    """Offline: an event at a boundary's frame, with a block starting there, applies there."""
    from tests.rtcore.conftest import ev, run_script, script

    # 48 kHz, 120 BPM: beat 2 is frame 48000 = 375 * 128, a block start
    total = 6 * 24000
    x = ramp(total)
    doc = script(total, [ev(48000, "record", 0, 0), ev(72000, "record", 0, 0)])
    res = run_script(doc, x)
    # beat 2 .. beat 3 recorded (the second record, at beat 3 exactly, ends it there)
    assert res.status["cells"][0][0]["beats"] == 1
    assert_same(res.main[72000:96000], x[48000:72000], "loop pass 1")
    assert_same(res.main[96000:120000], x[48000:72000], "loop pass 2")
    assert not res.main[:72000].any()


# ---------------------------------------------------------------------------- block splits


def test_block_is_split_at_a_boundary_inside_it() -> None:
    """Block 1000 at 130 BPM: boundaries fall inside blocks; states change exactly there."""
    sr, bpm = 48000, 130
    f = [beat_frame(k, sr, bpm) for k in range(12)]
    assert all(v % 1000 for v in f[1:]), "boundaries must fall inside blocks"
    total = f[11]
    x = ramp(total)
    rig = Rig(total, x, sample_rate=sr, tempo_bpm=bpm, block_size=1000, click=True,
              click_volume=1.0)
    rig.run(total, [
        (f[0] + 3000, "record", 0, 0), (f[2] + 3000, "record", 0, 0),  # beat 1..3
        (f[4] + 3000, "stop", 0, 0),  # stops at beat 5
        (f[6] + 3000, "play", 0, 0),  # starts again at beat 7 (column beat 1)
    ])
    length = beats_length(2, sr, bpm)
    loop = x[f[1] : f[1] + length]
    expected = np.zeros_like(rig.main)
    expected[f[3] : f[5]] = loop[np.arange(f[5] - f[3]) % length]
    expected[f[7] : total] = loop[np.arange(total - f[7]) % length]
    assert_same(rig.main, expected)
    assert rig.main[f[5] - 1, 0] != 0 and rig.main[f[5], 0] == 0
    assert rig.main[f[7] - 1, 0] == 0 and rig.main[f[7], 0] == loop[0, 0]
    # the click is split at the same frames
    ref = click_reference(rig, total, 11, 4, 1.0)
    assert_same(rig.click, ref, "click")


# a performance with many kinds of events, all in the middle of beats (so that every block
# grid delivers them before the same boundary); volumes only at frame 0 (they apply at once)
def _busy_events(sr: int, bpm: int) -> list[tuple]:
    def mid(k: int) -> int:
        return (beat_frame(k, sr, bpm) + beat_frame(k + 1, sr, bpm)) // 2

    return [
        (0, "volume", 0, 1, 0.5), (0, "volume", 1, 1, 0.75), (0, "master_volume", 0.875),
        (mid(0), "record", 0, 0), (mid(3), "record", 0, 0),  # col 0: 3 beats from beat 1
        (mid(2), "record", 1, 0), (mid(4), "record", 1, 0),  # col 1: 2 beats from beat 3
        (mid(5), "record", 0, 1),  # overdub at column beat 3 of col 0
        (mid(12), "solo", 1, 0), (mid(14), "play", 1, 0),
        (mid(15), "stop", 0, 0), (mid(18), "play", 0, 0),
        (mid(16), "record", 1, 1),
        (mid(20), "stop", 0, 1), (mid(22), "clear", 1, 0), (mid(24), "undo", 1, 0),
        (mid(25), "play", 1, 0),
        (mid(25), "record", 2, 0), (mid(27), "stop", 2, 0),  # a cancelled first recording
        (mid(28), "record", 3, 0), (mid(29), "record", 3, 0),
        (mid(26), "play", 0, 1),
    ]


def _busy_run(block_size: int, sr: int = 48000, bpm: int = 130, random_blocks: bool = False,
              **cfg) -> Rig:
    total = beat_frame(33, sr, bpm)
    x = ramp(total)
    rig = Rig(total, x, sample_rate=sr, tempo_bpm=bpm, block_size=block_size, click=True,
              monitor_input=True, monitor_gain=0.25, **cfg)
    if random_blocks:
        rng = np.random.default_rng(1234)
        events = sorted(_busy_events(sr, bpm), key=lambda e: e[0])
        i = 0
        while rig.frame < total:
            n = int(rng.integers(1, block_size + 1))
            n = min(n, total - rig.frame)
            while i < len(events) and events[i][0] < rig.frame + n:
                rig.submit(*events[i][1:])
                i += 1
            rig.block(n)
    else:
        rig.run(total, _busy_events(sr, bpm))
    return rig


@pytest.fixture(scope="module")
def busy_reference() -> Rig:
    return _busy_run(128)


@pytest.mark.parametrize("block_size", [100, 127, 1000, 64, 2048])
def test_output_does_not_depend_on_block_size(busy_reference: Rig, block_size: int) -> None:
    rig = _busy_run(block_size)
    assert busy_reference.main.any() and busy_reference.click.any()
    assert_same(rig.main, busy_reference.main, "main")
    assert_same(rig.click, busy_reference.click, "click")
    assert rig.status()["cells"] == busy_reference.status()["cells"]


@pytest.mark.parametrize("block_size", [100, 1000])
def test_output_does_not_depend_on_block_size_with_fades(block_size: int) -> None:
    """Declick fades and smoothing ramps are computed from absolute frames too."""
    fades = {"declick_ms": 5.0, "smoothing_ms": 10.0}
    ref = _busy_run(128, **fades)
    rig = _busy_run(block_size, **fades)
    assert_same(rig.main, ref.main, "main")
    assert_same(rig.click, ref.click, "click")


def test_output_does_not_depend_on_varying_block_lengths(busy_reference: Rig) -> None:
    rig = _busy_run(512, random_blocks=True)
    assert_same(rig.main, busy_reference.main, "main")
    assert_same(rig.click, busy_reference.click, "click")


def test_block_longer_than_the_loop() -> None:
    """A 1-beat loop (1600 frames at 300 BPM, 8 kHz) played with 4096-frame blocks sounds the
    same as with 128-frame blocks. Commands are delivered before blocks starting at 4096 and
    at 5096 (record starts at 4800, ends at 6400), so the loop's first passes play within
    the block in which its last part was recorded."""
    sr, bpm = 8000, 300
    total = beat_frame(14, sr, bpm)
    x = ramp(total)

    ref = Rig(total, x, sample_rate=sr, tempo_bpm=bpm, block_size=128)
    ref.run(total, [(4096, "record", 0, 0), (5096, "record", 0, 0)])
    loop = x[4800:6400]
    assert ref.cell(0, 0)["length_frames"] == 1600
    assert_same(ref.main[6400:], loop[np.arange(total - 6400) % 1600], "loop (block 128)")

    big = Rig(total, x, sample_rate=sr, tempo_bpm=bpm, block_size=4096)
    big.run_to(4096)
    big.submit("record", 0, 0)
    big.block(1000)
    big.submit("record", 0, 0)
    big.run_to(total)
    assert big.cell(0, 0)["length_frames"] == 1600
    assert_same(big.main, ref.main, "block 4096 vs block 128")


# ---------------------------------------------------------------------------- last one wins


def _two_beat_loop_rig(total: int, bs: int = 128) -> Rig:
    rig = Rig(total, ramp(total), block_size=bs)
    rig.run_to(100)
    rig.submit("record", 0, 0)  # beat 1 (24000)
    rig.run_to(24000 * 2 + 100)
    rig.submit("record", 0, 0)  # ends at beat 3 (72000): loop of 48000 from frame 24000
    return rig


def test_last_command_in_a_block_wins_stop_then_play() -> None:
    total = 24000 * 8
    rig = _two_beat_loop_rig(total)
    rig.run_to(24000 * 5 + 1000)
    rig.submit("stop", 0, 0)
    rig.submit("play", 0, 0)
    rig.run_to(total)
    x = rig.inputs
    loop = x[24000:72000]
    expected = loop[np.arange(total - 72000) % 48000]
    assert_same(rig.main[72000:], expected, "kept playing")
    assert rig.cell(0, 0)["state"] == "playing"


def test_last_command_in_a_block_wins_play_then_stop() -> None:
    total = 24000 * 9
    rig = _two_beat_loop_rig(total)
    rig.run_to(24000 * 3 + 1000)
    rig.submit("stop", 0, 0)  # stops at beat 4
    rig.run_to(24000 * 5 + 1000)
    rig.submit("play", 0, 0)
    rig.submit("stop", 0, 0)
    rig.run_to(total)
    assert not rig.main[96000:].any()
    assert rig.cell(0, 0)["state"] == "idle"


def test_last_command_in_a_block_wins_record_then_stop_on_empty_cell() -> None:
    total = 24000 * 5
    rig = Rig(total, ramp(total))
    rig.run_to(1000)
    rig.submit("record", 2, 3)
    rig.submit("stop", 2, 3)
    rig.run_to(total)
    c = rig.cell(2, 3)
    assert (c["state"], c["beats"]) == ("empty", 0)
    assert rig.column(2) == {"beats": 0, "length_frames": 0, "position": 0, "running": False}


def test_commands_for_different_cells_in_one_block_all_apply() -> None:
    total = 24000 * 6
    x = ramp(total)
    rig = Rig(total, x)
    rig.run_to(1000)
    rig.submit("record", 0, 0)
    rig.submit("record", 1, 2)
    rig.run_to(24000 + 1000)
    rig.submit("record", 0, 0)
    rig.submit("record", 1, 2)
    rig.run_to(total)
    for c, r in ((0, 0), (1, 2)):
        st = rig.cell(c, r)
        assert (st["state"], st["beats"], st["length_frames"]) == ("playing", 1, 24000)
    # two identical loops (both recorded beat 1, frames 24000..48000), summed
    loop = x[24000:48000] * np.float32(2)
    assert not rig.main[:48000].any()
    assert_same(rig.main[48000:], loop[np.arange(total - 48000) % 24000])


# ---------------------------------------------------------------------------- tempo


def test_tempo_change_without_loops_applies_at_the_next_boundary() -> None:
    total = 24000 * 6
    rig = Rig(total, click=True, click_volume=1.0)
    rig.run_to(1000)
    rig.submit("tempo", 150)
    rig.run_to(23999)
    assert rig.status()["tempo"] == 120
    rig.run_to(24001)
    assert rig.status()["tempo"] == 150
    rig.run_to(total)
    # boundaries from beat 1 on are 19200 frames apart
    onsets = [f for f in range(1, total) if rig.click[f] != 0 and rig.click[f - 1] == 0]
    assert onsets[:4] == [1, 24001, 24001 + 19200, 24001 + 2 * 19200]


def test_tap_tempo_sets_the_tempo_at_the_next_boundary() -> None:
    """Taps 20000 frames apart at 48 kHz are 144 BPM (docs/engine.md: average of the last
    taps, applied like ``tempo``)."""
    total = 24000 * 5
    rig = Rig(total)
    for k in range(3):  # the second tap already sets a tempo for the next boundary (72000)
        rig.run_to(30000 + 20000 * k)
        rig.submit("tap")
    rig.run_to(72000)
    assert rig.status()["tempo"] == 120
    rig.run_to(72001)
    assert rig.status()["tempo"] == pytest.approx(144.0)
    assert rig.status()["next_beat_frame"] == 72000 + 20000


def test_last_command_before_the_boundary_wins_across_blocks() -> None:
    """docs/engine.md: the last command before the boundary wins, also across blocks."""
    total = 24000 * 8
    rig = _two_beat_loop_rig(total)
    rig.run_to(24000 * 5 + 1000)
    rig.submit("stop", 0, 0)
    rig.run_to(24000 * 5 + 9000)
    rig.submit("play", 0, 0)
    rig.run_to(total)
    loop = rig.inputs[24000:72000]
    assert_same(rig.main[72000:], loop[np.arange(total - 72000) % 48000], "kept playing")


def test_defaults_stereo_main_mono_click_five_by_five() -> None:
    rig = Rig(256)
    assert rig.main.shape[1] == 2
    rig.run_to(256)
    st = rig.status()
    assert len(st["cells"]) == 5 and all(len(col) == 5 for col in st["cells"])
    assert len(st["columns"]) == 5
    assert st["cells"][4][4] == {
        "state": "empty", "next_state": "empty", "volume": 1.0, "beats": 0,
        "length_frames": 0, "sync_offset_frames": 0, "consolidated": False, "crc32": None,
        "undo": 0, "redo": 0,
    }
