"""Bounce (companion/engine/bounce.py): a track rendered as the mix hears it, pre-fader, into
the pool; frozen in place, the project renders the same samples as before.

Bounce equals playback bit for bit, effects included: the frozen project and the original
are rendered by the same renderer from frame 0, the bounce was rendered from frame 0 too (so
every effect saw the same input history), and a clip at gain 1 without fades copies its
source's float32 samples. A tolerance would only hide a real difference, so there is none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from companion.engine.bounce import bounce_track, render_track
from companion.engine.pool import Pool
from companion.engine.render import compile_plan, render_range
from companion.errors import ProjectError
from companion.model.document import Project

SR = 8000


@pytest.fixture
def pool(tmp_path: Path) -> Any:
    with Pool(tmp_path / "pool", SR) as p:
        yield p


def noise(pool: Any, frames: int = 3000, seed: int = 1, channels: int = 2) -> str:
    rng = np.random.default_rng(seed)
    return str(pool.add_array((rng.standard_normal((channels, frames)) * 0.3)
                              .astype(np.float32), SR))


def mix(data: dict[str, Any], pool: Any, end: int | None = None) -> np.ndarray:
    return render_range(data, pool, 0, end)


def freeze_and_compare(p: Project, tid: str, pool: Any) -> tuple[np.ndarray, np.ndarray]:
    """Render the project, freeze ``tid`` and render again; unfreeze and check the project
    is back. Returns both renders."""
    before = p.to_interchange()
    a = mix(before, pool)
    b = bounce_track(before, tid, pool)
    p.freeze(tid, b)
    frozen = mix(p.to_interchange(), pool, a.shape[1])
    p.unfreeze(tid)
    assert p.to_interchange() == before
    return a, frozen


def test_a_plain_track_bounces_to_its_own_samples_and_plays_back_bit_for_bit(pool):
    ref = noise(pool)
    p = Project.create("a", sample_rate=SR, bpm=97.0)
    g = p.add_track("meta", "Group")
    g.offset = 0.37
    t = p.add_track("audio", "Take", parent=g.id)
    t.add_clip(ref, 0.3, 0.7, gain=0.8, fade_in=0.01, fade_out=0.02)
    t.add_clip(ref, 0.6, 0.5, offset=0.05, reversed=True)
    # mix settings stay live on the result
    t.volume, t.pan = 0.5, 0.3
    t.add_automation_point("volume", 0.4, 0.2)
    t.add_automation_point("volume", 1.2, 1.5, "exp")
    bus = p.add_track("bus", "Verb")
    bus.add_effect("reverb", {"room_size": 0.3})
    t.set_send(bus.id, 0.4)
    other = p.add_track("audio", "Other")
    other.add_clip(ref, 0.1, 1.0)
    data = p.to_interchange()
    r = render_track(data, t.id, pool)
    # the track alone, unity gain, no effects: exactly what it feeds its metatrack
    alone = p.to_interchange()
    solo = next(c for c in alone["tracks"][0]["children"] if c["id"] == t.id)
    solo.update(volume=1.0, pan=0.0, automation=[], sends=[])
    alone["tracks"] = [alone["tracks"][0]]
    ref_out = render_range(alone, pool, r.start_frame, r.end_frame)
    assert np.array_equal(r.data, ref_out)
    assert np.any(r.data != 0)
    # the range is exactly the clips' frames: nothing before the first, nothing after
    plan = compile_plan(alone, pool)
    assert r.start_frame == plan.tempo.frame(0.37 + 0.3)
    assert r.end_frame == plan.tempo.frame(0.37 + 1.1)
    a, b = freeze_and_compare(p, t.id, pool)
    assert np.array_equal(a, b)


def test_effects_latency_tails_and_master_chain_play_back_bit_for_bit(pool):
    ref = noise(pool, 4000, seed=2)
    p = Project.create("a", sample_rate=SR, bpm=120.0)
    p.set_tempo([{"at": 0.0, "bpm": 120.0, "ramp": True}, {"at": 2.0, "bpm": 90.0}])
    g = p.add_track("meta", "Drums")
    g.offset = 0.25
    k = p.add_track("audio", "Kick", parent=g.id)
    k.add_clip(ref, 0.5, 0.5)
    fx = k.add_effect("chorus")  # an LFO: its phase at the clip depends on its history
    k.add_automation_point(f"{fx}.mix", 0.5, 0.1)
    k.add_automation_point(f"{fx}.mix", 1.0, 0.9)
    s = p.add_track("audio", "Snare", parent=g.id)
    s.add_clip(ref, 0.75, 0.25, offset=0.1)
    g.add_effect("limiter")  # latency: the rest of the mix is delayed to meet it
    g.add_effect("reverb", {"room_size": 0.5})  # a tail past the last clip
    g.volume = 0.7
    p.add_track("audio", "Bass").add_clip(ref, 0.0, 2.0, gain=0.5)
    p.master.add_effect("compressor")
    data = p.to_interchange()
    r = render_track(data, g.id, pool)
    plan = compile_plan(data, pool)
    assert r.start_frame == plan.tempo.frame(0.25 + 0.5)
    assert r.end_frame > plan.tempo.frame(0.25 + 1.0)  # the reverb's tail
    a, b = freeze_and_compare(p, g.id, pool)
    assert np.array_equal(a, b)


def test_midi_track_bounces_its_instrument_with_the_release(pool):
    p = Project.create("a", sample_rate=SR)
    m = p.add_track("midi", "Synth")
    m.instrument = {"kind": "synth", "wave": "saw", "attack": 0.0, "decay": 0.1,
                    "sustain": 0.5, "release": 0.3}
    m.add_midi_clip(0.5, 1.0, notes=[{"at": 0.0, "length": 0.5, "pitch": 60},
                                     {"at": 0.25, "length": 0.75, "pitch": 67}])
    m.add_effect("delay")
    p.add_track("audio", "Other").add_clip(noise(pool), 0.0, 0.5)
    r = render_track(p.to_interchange(), m.id, pool)
    assert r.end_frame >= compile_plan(p.to_interchange(), pool).tempo.frame(1.5) + 0.3 * SR
    a, b = freeze_and_compare(p, m.id, pool)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("block", [1, 37, 509])
def test_any_block_size_gives_the_same_bounce(pool, block):
    p = Project.create("a", sample_rate=SR)
    t = p.add_track("audio", "T")
    t.add_clip(noise(pool, 800), 0.1, 0.3)
    t.add_effect("eq3", {"low_gain_db": 6.0})
    data = p.to_interchange()
    one = render_track(data, t.id, pool)
    split = render_track(data, t.id, pool, block_size=block)
    assert np.array_equal(one.data, split.data)


def test_the_bounce_is_stored_bit_for_bit_and_progress_is_reported(pool):
    p = Project.create("a", sample_rate=SR)
    t = p.add_track("audio", "T")
    t.add_clip(noise(pool, 2000, channels=1), 0.0, 0.5, gain=0.3)
    seen: list[tuple[int, int]] = []
    r = render_track(p.to_interchange(), t.id, pool)
    b = bounce_track(p.to_interchange(), t.id, pool, block_size=512,
                     progress=lambda d, n: seen.append((d, n)))
    src = pool.source(b.ref)
    out = np.zeros((2, src.frames), np.float32)
    src.read(0, out)
    assert src.frames == b.frames == r.data.shape[1]
    assert np.array_equal(out, r.data)
    assert seen[-1] == (b.frames, b.frames) and len(seen) == -(-b.frames // 512)


def test_speeds_that_multiply_to_one_are_fine_others_are_refused_naming_the_metatrack(pool):
    ref = noise(pool, 1000)
    p = Project.create("a", sample_rate=SR)
    outer = p.add_track("meta", "Outer")
    outer.speed = 2.0
    inner = p.add_track("meta", "Inner", parent=outer.id)
    inner.speed = 0.5
    t = p.add_track("audio", "T", parent=inner.id)
    t.add_clip(ref, 0.2, 0.2)
    a, b = freeze_and_compare(p, t.id, pool)
    assert np.array_equal(a, b)
    inner.speed = 1.0
    with pytest.raises(ProjectError, match=rf'metatrack {outer.id} "Outer" whose speed \(2'):
        render_track(p.to_interchange(), t.id, pool)
    # the metatrack with the speed bounces fine (its children are varispeeded inside)
    a, b = freeze_and_compare(p, outer.id, pool)
    assert np.array_equal(a, b)


def test_what_cannot_be_bounced_is_refused_naming_the_track(pool):
    ref = noise(pool, 500)
    p = Project.create("a", sample_rate=SR)
    bus = p.add_track("bus", "Verb")
    empty = p.add_track("audio", "Empty")
    g = p.add_track("meta", "G")
    inner_bus = p.add_track("bus", "Inner bus", parent=g.id)
    src = p.add_track("audio", "Src")
    src.add_clip(ref, 0, 0.1)
    src.set_send(inner_bus.id)
    data = p.to_interchange()
    with pytest.raises(ProjectError, match=f"track {bus.id} .*is a bus"):
        render_track(data, bus.id, pool)
    with pytest.raises(ProjectError, match=f"track {empty.id} .*nothing to bounce"):
        render_track(data, empty.id, pool)
    with pytest.raises(ProjectError, match="track nope: does not exist"):
        render_track(data, "nope", pool)
    with pytest.raises(ProjectError, match=f"holds bus {inner_bus.id}.*{src.id}"):
        render_track(data, g.id, pool)


def test_sends_from_inside_to_outside_buses_are_reported_not_bounced(pool):
    p = Project.create("a", sample_rate=SR)
    bus = p.add_track("bus", "Verb")
    g = p.add_track("meta", "G")
    t = p.add_track("audio", "T", parent=g.id)
    t.add_clip(noise(pool, 500), 0, 0.1)
    t.set_send(bus.id, 0.5)
    b = bounce_track(p.to_interchange(), g.id, pool)
    assert b.outside_sends == (f"{t.id} > {bus.id}",)
    # the bounce is the metatrack's own output: the track's signal, not its send
    r = render_track(p.to_interchange(), t.id, pool)
    src = pool.source(b.ref)
    out = np.zeros((2, src.frames), np.float32)
    src.read(0, out)
    assert np.array_equal(out, r.data)
