"""The session recorder with real files and real threads (no JACK): exact PCM round trips,
rotation, a kill -9 in the middle of a recording, a full disk, overruns, the silence gate,
peaks, settings."""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rtcore.errors import ConfigError
from rtcore.recorder import (
    BAD,
    READ,
    WRITE,
    Recorder,
    RecorderConfig,
    WavFile,
    push2,
    push_silence,
    wav_header,
)
from tests.rtcore.conftest import allocated_during, small_tmpfs

ROOT = Path(__file__).resolve().parents[2]
RATE = 8000


# ---------------------------------------------------------------------------- helpers


def expected_pcm(x: np.ndarray, bits: int) -> np.ndarray:
    """The integer samples the spec asks for, worked out in float64 with numpy."""
    top = 2 ** (bits - 1)
    y = np.nan_to_num(x.astype(np.float64), nan=0.0)
    y = np.rint(np.clip(y, -1.0, 1.0) * top)
    return np.minimum(y, top - 1).astype(np.int64)


def read_pcm(path: Path, bits: int) -> np.ndarray:
    """A WAV file's samples as integers of ``bits`` (frames, channels)."""
    if bits == 16:
        data, _ = sf.read(str(path), dtype="int16", always_2d=True)
        return data.astype(np.int64)
    data, _ = sf.read(str(path), dtype="int32", always_2d=True)
    data = data.astype(np.int64)
    return data >> 8 if bits == 24 else data


def signal_with_edges(frames: int, channels: int, bits: int, seed: int = 5) -> np.ndarray:
    """Distinct content per channel (ramps, sines, noise) plus the hard cases: overs,
    exact full scale, halfway ties between two codes, NaN."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)
    x = np.empty((frames, channels), np.float32)
    for c in range(channels):
        if c % 3 == 0:
            x[:, c] = ((t % 977) / 488.0 - 1.0) * (1.1 - 0.1 * c)  # a ramp past full scale
        elif c % 3 == 1:
            x[:, c] = 0.8 * np.sin(2 * np.pi * (50 + 17 * c) * t / RATE)
        else:
            x[:, c] = rng.uniform(-1.2, 1.2, frames)
    top = 2.0 ** (bits - 1)
    edges = [1.0, -1.0, 2.5, -7.0, np.nan, 0.5 / top, 1.5 / top, -2.5 / top, 0.0,
             (2**23 - 0.5) / 2**23]  # ties (to even), and just under full scale
    for i, v in enumerate(edges):
        x[10 + i, i % channels] = v
    return x


def feed(rec: Recorder, a: np.ndarray, b: np.ndarray, block: int = 64,
         pace_s: float | None = None) -> threading.Thread:
    """Push ``a`` and ``b`` side by side from a producer thread, block by block, waiting
    for room instead of overrunning while the recorder runs (and sleeping ``pace_s`` after
    each block)."""
    assert a.shape[0] == b.shape[0]

    def run() -> None:
        ring, cur = rec.ring_array, rec.cursors
        at = 0
        while at < a.shape[0]:
            n = min(block, a.shape[0] - at)
            if rec.ring_frames - (int(cur[WRITE]) - int(cur[READ])) < n and \
                    rec.status()["running"]:
                time.sleep(0.001)
                continue
            push2(ring, cur, a[at:at + n], b[at:at + n], n)
            at += n
            if pace_s:
                time.sleep(pace_s)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def record(rec: Recorder, x: np.ndarray, block: int = 64) -> dict:
    """Record ``x`` (frames, in + out channels) from start to stop; the final status."""
    assert rec.start(), rec.status()
    ins = rec.in_channels
    a = np.ascontiguousarray(x[:, :ins])
    b = np.ascontiguousarray(x[:, ins:])
    feed(rec, a, b, block).join()
    rec.stop()
    return rec.status()


def wavs(directory: Path) -> list[Path]:
    return sorted(directory.glob("rec-*.wav"))


def session_audio(directory: Path, bits: int, channels: int, split: bool) -> np.ndarray:
    """Every file of the directory, in order, joined into one (frames, channels) array."""
    files = wavs(directory)
    if not split:
        return np.concatenate([read_pcm(p, bits) for p in files])
    assert len(files) % channels == 0
    parts = []
    for k in range(0, len(files), channels):
        cols = [read_pcm(p, bits) for p in files[k:k + channels]]
        assert all(c.shape[1] == 1 for c in cols)
        assert len({c.shape[0] for c in cols}) == 1, "split files of one part differ"
        parts.append(np.concatenate(cols, axis=1))
    return np.concatenate(parts)


def format_tag(path: Path) -> int:
    head = path.read_bytes()[:40]
    assert head[:4] == b"RIFF" and head[8:16] == b"WAVEfmt "
    return struct.unpack_from("<H", head, 20)[0]


# ---------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("mode", ["single", "split"])
@pytest.mark.parametrize("bits", [16, 24, 32])
def test_round_trip_is_exact(tmp_path: Path, bits: int, mode: str) -> None:
    frames = 5000
    x = signal_with_edges(frames, 3, bits)
    rec = Recorder(RecorderConfig(bits=bits, mode=mode), tmp_path, RATE, 2, 1)
    st = record(rec, x, block=100)

    assert st["running"] is False and st["reason"] == "stopped"
    assert st["frames_written"] == frames
    assert st["overruns"] == 0 and st["dropped_frames"] == 0
    got = session_audio(tmp_path, bits, 3, mode == "split")
    want = expected_pcm(x, bits)
    assert got.shape == want.shape
    bad = np.argwhere(got != want)
    assert bad.size == 0, f"first difference at {bad[0]}: {got[tuple(bad[0])]} vs " \
                          f"{want[tuple(bad[0])]} (x = {x[tuple(bad[0])]!r})"
    # the edge values land where the spec says
    top = 2 ** (bits - 1)
    assert want[10, 0] == top - 1 and want[11, 1] == -top and want[14, 1] == 0
    assert want[15, 2] == 0 and want[16, 0] == 2 and want[17, 1] == -2  # ties to even

    files = wavs(tmp_path)
    if mode == "single":
        assert [p.name[-9:] for p in files] == ["-0001.wav"]
        info = sf.info(str(files[0]))
        assert (info.channels, info.samplerate, info.subtype) == (3, RATE, f"PCM_{bits}")
        assert format_tag(files[0]) == 0xFFFE  # three channels: WAVE_FORMAT_EXTENSIBLE
    else:
        assert [p.name.split("-0001-")[1] for p in files] == [
            "ch01-in_1.wav", "ch02-in_2.wav", "ch03-main_1.wav"]
        assert format_tag(files[0]) == (1 if bits == 16 else 0xFFFE)


def test_format_tags_follow_the_wav_rules(tmp_path: Path) -> None:
    cases = {(1, 16): 1, (2, 16): 1, (2, 24): 0xFFFE, (1, 24): 0xFFFE, (1, 32): 0xFFFE,
             (3, 16): 0xFFFE}
    for (ch, bits), tag in cases.items():
        path = tmp_path / f"h{ch}-{bits}.wav"
        f = WavFile(path, ch, 44100, bits)
        f.write(memoryview(bytes(ch * bits // 8 * 7)))  # 7 frames: mono 24-bit needs a pad
        f.close()
        assert format_tag(path) == tag
        info = sf.info(str(path))
        assert (info.frames, info.channels, info.samplerate) == (7, ch, 44100)
        assert path.stat().st_size == len(wav_header(ch, 44100, bits)) + 7 * ch * bits // 8 \
            + (7 * ch * bits // 8) % 2
    with pytest.raises(FileExistsError):  # never overwrites
        WavFile(tmp_path / "h1-16.wav", 1, 44100, 16)


# ---------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("mode", ["single", "split"])
def test_rotation_is_sample_exact_and_gapless(tmp_path: Path, mode: str) -> None:
    frames = 9300  # 0.25 s files at 8 kHz: four whole ones and 1300 frames
    x = signal_with_edges(frames, 2, 16, seed=9)
    rec = Recorder(RecorderConfig(bits=16, mode=mode, rotation_seconds=0.25), tmp_path,
                   RATE, 1, 1)
    st = record(rec, x, block=128)
    assert st["frames_written"] == frames and st["file_count"] == 5
    files = wavs(tmp_path)
    per_part = 2 if mode == "split" else 1
    assert len(files) == 5 * per_part
    lengths = [sf.info(str(p)).frames for p in files[::per_part]]
    assert lengths == [2000, 2000, 2000, 2000, 1300]
    assert [p.name.split("-")[3][:4] for p in files[::per_part]] == [
        "0001", "0002", "0003", "0004", "0005"]
    got = session_audio(tmp_path, 16, 2, mode == "split")
    assert np.array_equal(got, expected_pcm(x, 16))


# ---------------------------------------------------------------------------- crash


CRASH_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from rtcore.recorder import Recorder, RecorderConfig, push2
    rate = 48000
    rec = Recorder(RecorderConfig(bits=16, flush_seconds=1.0), sys.argv[1], rate, 1, 1)
    frames = 60 * rate
    ramp = ((np.arange(frames) % 65536) - 32768).astype(np.float32) / 32768
    a = ramp.reshape(-1, 1)
    b = np.ascontiguousarray(-a)
    rec.start()
    block = 480  # 10 ms, in real time
    t0 = time.monotonic()
    for k in range(0, frames, block):
        push2(rec.ring_array, rec.cursors, a[k:k + block], b[k:k + block], block)
        print(k + block, flush=True)
        delay = t0 + (k + block) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
""")


@pytest.mark.slow
def test_kill_9_leaves_a_valid_file_missing_at_most_the_last_flush(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    pushed = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            pushed = int(line)
            if pushed >= 2.3 * 48000:  # two flushes have happened, the third is pending
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, err
    assert pushed >= 2.3 * 48000, f"the recording never got going: {err}"
    files = wavs(tmp_path)
    assert len(files) == 1
    info = sf.info(str(files[0]))  # a valid WAV, as libsndfile sees it
    assert info.channels == 2 and info.samplerate == 48000
    # at most one flush interval lost, plus what was still in the ring or being pushed
    # when the signal came (10 ms blocks, a 10 ms writer poll)
    assert pushed - 1.1 * 48000 <= info.frames <= pushed + 0.05 * 48000
    data, _ = sf.read(str(files[0]), dtype="int16")
    want = (np.arange(info.frames) % 65536) - 32768
    assert np.array_equal(data[:, 0], np.maximum(want, -32768).astype(np.int16))
    assert np.array_equal(data[:, 1], np.minimum(-want, 32767).astype(np.int16))


# ---------------------------------------------------------------------------- disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs mounted for the test (needs root and mount rights)."""
    with small_tmpfs(tmp_path / "small", "2m") as where:
        yield where


def test_a_full_disk_stops_cleanly_and_keeps_what_was_written(small_disk: Path) -> None:
    rate = 32000
    frames = 20 * rate  # 128 kB/s of 16-bit stereo: 20 s do not fit in 2 MB
    x = signal_with_edges(frames, 2, 16, seed=3)
    rec = Recorder(RecorderConfig(bits=16, min_free_mb=0, rotation_seconds=3.0), small_disk,
                   rate, 1, 1)
    assert rec.start()
    a, b = np.ascontiguousarray(x[:, :1]), np.ascontiguousarray(x[:, 1:])
    feed(rec, a, b, block=256).join()  # never waits once stopped: drops, and says so
    deadline = time.monotonic() + 10
    while rec.status()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    st = rec.status()
    rec.stop()
    assert st["running"] is False
    assert st["reason"].startswith("stopped: ") and "ENOSPC" in st["reason"], st["reason"]
    assert rec.status()["reason"] == st["reason"]  # stop() keeps the reason
    assert 2 * rate < st["frames_written"] < frames
    assert st["dropped_frames"] == frames - st["frames_written"]
    files = wavs(small_disk)
    assert len(files) >= 2
    for p in files[:-1]:
        assert sf.info(str(p)).frames == 3 * rate
    got = np.concatenate([read_pcm(p, 16) for p in files])
    assert got.shape[0] == st["frames_written"]
    assert np.array_equal(got, expected_pcm(x[:got.shape[0]], 16))


def test_the_disk_guard_stops_before_the_disk_is_full(small_disk: Path) -> None:
    free_mb = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize / 1e6
    rec = Recorder(RecorderConfig(bits=16, min_free_mb=free_mb + 1), small_disk, RATE, 1, 1)
    assert rec.start() is False
    st = rec.status()
    assert st["running"] is False
    assert st["reason"] == f"stopped: disk space below {free_mb + 1:g} MB"
    block = np.zeros((64, 1), np.float32)
    assert not push2(rec.ring_array, rec.cursors, block, block, 64)
    assert rec.status()["dropped_frames"] == 64 and wavs(small_disk) == []
    rec.stop()

    # during a recording: checked at every flush, before the disk fills up
    rate = 48000
    rec = Recorder(RecorderConfig(bits=16, min_free_mb=1.0, flush_seconds=0.05), small_disk,
                   rate, 1, 1)
    frames = 12 * rate  # 192 kB/s at about 10x real time: 2.3 MB would not fit
    x = signal_with_edges(frames, 2, 16, seed=4)
    assert rec.start()
    feed(rec, np.ascontiguousarray(x[:, :1]), np.ascontiguousarray(x[:, 1:]), block=4800,
         pace_s=0.01).join()
    st = rec.status()
    rec.stop()
    assert st["reason"] == "stopped: disk space below 1 MB", st
    assert os.statvfs(small_disk).f_bavail > 0
    got = np.concatenate([read_pcm(p, 16) for p in wavs(small_disk)])
    assert got.shape[0] == st["frames_written"] > rate
    assert st["dropped_frames"] == frames - st["frames_written"]
    assert np.array_equal(got, expected_pcm(x[:got.shape[0]], 16))


def test_a_write_error_stops_cleanly_with_its_name(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = WavFile.write
    calls = [0]

    def flaky(self: WavFile, data: memoryview) -> None:
        calls[0] += 1
        if calls[0] == 4:  # half of this write reaches the file, then the disk fails
            os.write(self.fd, data[:len(data) // 2 + 1])
            self.data_bytes += len(data) // 2 + 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_write(self, data)

    monkeypatch.setattr(WavFile, "write", flaky)
    x = signal_with_edges(4000, 3, 24)
    rec = Recorder(RecorderConfig(bits=24), tmp_path, RATE, 2, 1, poll_s=0.001)
    assert rec.start()
    feed(rec, np.ascontiguousarray(x[:, :2]), np.ascontiguousarray(x[:, 2:]), 200,
         pace_s=0.003).join()
    st = rec.status()
    rec.stop()
    assert st["reason"] == "stopped: write error: EIO (Input/output error)"
    assert st["dropped_frames"] == 4000 - st["frames_written"] > 0
    (path,) = wavs(tmp_path)
    got = read_pcm(path, 24)  # the half-written block is cut off: whole frames only
    assert got.shape[0] == st["frames_written"]
    data_bytes = st["frames_written"] * 9
    assert path.stat().st_size == len(wav_header(3, RATE, 24)) + data_bytes + data_bytes % 2
    assert np.array_equal(got, expected_pcm(x[:got.shape[0]], 24))


@pytest.mark.parametrize("mode", ["single", "split"])
@pytest.mark.parametrize("fail_at", [1, 2, 5, 8])
def test_a_write_error_between_rotations_keeps_whole_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, fail_at: int) -> None:
    real_write = WavFile.write
    calls = [0]

    def flaky(self: WavFile, data: memoryview) -> None:
        calls[0] += 1
        if calls[0] >= fail_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(self, data)

    monkeypatch.setattr(WavFile, "write", flaky)
    x = signal_with_edges(6000, 2, 16, seed=fail_at)
    rec = Recorder(RecorderConfig(bits=16, mode=mode, rotation_seconds=0.05), tmp_path,
                   RATE, 1, 1)  # 400 frames per file: one batch spans many files
    st = record(rec, x, block=1000)
    assert st["reason"] == "stopped: write error: ENOSPC (No space left on device)"
    assert st["dropped_frames"] == 6000 - st["frames_written"]
    files = wavs(tmp_path)
    split = mode == "split"
    assert all(sf.info(str(p)).frames > 0 for p in files), "no empty leftovers"
    for p in files[:-2 if split else -1]:
        assert sf.info(str(p)).frames == 400
    got = session_audio(tmp_path, 16, 2, split) if files else np.zeros((0, 2))
    assert got.shape[0] == st["frames_written"]
    assert np.array_equal(got, expected_pcm(x[:got.shape[0]], 16))


# ---------------------------------------------------------------------------- overruns


def test_a_stalled_writer_never_blocks_the_producer(tmp_path: Path) -> None:
    cfg = RecorderConfig(bits=16, ring_seconds=1.0)
    rec = Recorder(cfg, tmp_path, RATE, 1, 1, poll_s=3600)  # the writer only wakes at stop
    assert rec.start()
    time.sleep(0.05)
    block = 100
    x = signal_with_edges(200 * block, 2, 16, seed=7)
    a, b = np.ascontiguousarray(x[:, :1]), np.ascontiguousarray(x[:, 1:])
    results = []
    for k in range(0, x.shape[0], block):
        results.append(push2(rec.ring_array, rec.cursors, a[k:k + block], b[k:k + block],
                             block))
    assert not push_silence(rec.ring_array, rec.cursors, 50)
    wrong = np.zeros((block, 2), np.float32)  # three channels for a two-channel ring
    assert not push2(rec.ring_array, rec.cursors, wrong, wrong[:, :1], block)

    # every push returned while the writer slept through all of them (it wrote nothing
    # yet): pushing never waits for the writer, on however busy a machine
    st = rec.status()
    assert st["frames_written"] == 0
    accepted = sum(results)
    assert accepted == RATE // block  # the ring holds one second: 80 blocks
    assert all(results[:accepted]) and not any(results[accepted:])
    assert st["overruns"] == len(results) - accepted + 1
    assert st["dropped_frames"] == (len(results) - accepted) * block + 50
    assert st["ring_fill"] == 1.0
    assert rec.cursors[BAD] == 1 and st["bad_blocks"] == 1
    rec.stop()
    st = rec.status()
    assert st["frames_written"] == accepted * block
    (path,) = wavs(tmp_path)
    assert np.array_equal(read_pcm(path, 16), expected_pcm(x[:accepted * block], 16))


def test_pushes_allocate_nothing(tmp_path: Path) -> None:
    rec = Recorder(RecorderConfig(bits=16, ring_seconds=1.0), tmp_path, RATE, 2, 2,
                   poll_s=3600)
    assert rec.start()
    time.sleep(0.05)  # the writer thread has started and waits: it allocates nothing now
    a = np.full((128, 2), 0.1, np.float32)
    b = np.full((128, 2), -0.1, np.float32)
    ring, cur = rec.ring_array, rec.cursors
    for _ in range(10):
        push2(ring, cur, a, b, 128)
        push_silence(ring, cur, 64)
    def step() -> None:  # into the ring, then (ring full) dropped: both paths
        push2(ring, cur, a, b, 128)
        push_silence(ring, cur, 64)

    try:
        grown, peak = allocated_during(step, 3000)
    finally:
        rec.stop()
    assert rec.status()["overruns"] > 1000 and rec.status()["frames_written"] >= 7000
    assert peak < 1024, "a push allocated something the size of a block"
    assert grown < 512


def test_xrun_silence_keeps_the_timeline(tmp_path: Path) -> None:
    rec = Recorder(RecorderConfig(bits=16), tmp_path, RATE, 1, 1)
    assert rec.start()
    ones = np.full((64, 1), 0.5, np.float32)
    ring, cur = rec.ring_array, rec.cursors
    assert push2(ring, cur, ones, -ones, 64)
    assert push_silence(ring, cur, 300)
    assert push2(ring, cur, ones, -ones, 64)
    rec.stop()
    st = rec.status()
    assert st["silence_frames"] == 300 and st["frames_written"] == 428
    data = read_pcm(wavs(tmp_path)[0], 16)
    assert (data[:64] == [16384, -16384]).all() and (data[364:] == [16384, -16384]).all()
    assert not data[64:364].any()
    # stopped: pushes are ignored, not counted
    assert not push2(ring, cur, ones, -ones, 64) and not push_silence(ring, cur, 10)
    assert rec.status()["dropped_frames"] == 0


# ---------------------------------------------------------------------------- gate


def test_the_silence_gate_keeps_the_signal_with_its_preroll(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    total = 3 * RATE
    x = (rng.standard_normal((total, 2)) * 0.001).astype(np.float32)  # -60 dB hiss
    bursts = [(8000, 12000), (17000, 19400)]
    t = np.arange(total)
    for s, e in bursts:
        x[s:e, 0] = 0.5 * np.cos(2 * np.pi * 220 * t[s:e] / RATE)
        x[s:e, 1] = 0.2 * np.cos(2 * np.pi * 330 * t[s:e] / RATE)
    hold, pre = 800, 400  # 0.1 s and 0.05 s
    cfg = RecorderConfig(bits=16, gate=True, gate_threshold_dbfs=-40.0,
                         gate_hold_seconds=0.1, gate_preroll_seconds=0.05)
    rec = Recorder(cfg, tmp_path, RATE, 1, 1)
    st = record(rec, x, block=128)

    loud = np.nonzero(np.abs(x).max(axis=1) >= 0.01)[0]
    spans = []
    for s, e in bursts:
        inside = loud[(loud >= s) & (loud < e)]
        spans.append((int(inside[0]) - pre, int(inside[-1]) + 1 + hold))
    files = wavs(tmp_path)
    assert len(files) == 2, "each stretch of signal is one file"
    written = 0
    for path, (s, e) in zip(files, spans, strict=True):
        got = read_pcm(path, 16)
        assert got.shape[0] == e - s
        assert np.array_equal(got, expected_pcm(x[s:e], 16))
        written += e - s
    assert st["frames_written"] == written
    assert st["gated_seconds"] == round((total - written) / RATE, 3)
    assert st["gated"] is True  # it ended in silence


# ---------------------------------------------------------------------------- status


def test_peaks_per_channel(tmp_path: Path) -> None:
    frames = 2000
    sign = np.where(np.arange(frames) % 2 == 0, 1.0, -1.0).astype(np.float32)
    x = np.stack([0.5 * sign, 0.25 * sign, 1.5 * sign, 0 * sign], axis=1)
    spike = x.copy()
    spike[100, 3] = -0.75  # early on: in max_peaks, long gone from the meter at the end
    rec = Recorder(RecorderConfig(bits=24), tmp_path, RATE, 2, 2)
    assert rec.start()
    feed(rec, spike[:, :2].copy(), spike[:, 2:].copy()).join()
    deadline = time.monotonic() + 5
    while rec.status()["frames_written"] < frames and time.monotonic() < deadline:
        time.sleep(0.005)
    feed(rec, x[:, :2].copy(), x[:, 2:].copy()).join()
    rec.stop()
    st = rec.status()
    assert st["frames_written"] == 2 * frames
    assert st["peaks"] == [0.5, 0.25, 1.5, 0.0]
    assert st["peaks_dbfs"] == [-6.0, -12.0, 3.5, None]
    assert st["max_peaks"] == [0.5, 0.25, 1.5, 0.75]
    assert st["channels"] == ["in_1", "in_2", "main_1", "main_2"]
    json.dumps(st)  # plain JSON for /ouro/status
    for key in ("running", "reason", "files", "frames_written", "seconds_written",
                "overruns", "dropped_frames", "peaks", "gated", "ring_fill", "bits", "mode",
                "rotation_s"):
        assert key in st
    assert (st["bits"], st["mode"], st["rotation_s"]) == (24, "single", 300.0)
    assert st["seconds_written"] == 0.5 and st["running"] is False


def test_start_and_stop_are_idempotent_and_sessions_never_collide(tmp_path: Path) -> None:
    rec = Recorder(RecorderConfig(bits=16), tmp_path, RATE, 1, 0)
    rec.stop()
    assert rec.status()["running"] is False and rec.status()["reason"] is None
    ones = np.full((32, 1), 0.25, np.float32)
    none = np.zeros((32, 0), np.float32)
    names = []
    for _ in range(3):  # three sessions within a second or so
        assert rec.start() and rec.start()
        assert rec.status()["running"] is True and rec.status()["reason"] is None
        assert push2(rec.ring_array, rec.cursors, ones, none, 32)
        deadline = time.monotonic() + 5
        while not rec.status()["files"] and time.monotonic() < deadline:
            time.sleep(0.005)
        names += rec.status()["files"]
        rec.stop()
        rec.stop()
        assert rec.status()["reason"] == "stopped"
    assert len(set(names)) == 3
    assert sorted(p.name for p in wavs(tmp_path)) == sorted(names)
    for p in wavs(tmp_path):
        assert (read_pcm(p, 16) == 8192).all() and sf.info(str(p)).frames == 32


# ---------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("settings", "field"), [
    ({"bits": 20}, "bits"),
    ({"bits": True}, "bits"),
    ({"mode": "stereo"}, "mode"),
    ({"rotation_seconds": 0}, "rotation_seconds"),
    ({"rotation_seconds": -5.0}, "rotation_seconds"),
    ({"flush_seconds": float("nan")}, "flush_seconds"),
    ({"ring_seconds": 0.5}, "ring_seconds"),
    ({"min_free_mb": "lots"}, "min_free_mb"),
    ({"gate": 1}, "gate"),
    ({"gate_threshold_dbfs": 3.0}, "gate_threshold_dbfs"),
    ({"gate_hold_seconds": -1}, "gate_hold_seconds"),
    ({"gate_preroll_seconds": 2.0}, "gate_preroll_seconds"),
    ({"gate_preroll_seconds": 0.5, "ring_seconds": 1.0}, "gate_preroll_seconds"),
    ({"autostart": "yes"}, "autostart"),
])
def test_bad_settings_name_the_field(settings: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^recorder: {field}\b.* must ") as info:
        RecorderConfig.from_mapping(settings)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match=rf"^{field}\b.* must "):
        RecorderConfig(**settings)


def test_unknown_settings_are_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match=r"^recorder: unknown setting\(s\) 'bitz', 'rotate'"):
        RecorderConfig.from_mapping({"bitz": 16, "rotate": 10, "mode": "split"})
    with pytest.raises(ConfigError, match=r"^\[recorder\]: must be a table"):
        RecorderConfig.from_mapping(["bits"], where="[recorder]")  # type: ignore[arg-type]
    cfg = RecorderConfig.from_mapping({"bits": 16, "mode": "split", "rotation_seconds": 60})
    assert (cfg.bits, cfg.mode, cfg.rotation_seconds) == (16, "split", 60)


def test_recorder_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sample_rate"):
        Recorder(RecorderConfig(), tmp_path, 0, 2, 2)
    with pytest.raises(ConfigError, match="nothing to record"):
        Recorder(RecorderConfig(), tmp_path, RATE, 0, 0)


# ---------------------------------------------------------------------------- bench


def test_bench_writer_reports_and_cleans_up(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from rtcore import cli

    assert cli.main(["bench", "writer", "--channels", "3", "--rate", "8000", "--bits", "24",
                     "--seconds", "20", "--mode", "split", "--dir", str(tmp_path),
                     "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["realtime_factor"] > 1
    assert (report["channels"], report["rate"], report["bits"], report["mode"]) == (
        3, 8000, 24, "split")
    assert report["seconds_audio"] == 20 and report["complete"] is True
    assert report["files"] == 3 and report["dropped_frames"] == 0
    assert report["mb_written"] == pytest.approx(20 * 8000 * 9 / 1e6, abs=0.01)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit):
        cli.main(["bench", "writer", "--bits", "20"])
