"""The player's transport, block by block without JACK: loops wrap at their exact frame
inside a block, locate and stop, missed cycles, the metronome on the meter's beats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from companion.engine.player import MAX_COMMANDS, Player, meters_for
from companion.engine.pool import Pool
from companion.engine.render import compile_plan, render_range
from companion.model.timemap import Meter, MeterPoint, TempoMap, TempoPoint

RATE = 48000
BLOCK = 200  # divides neither the loop nor the beat


@pytest.fixture
def project(tmp_path: Path) -> tuple[dict[str, Any], Pool]:
    pool = Pool(tmp_path, RATE)
    rng = np.random.default_rng(3)
    ref = pool.add_array((0.1 * rng.standard_normal((2, RATE))).astype(np.float32), RATE)
    doc = {"format": "ouroboros-project", "version": 1, "sample_rate": RATE,
           "tempo": [{"at": 0.0, "bpm": 120.0}], "meter": [{"at": 0.0, "num": 3, "den": 4}],
           "tracks": [{"id": "t", "kind": "audio", "name": "Noise",
                       "clips": [{"id": "c", "source": ref, "start": 0.0, "length": 4.0,
                                  "loop": True}]}]}
    yield doc, pool
    pool.close()


def run(player: Player, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` of output in blocks of BLOCK: main (2, frames) and click (frames,)."""
    ins = np.zeros((BLOCK, 2), np.float32)
    main = np.zeros((frames, 2), np.float32)
    click = np.zeros(frames, np.float32)
    for a in range(0, frames, BLOCK):
        n = min(BLOCK, frames - a)
        player.process(ins[:n], main[a:a + n], click[a:a + n])
    return main.T, click


def test_a_loop_range_wraps_at_its_exact_frame(project) -> None:
    doc, pool = project
    full = render_range(doc, pool, 0, 3 * RATE, 4096)
    player = Player(RATE, BLOCK)
    player.submit("plan", compile_plan(doc, pool, max_block=BLOCK))
    start, end = 1234, 1234 + 5003
    player.submit("loop", start, end)
    player.submit("locate", start)
    player.submit("play")
    main, _ = run(player, 3 * 5003 + 17)
    span = full[:, start:end]
    want = np.concatenate([span, span, span, span[:, :17]], axis=1)
    np.testing.assert_array_equal(main, want)
    assert player.playhead == start + 17


def test_stop_is_silent_and_locate_starts_where_asked(project) -> None:
    doc, pool = project
    full = render_range(doc, pool, 0, 2 * RATE, 4096)
    player = Player(RATE, BLOCK)
    player.submit("plan", compile_plan(doc, pool, max_block=BLOCK))
    main, _ = run(player, 1000)
    assert not main.any() and player.playhead == 0  # not playing yet
    player.submit("locate", 7777)
    player.submit("play")
    main, _ = run(player, 3000)
    np.testing.assert_array_equal(main, full[:, 7777:10777])
    player.submit("stop")
    main, _ = run(player, 600)
    assert not main.any() and player.playhead == 10777
    snap = player.snapshot()
    assert snap["playhead_frame"] == 10777 and not snap["playing"]
    assert snap["peaks"][0] == pytest.approx(float(np.abs(full[0, 7777:10777]).max()))
    assert player.snapshot()["peaks"] == [0.0, 0.0]  # read, then cleared


def test_missed_cycles_move_the_playhead_through_the_loop(project) -> None:
    doc, pool = project
    player = Player(RATE, BLOCK)
    player.submit("plan", compile_plan(doc, pool, max_block=BLOCK))
    player.submit("loop", 1000, 2000)
    player.submit("locate", 1900)
    player.submit("play")
    run(player, 50)  # 1950
    player.skip(260)  # 1950 + 260 = 2210 -> 1000 + 210
    assert player.playhead == 1210 and player.xruns == 1 and player.missed_frames == 260
    assert player.frame == 50 + 260


def test_the_metronome_clicks_on_the_meters_beats_with_the_bar_accented(project) -> None:
    doc, pool = project
    doc["tracks"] = []
    player = Player(RATE, BLOCK)
    player.submit("plan", compile_plan(doc, pool, max_block=BLOCK))
    tempo = TempoMap([TempoPoint(0.0, 120.0)], RATE)
    meter = Meter([MeterPoint(0.0, 3, 4)])
    player.set_beats([(tempo.frame(x), bar) for x, bar in meter.beats_between(0.0, 4.0)])
    player.submit("metronome", True)
    player.submit("play")
    main, click = run(player, 4 * RATE + 1000)
    onsets = [i for i in range(1, click.shape[0]) if click[i] != 0 and click[i - 1] == 0]
    beats = [tempo.frame(x) for x, _ in meter.beats_between(0.0, 2.01)]
    # a click starts with sin(0) = 0: its first sound is the frame after the beat
    assert [o - 1 for o in onsets] == beats
    peaks = [float(np.abs(click[b:b + 500]).max()) for b in beats]
    accents = [bar for _, bar in meter.beats_between(0.0, 2.01)]
    loud = min(p for p, a in zip(peaks, accents, strict=True) if a)
    soft = max(p for p, a in zip(peaks, accents, strict=True) if not a)
    assert loud > soft * 1.4
    np.testing.assert_array_equal(main[0], click)  # the click is in the main mix too


def test_commands_beyond_the_queue_are_refused_and_counted() -> None:
    player = Player(RATE, BLOCK)
    for i in range(MAX_COMMANDS):
        assert player.submit("locate", i)
    assert not player.submit("locate", 999)
    assert player.dropped_commands == 1
    run(player, BLOCK)
    assert player.playhead == MAX_COMMANDS - 1 and not player.commands


def test_each_root_track_has_its_meter(project) -> None:
    doc, pool = project
    quiet = dict(doc["tracks"][0], id="q", name="Quiet", volume=0.25,
                 clips=[dict(doc["tracks"][0]["clips"][0], id="c2")])
    doc["tracks"].append(quiet)
    plan = compile_plan(doc, pool, max_block=BLOCK)
    player = Player(RATE, BLOCK)
    player.submit("plan", plan, meters_for(plan, ["t", "q", "gone"]))
    player.submit("play")
    run(player, 5000)
    alone = render_range({**doc, "tracks": [doc["tracks"][0]]}, pool, 0, 5000, 4096)
    tracks = player.snapshot()["tracks"]
    assert set(tracks) == {"t", "q"}
    for ch in (0, 1):
        assert tracks["t"][ch] == pytest.approx(float(np.abs(alone[ch]).max()))
        assert tracks["q"][ch] == pytest.approx(0.25 * tracks["t"][ch], rel=1e-6)
    assert player.snapshot()["tracks"] == {"t": [0.0, 0.0], "q": [0.0, 0.0]}


def test_replaced_plans_are_freed_by_the_control_side_and_do_not_pile_up(project) -> None:
    import gc
    import weakref

    doc, pool = project
    player = Player(RATE, BLOCK)
    plan = compile_plan(doc, pool, max_block=BLOCK)
    player.submit("plan", plan)
    run(player, BLOCK)
    watched = [weakref.ref(plan)]
    for i in range(20):  # edits while stopped: each plan replaced before it plays
        doc["tracks"][0]["volume"] = 1.0 - i / 40
        plan = compile_plan(doc, pool, max_block=BLOCK, previous=plan)
        watched.append(weakref.ref(plan))
        player.submit("plan", plan)
        run(player, BLOCK)
        player.collect_retired()
    del plan
    gc.collect()
    alive = sum(w() is not None for w in watched)
    assert alive <= 7, alive  # the playing plan and the few a swap still looks back at
    player.submit("play")
    run(player, 4 * BLOCK)  # the newest plan takes over: the chain behind it is let go
    assert player.collect_retired() >= 1
    gc.collect()
    assert sum(w() is not None for w in watched) == 1
    assert watched[-1]() is player.plan
