"""``ouro bench writer``: how much faster than real time the session recorder writes.

A producer thread pushes a prepared signal into the recorder's ring as fast as the ring
has room (it never overruns it); the recorder's writer thread does what it does on the
pedal: batches out of the ring, conversion to integer PCM with the peaks, WAV writes (on
its I/O thread, overlapping the next conversion), a flush (data synced, header rewritten,
synced again) every ``flush_seconds``, rotation.
The clock runs from :meth:`Recorder.start` until :meth:`Recorder.stop` has returned, that
is until the last file is finished and on disk. The real-time factor is the audio's length
over that wall time; the "busy" factor leaves out the moments the writer found the ring
empty and waited for the producer (a Python thread that has to copy the same audio).

Two things differ from the pedal, both so that the writer, not the producer thread, sets
the pace: the ring holds up to 60 s (at most 256 MB) instead of 5 s, which
at 2000x would be a few milliseconds of the writer's work, and the writer looks at an
empty ring every 0.5 ms instead of every 10 ms. Neither changes the work per sample.

The signal is not silence, which would flatter the conversion: per channel two sines at
their own frequencies under a slow envelope, with noise at -60 dBFS and a few clipped
peaks. The files go to a fresh temporary directory (under ``--dir`` if given) that is
removed afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtcore.recorder import READ, RECORDING, STATE, WRITE, Recorder, RecorderConfig, push2

PCM_TARGET_BYTES = 512e6  # the default length writes about this much PCM
RING_BYTES = 256e6


def default_seconds(channels: int, rate: int, bits: int) -> float:
    """Audio seconds that make about 512 MB of PCM, between 5 s and one hour."""
    per_second = channels * rate * (bits // 8)
    return float(min(3600.0, max(5.0, round(PCM_TARGET_BYTES / per_second))))


def bench_signal(frames: int, channels: int, rate: int, seed: int = 1) -> np.ndarray:
    """(frames, channels) float32: a recording-like signal, different on every channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames, dtype=np.float64) / rate
    out = np.empty((frames, channels), np.float32)
    for c in range(channels):
        f1 = 55.0 * 2 ** (c / 7.0)
        f2 = f1 * 3.01
        env = 0.35 + 0.3 * np.sin(2 * np.pi * (0.5 + 0.1 * c) * t) ** 2
        x = env * (np.sin(2 * np.pi * f1 * t) + 0.4 * np.sin(2 * np.pi * f2 * t + c))
        x += rng.standard_normal(frames) * 1e-3
        x[rng.integers(0, frames, 8)] = 1.25  # a few overs, to be clipped
        out[:, c] = x
    return out


def bench_writer(channels: int, rate: int, bits: int, seconds: float | None = None,
                 mode: str = "single", directory: Path | None = None) -> dict[str, Any]:
    """Record ``seconds`` of a prepared signal as fast as the writer can; the figures."""
    if seconds is None:
        seconds = default_seconds(channels, rate, bits)
    # a ring of up to 60 s (at most 256 MB) and a short poll: see the module docstring
    ring_s = min(60.0, max(5.0, RING_BYTES / (channels * rate * 4)))
    config = RecorderConfig(bits=bits, mode=mode, ring_seconds=ring_s)
    ins = (channels + 1) // 2
    outs = channels - ins
    where = Path(tempfile.mkdtemp(prefix="ouro-bench-writer-",
                                  dir=None if directory is None else str(directory)))
    try:
        rec = Recorder(config, where, rate, ins, outs, poll_s=0.0005)
        total = round(seconds * rate)
        # producer blocks of about 512 kB: the GIL is never held for long
        block = max(1, min(total, rec.ring_frames // 4, (512 << 10) // (4 * channels)))
        src_frames = min(total, max(block, rate // 2))
        sig = bench_signal(src_frames + block, channels, rate)  # any block fits from any start
        a = np.ascontiguousarray(sig[:, :ins])
        b = np.ascontiguousarray(sig[:, ins:])
        ring, cursors = rec.ring_array, rec.cursors
        cap = rec.ring_frames
        failed: list[BaseException] = []

        def produce() -> None:
            # refill the ring whenever it is half empty, then sleep: like the engine's
            # callback, the producer holds the GIL only while it pushes
            try:
                pushed = 0
                at = 0
                while pushed < total and cursors[STATE] == RECORDING:
                    if int(cursors[WRITE]) - int(cursors[READ]) > cap // 2:
                        time.sleep(0.0002)
                        continue
                    while pushed < total:
                        n = min(block, total - pushed)
                        if cap - (int(cursors[WRITE]) - int(cursors[READ])) < n:
                            break
                        if not push2(ring, cursors, a[at:], b[at:], n):
                            return
                        pushed += n
                        at = (at + n) % src_frames
                        time.sleep(0)  # the writer may want the GIL back
            except BaseException as exc:  # pragma: no cover - reported, not swallowed
                failed.append(exc)

        producer = threading.Thread(target=produce, name="bench-producer")
        t0 = time.perf_counter()
        rec.start()
        producer.start()
        producer.join()
        rec.stop()
        wall = time.perf_counter() - t0
        if failed:
            raise failed[0]
        st = rec.status()
        written = st["frames_written"]
        files = sorted(where.iterdir())
        size = sum(p.stat().st_size for p in files)
        audio_s = written / rate
        busy = wall - rec.timings["idle_s"]
        return {
            "realtime_factor": round(audio_s / wall, 1) if wall > 0 else None,
            # the same without the time the writer waited for the producer thread
            "busy_realtime_factor": round(audio_s / busy, 1) if busy > 0 else None,
            "channels": channels,
            "rate": rate,
            "bits": bits,
            "mode": mode,
            "seconds_audio": round(audio_s, 3),
            "wall_seconds": round(wall, 4),
            "mb_written": round(size / 1e6, 3),
            "mb_per_s": round(size / 1e6 / wall, 1) if wall > 0 else None,
            "files": len(files),
            "convert_seconds": round(rec.timings["convert_s"], 4),
            "write_seconds": round(rec.timings["write_s"], 4),
            "flush_seconds": round(rec.timings["flush_s"], 4),
            "idle_seconds": round(rec.timings["idle_s"], 4),
            "overruns": st["overruns"],
            "dropped_frames": st["dropped_frames"],
            "complete": written == total,
            "reason": st["reason"],
            "directory": str(where.parent),
        }
    finally:
        shutil.rmtree(where, ignore_errors=True)


def format_writer_report(r: dict[str, Any]) -> str:
    lines = [
        f"ouro bench writer: {r['channels']} ch, {r['rate']} Hz, {r['bits']}-bit, {r['mode']}"
        f", {r['seconds_audio']:g} s of audio in {r['wall_seconds']:.3f} s "
        f"({r['files']} files, {r['mb_written']:g} MB under {r['directory']})",
        f"  real-time factor {r['realtime_factor']:g}x ({r['mb_per_s']:g} MB/s); "
        f"{r['busy_realtime_factor']:g}x leaving out the writer's waits for the producer",
        f"  writer: convert {r['convert_seconds']:.3f} s, write {r['write_seconds']:.3f} s, "
        f"flush/close {r['flush_seconds']:.3f} s, waiting for audio {r['idle_seconds']:.3f} s",
    ]
    if not r["complete"] or r["dropped_frames"]:
        lines.append(f"  incomplete: {r['reason']}; dropped {r['dropped_frames']} frames")
    return "\n".join(lines)
