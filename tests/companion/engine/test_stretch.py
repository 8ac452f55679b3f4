"""Clips that follow the tempo: the source's beats land on the project's beats, its pitch
is kept, and the proxy is rendered once per clip and tempo map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from companion.engine.pool import Pool
from companion.engine.stretch import proxy_ref, stretch_clip
from companion.model.timemap import TempoMap, TempoPoint

RATE = 48000
SOURCE_BPM = 100.0
TOLERANCE_FRAMES = 240  # 5 ms: Rubber Band's own placement of a transient


def click_track(beats: int) -> np.ndarray:
    """A 440 Hz tone with a click on every beat at 100 bpm: (2, frames)."""
    beat = 0.6 * RATE
    n = int(beat * beats)
    x = (0.2 * np.sin(2 * np.pi * 440.0 * np.arange(n) / RATE)).astype(np.float32)
    for k in range(beats):
        x[int(k * beat):int(k * beat) + 48] += 0.8
    return np.stack([x, x])


def onset_near(audio: np.ndarray, frame: int, window: int) -> int:
    """Where the loudest sample near ``frame`` is, relative to it."""
    lo = max(0, frame - window)
    return int(np.argmax(np.abs(audio[0, lo:frame + window]))) + lo - frame


@pytest.fixture
def pool(tmp_path: Path):
    with Pool(tmp_path, RATE) as p:
        yield p


def clip(ref: str, length: float, loop: bool = False) -> dict:
    return {"id": "c1", "source": ref, "source_bpm": SOURCE_BPM, "offset": 0.0,
            "length": length, "loop": loop, "start": 0.0}


@pytest.mark.parametrize("tempo", [
    [TempoPoint(0.0, 120.0)],
    [TempoPoint(0.0, 80.0)],
    [TempoPoint(0.0, 90.0), TempoPoint(1.0, 140.0)],
    [TempoPoint(0.0, 80.0, True), TempoPoint(1.0, 160.0)],
], ids=["faster", "slower", "step", "ramp"])
def test_source_beats_land_on_project_beats_with_pitch_kept(pool: Pool, tempo) -> None:
    ref = pool.add_array(click_track(8), RATE)
    tm = TempoMap(tempo, RATE)
    out = stretch_clip(pool.source(ref), clip(ref, 2.0), 0.0, tm)
    assert out.shape == (2, tm.frame(2.0))
    misses = [onset_near(out, tm.frame(k * 0.25), 4800) for k in range(8)]
    print("onset error per beat (frames):", misses)
    assert max(abs(m) for m in misses) <= TOLERANCE_FRAMES, misses
    # pitch: a stretch of the tone between two clicks
    a, b = tm.frame(0.25) + 2400, tm.frame(0.5) - 2400
    seg = out[0, a:b] * np.hanning(b - a)
    spectrum = np.abs(np.fft.rfft(seg, 1 << 18))
    hz = np.argmax(spectrum) * RATE / (1 << 18)
    assert abs(hz - 440.0) < 3.0, hz


def test_looping_clip_repeats_the_source(pool: Pool) -> None:
    ref = pool.add_array(click_track(4), RATE)  # one bar at 100 bpm
    tm = TempoMap([TempoPoint(0.0, 120.0)], RATE)
    out = stretch_clip(pool.source(ref), clip(ref, 3.0, loop=True), 0.0, tm)
    misses = [onset_near(out, tm.frame(k * 0.25), 4800) for k in range(12)]
    assert max(abs(m) for m in misses) <= TOLERANCE_FRAMES, misses


def test_the_proxy_is_made_once_per_clip_and_tempo_map(pool: Pool) -> None:
    ref = pool.add_array(click_track(4), RATE)
    tm = TempoMap([TempoPoint(0.0, 120.0)], RATE)
    first = proxy_ref(pool, clip(ref, 1.0), 0.0, tm)
    entries = sorted((pool.directory / "cache" / "stretch").iterdir())
    stamp = entries[0].stat().st_mtime_ns
    assert proxy_ref(pool, clip(ref, 1.0), 0.0, tm) == first
    assert entries[0].stat().st_mtime_ns == stamp  # found, not rendered again
    assert pool.source(first).frames == tm.frame(1.0)
    other = proxy_ref(pool, clip(ref, 1.0), 0.0, TempoMap([TempoPoint(0.0, 90.0)], RATE))
    assert other != first
    assert len(list((pool.directory / "cache" / "stretch").iterdir())) == 2
