"""Effects: block-size independence for every kind, exact gain and bypass, state kept and
reset, reported latency and tails, and the distortion a flat EQ and an idle compressor add
to a 1 kHz tone (THD+N)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from companion.engine.effects import Effect, create_effect
from companion.errors import ProjectError
from companion.model.effect_kinds import KINDS, check_effect

SR = 48000

# parameters that make each kind actually work on a -10 dBFS noise (defaults are often idle)
ACTIVE: dict[str, dict[str, Any]] = {
    "gain": {"db": -7.5},
    "eq3": {"low_gain_db": 6, "mid_gain_db": -4, "mid_q": 2, "high_gain_db": 3},
    "highpass": {"cutoff_hz": 300, "q": 2},
    "lowpass": {"cutoff_hz": 2000, "q": 0.5},
    "compressor": {"threshold_db": -20, "ratio": 4, "attack_ms": 2, "makeup_db": 6},
    "limiter": {"ceiling_db": -12, "release_ms": 50},
    "noise_gate": {"threshold_db": -15, "release_ms": 20},
    "delay": {"time_s": 0.013, "feedback": 0.6, "mix": 0.4},
    "reverb": {"room_size": 0.8},
    "chorus": {"rate_hz": 3, "depth": 0.6, "feedback": 0.3},
    "phaser": {"rate_hz": 2, "feedback": 0.5},
    "distortion": {"drive_db": 30},
    "clipping": {"threshold_db": -15},
    "bitcrush": {"bit_depth": 5},
    "ladder": {"mode": "bpf24", "cutoff_hz": 800, "resonance": 0.7, "drive": 2},
}


def make(kind: str, max_block: int, **params: Any) -> Effect:
    spec = check_effect({"id": "fx", "kind": kind, "params": params}, "test")
    return create_effect(spec, SR, max_block)


def noise(frames: int, seed: int = 1) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, frames)) * 0.3
    x[:, frames // 2 :] *= 0.2  # a quieter second half: gates and compressors move
    return x.astype(np.float32)


def run_blocks(fx: Effect, x: NDArray[np.float32], sizes: list[int]) -> NDArray[np.float32]:
    y = x.copy()
    pos = 0
    k = 0
    while pos < y.shape[1]:
        n = min(sizes[k % len(sizes)], y.shape[1] - pos)
        # a contiguous scratch block, as the renderer hands them over
        blk = np.ascontiguousarray(y[:, pos : pos + n])
        fx.process(blk)
        y[:, pos : pos + n] = blk
        pos += n
        k += 1
    return y


def test_every_kind_has_active_parameters_here() -> None:
    assert set(ACTIVE) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_block_size_does_not_change_the_samples(kind: str) -> None:
    x = noise(24000)
    one = run_blocks(make(kind, 24000, **ACTIVE[kind]), x, [24000])
    assert not np.array_equal(one, x) or kind == "noise_gate"
    rng = np.random.default_rng(7)
    ragged = [1, 2, 3, 1, 2, 7, 64, 511, 1023, *rng.integers(1, 1024, 60).tolist()]
    got = run_blocks(make(kind, 1024, **ACTIVE[kind]), x, ragged)
    np.testing.assert_array_equal(got, one)
    singles = run_blocks(make(kind, 1, **ACTIVE[kind]), x[:, :3000], [1])
    np.testing.assert_array_equal(singles, one[:, :3000])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_reset_starts_over_and_bypass_is_exact(kind: str) -> None:
    x = noise(6000, seed=3)
    fx = make(kind, 512, **ACTIVE[kind])
    first = run_blocks(fx, x, [512])
    fx.reset()
    np.testing.assert_array_equal(run_blocks(fx, x, [500]), first)
    fx.bypass = True
    np.testing.assert_array_equal(run_blocks(fx, x, [300]), x)
    fx.bypass = False  # back on: starts from silence, as after reset
    np.testing.assert_array_equal(run_blocks(fx, x, [512]), first)
    spec = check_effect({"id": "b", "kind": kind, "params": ACTIVE[kind], "bypass": True}, "t")
    np.testing.assert_array_equal(run_blocks(create_effect(spec, SR, 64), x, [64]), x)


@pytest.mark.parametrize("db", [0.0, -6.0, 6.0, -0.1, 13.7, -120.0, 36.0])
def test_gain_is_exact(db: float) -> None:
    x = noise(5000)
    y = run_blocks(make("gain", 333, db=db), x, [333, 1, 17])
    want = (x.astype(np.float64) * 10.0 ** (db / 20.0)).astype(np.float32)
    np.testing.assert_array_equal(y, want)
    if db == 0.0:
        np.testing.assert_array_equal(y, x)


def test_set_param_is_checked_and_takes_effect_at_the_next_block() -> None:
    fx = make("gain", 16)
    blk = np.ones((2, 16), np.float32)
    fx.set_param("db", -20.0)
    fx.process(blk)
    assert blk[0, 0] == np.float32(0.1)
    with pytest.raises(ProjectError, match=r"fx\.db: 99 is out of range"):
        fx.set_param("db", 99.0)
    with pytest.raises(ProjectError, match="no parameter"):
        fx.set_param("volume", 1.0)
    eq = make("eq3", 64)
    eq.set_param("mid_gain_db", 12.0)
    tone = sine(1000.0, 4800)
    run_blocks(eq, tone, [64])
    out = run_blocks(eq, tone, [64])
    assert rms(out[0, 2400:]) / rms(tone[0, 2400:]) == pytest.approx(10 ** (12 / 20), rel=0.01)
    comp = make("compressor", 64, threshold_db=-20.0, ratio=4.0)
    comp.set_param("ratio", 1.0)  # no compression at ratio 1
    np.testing.assert_allclose(run_blocks(comp, tone, [64]), tone, atol=1e-6)


def test_blocks_longer_than_max_block_or_of_wrong_shape_are_refused() -> None:
    fx = make("reverb", 64)
    with pytest.raises(ValueError, match="max_block"):
        fx.process(np.zeros((2, 65), np.float32))
    with pytest.raises(ValueError, match="float32"):
        fx.process(np.zeros((1, 8), np.float32))
    with pytest.raises(ValueError, match="float32"):
        fx.process(np.zeros((2, 8), np.float64))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_no_latency_the_response_starts_at_the_impulse(kind: str) -> None:
    fx = make(kind, 4096, **ACTIVE[kind])
    lat = fx.latency_frames
    assert lat == (240 if kind == "limiter" else 0)
    x = np.zeros((2, 4096), np.float32)
    x[:, 100] = 0.5
    fx.process(x)
    if kind != "noise_gate":  # the gate rightly keeps a lone click closed
        # nothing before the impulse (plus latency), something at it or right after it
        assert not x[:, : 100 + lat].any()
        assert np.abs(x[:, 100 + lat : 110 + lat]).max() > 1e-4, kind


def test_delay_echo_lands_on_the_rounded_frame() -> None:
    for time_s in (0.01, 0.0125, 0.3333):
        fx = make("delay", 32768, time_s=time_s, feedback=0.5, mix=0.5)
        x = np.zeros((2, 32768), np.float32)
        x[:, 0] = 1.0
        fx.process(x)
        d = math.floor(time_s * SR + 0.5)
        hits = np.nonzero(x[0])[0]
        assert hits[:3].tolist() == [0, d, 2 * d]
        assert x[0, d] == pytest.approx(0.5) and x[0, 2 * d] == pytest.approx(0.25)


@pytest.mark.parametrize("kind", ["delay", "reverb", "chorus", "phaser", "eq3", "highpass",
                                  "lowpass", "ladder"])
def test_the_tail_is_silent_after_tail_s(kind: str) -> None:
    fx = make(kind, 4800, **ACTIVE[kind])
    tail = fx.tail_s
    assert 0.0 < tail < 30.0
    frames = int((tail + 0.5) * SR)
    y = np.zeros((2, frames), np.float32)
    y[:, :480] = noise(480)  # a 10 ms burst
    out = run_blocks(fx, y, [4800])
    peak = np.abs(out[:, :4800]).max()
    after = np.abs(out[:, int(tail * SR) + 480 :]).max()
    assert after < peak * 10 ** (-60 / 20), (kind, tail, after / peak)


def test_frozen_reverb_reports_a_long_finite_tail() -> None:
    assert make("reverb", 64, freeze=1.0).tail_s == 60.0
    assert make("compressor", 64).tail_s == 0.0


def sine(freq: float, frames: int, amp: float = 0.5) -> NDArray[np.float32]:
    t = np.arange(frames) / SR
    s = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([s, s]).astype(np.float32)


def rms(x: NDArray[Any]) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)))


def thd_n(y: NDArray[np.float32], freq: float) -> float:
    """THD+N in percent: what is left after removing the best-fitting sine at ``freq``
    (and DC), relative to that sine."""
    t = np.arange(len(y)) / SR
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t),
                      np.ones_like(t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y.astype(np.float64), rcond=None)
    fit = basis[:, :2] @ coef[:2]
    return 100.0 * rms(y - basis @ coef) / rms(fit)


@pytest.mark.parametrize(("kind", "params"), [
    ("eq3", {}),
    ("compressor", {"threshold_db": -3.0, "ratio": 4.0}),  # a -6 dBFS tone stays under it
    ("compressor", {}),
    ("limiter", {"ceiling_db": -1.0}),
])
def test_flat_eq_and_idle_dynamics_keep_a_tone_clean(kind: str, params: dict[str, Any],
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    x = sine(1000.0, SR)
    fx = make(kind, 512, **params)
    y = run_blocks(fx, x, [512, 37])
    # after 100 ms of settling, 500 whole periods, in the effect's time
    lat = fx.latency_frames
    figure = max(thd_n(y[c, 4800 + lat : 28800 + lat], 1000.0) for c in (0, 1))
    with capsys.disabled():
        print(f"\nTHD+N {kind} {params}: {figure:.2e} %")
    assert figure < 0.01
    assert rms(y[0, 4800:]) == pytest.approx(rms(x[0, 4800:]), rel=1e-3)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_blocks_may_be_views_of_a_larger_buffer(kind: str) -> None:
    # the renderer hands over buf[:, :n] of a preallocated (2, max_block) buffer
    x = noise(5000, seed=11)
    want = run_blocks(make(kind, 512, **ACTIVE[kind]), x, [512])
    fx = make(kind, 512, **ACTIVE[kind])
    buf = np.zeros((2, 512), np.float32)
    got = np.zeros_like(x)
    pos = 0
    for n in [512, 100, 7, 1, 300] * 40:
        n = min(n, x.shape[1] - pos)
        if n == 0:
            break
        view = buf[:, :n]
        view[:] = x[:, pos : pos + n]
        fx.process(view)
        got[:, pos : pos + n] = view
        pos += n
    np.testing.assert_array_equal(got[:, :pos], want[:, :pos])


def test_the_compiled_biquads_compute_what_scipy_computes() -> None:
    """Our cascade against ``scipy.signal.sosfilt`` (the reference), across blocks."""
    import scipy.signal

    spec = check_effect({"id": "e", "kind": "eq3", "params": {"low_gain_db": 6.0,
                                                              "mid_gain_db": -9.0,
                                                              "high_gain_db": 3.0}}, "fx")
    fx = create_effect(spec, 48000, 512)
    rng = np.random.default_rng(5)
    x = (0.3 * rng.standard_normal((2, 3000))).astype(np.float32)
    want = scipy.signal.sosfilt(fx._sos, x.astype(np.float64), axis=-1).astype(np.float32)
    got = x.copy()
    for a in range(0, 3000, 509):
        fx.process(got[:, a:a + 509])
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-7)
