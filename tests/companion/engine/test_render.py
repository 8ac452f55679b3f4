"""The render contract (spec/companion.md), sample for sample, with the real pool and effects.

Sources are ramps and impulses written as real WAV files, so every sample can be checked
against the contract's formulas; every project is also rendered in blocks that divide
nothing (1, 37, 509) and must give the one-go samples bit for bit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from companion.engine.player import Player
from companion.engine.pool import Pool
from companion.engine.render import compile_plan, render_range
from companion.errors import ProjectError
from companion.model.timemap import TempoMap, TempoPoint

SR = 8000
BLOCKS = (1, 37, 509, 4096)


# --------------------------------------------------------------------------- helpers

@pytest.fixture
def pool(tmp_path: Path) -> Any:
    with Pool(tmp_path / "pool", SR) as p:
        yield p


def wav(pool: Any, tmp_path: Path, data: np.ndarray, name: str = "s.wav") -> str:
    """Write ``data`` ((channels, frames)) as a float WAV and import it into the pool."""
    path = tmp_path / name
    sf.write(path, np.asarray(data, np.float32).T, SR, subtype="FLOAT")
    return str(pool.import_file(path))


def ramp(n: int, channels: int = 1) -> np.ndarray:
    """Distinct, exactly representable samples: (k + 1) / 2^15, second channel negated."""
    r = (np.arange(n, dtype=np.float32) + 1) / np.float32(32768)
    return np.stack([r, -r][:channels])


def proj(tracks: list[dict[str, Any]], tempo: list[dict[str, Any]] | None = None,
         **top: Any) -> dict[str, Any]:
    return {"format": "ouroboros-project", "version": 1, "sample_rate": SR,
            "tempo": tempo or [{"at": 0.0, "bpm": 120.0}], "tracks": tracks, **top}


def audio(tid: str, clips: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {"kind": "audio", "id": tid, "name": tid.upper(), "clips": clips, **kw}


def clip(cid: str, source: str, start: float, length: float, **kw: Any) -> dict[str, Any]:
    return {"id": cid, "source": source, "start": start, "length": length, **kw}


def render_all(project: dict[str, Any], pool: Any, start: int, end: int,
               **kw: Any) -> np.ndarray:
    """One go, then every block size of BLOCKS: all must agree exactly."""
    whole = render_range(project, pool, start, end, block_size=max(1, end - start), **kw)
    for b in BLOCKS:
        got = render_range(project, pool, start, end, block_size=b, **kw)
        np.testing.assert_array_equal(got, whole, err_msg=f"block size {b}")
    return whole


def frame(x: float, bpm: float = 120.0) -> int:
    return math.floor(x * 240.0 / bpm * SR + 0.5)


# --------------------------------------------------------------------------- clips

def test_clip_copies_source_exactly_from_its_start_frame(pool: Any, tmp_path: Path) -> None:
    ref = wav(pool, tmp_path, ramp(5000))
    p = proj([audio("a", [clip("c", ref, 0.1, 0.25)])])
    S, E = frame(0.1), frame(0.35)
    out = render_all(p, pool, 0, E + 50)
    assert not out[:, :S].any() and not out[:, E:].any()
    np.testing.assert_array_equal(out[0, S:E], ramp(5000)[0, :E - S])
    np.testing.assert_array_equal(out[1, S:E], ramp(5000)[0, :E - S])  # mono feeds both


def test_stereo_source_keeps_its_channels(pool: Any, tmp_path: Path) -> None:
    src = ramp(2000, 2)
    ref = wav(pool, tmp_path, src)
    out = render_all(proj([audio("a", [clip("c", ref, 0.0, 0.1)])]), pool, 0, 1700)
    np.testing.assert_array_equal(out[:, :frame(0.1)], src[:, :frame(0.1)])


def test_offset_rounds_and_silence_past_the_source_end(pool: Any, tmp_path: Path) -> None:
    src = ramp(500)
    ref = wav(pool, tmp_path, src)
    offset = 100.4 / SR  # o = floor(100.4 + 0.5) = 100
    p = proj([audio("a", [clip("c", ref, 0.0, 0.25, offset=offset)])])
    out = render_all(p, pool, 0, frame(0.25))
    np.testing.assert_array_equal(out[0, :400], src[0, 100:])
    assert not out[:, 400:].any()


def test_loop_wraps_modulo_the_source_length(pool: Any, tmp_path: Path) -> None:
    src = ramp(300)
    ref = wav(pool, tmp_path, src)
    p = proj([audio("a", [clip("c", ref, 0.0, 0.25, offset=250 / SR, loop=True)])])
    N = frame(0.25)
    out = render_all(p, pool, 0, N)
    expect = src[0, (250 + np.arange(N)) % 300]
    np.testing.assert_array_equal(out[0], expect)


def test_reversed_takes_frame_n_minus_1_minus_i(pool: Any, tmp_path: Path) -> None:
    src = ramp(3000)
    ref = wav(pool, tmp_path, src)
    p = proj([audio("a", [clip("c", ref, 0.05, 0.1, offset=10 / SR, reversed=True)])])
    S, E = frame(0.05), frame(0.15)
    N = E - S
    out = render_all(p, pool, 0, E + 10)
    fwd = src[0, 10:10 + N]
    np.testing.assert_array_equal(out[0, S:E], fwd[::-1])


def test_reversed_loop_past_end(pool: Any, tmp_path: Path) -> None:
    src = ramp(70)
    ref = wav(pool, tmp_path, src)
    p = proj([audio("a", [clip("c", ref, 0.0, 0.05, loop=True, reversed=True)])])
    N = frame(0.05)
    out = render_all(p, pool, 0, N)
    fwd = src[0, np.arange(N) % 70]
    np.testing.assert_array_equal(out[0], fwd[::-1])


def test_gain_and_fades_follow_the_exact_formulas(pool: Any, tmp_path: Path) -> None:
    src = ramp(4000)
    ref = wav(pool, tmp_path, src)
    p = proj([audio("a", [clip("c", ref, 0.0, 0.2, gain=0.7, fade_in=0.01,
                                    fade_out=0.0333)])])
    N = frame(0.2)
    Fi, Fo = math.floor(0.01 * SR + 0.5), math.floor(0.0333 * SR + 0.5)
    i = np.arange(N, dtype=np.float64)
    g = 0.7 * np.minimum(1.0, i / Fi) * np.minimum(1.0, (N - i) / Fo)
    expect = (src[0, :N] * g).astype(np.float32)
    out = render_all(p, pool, 0, N)
    np.testing.assert_array_equal(out[0], expect)
    assert out[0, 0] == 0.0 and out[0, N - 1] != 0.0


def test_overlapping_clips_add(pool: Any, tmp_path: Path) -> None:
    src = ramp(5000)
    ref = wav(pool, tmp_path, src)
    p = proj([audio("a", [clip("c1", ref, 0.0, 0.2), clip("c2", ref, 0.1, 0.2)])])
    out = render_all(p, pool, 0, frame(0.3))
    expect = np.zeros(frame(0.3), np.float32)
    expect[:frame(0.2)] += src[0, :frame(0.2)]
    expect[frame(0.1):frame(0.3)] += src[0, :frame(0.3) - frame(0.1)]
    np.testing.assert_array_equal(out[0], expect)


def test_tempo_ramp_places_clips_by_the_closed_form(pool: Any, tmp_path: Path) -> None:
    src = ramp(40000)
    ref = wav(pool, tmp_path, src)
    tempo = [{"at": 0.0, "bpm": 60.0, "ramp": True}, {"at": 2.0, "bpm": 180.0}]
    p = proj([audio("a", [clip("c", ref, 0.75, 0.5)])], tempo=tempo)
    tm = TempoMap([TempoPoint(0.0, 60.0, True), TempoPoint(2.0, 180.0)], SR)
    S, E = tm.frame(0.75), tm.frame(1.25)
    # the contract's formula, independently: 240 (x1-x0)/(b1-b0) ln(bpm(x)/b0)
    assert S == math.floor(240 * 2 / 120 * math.log((60 + 60 * 0.75) / 60) * SR + 0.5)
    out = render_all(p, pool, 0, E + 5)
    assert not out[:, :S].any() and not out[:, E:].any()
    np.testing.assert_array_equal(out[0, S:E], src[0, :E - S])


# --------------------------------------------------------------------------- mix

def test_volume_then_balance_law_pan(pool: Any, tmp_path: Path) -> None:
    src = ramp(1000)
    ref = wav(pool, tmp_path, src)
    for pan in (-0.5, 0.0, 0.25, 1.0):
        p = proj([audio("a", [clip("c", ref, 0.0, 0.1)], volume=0.5, pan=pan)])
        out = render_all(p, pool, 0, 800)
        left = (src[0, :800] * (0.5 * min(1.0, 1.0 - pan))).astype(np.float32)
        right = (src[0, :800] * (0.5 * min(1.0, 1.0 + pan))).astype(np.float32)
        np.testing.assert_array_equal(out[0], left)
        np.testing.assert_array_equal(out[1], right)


def test_metatrack_offset_and_speed_compose_at_unity_product(pool: Any,
                                                             tmp_path: Path) -> None:
    src = ramp(5000)
    ref = wav(pool, tmp_path, src)
    inner = {"kind": "meta", "id": "m2", "speed": 2.0, "offset": 0.5,
             "children": [audio("a", [clip("c", ref, 0.5, 0.25)])]}
    outer = {"kind": "meta", "id": "m1", "speed": 0.5, "offset": 0.125, "children": [inner]}
    p = proj([outer])
    # child position c in m2 -> 0.5 + c / 2 in m1 -> 0.125 + (0.5 + c/2) / 0.5 at the root
    start_root = 0.125 + (0.5 + 0.5 / 2.0) / 0.5
    end_root = 0.125 + (0.5 + 0.75 / 2.0) / 0.5
    S, E = frame(start_root), frame(end_root)
    out = render_all(p, pool, 0, E + 20)
    assert not out[:, :S].any() and not out[:, E:].any()
    np.testing.assert_array_equal(out[0, S:E], src[0, :E - S])  # s == 1: exact copy


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * SR / len(x))


@pytest.mark.parametrize("speed", [2.0, 0.5, 1.5])
def test_varispeed_pitch_follows_speed(pool: Any, tmp_path: Path, speed: float) -> None:
    t = np.arange(4 * SR) / SR
    ref = wav(pool, tmp_path, np.sin(2 * np.pi * 500.0 * t)[None])
    meta = {"kind": "meta", "id": "m", "speed": speed,
            "children": [audio("a", [clip("c", ref, 0.0, 1.0 * speed)])]}
    p = proj([meta])
    out = render_all(p, pool, 0, 4096)
    assert _peak_hz(out[0, 1000:3048]) == pytest.approx(500.0 * speed, abs=8.0)
    # it is a sine at that rate, interpolated accurately
    k = np.arange(1000, 3048)
    expect = np.sin(2 * np.pi * 500.0 * speed * k / SR)
    assert np.max(np.abs(out[0, 1000:3048] - expect)) < 1e-3


def test_varispeed_is_band_limited(pool: Any, tmp_path: Path) -> None:
    # 3 kHz at speed 2 would be 6 kHz: above the output's Nyquist (4 kHz); it must not
    # fold back as 2 kHz
    t = np.arange(4 * SR) / SR
    ref = wav(pool, tmp_path, np.sin(2 * np.pi * 3000.0 * t)[None])
    meta = {"kind": "meta", "id": "m", "speed": 2.0,
            "children": [audio("a", [clip("c", ref, 0.0, 2.0)])]}
    out = render_range(proj([meta]), pool, 0, 4096, block_size=509)
    rms = float(np.sqrt(np.mean(out[0, 500:3500] ** 2)))
    assert rms < 1e-3  # -60 dB against the sine's 0.707


def test_mute_and_solo(pool: Any, tmp_path: Path) -> None:
    refs = [wav(pool, tmp_path, np.full((1, 100), v, np.float32), f"{v}.wav")
            for v in (1.0, 2.0, 4.0, 8.0)]

    def project(a: dict[str, Any], b: dict[str, Any], c: dict[str, Any],
                d: dict[str, Any]) -> dict[str, Any]:
        m = {"kind": "meta", "id": "m", "children": [
            audio("b", [clip("cb", refs[1], 0.0, 0.001)], **b),
            audio("c", [clip("cc", refs[2], 0.0, 0.001)], **c)], **a}
        return proj([m, audio("d", [clip("cd", refs[3], 0.0, 0.001)], **d)])

    def level(**flags: dict[str, Any]) -> float:
        p = project(flags.get("m", {}), flags.get("b", {}), flags.get("c", {}),
                    flags.get("d", {}))
        return float(render_range(p, pool, 0, 4, block_size=3)[0, 0])

    assert level() == 14.0
    assert level(b={"mute": True}) == 12.0
    assert level(m={"mute": True}) == 8.0  # a muted metatrack silences all it contains
    assert level(b={"solo": True}) == 2.0
    assert level(m={"solo": True}) == 6.0  # a soloed ancestor: its children are heard
    assert level(d={"solo": True}, b={"solo": True}) == 10.0
    assert level(m={"solo": True, "mute": True}) == 0.0


def test_sends_pre_and_post_fader_buses_to_buses(pool: Any, tmp_path: Path) -> None:
    ref = wav(pool, tmp_path, np.full((1, 100), 1.0, np.float32))
    a = audio("a", [clip("c", ref, 0.0, 0.001)], volume=0.5,
              sends=[{"bus": "b1", "level": 0.25},
                     {"bus": "b2", "level": 0.5, "pre_fader": True}])
    b1 = {"kind": "bus", "id": "b1", "volume": 2.0, "sends": [{"bus": "b2", "level": 1.0}]}
    b2 = {"kind": "bus", "id": "b2", "pan": -1.0}
    p = proj([a, b1, b2], master={"volume": 0.5, "effects": []})
    out = render_all(p, pool, 0, 8)
    # a: 0.5 -> master; b1 gets 0.5*0.25 -> *2 = 0.25 -> master and b2;
    # b2 gets 1*0.5 (pre-fader) + 0.25 = 0.75 -> pan -1: left 0.75, right 0
    left = (0.5 + 0.25 + 0.75) * 0.5
    right = (0.5 + 0.25) * 0.5
    assert out[0, 0] == pytest.approx(left, abs=1e-7)
    assert out[1, 0] == pytest.approx(right, abs=1e-7)


def test_solo_does_not_silence_buses(pool: Any, tmp_path: Path) -> None:
    ref = wav(pool, tmp_path, np.full((1, 100), 1.0, np.float32))
    p = proj([audio("a", [clip("c", ref, 0.0, 0.001)], solo=True,
                    sends=[{"bus": "b", "level": 0.5}]),
              audio("x", [clip("cx", ref, 0.0, 0.001)]),
              {"kind": "bus", "id": "b"}])
    assert render_range(p, pool, 0, 4, block_size=4)[0, 0] == 1.5


def test_master_chain_gain_effect_is_exact(pool: Any, tmp_path: Path) -> None:
    src = ramp(500)
    ref = wav(pool, tmp_path, src)
    fx = [{"id": "g", "kind": "gain", "params": {"db": -6.0}}]
    p = proj([audio("a", [clip("c", ref, 0.0, 0.05)])], master={"volume": 1.0, "effects": fx})
    out = render_all(p, pool, 0, 400)
    np.testing.assert_allclose(out[0], src[0, :400] * 10 ** (-6 / 20), rtol=1e-6)


# --------------------------------------------------------------------------- automation

def _lane_expect(fa: int, fb: int, va: float, vb: float, curve: str, n: int) -> np.ndarray:
    f = np.arange(n, dtype=np.float64)
    t = np.clip((f - fa) / (fb - fa), 0.0, 1.0)
    if curve == "linear":
        v = va + (vb - va) * t
    elif curve == "step":
        v = np.full(n, va)
        v[f >= fb] = vb
    elif curve == "scurve":
        v = va + (vb - va) * (3 * t ** 2 - 2 * t ** 3)
    else:
        v = va * (vb / va) ** t
    v[f < fa] = va
    v[f >= fb] = vb
    return v


@pytest.mark.parametrize("curve", ["linear", "step", "scurve", "exp"])
def test_volume_automation_every_frame(pool: Any, tmp_path: Path, curve: str) -> None:
    ref = wav(pool, tmp_path, np.ones((1, 3000), np.float32))
    lane = {"param": "volume", "points": [{"at": 0.05, "value": 0.25, "curve": curve},
                                          {"at": 0.2, "value": 1.5}]}
    p = proj([audio("a", [clip("c", ref, 0.0, 0.3)], volume=0.1, automation=[lane])])
    out = render_all(p, pool, 0, 2000)
    v = _lane_expect(frame(0.05), frame(0.2), 0.25, 1.5, curve, 2000)
    np.testing.assert_allclose(out[0, :frame(0.3)], v[:frame(0.3)], rtol=1e-6, atol=1e-7)


def test_exp_curve_is_linear_unless_both_positive(pool: Any, tmp_path: Path) -> None:
    ref = wav(pool, tmp_path, np.ones((1, 3000), np.float32))
    lane = {"param": "pan", "points": [{"at": 0.0, "value": -1.0, "curve": "exp"},
                                       {"at": 0.2, "value": 1.0}]}
    p = proj([audio("a", [clip("c", ref, 0.0, 0.3)], automation=[lane])])
    out = render_all(p, pool, 0, 1600)
    pan = _lane_expect(0, frame(0.2), -1.0, 1.0, "linear", 1600)
    np.testing.assert_allclose(out[0], np.minimum(1, 1 - pan), atol=1e-7)
    np.testing.assert_allclose(out[1], np.minimum(1, 1 + pan), atol=1e-7)


def test_effect_param_automation_per_block(pool: Any, tmp_path: Path) -> None:
    ref = wav(pool, tmp_path, np.ones((1, 3000), np.float32))
    fx = [{"id": "g", "kind": "gain", "params": {"db": 0.0}}]
    lane = {"param": "g.db", "points": [{"at": 0.0, "value": 0.0, "curve": "step"},
                                        {"at": 0.05, "value": -20.0}]}
    p = proj([audio("a", [clip("c", ref, 0.0, 0.3)], effects=fx, automation=[lane])])
    out = render_range(p, pool, 0, 1600, block_size=800)  # 0.05 wn = frame 800
    assert out[0, 0] == 1.0 and out[0, 799] == 1.0  # first block: value at its start
    assert out[0, 800] == pytest.approx(0.1, rel=1e-6)


# --------------------------------------------------------------------------- latency, tails

class _LatencyFx:
    """A stand-in effect delaying by ``frames`` and saying so (the real kinds have none
    but the limiter's look-ahead)."""

    def __init__(self, frames: int):
        self.latency_frames = frames
        self.tail_s = 0.0
        self.buf = np.zeros((2, frames), np.float32)

    def process(self, block: np.ndarray) -> None:
        joined = np.concatenate([self.buf, block], axis=1)
        block[:] = joined[:, :block.shape[1]]
        self.buf = joined[:, block.shape[1]:]

    def set_param(self, name: str, value: Any) -> None:
        pass

    def reset(self) -> None:
        self.buf[:] = 0.0


def _factory(latencies: dict[str, int]) -> Any:
    from companion.engine.effects import create_effect

    def make(spec: dict[str, Any], sr: int, mb: int) -> Any:
        if spec["id"] in latencies:
            return _LatencyFx(latencies[spec["id"]])
        return create_effect(spec, sr, mb)
    return make


def test_latency_compensation_keeps_tracks_aligned(pool: Any, tmp_path: Path) -> None:
    imp = np.zeros((1, 200), np.float32)
    imp[0, 0] = 1.0
    ref = wav(pool, tmp_path, imp)
    fx = lambda i: [{"id": i, "kind": "gain", "params": {"db": 0.0}}]  # noqa: E731
    bus = {"kind": "bus", "id": "b", "effects": fx("lb")}
    p = proj([audio("a", [clip("c1", ref, 0.1, 0.02)], effects=fx("la"),
                    sends=[{"bus": "b", "level": 1.0}]),
              audio("x", [clip("c2", ref, 0.1, 0.02)]),
              {"kind": "meta", "id": "m", "effects": fx("lm"), "children": [
                  audio("y", [clip("c3", ref, 0.1, 0.02)])]},
              bus], master={"volume": 1.0, "effects": fx("lmaster")})
    lat = {"la": 7, "lb": 3, "lm": 11, "lmaster": 5}
    out = render_all(p, pool, 0, 2000, effect_factory=_factory(lat))
    S = frame(0.1)
    nz = np.flatnonzero(out[0])
    assert nz.tolist() == [S]
    assert out[0, S] == 4.0  # a, a's send through the bus, x, y all on one frame


def test_default_range_ends_after_the_last_clip_plus_tails(pool: Any, tmp_path: Path) -> None:
    ref = wav(pool, tmp_path, np.ones((1, 100), np.float32))
    p = proj([audio("a", [clip("c", ref, 0.5, 0.25)])])
    assert compile_plan(p, pool).end_frame == frame(0.75)
    fx = [{"id": "d", "kind": "delay", "params": {"time_s": 0.1, "feedback": 0.0}}]
    p2 = proj([audio("a", [clip("c", ref, 0.5, 0.25)], effects=fx)])
    plan = compile_plan(p2, pool)
    assert plan.end_frame >= frame(0.75) + int(0.1 * SR)
    assert render_range(p2, pool).shape == (2, plan.end_frame)


# --------------------------------------------------------------------------- live swaps

def play(player: Player, blocks: int) -> np.ndarray:
    """``blocks`` blocks of the player's audio callback, as (2, frames)."""
    n = player.block_size
    inputs = np.zeros((n, 2), np.float32)
    main = np.zeros((n, 2), np.float32)
    click = np.zeros(n, np.float32)
    got = []
    for _ in range(blocks):
        player.process(inputs, main, click)
        got.append(main.T.copy())
    return np.concatenate(got, axis=1)


def test_plan_swap_glides_an_edited_volume_and_keeps_unedited_exact(pool: Any,
                                                                     tmp_path: Path) -> None:
    src = ramp(20000)
    ref = wav(pool, tmp_path, src)

    def p(vol: float) -> dict[str, Any]:
        return proj([audio("a", [clip("c", ref, 0.0, 1.0)], volume=vol),
                     audio("b", [clip("c2", ref, 0.0, 1.0)], pan=1.0)])

    player = Player(SR, 256)
    plan = compile_plan(p(1.0), pool, max_block=256, realtime=True)
    player.submit("plan", plan)
    player.submit("play")
    play(player, 1)
    # compiled while the first plan plays, handed over at the next block start
    player.submit("plan", compile_plan(p(0.0), pool, max_block=256, previous=plan,
                                       realtime=True))
    got = play(player, 9)
    assert player.plans_swapped == 2
    # the right channel holds b (unchanged) plus a: a glides from 1 to 0 over 10 ms (80)
    b = src[0, 256:2560]
    a_gain = np.diff(np.concatenate([[0.0], got[1] - b]))
    assert np.all(np.abs(got[0]) <= np.abs(src[0, 256:2560]) + 1e-7)
    assert got[0, 0] == pytest.approx(src[0, 256], rel=1e-6)  # no jump at the swap
    assert not got[0, 80:].any()  # then silent, exactly
    np.testing.assert_array_equal(got[1, 80:], b[80:])  # b was never touched: exact
    assert np.all(np.abs(a_gain) < 0.01)


def test_swap_keeps_effect_instances_of_unchanged_tracks(pool: Any, tmp_path: Path) -> None:
    ref = wav(pool, tmp_path, np.ones((1, 100), np.float32))
    fx = [{"id": "r", "kind": "reverb", "params": {}}]
    p1 = proj([audio("a", [clip("c", ref, 0.0, 0.01)], effects=fx)])
    plan1 = compile_plan(p1, pool)
    plan2 = compile_plan(p1, pool, previous=plan1)
    assert plan2._by_id["a"].fx[0].effect is plan1._by_id["a"].fx[0].effect
    fx2 = [{"id": "r2", "kind": "reverb", "params": {}}]
    plan3 = compile_plan(proj([audio("a", [], effects=fx2)]), pool, previous=plan2)
    assert plan3._by_id["a"].fx[0].effect is not plan1._by_id["a"].fx[0].effect


def test_a_failed_compile_leaves_the_playing_plan_playing(pool: Any, tmp_path: Path) -> None:
    """The player's compile thread (``playserver.Compiler``) refuses a broken edit: nothing
    reaches the player, the plan plays on untouched, the error is kept for the UI; the next
    good edit glides from what is playing."""
    import time

    from companion.engine.playserver import Compiler, PlanMaker

    ref = wav(pool, tmp_path, ramp(20000))

    def p(length: float, vol: float = 1.0) -> dict[str, Any]:
        # as the replica's snapshot has it: every top-level field present
        return proj([audio("a", [clip("c", ref, 0.0, length)], volume=vol)],
                    meter=[{"at": 0.0, "num": 4, "den": 4}])

    class Replica:
        def __init__(self) -> None:
            self.project = p(1.0)

        def apply_update(self, update: bytes) -> None:
            pass

        def snapshot(self) -> dict[str, Any]:
            return self.project

    def wait_for(done: Any) -> None:
        deadline = time.monotonic() + 20
        while not done():
            assert time.monotonic() < deadline, "the compile thread did not answer"
            time.sleep(0.005)

    player = Player(SR, 256)
    replica = Replica()
    maker = PlanMaker(pool, SR, 256)
    compiler = Compiler(player, replica, maker)
    try:
        compiler.recompile()
        wait_for(lambda: compiler.compiles == 1)
        player.submit("play")
        first = play(player, 2)
        np.testing.assert_array_equal(first[0], ramp(20000)[0, :512])
        playing = player.plan
        replica.project = p(-1.0)  # a negative length: refused
        compiler.recompile()
        wait_for(lambda: compiler.last_error != "")
        assert "length" in compiler.last_error
        then = play(player, 2)
        assert player.plan is playing and player.plans_swapped == 1
        np.testing.assert_array_equal(then[0], ramp(20000)[0, 512:1024])
        replica.project = p(1.0, vol=0.0)  # fixed: glides from the plan that played
        compiler.recompile()
        wait_for(lambda: compiler.compiles == 2)
        after = play(player, 1)
        assert compiler.last_error == ""
        assert after[0, 0] == pytest.approx(ramp(20000)[0, 1024], rel=1e-6)
        assert not after[0, 80:].any()
    finally:
        compiler.close()


def test_a_removed_track_fades_out_over_the_glide(pool: Any, tmp_path: Path) -> None:
    ones = wav(pool, tmp_path, np.ones((1, 20000), np.float32))

    def p(*tracks: dict[str, Any]) -> dict[str, Any]:
        return proj(list(tracks))

    a = audio("a", [clip("c", ones, 0.0, 1.0)], volume=0.5, pan=-1.0)
    b = audio("b", [clip("c2", ones, 0.0, 1.0)], pan=1.0)
    player = Player(SR, 64)
    plan = compile_plan(p(a, b), pool, max_block=64, realtime=True)
    player.submit("plan", plan)
    player.submit("play")
    before = play(player, 2)
    assert before[0, -1] == 0.5 and before[1, -1] == 1.0
    player.submit("plan", compile_plan(p(b), pool, max_block=64, previous=plan,
                                       realtime=True))
    got = play(player, 3)
    # a (left only) goes from where it was to silence over 10 ms (80 frames), one step
    # of at most 1/80 of its level per frame; b is untouched
    left = got[0]
    assert left[0] == 0.5
    np.testing.assert_allclose(left[:80], 0.5 * (1.0 - np.arange(80) / 80.0), rtol=1e-6)
    assert not left[80:].any()
    np.testing.assert_array_equal(got[1], np.ones(192, np.float32))
    # and a removed track that was silent (muted) leaves nothing behind
    muted = dict(a, mute=True)
    player2 = Player(SR, 64)
    plan2 = compile_plan(p(muted, b), pool, max_block=64, realtime=True)
    player2.submit("plan", plan2)
    player2.submit("play")
    play(player2, 1)
    player2.submit("plan", compile_plan(p(b), pool, max_block=64, previous=plan2,
                                        realtime=True))
    assert not play(player2, 2)[0].any()


def test_a_fade_goes_on_across_a_second_swap(pool: Any, tmp_path: Path) -> None:
    """Another edit arrives while a removed track is still fading: the fade goes on where
    it was, in the next plan, and ends on time."""
    ones = wav(pool, tmp_path, np.ones((1, 20000), np.float32))
    a = audio("a", [clip("c", ones, 0.0, 1.0)], volume=0.5, pan=-1.0)
    b = audio("b", [clip("c2", ones, 0.0, 1.0)], pan=1.0)
    player = Player(SR, 32)
    first = compile_plan(proj([a, b]), pool, max_block=32, realtime=True)
    player.submit("plan", first)
    player.submit("play")
    play(player, 2)
    second = compile_plan(proj([b]), pool, max_block=32, previous=first, realtime=True)
    player.submit("plan", second)
    got = [play(player, 1)]
    third = compile_plan(proj([dict(b, volume=0.5)]), pool, max_block=32, previous=second,
                         realtime=True)
    player.submit("plan", third)
    got.append(play(player, 3))
    left = np.concatenate(got, axis=1)[0]
    np.testing.assert_allclose(left[:80], 0.5 * (1.0 - np.arange(80) / 80.0), rtol=1e-6)
    assert not left[80:].any()


def test_a_removed_group_fades_through_its_chain_and_sends(pool: Any, tmp_path: Path) -> None:
    """A removed metatrack with a child, a pre-fader send to a surviving bus and an effect:
    all of it fades together into the new plan's bus and master, nothing is cut."""
    ones = wav(pool, tmp_path, np.ones((1, 20000), np.float32))
    gain = [{"id": "g", "kind": "gain", "params": {"db": -6.0}}]
    group = {"kind": "meta", "id": "m", "effects": gain, "volume": 0.5,
             "sends": [{"bus": "bus", "level": 0.25, "pre_fader": True}],
             "children": [audio("a", [clip("c", ones, 0.0, 1.0)])]}
    bus = {"kind": "bus", "id": "bus", "pan": 1.0}
    player = Player(SR, 32)
    plan = compile_plan(proj([group, bus]), pool, max_block=32, realtime=True)
    player.submit("plan", plan)
    player.submit("play")
    before = play(player, 3)
    g = 10 ** (-6.0 / 20)
    # left: the group after its chain and volume; right: the same plus the bus's send
    assert before[0, -1] == pytest.approx(0.5 * g, rel=1e-6)
    assert before[1, -1] == pytest.approx(0.5 * g + 0.25 * g, rel=1e-6)
    player.submit("plan", compile_plan(proj([bus]), pool, max_block=32, previous=plan,
                                       realtime=True))
    got = play(player, 4)
    ramp80 = 1.0 - np.arange(80) / 80.0
    np.testing.assert_allclose(got[0, :80], 0.5 * g * ramp80, rtol=1e-5)
    np.testing.assert_allclose(got[1, :80], 0.75 * g * ramp80, rtol=1e-5)
    assert not got[:, 80:].any()


# --------------------------------------------------------------------------- incremental

def _render(plan: Any, end: int, block: int) -> np.ndarray:
    out = np.zeros((2, end), np.float32)
    for f in range(0, end, block):
        n = min(block, end - f)
        plan.render(f, out[:, f:f + n])
    return out


def test_incremental_compiles_render_the_same_as_fresh_ones(pool: Any,
                                                            tmp_path: Path) -> None:
    """A chain of edits of every kind, each compiled with ``previous=`` the last plan (what
    the player does): every plan renders what a fresh compile of the same project renders,
    bit for bit; unchanged tracks reuse the clips the previous plan resolved, and a tempo
    change resolves everything anew."""
    import copy

    ref = wav(pool, tmp_path, np.stack([ramp(6000)[0], np.sin(np.arange(6000) / 7.0)]))
    mono = wav(pool, tmp_path, ramp(3000), "m.wav")
    lane = {"param": "volume", "points": [{"at": 0.0, "value": 0.2},
                                          {"at": 0.5, "value": 0.9, "curve": "scurve"}]}
    fx_lane = {"param": "g.db", "points": [{"at": 0.0, "value": -3.0},
                                           {"at": 0.4, "value": 2.0}]}
    p0 = proj([
        audio("a", [clip(f"a{i}", ref, 0.1 * i, 0.08, offset=0.01 * i, gain=0.5 + i / 10,
                         fade_in=0.002, fade_out=0.003, loop=i % 2 == 1,
                         reversed=i % 3 == 0) for i in range(6)],
              automation=[lane], sends=[{"bus": "bus", "level": 0.3}]),
        {"kind": "meta", "id": "m", "offset": 0.05, "speed": 1.0, "children": [
            audio("v", [clip("v0", mono, 0.0, 0.3, loop=True), clip("v1", ref, 0.2, 0.2)],
                  pan=-0.4,
                  effects=[{"id": "g", "kind": "gain", "params": {"db": 1.0}}],
                  automation=[fx_lane])]},
        audio("w", [clip("w0", mono, 0.3, 0.25, reversed=True)], volume=0.7),
        {"kind": "bus", "id": "bus", "pan": 0.5,
         "effects": [{"id": "bg", "kind": "gain", "params": {"db": -2.0}}]},
    ], tempo=[{"at": 0.0, "bpm": 120.0}, {"at": 0.5, "bpm": 150.0}])

    def edited(p: dict[str, Any], edit: Any) -> dict[str, Any]:
        q = copy.deepcopy(p)
        edit(q)
        return q

    def tracks(q: dict[str, Any]) -> dict[str, dict[str, Any]]:
        out = {}
        stack = list(q["tracks"])
        while stack:
            t = stack.pop()
            out[t["id"]] = t
            stack.extend(t.get("children", []))
        return out

    edits: list[tuple[str, Any, int]] = [  # what, how, frames the result may differ
        ("a clip moved", lambda q: tracks(q)["a"]["clips"][2].update(start=0.33), 0),
        ("a track's volume", lambda q: tracks(q)["w"].update(volume=0.25), 0),
        ("an effect parameter", lambda q: tracks(q)["bus"]["effects"][0].update(
            params={"db": -9.0}), 128),  # it glides from the old value over 10 ms
        ("an automation point", lambda q: tracks(q)["a"]["automation"][0]["points"][1]
         .update(value=0.4), 0),
        ("a track added", lambda q: q["tracks"].insert(1, audio(
            "x", [clip("x0", ref, 0.15, 0.2, loop=True)], pan=0.2)), 0),
        ("a track removed", lambda q: q["tracks"].pop(3), 0),
        ("a metatrack's speed", lambda q: tracks(q)["m"].update(speed=0.75), 0),
        ("the tempo", lambda q: q.update(tempo=[{"at": 0.0, "bpm": 97.0, "ramp": True},
                                                {"at": 0.6, "bpm": 133.0}]), 0),
        ("a clip moved after the tempo change", lambda q: tracks(q)["x"]["clips"][0]
         .update(start=0.05), 0),
    ]
    end, block = 9000, 64
    plan = compile_plan(p0, pool, max_block=block)
    p = p0
    for what, edit, settle in edits:
        q = edited(p, edit)
        fresh = _render(compile_plan(q, pool, max_block=block), end, block)
        # the plan the chain goes on with is never rendered (a rendered plan would make the
        # next one glide from its gains); a twin compiled the same way is
        nxt = compile_plan(q, pool, max_block=block, previous=plan)
        twin = compile_plan(q, pool, max_block=block, previous=plan)
        got = _render(twin, end, block)
        np.testing.assert_array_equal(got[:, settle:], fresh[:, settle:], err_msg=what)
        assert np.abs(fresh).max() > 0.1, what
        old_a, new_a = plan._by_id["a"], nxt._by_id["a"]
        if what == "the tempo":
            assert new_a.clips is not old_a.clips  # every frame moved: resolved anew
        elif what != "a clip moved":
            assert new_a.clips is old_a.clips, what  # untouched: reused as it was
        plan, p = nxt, q


# --------------------------------------------------------------------------- MIDI, errors

def test_midi_square_note_starts_on_its_frame_inside_a_metatrack(pool: Any) -> None:
    inst = {"kind": "synth", "wave": "square", "attack": 0.0, "decay": 0.0, "sustain": 1.0,
            "release": 0.0}
    midi = {"kind": "midi", "id": "k", "instrument": inst, "clips": [
        {"id": "mc", "start": 0.25, "length": 0.5,
         "notes": [{"at": 0.125, "length": 0.125, "pitch": 69, "velocity": 127}]}]}
    p = proj([{"kind": "meta", "id": "m", "offset": 0.5, "speed": 2.0, "children": [midi]}])
    on = frame(0.5 + (0.25 + 0.125) / 2.0)
    out = render_all(p, pool, 0, on + 400)
    assert not out[:, :on].any()
    assert out[0, on] != 0.0


def test_refused_project_names_the_clip(pool: Any, tmp_path: Path) -> None:
    p = proj([audio("a", [clip("c1", "sha256:" + "0" * 64, 0.0, 1.0)])])
    with pytest.raises(ProjectError) as e:
        compile_plan(p, pool)
    assert e.value.where == 'tracks[0] "A" > clips[0] "c1" > source'


def test_block_larger_than_max_block_is_refused(pool: Any) -> None:
    plan = compile_plan(proj([]), pool, max_block=16)
    with pytest.raises(ValueError):
        plan.render(0, np.zeros((2, 17), np.float32))


def test_varispeed_loops_and_reverses_the_same_in_any_blocks(pool: Any,
                                                            tmp_path: Path) -> None:
    t = np.arange(700) / SR
    ref = wav(pool, tmp_path, np.stack([np.sin(2 * np.pi * 300 * t),
                                        np.cos(2 * np.pi * 200 * t)]))
    meta = {"kind": "meta", "id": "m", "speed": 0.75, "children": [audio("a", [
        clip("c1", ref, 0.0, 0.1, loop=True, offset=0.01, fade_in=0.005),
        clip("c2", ref, 0.05, 0.1, reversed=True, gain=0.5)])]}
    out = render_all(proj([meta]), pool, 0, 3000)
    assert np.abs(out).max() > 0.4


def test_source_bpm_clip_fills_exactly_its_frames(pool: Any, tmp_path: Path) -> None:
    t = np.arange(3 * SR) / SR
    ref = wav(pool, tmp_path, (0.5 * np.sin(2 * np.pi * 440 * t))[None])
    p = proj([audio("a", [clip("c", ref, 0.25, 0.5, source_bpm=90.0)])])
    S, E = frame(0.25), frame(0.75)
    out = render_all(p, pool, 0, E + 100)
    assert not out[:, :S].any() and not out[:, E:].any()
    # 0.5 wn of the source at 90 bpm is 1.333 s, played in 1 s: pitch kept
    assert _peak_hz(out[0, S + 1000:S + 5096]) == pytest.approx(440.0, abs=10.0)


def test_a_locate_clears_effect_tails(pool: Any, tmp_path: Path) -> None:
    imp = np.zeros((1, 10), np.float32)
    imp[0, 0] = 1.0
    ref = wav(pool, tmp_path, imp)
    fx = [{"id": "d", "kind": "delay", "params": {"time_s": 0.05, "feedback": 0.5,
                                                  "mix": 0.5}}]
    plan = compile_plan(proj([audio("a", [clip("c", ref, 0.0, 0.01)], effects=fx)]), pool,
                        max_block=200)
    out = np.zeros((2, 200), np.float32)
    plan.render(0, out)
    assert out[0, 0] != 0.0
    plan.render(200, out)  # continuing: the echo at 400 frames is coming
    plan.render(400, out)
    assert out[0, 0] != 0.0
    plan.render(0, out)
    plan.render(5000, out)  # a locate: no echo of what played before it
    assert not out.any()


def test_render_allocates_nothing_per_block(pool: Any, tmp_path: Path) -> None:
    import tracemalloc

    ref = wav(pool, tmp_path, ramp(20000, 2))
    lane = {"param": "volume", "points": [{"at": 0, "value": 0.1}, {"at": 2, "value": 1}]}
    p = proj([audio("a", [clip("c", ref, 0.0, 2.0, loop=True, fade_in=0.1, reversed=True)],
                    pan=0.3, automation=[lane], sends=[{"bus": "b", "level": 0.5}]),
              {"kind": "meta", "id": "m", "speed": 1.25, "children": [
                  audio("v", [clip("cv", ref, 0.0, 2.0)])]},
              {"kind": "bus", "id": "b", "volume": 0.5}])
    plan = compile_plan(p, pool, max_block=256)
    out = np.zeros((2, 256), np.float32)
    for f in range(0, 256 * 20, 256):
        plan.render(f, out)
    tracemalloc.start()
    try:
        for f in range(256 * 20, 256 * 120, 256):
            plan.render(f, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024  # a few small Python objects; no audio-sized arrays (2 KB each)


def test_a_swap_and_its_fades_allocate_nothing_on_the_audio_side(pool: Any,
                                                                tmp_path: Path) -> None:
    """The first blocks of a new plan: gains glide, a removed group (child, effect, send)
    fades out, both within what the plan and its ghosts made at compile time."""
    import tracemalloc

    ref = wav(pool, tmp_path, ramp(20000, 2))
    gain = [{"id": "g", "kind": "gain", "params": {"db": -6.0}}]
    group = {"kind": "meta", "id": "m", "effects": gain,
             "sends": [{"bus": "b", "level": 0.5, "pre_fader": True}],
             "children": [audio("v", [clip("cv", ref, 0.0, 2.0, loop=True)])]}
    keep = audio("a", [clip("c", ref, 0.0, 2.0)], pan=0.3)
    bus = {"kind": "bus", "id": "b", "volume": 0.5}
    plan = compile_plan(proj([keep, group, bus]), pool, max_block=32)
    out = np.zeros((2, 32), np.float32)
    for f in range(0, 32 * 20, 32):
        plan.render(f, out)
    edited = proj([dict(keep, volume=0.25), bus])
    new = compile_plan(edited, pool, max_block=32, previous=plan)
    tracemalloc.start()
    try:
        for f in range(32 * 20, 32 * 40, 32):  # across the 80-frame glide and after
            new.render(f, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert new._ghosts and new._ghost_left == 0  # the group faded, then was left alone
    assert peak < 16 * 1024


def test_realtime_plan_renders_the_same(pool: Any, tmp_path: Path) -> None:
    ref = wav(pool, tmp_path, ramp(3000))
    p = proj([audio("a", [clip("c", ref, 0.0, 0.1)])])
    plan = compile_plan(p, pool, max_block=128, realtime=True)
    out = np.zeros((2, 128), np.float32)
    plan.render(0, out)
    np.testing.assert_array_equal(out[0], ramp(3000)[0, :128])


def test_project_rate_48k_and_master_volume(tmp_path: Path) -> None:
    with Pool(tmp_path / "p48", 48000) as pool48:
        ref = pool48.add_array(np.full((1, 1000), 0.5, np.float32), 48000)
        p = {"format": "ouroboros-project", "version": 1, "sample_rate": 48000,
             "tempo": [{"at": 0, "bpm": 97.0}], "master": {"volume": 0.5},
             "tracks": [audio("a", [clip("c", ref, 0.01, 0.005)])]}
        S = math.floor(0.01 * 240 / 97 * 48000 + 0.5)
        E = math.floor(0.015 * 240 / 97 * 48000 + 0.5)
        out = render_range(p, pool48, 0, E + 10, block_size=509)
        assert np.flatnonzero(out[0]).tolist() == list(range(S, E))
        assert out[0, S] == 0.25


def test_stems_line_up_with_the_mix_despite_master_latency(pool: Any,
                                                          tmp_path: Path) -> None:
    ref = wav(pool, tmp_path, ramp(3000))
    fx = [{"id": "lm", "kind": "gain", "params": {"db": 0.0}}]
    p = proj([audio("a", [clip("c", ref, 0.0, 0.1)]), audio("b", [clip("d", ref, 0.05, 0.1)],
                                                             pan=-0.5)],
             master={"volume": 1.0, "effects": fx})
    plan = compile_plan(p, pool, max_block=37, effect_factory=_factory({"lm": 9}))
    plan.enable_stems(["a", "b"])
    mix, stems = [], []
    out = np.zeros((2, 37), np.float32)
    for f in range(0, 37 * 60, 37):
        plan.render(f, out)
        mix.append(out.copy())
        stems.append(plan.stems["a"] + plan.stems["b"])
    np.testing.assert_allclose(np.concatenate(stems, 1), np.concatenate(mix, 1), atol=1e-7)
    np.testing.assert_array_equal(np.concatenate(mix, 1)[0, :800], ramp(3000)[0, :800])


def test_swap_after_an_unplayed_plan_glides_from_the_playing_one(pool: Any,
                                                                tmp_path: Path) -> None:
    ref = wav(pool, tmp_path, np.ones((1, 20000), np.float32))

    def p(vol: float) -> dict[str, Any]:
        return proj([audio("a", [clip("c", ref, 0.0, 1.0)], volume=vol)])

    playing = compile_plan(p(1.0), pool, max_block=64)
    out = np.zeros((2, 64), np.float32)
    playing.render(0, out)
    skipped = compile_plan(p(0.5), pool, max_block=64, previous=playing)
    latest = compile_plan(p(0.0), pool, max_block=64, previous=skipped)
    latest.render(64, out)
    assert out[0, 0] == pytest.approx(1.0, abs=0.02)  # from 1.0, not from 0.5


def test_an_edited_effect_parameter_glides_across_the_swap(pool: Any,
                                                          tmp_path: Path) -> None:
    ref = wav(pool, tmp_path, np.ones((1, 20000), np.float32))

    def p(db: float) -> dict[str, Any]:
        fx = [{"id": "g", "kind": "gain", "params": {"db": db}}]
        return proj([audio("a", [clip("c", ref, 0.0, 1.0)], effects=fx)])

    first = compile_plan(p(0.0), pool, max_block=16)
    out = np.zeros((2, 16), np.float32)
    first.render(0, out)
    second = compile_plan(p(-40.0), pool, max_block=16, previous=first)
    levels = []
    for f in range(16, 16 * 12, 16):
        second.render(f, out)
        levels.append(float(out[0, 0]))
    # ten steps of 16 frames over the 80-frame glide, in dB: 0 -> -40, none bigger than 8 dB
    db = 20 * np.log10(levels)
    assert db[0] == pytest.approx(-8.0, abs=0.01)
    assert np.all(np.diff(np.concatenate([[0.0], db])) >= -8.01)
    assert db[-1] == pytest.approx(-40.0, abs=1e-4)


def test_everything_at_once_is_the_same_in_any_blocks(pool: Any, tmp_path: Path) -> None:
    t = np.arange(3000) / SR
    ref = wav(pool, tmp_path, np.stack([np.sin(2 * np.pi * 220 * t), ramp(3000)[0]]))
    mono = wav(pool, tmp_path, ramp(1000), "m.wav")
    inst = {"kind": "synth", "wave": "saw", "attack": 0.01, "decay": 0.05, "sustain": 0.5,
            "release": 0.05}
    fx = [{"id": "eq", "kind": "eq3", "params": {"low_gain_db": 3.0}},
          {"id": "lat", "kind": "gain", "params": {"db": -3.0}}]
    lanes = [{"param": "pan", "points": [{"at": 0.0, "value": -0.5, "curve": "scurve"},
                                         {"at": 0.5, "value": 0.5, "curve": "exp"},
                                         {"at": 0.75, "value": 0.7}]}]
    # (no effect automation here: effects take parameters per block, by the contract)
    tempo = [{"at": 0.0, "bpm": 100.0, "ramp": True}, {"at": 0.5, "bpm": 160.0},
             {"at": 0.8, "bpm": 90.0}]
    p = proj([
        {"kind": "meta", "id": "g", "offset": 0.1, "speed": 1.0, "effects": fx,
         "automation": lanes, "sends": [{"bus": "b", "level": 0.3, "pre_fader": True}],
         "children": [
             audio("a", [clip("c1", ref, 0.0, 0.3, loop=True, fade_in=0.02, fade_out=0.05),
                         clip("c2", mono, 0.2, 0.2, reversed=True, gain=1.5)]),
             {"kind": "meta", "id": "h", "speed": 0.8, "offset": 0.05, "children": [
                 audio("v", [clip("c3", ref, 0.0, 0.2, loop=True)], volume=0.7),
                 {"kind": "midi", "id": "k", "instrument": inst, "clips": [
                     {"id": "mc", "start": 0.0, "length": 0.4, "notes": [
                         {"at": 0.05, "length": 0.1, "pitch": 60, "velocity": 90},
                         {"at": 0.1, "length": 0.5, "pitch": 67, "velocity": 60}]}]}]}]},
        {"kind": "bus", "id": "b", "effects": [{"id": "bl", "kind": "gain"}],
         "sends": [{"bus": "b2", "level": 0.5}]},
        {"kind": "bus", "id": "b2", "pan": 0.4}], tempo=tempo,
        master={"volume": 0.8, "effects": [{"id": "mg", "kind": "gain",
                                            "params": {"db": -1.0}}]})
    out = render_all(p, pool, 0, 12000, effect_factory=_factory({"lat": 13, "bl": 5}))
    assert np.abs(out).max() > 0.1 and np.isfinite(out).all()
